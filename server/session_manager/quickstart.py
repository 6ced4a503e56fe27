"""The SessionStart context in the standard library only (issue 14).

Claude Code runs the SessionStart hook at every conversation start. The full path
(`hooks.session_start`) asks the `Service` for `status`, which costs pydantic and our model (~130 ms
of imports). This module builds the same text from the session index (`index.py`'s sqlite, read
directly) and each active session's `pipeline_status.json` / `metadata.json` read as raw JSON, and
answers None ("take the full path") whenever it is not sure the full path would say exactly the
same thing:

* no index, an index of another format, a stale one (a level's `sessions/` folder mtime differs
  from the recorded one) or one with a pending row (a change in flight, or a crash mid-change: the
  full path reads that state and settles the row; we never trust it);
* a row the state file contradicts (not active any more: the full path corrects the row);
* a session id, folder or file that is not what the store accepts (a link anywhere below
  `.claude/`, a FIFO, a missing file), a file that does not parse, a field of the wrong type or
  an unknown one, a schema version other than the current one, a time not written the way we
  write it, a stage name the config could not describe (the full path would fail on it);
* a config file (`.claude/session-manager.toml`) whose bytes the full path has not validated
  (it stamps the digest of the bytes it validated: `config_validated`);
* a binding to write: with exactly one active session the hook binds the conversation to it
  (`Service.attach_claude_session`); when that would write anything, the full path does it.

So the answer is never different, only sometimes slower. One limit is the index's own: a state
file whose status was edited by hand is not seen by either path's list (see index.py); the full
path's "This conversation works on X" could still name such a session (it scans the 40 most
recently changed folders for an active one that recorded the conversation), this path scans only
when an active session in the index recorded it, so the cost stays flat at 10,000 sessions. The checks are stricter than pydantic's
lax mode (an integer written as 3.0, a boolean as "true" fall back): stricter only costs time.
The text itself comes from `compose`, which both paths call.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_CONTEXT = 9_500  # Claude Code cuts additionalContext at 10,000 characters
MAX_ITEMS = 10
CLAUDE_SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
PRIVATE = ".session-manager"
INDEX_FILE = "index.sqlite"
INDEX_FORMAT = "1"  # index.FORMAT this reader understands (a test keeps them equal)
SCHEMA_VERSION = 2  # model.SCHEMA_VERSION this reader understands (a test keeps them equal)
CONFIG_NAME = "session-manager.toml"
CONFIG_STAMP = "hook-config.json"
ACTIVE = ("initialized", "in_progress", "failed")


# -- the text (both paths) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Brief:
    """What the context says about one active session."""

    session_id: str
    level: str
    status: str
    topic: str | None
    stage: str | None
    stage_status: str | None
    percent: float
    done: int  # stages completed, bypassed or skipped (as `status` counts)
    total: int
    cost: float
    budget: float | None
    blockers: list[str]
    alerts: list[str]
    tasks: list[str]
    updated: float  # last_updated, epoch seconds


def describe(brief: Brief) -> list[str]:
    """A few compact lines about one session, the most important first."""
    head = f"- {brief.session_id} ({brief.level}, {brief.status})"
    if brief.topic:
        head += f" \"{brief.topic[:120]}\""
    if brief.stage:
        head += f"; stage {brief.stage}" + (f" ({brief.stage_status})" if brief.stage_status is not None else "")
    head += f"; {brief.percent:.0f}% ({brief.done}/{brief.total} stages)"
    head += f"; cost ${brief.cost:.2f}"
    if brief.budget:
        head += f" of ${brief.budget:.2f}"
    lines = [head]
    for label, items in (("blockers", brief.blockers), ("alerts", brief.alerts), ("open tasks", brief.tasks)):
        if items:
            more = f"; +{len(items) - MAX_ITEMS} more" if len(items) > MAX_ITEMS else ""
            lines.append(f"  {label}: " + "; ".join(item[:120] for item in items[:MAX_ITEMS]) + more)
    return lines


def compose(briefs: list[Brief], first: str | None) -> str:
    """The context: the conversation's own session (`first`) first, then the others most
    recently changed first (`briefs` come in `status` order: started last first, which breaks
    ties); cut at MAX_CONTEXT characters at a line, saying how much was left out."""
    if not briefs:
        return ""
    briefs = sorted(briefs, key=lambda b: (b.session_id != first, -b.updated))
    head = (f"session-manager: {len(briefs)} active session(s). Record progress with the sessions MCP tools"
            " (stage_start, stage_complete, record_failure, session_update, session_end).")
    if first:
        head += f" This conversation works on {first}."
    lines = [head]
    size = len(head)
    for index, brief in enumerate(briefs):
        for position, line in enumerate(describe(brief)):
            rest = len(briefs) - index - (1 if position else 0)
            tail = f"... cut here ({rest} more session(s) or items); session_status gives them all"
            if size + len(line) + 1 + len(tail) + 1 > MAX_CONTEXT:
                lines.append(tail)
                return "\n".join(lines)
            lines.append(line)
            size += len(line) + 1
    return "\n".join(lines)


# -- strict checks of the raw JSON (a mirror of model.py, stricter than pydantic's lax mode) ------
Check = Callable[[Any], bool]
_SURROGATE = re.compile("[\ud800-\udfff]")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z")
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # config.STAGE_NAME_PATTERN, whole string
_BIG = 2 ** 53


def is_text(value: Any) -> bool:
    return isinstance(value, str) and (value.isascii() or _SURROGATE.search(value) is None)


def is_int(value: Any) -> bool:
    return type(value) is int and -_BIG <= value <= _BIG


def is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _BIG


def is_float(value: Any) -> bool:
    return (type(value) is int and -_BIG <= value <= _BIG) or (type(value) is float and math.isfinite(value))


def is_positive_float(value: Any) -> bool:
    return is_float(value) and value >= 0


def is_bool(value: Any) -> bool:
    return type(value) is bool


def epoch(value: Any) -> float | None:
    """A time as we write it (`2026-11-20T12:00:00Z`), in epoch seconds; None otherwise."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def is_time(value: Any) -> bool:
    return epoch(value) is not None


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def one_of(*allowed: str) -> Check:
    return lambda value: isinstance(value, str) and value in allowed


def list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def dict_of(check: Check) -> Check:
    return lambda value: isinstance(value, dict) and all(is_text(k) and check(v) for k, v in value.items())


class Shape:
    """An object with these fields and no other (extra="forbid"); `required` must be present."""

    def __init__(self, required: dict[str, Check], others: dict[str, Check]) -> None:
        self.required = required
        self.fields = {**others, **required}

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, dict) or any(name not in value for name in self.required):
            return False
        for name, item in value.items():
            test = self.fields.get(name)
            if test is None or not test(item):
                return False
        return True


shape = Shape


LEVEL = one_of("dev", "production", "platform", "coded")
STAGE = shape({}, {
    "status": one_of("pending", "in_progress", "completed", "failed", "retrying", "escalated", "bypassed", "skipped"),
    "attempts": is_int, "total_attempts": is_int, "started_at": optional(is_time),
    "completed_at": optional(is_time), "execution_seconds": optional(is_float), "overall_score": optional(is_float),
    "quality": dict_of(is_float), "feedback": optional(is_text), "last_error": optional(is_text),
    "override_reason": optional(is_text), "gate_failures": is_int, "outputs": dict_of(is_text),
    "model": optional(is_text)})
TASK = shape({"id": is_int, "title": is_text, "created_at": is_time}, {
    "status": one_of("pending", "in_progress", "done", "failed", "blocked"), "agent": optional(is_text),
    "estimated_minutes": optional(is_positive_float), "actual_minutes": optional(is_positive_float),
    "files": list_of(is_text), "tests": list_of(is_text), "blockers": list_of(is_text), "output": optional(is_text),
    "started_at": optional(is_time), "done_at": optional(is_time), "carried_from": optional(is_text)})
BLOCKER = shape({"id": is_int, "text": is_text, "created_at": is_time},
                {"cleared_at": optional(is_time), "carried_from": optional(is_text)})
NOTE = shape({"text": is_text, "at": is_time}, {"stage": optional(is_text), "todo": is_bool})
PROGRESS = shape({}, {
    "tasks_completed": list_of(TASK), "tasks_pending": list_of(TASK), "tasks_failed": list_of(TASK),
    "blockers": list_of(BLOCKER), "blockers_cleared": list_of(BLOCKER), "learnings": list_of(NOTE),
    "decisions": list_of(NOTE), "percent": is_float})
TOKENS = shape({}, {"input": is_int, "output": is_int, "cache_write": is_int, "cache_read": is_int})
COST = shape({}, {
    "total_cost": is_float, "cost_by_stage": dict_of(is_float), "cost_by_model": dict_of(is_float),
    "tokens": TOKENS, "tokens_used": is_int, "api_calls": dict_of(is_int), "entries": is_int})
OUTCOME = shape({}, {name: optional(is_count) for name in
                     ("bugs_fixed", "bugs_introduced", "tests_passed", "tests_total", "docs_changed")})
BUDGET = shape({}, {"usd": optional(is_float)})
ALERT = shape({"kind": one_of("cost", "quality", "time", "error_rate"), "severity": one_of("warning", "critical"),
               "message": is_text, "value": is_float, "threshold": is_float, "raised_at": is_time}, {})
ERROR = shape({"stage": optional(is_text), "error": is_text, "at": is_time, "attempt": is_int, "retryable": is_bool,
               "decision": one_of("retry", "escalate")}, {})
STATE = shape({"session_id": is_text, "level": LEVEL, "started_at": is_time, "last_updated": is_time}, {
    "schema_version": lambda value: type(value) is int and value == SCHEMA_VERSION, "revision": is_count,
    "episode_number": optional(is_int), "status": one_of("initialized", "in_progress", "completed", "failed",
                                                         "abandoned"),
    "current_stage": optional(is_text), "completed_at": optional(is_time), "ended_at": optional(is_time),
    "stages_completed": list_of(is_text), "stages_remaining": list_of(is_text),
    "stages": dict_of(STAGE), "quality_metrics": dict_of(is_float), "quality_overall": optional(is_float),
    "cost_tracking": COST, "error_count": is_int, "recovery_count": is_int, "errors": list_of(ERROR),
    "progress": PROGRESS, "budget": BUDGET, "alerts": list_of(ALERT), "summary": optional(is_text),
    "claude_sessions": list_of(is_text), "outcome": OUTCOME})
METADATA = shape({"session_id": is_text, "level": LEVEL, "created_at": is_time,
                  "created_by": shape({"actor": is_text}, {"user": optional(is_text),
                                                           "claude_session": optional(is_text)})}, {
    "episode_number": optional(is_int), "topic": optional(is_text), "complexity": optional(is_int),
    "tag": optional(is_text), "budget_usd": optional(is_float), "objectives": list_of(is_text)})


def brief_of(state: dict[str, Any], metadata: dict[str, Any]) -> Brief | None:
    """The brief of an active session from its raw files; None unless both are exactly of our shape."""
    if not STATE(state) or not METADATA(metadata):
        return None
    stages: dict[str, dict[str, Any]] = state.get("stages", {})
    current = state.get("current_stage")
    if current is not None and current not in stages:  # the model's own validator refuses this
        return None
    if not all(_STAGE_NAME.fullmatch(name) for name in stages):  # `status` would fail estimating it
        return None
    status = state.get("status", "initialized")
    if status not in ACTIVE:
        return None
    progress: dict[str, Any] = state.get("progress", {})
    usd = state.get("budget", {}).get("usd")
    updated = epoch(state["last_updated"])
    assert updated is not None  # checked by STATE
    return Brief(
        session_id=state["session_id"], level=state["level"], status=status, topic=metadata.get("topic"),
        stage=current, stage_status=stages[current].get("status", "pending") if current is not None else None,
        percent=float(progress.get("percent", 0.0)), done=len(stages) - len(state.get("stages_remaining", [])),
        total=len(stages), cost=float(state.get("cost_tracking", {}).get("total_cost", 0.0)),
        budget=None if usd is None else float(usd),
        blockers=[f"#{b['id']} {b['text']}" for b in progress.get("blockers", [])],
        alerts=[f"{a['severity']} {a['kind']}: {a['message']}" for a in state.get("alerts", [])],
        tasks=[f"#{t['id']} {t['title']}" for t in progress.get("tasks_pending", [])],
        updated=updated)


# -- confined reads --------------------------------------------------------------------------------
def real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: Path) -> bytes | None:
    """The bytes of a regular file reached without a link (O_NOFOLLOW, non-blocking: a FIFO
    cannot hang us); None for anything else, or when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_object(path: Path) -> dict[str, Any] | None:
    raw = read_regular(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)  # as the store parses it (bytes: the same encoding detection)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def absent_or_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


# -- the config: validated by the full path, recognised here by its digest -------------------------
def config_digest(raw: bytes) -> str:
    import hashlib

    from session_manager import __version__

    return f"{__version__}:{hashlib.sha256(raw).hexdigest()}"


def config_trusted(claude: Path) -> bool:
    """True when there is no config (defaults), or when its bytes are the ones the full path
    last validated (a malformed config must reach the user the way the full path says it)."""
    path = claude / CONFIG_NAME
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    raw = read_regular(path)
    stamp = read_object(claude / PRIVATE / CONFIG_STAMP)
    return raw is not None and stamp is not None and stamp.get("config") == config_digest(raw)


def config_validated(claude: Path) -> None:
    """Called by the full path once `status` has loaded the config: stamp the digest of the
    bytes now on disk if they validate (pydantic is loaded already). Derived: never raises."""
    try:
        raw = read_regular(claude / CONFIG_NAME)
        if raw is None or not real_dir(claude / PRIVATE):
            return
        from session_manager.config import _parse

        _parse(raw, f".claude/{CONFIG_NAME}")  # cached: the bytes `status` has just validated
        target = claude / PRIVATE / CONFIG_STAMP
        if not absent_or_regular(target):
            return
        temporary = target.with_name(f".{CONFIG_STAMP}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, json.dumps({"config": config_digest(raw)}).encode())
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except Exception:  # noqa: BLE001 - a missing stamp only means the next hook takes the full path
        return


# -- the index ---------------------------------------------------------------------------------------
def active_ids(claude: Path) -> list[str] | None:
    """The ids of the active sessions, touched last first, from a fresh index without pending
    rows; None when the index is missing, stale, of another format, pending or unreadable."""
    import sqlite3
    from urllib.parse import quote

    from session_manager.levels import LEVELS

    private = claude / PRIVATE
    path = private / INDEX_FILE
    if not real_dir(private):
        return None
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except OSError:
        return None
    marks = {}
    for level in LEVELS.values():  # as Index._dir_marks computes them
        try:
            marks[level.dirname] = os.stat(claude / level.dirname / "sessions").st_mtime_ns
        except OSError:
            marks[level.dirname] = 0
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=1.0, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")  # one snapshot for the marks and the rows
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != INDEX_FORMAT or meta.get("dirs") != json.dumps(marks, sort_keys=True):
            return None
        rows = conn.execute("SELECT id, pending FROM sessions WHERE active = 1 OR pending IS NOT NULL"
                            " ORDER BY touched DESC, id DESC").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if any(pending is not None or not isinstance(session_id, str) for session_id, pending in rows):
        return None
    return [session_id for session_id, _ in rows]


def session_files(claude: Path, session_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, metadata) of a session, raw, read as the store reads them (no link from
    `.claude/` down, regular files); None on anything unusual."""
    from session_manager.errors import InvalidInput
    from session_manager.levels import level_of

    try:
        level = level_of(session_id)
    except (InvalidInput, KeyError):
        return None
    folder = claude / level.dirname / "sessions" / session_id
    if not (real_dir(folder.parent.parent) and real_dir(folder.parent) and real_dir(folder)):
        return None
    try:  # a change in its redo log not checkpointed yet (in flight, or left by a crash): the full path settles it
        if os.lstat(claude / PRIVATE / "redo" / f"{session_id}.log").st_size:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    state = read_object(folder / "pipeline_status.json")
    metadata = read_object(folder / "metadata.json") if state is not None else None
    return None if state is None or metadata is None else (state, metadata)


# -- the binding -------------------------------------------------------------------------------------
def already_bound(claude: Path, conversation: str, session_id: str) -> bool:
    """What `Service._bind` checks before it writes anything: the conversation's binding in
    force now (bindings.jsonl, read by the same function) is to `session_id`."""
    from session_manager.usage.bookings import load_bindings

    now = float(int(time.time()))  # the service's clock has whole seconds
    known = sorted((b.since, b.session) for b in load_bindings(claude)
                   if b.conversation == conversation and b.since <= now)
    return bool(known) and known[-1][1] == session_id


# -- the context ----------------------------------------------------------------------------------
def context(root: Path, payload: dict[str, Any], binds: list[tuple[str, str]] | None = None) -> str | None:
    """The SessionStart context exactly as the full path would give it, or None: take the full path.
    With `binds`, a binding to write (one active session, a conversation not bound to it yet) does
    not send it to the full path: the (session, conversation) pair is added for the caller to hand
    to a detached process, and the text is the one the full path gives once it is written."""
    from session_manager import quickhooks

    claude = root / ".claude"
    if not real_dir(claude / PRIVATE) or not config_trusted(claude):
        return None
    ids = active_ids(claude)
    if ids is None:
        return None
    found: list[tuple[float, Brief]] = []
    recorded: set[str] = set()  # the conversations the active sessions recorded
    for session_id in ids:
        files = session_files(claude, session_id)
        if files is None:
            return None
        brief = brief_of(*files)
        if brief is None:
            return None
        started = epoch(files[0]["started_at"])
        assert started is not None  # checked by STATE
        found.append((started, brief))
        recorded.update(files[0].get("claude_sessions", []))
    if not found:
        return ""
    if not absent_or_regular(claude / PRIVATE / "durations.json"):
        return None
    found.sort(key=lambda pair: pair[0], reverse=True)  # `status` order: started last first
    briefs = [brief for _, brief in found]
    conversation = payload.get("session_id")
    valid = isinstance(conversation, str) and bool(CLAUDE_SESSION_PATTERN.match(conversation))
    if valid and len(briefs) == 1:
        assert isinstance(conversation, str)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", conversation):  # the service refuses it: its message
            return None
        try:
            if not already_bound(claude, conversation, briefs[0].session_id):
                if binds is None:
                    return None  # a binding to write: the service does it
                binds.append((briefs[0].session_id, conversation))
                return compose(briefs, briefs[0].session_id)
        except OSError:
            return None
    bound = None
    if valid:
        # as quickhooks.bound_session, whose second step (a scan of every session folder for an
        # active one that recorded the conversation) runs only when an active session did
        bound = quickhooks.bound_by_file(root, conversation)
        if bound is None and conversation in recorded:
            bound = quickhooks.recorded_by_recent(root, conversation)
    return compose(briefs, bound[0] if bound else None)
