"""Transcript scanning and import: Claude Code's own transcripts, read incrementally into the
project's index of responses (one entry per response, never a cost booking: see bookings.py).

Claude Code writes every API response's token usage to
`<config dir>/projects/<project path, non-alphanumerics as ->/<session id>.jsonl`, and
subagents to `<session id>/subagents/agent-*.jsonl`. The config dirs are `CLAUDE_CONFIG_DIR`
(a comma-separated list is allowed), else `~/.claude` and `~/.config/claude`.

* One response is written on several lines (one per content block; older versions streamed a
  smaller `output_tokens` first), and resumed sessions replay earlier lines into a new file:
  a response is counted once, on `message.id` + `requestId`, keeping its largest totals.
* Lines flagged `isApiErrorMessage` are skipped. A line without `"usage"` is skipped before
  it is parsed (most lines are tool results and prompts); a line written with spaces
  (`"usage": {`) is still read.
* Each response keeps its cache writes split by lifetime (`cache_creation.ephemeral_1h_input_tokens`
  are priced at 2x input, the rest at 1.25x) and the `gitBranch` it was made on.
* Incremental: `.claude/.session-manager/usage-index.json` remembers, per file, the offset read
  up to and the file's size, mtime and inode; a re-run reads only bytes appended since. The
  counted responses (key, time, project, session, model, tokens) are appended to
  `usage-entries.jsonl`, so a later line for a known response is compared, not re-counted.
  Per-day totals are kept in the index, so a re-run with nothing new reads no transcript.
"""

from __future__ import annotations

import gc
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from session_manager.costs import NO_COST_MODELS

try:  # orjson parses transcript lines about twice as fast as the standard library
    from orjson import dumps as _dumps
    from orjson import loads
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps the module importable
    import json

    loads = json.loads  # type: ignore[assignment]

    def _dumps(value: Any) -> bytes:  # type: ignore[misc]
        return json.dumps(value, separators=(",", ":")).encode()


INDEX_FILE = "usage-index.json"
ENTRIES_FILE = "usage-entries.jsonl"
LOCK_FILE = "usage.lock"
INDEX_VERSION = 2  # 2: entries carry the 1-hour cache writes and the git branch
CHUNK = 8 << 20  # read transcripts 8 MiB at a time, so a huge file never sits in memory whole
MARK = b'"usage"'  # inside a JSON string the quotes are escaped, so this only finds the key

# An entry: [key, epoch seconds, project, claude session, model, input, output, cache_write,
#            cache_read, cache_write_1h (part of cache_write), git branch]
Entry = list[Any]
# A bucket key: (local day, project, claude session, model, branch)
#   -> [in, out, cw, cr, responses, first, last, cw_1h]
BucketKey = tuple[str, str, str, str, str]
NO_BRANCH = ""


def claude_dirs() -> list[Path]:
    """Claude Code's config dirs that hold a `projects/` folder."""
    env = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if env:
        candidates = [Path(part.strip()).expanduser() for part in env.split(",") if part.strip()]
    else:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        candidates = [Path.home() / ".claude", config_home / "claude"]
    seen: list[Path] = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if (resolved / "projects").is_dir() and resolved not in seen:
            seen.append(resolved)
    return seen


def project_key(path: Path) -> str:
    """The folder name Claude Code uses for a project: its path with every character other
    than a letter or digit replaced by `-` (`/home/me/my.app` -> `-home-me-my-app`)."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


@dataclass
class TranscriptFile:
    path: str
    project: str
    session: str
    stat: os.stat_result


def transcript_files(dirs: list[Path]) -> list[TranscriptFile]:
    found: list[TranscriptFile] = []
    for base in dirs:
        projects = base / "projects"
        for project in _scandir(projects):
            if not project.is_dir():
                continue
            for item in _scandir(Path(project.path)):
                if item.name.endswith(".jsonl") and item.is_file():
                    found.append(TranscriptFile(item.path, project.name, item.name[:-6], item.stat()))
                elif item.is_dir():
                    for agent in _scandir(Path(item.path) / "subagents"):
                        if agent.name.endswith(".jsonl") and agent.is_file():
                            found.append(TranscriptFile(agent.path, project.name, item.name, agent.stat()))
    return found


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


# -- parsing ----------------------------------------------------------------------------------
def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


Parsed = tuple[str | None, str, str, list[int], str]


def parse_line(line: bytes) -> Parsed | None:
    """(key, timestamp, model, [input, output, cache_write, cache_read, cache_write_1h], branch)
    of a line carrying an API response's usage, or None (not a response, an API error line, or
    unreadable)."""
    try:
        record = loads(line)
        kind = record.get("type")
        branch = record.get("gitBranch")
        if kind == "progress":  # a subagent's response relayed into the parent's file
            record = record["data"]["message"]
            kind = record.get("type")
        if kind != "assistant" or record.get("isApiErrorMessage") is True:
            return None
        message = record["message"]
        usage = message["usage"]
        stamp = record["timestamp"]
        a, b = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        c, d = usage.get("cache_creation_input_tokens", 0), usage.get("cache_read_input_tokens", 0)
        message_id = message.get("id")
        request_id = record.get("requestId")
        model = message.get("model")
        split = usage.get("cache_creation")
        hour = split.get("ephemeral_1h_input_tokens", 0) if type(split) is dict else 0
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, or not shaped like a response
        return None
    if type(a) is int and type(b) is int and type(c) is int and type(d) is int and (a | b | c | d) >= 0:
        tokens = [a, b, c, d]
    else:
        tokens = [_count(a), _count(b), _count(c), _count(d)]
    hour = min(_count(hour), tokens[2]) if hour else 0
    if hour and not tokens[2]:
        hour = 0
    tokens.append(hour)
    if type(stamp) is not str:
        return None
    key = f"{message_id}:{request_id}" if type(message_id) is str and message_id else None
    branch = branch if type(branch) is str and branch else NO_BRANCH
    return key, stamp, model if type(model) is str and model else "unknown", tokens, branch


class Days:
    """Epoch seconds -> local day, cached per 15 minutes (every UTC offset is a multiple of 15 min)."""

    def __init__(self) -> None:
        self.cache: dict[int, str] = {}

    def __call__(self, epoch: int) -> str:
        slot = epoch // 900
        day = self.cache.get(slot)
        if day is None:
            day = self.cache[slot] = time.strftime("%Y-%m-%d", time.localtime(epoch))
        return day


def _epoch(stamp: str) -> int | None:
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _tz_signature() -> str:
    return f"{os.environ.get('TZ', '')}|{time.tzname}|{time.timezone}|{time.altzone}"


# -- the index --------------------------------------------------------------------------------
@dataclass
class Ledger:
    """Every counted response and the per-day buckets, as loaded from / saved to disk."""

    files: dict[str, list[int]] = field(default_factory=dict)  # path -> [offset, size, mtime_ns, inode]
    buckets: dict[BucketKey, list[int]] = field(default_factory=dict)
    entries: dict[str, Entry] | None = None  # loaded only when something must be read
    entries_size: int = 0
    tz: str = ""


class ImportStats(BaseModel):
    """What an import read: a re-run with nothing new reads no bytes."""

    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    lines_parsed: int = Field(default=0, description="lines that carried usage and were parsed as JSON")
    responses_new: int = 0
    responses_updated: int = 0
    seconds: float = 0.0


def _load_index(folder: Path) -> Ledger:
    from session_manager.store import read_bytes

    try:
        data = loads(read_bytes(folder / INDEX_FILE))
    except (FileNotFoundError, ValueError):
        return Ledger()
    if type(data) is not dict or data.get("version") != INDEX_VERSION:
        return Ledger()
    buckets = {(b[0], b[1], b[2], b[3], b[4]): list(b[5:]) for b in data.get("buckets", [])}
    return Ledger(files=data.get("files", {}), buckets=buckets, entries_size=data.get("entries_size", 0),
                  tz=data.get("tz", ""))


def _load_entries(folder: Path, ledger: Ledger) -> dict[str, Entry]:
    """The counted responses, as of the index (bytes appended after a crash are dropped)."""
    from session_manager.store import safe_open

    entries: dict[str, Entry] = {}
    path = folder / ENTRIES_FILE
    try:
        with safe_open(path, "rb") as handle:
            raw = handle.read(ledger.entries_size)
    except FileNotFoundError:
        raw = b""
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            batch = loads(line)
        except ValueError:
            continue
        for entry in batch:
            entries[entry[0]] = entry
    return entries


def _entries_lost(folder: Path, ledger: Ledger) -> bool:
    try:
        return (folder / ENTRIES_FILE).stat().st_size < ledger.entries_size
    except FileNotFoundError:
        return ledger.entries_size > 0


def _save(folder: Path, ledger: Ledger, new_entries: list[Entry]) -> None:
    from session_manager.store import atomic_write, safe_open

    path = folder / ENTRIES_FILE
    if new_entries:
        with safe_open(path, "ab") as handle:
            handle.truncate(ledger.entries_size)  # drop a batch a crash left unindexed
            handle.seek(ledger.entries_size)
            handle.write(_dumps(new_entries) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            ledger.entries_size = handle.tell()
    buckets = [[*key, *values] for key, values in sorted(ledger.buckets.items())]
    index = {"version": INDEX_VERSION, "tz": ledger.tz, "entries_size": ledger.entries_size,
             "files": ledger.files, "buckets": buckets}
    atomic_write(folder / INDEX_FILE, _dumps(index))


def _rebuild_buckets(ledger: Ledger, entries: dict[str, Entry]) -> None:
    day_of = Days()
    buckets: dict[BucketKey, list[int]] = {}
    for entry in entries.values():
        _add(buckets, bucket_key(day_of, entry), entry, 1)
    ledger.buckets = buckets


def bucket_key(day_of: Any, entry: Entry) -> BucketKey:
    return day_of(entry[1]), entry[2], entry[3], entry[4], entry[10]


def buckets_of(entries: Any) -> dict[BucketKey, list[int]]:
    """Day buckets of some entries (e.g. only the unattributed ones)."""
    day_of = Days()
    buckets: dict[BucketKey, list[int]] = {}
    for entry in entries:
        _add(buckets, bucket_key(day_of, entry), entry, 1)
    return buckets


def _add(buckets: dict[BucketKey, list[int]], key: BucketKey, entry: Entry, sign: int) -> None:
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = [0, 0, 0, 0, 0, entry[1], entry[1], 0]
    bucket[0] += sign * entry[5]
    bucket[1] += sign * entry[6]
    bucket[2] += sign * entry[7]
    bucket[3] += sign * entry[8]
    bucket[4] += sign
    bucket[7] += sign * entry[9]
    if sign > 0:
        bucket[5] = min(bucket[5], entry[1])
        bucket[6] = max(bucket[6], entry[1])
    elif bucket[4] == 0:
        del buckets[key]


Row = tuple[Any, ...]  # (key or None, line offset, epoch, model, in, out, cw, cr, cw_1h, branch)
Scan = tuple[int, int, int, list[Row]]  # (new offset, bytes read, lines parsed, responses found)


def _scan(path: str, offset: int, seen: set[bytes]) -> Scan:
    """Read a transcript from `offset`, a chunk at a time. Lines are found from the usage
    marker outwards, so the many lines without one cost no Python work, and a line that
    repeats an already counted response byte for byte (same usage object and `requestId`:
    the other content blocks of one response, lines replayed by a resumed session) is
    skipped without being parsed. A torn last line (no newline yet) is left for next time."""
    rows: list[Row] = []
    append = rows.append
    position = offset
    size = parsed_lines = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        tail = b""
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            find = data.find
            hit = find(MARK, 0, cut)
            while hit >= 0:
                start = data.rfind(b"\n", 0, hit) + 1
                end = find(b"\n", hit)
                stop = find(b'"uuid"', hit, end)
                fingerprint = data[hit:stop if stop > 0 else end]
                if fingerprint not in seen:
                    parsed_lines += 1
                    parsed = parse_line(data[start:end])
                    if parsed is not None:
                        key, stamp, model, tokens, branch = parsed
                        epoch = _epoch(stamp)
                        if epoch is not None and not (model in NO_COST_MODELS and not any(tokens)):
                            append((key, position + start, epoch, model, *tokens, branch))
                            if b'"requestId"' in fingerprint:
                                seen.add(fingerprint)
                hit = find(MARK, end, cut)
            tail = data[cut:]
            position += cut
    return position, size, parsed_lines, rows


def _scan_batch(batch: list[tuple[str, int]]) -> list[Scan | None]:
    results: list[Scan | None] = []
    seen: set[bytes] = set()
    gc.disable()  # parsing allocates many small objects that never form cycles
    for path, offset in batch:
        try:
            results.append(_scan(path, offset, seen))
        except OSError:
            results.append(None)
    return results


PARALLEL_BYTES = 64 << 20  # below this, starting worker processes costs more than it saves


def _scan_all(todo: list[tuple[TranscriptFile, int]]) -> list[Scan | None]:
    """Scan every file, in worker processes when there is a lot to read. Results come back in
    the order of `todo`, so the outcome is the same either way."""
    jobs = [(file.path, offset) for file, offset in todo]
    pending = sum(file.stat.st_size - offset for file, offset in todo)
    workers = min(os.cpu_count() or 1, 4)
    if workers < 2 or pending < PARALLEL_BYTES or not _fork_is_safe():
        return _scan_batch(jobs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, len(jobs) // (workers * 4))
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [result for batch in pool.map(_scan_batch, batches) for result in batch]


def _fork_is_safe() -> bool:
    """Forking a process that runs other threads can deadlock the child; stay sequential then."""
    import threading

    return os.name == "posix" and threading.active_count() == 1


def import_transcripts(folder: Path, dirs: list[Path]) -> tuple[Ledger, ImportStats]:
    """Bring the ledger in `folder` up to date with the transcripts under `dirs`.
    The caller holds the usage lock."""
    started = time.perf_counter()
    ledger = _load_index(folder)
    files = transcript_files(dirs)
    todo: list[tuple[TranscriptFile, int]] = []
    for file in files:
        known = ledger.files.get(file.path)
        st = file.stat
        if known is not None and known[3] == st.st_ino and known[1] == st.st_size and known[2] == st.st_mtime_ns:
            continue
        offset = known[0] if known is not None and known[3] == st.st_ino and known[0] <= st.st_size else 0
        todo.append((file, offset))
    tz = _tz_signature()
    if not todo and ledger.tz == tz:
        return ledger, ImportStats(files_seen=len(files), seconds=round(time.perf_counter() - started, 4))

    collecting = gc.isenabled()
    gc.disable()
    try:
        if _entries_lost(folder, ledger):
            ledger = Ledger()  # the responses behind the totals are gone: count everything again
            todo = [(file, 0) for file in files]
        entries = _load_entries(folder, ledger)
        if ledger.tz != tz or (not ledger.buckets and entries):
            _rebuild_buckets(ledger, entries)
            ledger.tz = tz
        stats = ImportStats(files_seen=len(files))
        new_entries = _merge(ledger, entries, todo, _scan_all(todo), stats)
        ledger.entries = entries
        _save(folder, ledger, new_entries)
    finally:
        if collecting:
            gc.enable()
    stats.seconds = round(time.perf_counter() - started, 4)
    return ledger, stats


def _merge(ledger: Ledger, entries: dict[str, Entry], todo: list[tuple[TranscriptFile, int]],
           results: list[Scan | None], stats: ImportStats) -> list[Entry]:
    """Count each response once, keeping its largest totals; returns the entries to append."""
    day_of = Days()
    buckets = ledger.buckets
    new_entries: list[Entry] = []
    bytes_read = lines_parsed = files_read = new = updated = 0
    for (file, _offset), result in zip(todo, results, strict=True):
        if result is None:  # unreadable now (removed, permissions): try again next time
            continue
        position, size, count, rows = result
        files_read += 1
        bytes_read += size
        lines_parsed += count
        project, session = file.project, file.session
        for key, line_offset, epoch, model, a, b, c, d, hour, branch in rows:
            if key is None:  # no message id: it cannot repeat, count the line itself
                key = f"@{file.path}:{line_offset}"
            old = entries.get(key)
            if old is None:
                entry = [key, epoch, project, session, model, a, b, c, d, hour, branch]
                new += 1
            else:
                if a + b + c + d <= old[5] + old[6] + old[7] + old[8]:
                    continue
                # keep where, when and on which branch it was first counted
                entry = [key, old[1], old[2], old[3], old[4], a, b, c, d, hour, old[10]]
                _add(buckets, bucket_key(day_of, old), old, -1)
                updated += 1
            entries[key] = entry
            new_entries.append(entry)
            _add(buckets, bucket_key(day_of, entry), entry, 1)
        st = file.stat
        ledger.files[file.path] = [position, st.st_size, st.st_mtime_ns, st.st_ino]
    stats.files_read, stats.bytes_read, stats.lines_parsed = files_read, bytes_read, lines_parsed
    stats.responses_new, stats.responses_updated = new, updated
    return new_entries


def load_entries(folder: Path, ledger: Ledger) -> dict[str, Entry]:
    if ledger.entries is None:
        ledger.entries = _load_entries(folder, ledger)
    return ledger.entries


