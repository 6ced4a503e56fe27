"""The ledger of bookings and the bindings of conversations, kept in `.claude/usage/` where the
backup trail covers them (so they outlive Claude Code's 30-day transcript cleanup).

* `bindings.jsonl`: one line per binding of a Claude Code conversation to a session from a
  point in time (`via`: `hook`, `explicit`). Append-only.
* `bookings.jsonl`: one line per response booked to a session (and a stage), keyed by the
  response (`message.id:requestId`). A response is booked to one session only: a later line for
  the same key (the response's totals grew) carries only the increase, never a negative
  amount, and is refused for any other session. Lines of one attach share a `batch` id, which
  the session's `cost_recorded` events carry too: a batch the ledger holds but the session's
  journal lacks (a crash between the two writes) is booked into the session on the next attach.

Both files are appended with one write per batch (fsynced), after a newline if a crash left
a torn last line, and read skipping unreadable lines.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

USAGE_DIR = "usage"
BOOKINGS_FILE = "bookings.jsonl"
BINDINGS_FILE = "bindings.jsonl"
LOCK_FILE = "bookings.lock"
KINDS = ("input", "output", "cache_write", "cache_read", "cache_write_1h")


def usage_dir(claude_dir: Path) -> Path:
    return claude_dir / USAGE_DIR


def append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """Append JSON lines with a single write and fsync them."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line stays alone, never glued to ours
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- bookings ---------------------------------------------------------------------------------------
@dataclass
class Booking:
    """What one response has booked so far (the sum of its lines)."""

    key: str
    session: str
    stage: str | None
    epoch: int
    model: str
    branch: str
    conversation: str
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    usd: float = 0.0


@dataclass
class Bookings:
    path: Path
    by_key: dict[str, Booking] = field(default_factory=dict)
    batches: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # session -> batch -> lines

    @classmethod
    def load(cls, claude_dir: Path) -> Bookings:
        ledger = cls(usage_dir(claude_dir) / BOOKINGS_FILE)
        for line in read_lines(ledger.path):
            ledger._apply(line)
        return ledger

    def _apply(self, line: dict[str, Any]) -> None:
        try:
            key, session, tokens = line["key"], line["session"], [int(n) for n in line["tokens"]]
            usd, epoch = float(line["usd"]), int(line["t"])
        except (KeyError, TypeError, ValueError):
            return
        if len(tokens) != len(KINDS) or min(tokens) < 0 or usd < 0:
            return
        booking = self.by_key.get(key)
        if booking is None:
            booking = self.by_key[key] = Booking(key, session, line.get("stage"), epoch, str(line.get("model")),
                                                 str(line.get("branch") or ""), str(line.get("conversation")))
        elif booking.session != session:
            return  # one owner per response: a line for another session is never believed
        booking.tokens = [a + b for a, b in zip(booking.tokens, tokens, strict=True)]
        booking.usd += usd
        self.batches.setdefault(session, {}).setdefault(str(line.get("batch")), []).append(line)

    def append(self, lines: list[dict[str, Any]]) -> None:
        append_lines(self.path, lines)
        for line in lines:
            self._apply(line)

    def of_session(self, session: str) -> list[Booking]:
        return [b for b in self.by_key.values() if b.session == session]


# -- bindings -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Binding:
    conversation: str
    session: str
    since: float  # epoch seconds
    via: str


def load_bindings(claude_dir: Path) -> list[Binding]:
    found = []
    for line in read_lines(usage_dir(claude_dir) / BINDINGS_FILE):
        try:
            moment = datetime.fromisoformat(str(line["from"]).replace("Z", "+00:00"))
            found.append(Binding(str(line["conversation"]), str(line["session"]), moment.timestamp(),
                                 str(line.get("via", ""))))
        except (KeyError, ValueError):
            continue
    return found


def record_binding(claude_dir: Path, conversation: str, session: str, since: datetime, via: str,
                   now: datetime) -> None:
    append_lines(usage_dir(claude_dir) / BINDINGS_FILE, [{
        "conversation": conversation, "session": session, "from": iso(since.timestamp()), "via": via,
        "at": iso(now.timestamp())}])
