"""Reports across sessions: counts and rates, quality, cost against budget, time, gate
failures, recurring errors, bypasses and alerts, with per-day trends.

Speed comes from a summary cache, `.claude/.session-manager/report-cache.sqlite` (see
`SummaryCache`): one compact summary per session, keyed by its `pipeline_status.json`'s mtime
(ns), size and inode, with the columns a window filters on, so only the sessions of the
window are decoded and held in memory; the session files stay the truth. Filling it (a cold
cache) reads each state file once through a strict fast reader (`_vouched`: the model's own
schema checked in Rust, the model's path only for what it cannot vouch for), summarises only
the sessions the window needs (the others are cached as stubs until a window reaches them),
and reads with two processes on two cores (`_read_many`: the forked reader then writes the
cache while the report is built, and the analytics are built beside the other sections by
`analytics.analyse_beside`; see forked.py).

Definitions (also in docs/costs-and-reports.md):
* a session is *in* a window when it started before the window ends and was last touched
  (ended, completed or updated) after it begins;
* *finished*: completed inside the window with every stage done (completed, bypassed or skipped):
  a session ended with stages left is not finished; *completion rate* = finished / sessions in the window;
* *error recovery rate*: of the sessions that met an error (a recorded failure or a failed
  quality gate), the share now finished, or in progress with no stage failed, retrying or
  escalated;
* quality: each session's latest score per metric; spread is the population standard deviation;
* cost target: each session's budget; a stage's target is its even share of that budget.
"""

from __future__ import annotations

import functools
import marshal
import math
import os
import re
import stat
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, NamedTuple, ParamSpec, TypeVar

from pydantic import BaseModel, Field

from session_manager.analytics import Analytics, analyse_beside, summary_fields
from session_manager import forked
from session_manager.config import Config
from session_manager.errors import SessionError
from session_manager.levels import LEVELS, Level, level_of
from session_manager.model import SCHEMA_VERSION, SessionStatus, Timestamp
from session_manager.store import STATE_FILE, Store, atomic_write

from orjson import dumps as _dumps  # a declared dependency
from orjson import loads as _loads


CACHE_FILE = "report-cache.sqlite"
CACHE_VERSION = 6  # bump when the summary's shape changes: older caches are ignored
ERROR_TEXT_LIMIT = 300
LIST_LIMIT = 50  # bypasses, alerts and error patterns listed in a report (counts cover them all)
FAILED_STAGE = frozenset({"failed", "retrying", "escalated"})
DONE_STATUSES = frozenset({"completed", "bypassed", "skipped"})
SESSION_STATUSES = frozenset(str(status) for status in SessionStatus)
Summary = dict[str, Any]
_P = ParamSpec("_P")
_R = TypeVar("_R")


# -- per-session summaries and their cache -------------------------------------------------------
def _ts(value: Any, _parse: Callable[[str], datetime] = datetime.fromisoformat) -> float | None:
    """The epoch of a time as the summary keeps it: whole seconds, a naive time read as UTC. The
    time comes as the model's JSON dump writes it (text) or as the fast reader validated it (a
    `datetime`)."""
    if value is None:
        return None
    moment = _parse(value) if type(value) is str else value
    if moment.microsecond:  # the model writes whole seconds
        moment = moment.replace(microsecond=0)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _num(value: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _opt_num(value: Any) -> float | None:
    """A float field of the model as its dump gives it (a JSON 1 is validated, and dumped, as 1.0)."""
    return None if value is None else _num(value)


def summarize(data: dict[str, Any], topic: str | None) -> Summary:
    """The compact facts a report needs from one session (JSON-ready), taken from the JSON of its
    `pipeline_status.json` or from the fast reader's plain data (`_vouched`), not through the
    pydantic model: a cold report spends much of its time here. The topic (from `metadata.json`)
    is kept for an active session only: the dashboard lists it for the running ones. Anything not
    shaped as written by this tool raises KeyError/TypeError/ValueError, and the caller then asks
    the model to name the problem."""
    stages: dict[str, dict[str, Any]] = data["stages"]
    costs = data["cost_tracking"]
    if data["status"] not in SESSION_STATUSES or data["level"] not in LEVELS:
        raise ValueError("unknown status or level")
    current = data.get("current_stage")
    current_state = stages.get(current) if current else None
    errors = []
    for error in data.get("errors", []):
        text = error["error"][:ERROR_TEXT_LIMIT]
        errors.append([error.get("stage"), text, _ts(error["at"]), error_pattern(text)])
    gates: dict[str, Any] = {}
    bypasses: list[list[Any]] = []
    durations: dict[str, float] = {}
    open_failures = 0
    pipeline_done = True  # the pipeline ran to its end: no stage pending, running, failed or retrying
    for name, s in stages.items():  # one pass over the stages
        status = s.get("status")
        if s.get("gate_failures"):
            gates[name] = s["gate_failures"]
        if status == "bypassed":
            bypasses.append([name, s.get("override_reason"), _ts(s.get("completed_at"))])
        elif status == "completed" and s.get("execution_seconds") is not None:
            durations[name] = _num(s["execution_seconds"])
        if status in FAILED_STAGE:
            open_failures += 1
        if status not in DONE_STATUSES:
            pipeline_done = False
    return {
        "id": data["session_id"], "level": data["level"], "status": data["status"],
        "episode": data.get("episode_number"), "topic": topic if data["status"] in ACTIVE_STATUSES else None,
        "started": _ts(data["started_at"]),
        "updated": _ts(data["last_updated"]), "completed": _ts(data.get("completed_at")),
        "ended": _ts(data.get("ended_at")), "budget": _opt_num(data.get("budget", {}).get("usd")),
        "cost": _num(costs.get("total_cost", 0.0)),
        "by_stage": {name: usd if type(usd) is float else _num(usd)
                     for name, usd in costs.get("cost_by_stage", {}).items()},
        "tokens": costs.get("tokens_used", 0), "stages": list(stages),
        "quality": {metric: value if type(value) is float else _num(value)
                    for metric, value in data.get("quality_metrics", {}).items()},
        "overall": _opt_num(data.get("quality_overall")), "errors": errors,
        "error_count": data.get("error_count", 0), "recovery_count": data.get("recovery_count", 0),
        "gates": gates, "bypasses": bypasses, "durations": durations, "open_failures": open_failures,
        "current": current, "current_status": current_state.get("status", "pending") if current_state else None,
        "progress": _num(data.get("progress", {}).get("percent", 0.0)),
        "alerts": [[a["kind"], a["severity"], a["message"]] for a in data.get("alerts", [])],
        "claude_sessions": list(data.get("claude_sessions", [])), "pipeline_done": pipeline_done,
        **summary_fields(data),  # tasks, score, learnings, blockers, stage scores and models
    }


def finished(s: Summary) -> bool:
    """Completed with its whole pipeline done: ending early never counts as finishing."""
    return bool(s["status"] == "completed" and s.get("pipeline_done"))


Stub = tuple[float, float, bool, float | None]  # (started, last touched, active, overall quality): a session
# vouched for, not yet summarised; its quality serves the comparison with the previous window (`Loaded.outside`)


def _read_summary(store: Store, session_id: str, path: str, folder: str, low: float = -math.inf,
                  high: float = math.inf, raw: bytes | None = None) -> Summary | Stub:
    """The summary of one session's state file; CorruptState (naming the problem) if it is damaged.
    A session the fast reader vouches for that is ended and outside [low, high) gets only its
    `Stub`: its summary is made the first time a report's window reaches it (`SummaryCache`).
    `raw`: the file's bytes when the caller has read them already."""
    data = _vouched(_read_confined(path) if raw is None else raw)
    if data is not None:
        try:
            started, touched = _ts(data["started_at"]), _touched(data)
            active = data["status"] in ACTIVE_STATUSES
            if started is not None and not active and not (started < high and touched >= low):
                return started, touched, active, _opt_num(data.get("quality_overall"))
            summary = summarize(data, _topic(folder) if active else None)  # shown for running sessions only
            if summary["started"] == started and _last_touch(summary) == touched:
                return summary
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
    return full_summary(store, session_id, _topic(folder))


def _touched(data: dict[str, Any]) -> float:
    """`_last_touch` of the summary this state would give, from the state's JSON."""
    return float(_ts(data.get("ended_at")) or _ts(data.get("completed_at")) or _ts(data["last_updated"]) or 0.0)


def full_summary(store: Store, session_id: str, topic: str | None) -> Summary:
    """The summary through the model: the state read, migrated and validated as every command
    reads it (CorruptState naming the problem), then dumped to JSON."""
    state = store.read_state(session_id)  # migrates an older schema, or raises naming what is wrong
    return summarize(state.model_dump(mode="json"), topic)


def fast_summary(raw: bytes | None, topic: str | None) -> Summary | None:
    """The summary straight from the state file's bytes, or None when this reader cannot vouch
    that it equals `full_summary`'s (the caller then takes that path, which names any damage)."""
    data = _vouched(raw)
    if data is None:
        return None
    try:
        return summarize(data, topic)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _vouched(raw: bytes | None) -> dict[str, Any] | None:
    """The state file's content if this reader can vouch that summarising it gives what the model's
    path gives, else None. It vouches only for a current-schema file that the model's own schema
    accepts *strictly*: pydantic-core parses and validates the bytes in Rust with no coercion, so
    every value already has the type the model would give it and the model's dump would not change
    it (`_voucher`); a NaN or an infinity is refused (the model's `allow_inf_nan=False`, and no field
    takes any value). The result is that validation's output, plain dicts, lists and scalars with
    `datetime` times: the file is parsed once. A cold report over 50,000 sessions spends most of
    its time here; this costs about half of building the model."""
    if raw is None:
        return None
    try:
        data = _voucher()(raw)
        if data.get("schema_version") != SCHEMA_VERSION:
            return None  # an older schema: the model's path migrates it
        current = data.get("current_stage")
        if current is not None and current not in data["stages"]:
            return None  # SessionState's own check (`_known_current_stage`), left out of the voucher
        return data
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # pydantic's ValidationError is a ValueError


_VOUCHER: list[Callable[[bytes], dict[str, Any]]] = []
_HARMLESS = frozenset({"_utc_times", "_known_current_stage"})  # never changes what is accepted / checked above
_KNOWN_CONFIG = frozenset({"extra_fields_behavior", "allow_inf_nan", "title", "ser_json_inf_nan"})  # the last: output only
_FIELD_KEYS = frozenset({"type", "schema", "metadata"})  # a model field with more (an alias, ...) is not plain


class _Unplain(Exception):
    """The model's schema has a part the voucher does not know how to keep equivalent."""


def _voucher() -> Callable[[bytes], dict[str, Any]]:
    """A reader of exactly what `SessionState` accepts, giving plain data: the model's own core
    schema with its models turned into typed dicts (same fields, types, constraints, defaults and
    `extra="forbid"`), its enums into the literal values they accept from JSON, and its two Python
    after-validators left out: `_utc_times` only attaches UTC to naive times (the summary reads
    naive times as UTC too) and `_known_current_stage` is checked by `_vouched`. It builds no
    model objects and calls no Python per field. Any other validator, or model option, in the
    schema makes it fall back to the model itself (then dumped to JSON), so a new rule is never
    skipped."""
    if not _VOUCHER:
        from pydantic_core import SchemaValidator

        from session_manager.model import SessionState

        try:
            validator = SchemaValidator(_plain(SessionState.__pydantic_core_schema__))
            _VOUCHER.append(lambda raw: validator.validate_json(raw, strict=True))
        except _Unplain:
            _VOUCHER.append(lambda raw: SessionState.model_validate_json(raw, strict=True).model_dump(mode="json"))
    return _VOUCHER[0]


def _plain(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_plain(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if isinstance(kind, str) and kind.startswith("function-"):
        function = schema.get("function", {}).get("function")
        if kind == "function-after" and getattr(function, "__name__", None) in _HARMLESS:
            return _plain(schema["schema"])
        raise _Unplain(kind)
    if kind == "model":
        config = schema.get("config", {})
        if not config.keys() <= _KNOWN_CONFIG or schema.get("custom_init") or schema.get("root_model"):
            raise _Unplain("model config")
        inner = schema["schema"]
        if inner.get("type") != "model-fields" or inner.get("computed_fields") or inner.get("extras_schema"):
            raise _Unplain("model")
        fields = {}
        for name, field in inner["fields"].items():
            if field.get("type") != "model-field" or not field.keys() <= _FIELD_KEYS:
                raise _Unplain(f"field {name}")
            checked = _plain(field["schema"])
            fields[name] = {"type": "typed-dict-field", "schema": checked, "required": checked.get("type") != "default"}
        plain = {"type": "typed-dict", "fields": fields, "config": config,
                 "extra_behavior": config.get("extra_fields_behavior", "ignore")}
        if "ref" in schema:
            plain["ref"] = schema["ref"]
        return plain
    if kind == "any":  # would let a NaN or an infinity through, which the model's path refuses
        raise _Unplain("any")
    if kind == "enum":  # from JSON an enum accepts exactly its values: the literal of them gives plain text
        if schema.get("sub_type") != "str" or schema.get("missing") or not schema.keys() <= {
                "type", "cls", "members", "sub_type", "ref", "metadata"}:
            raise _Unplain("enum")
        literal = {"type": "literal", "expected": [member.value for member in schema["members"]]}
        if "ref" in schema:
            literal["ref"] = schema["ref"]
        return literal
    # a serializer is not part of validation; the class, functions and default values are kept as they are
    plain = {key: value if key in ("serialization", "cls", "function", "default", "default_factory") else _plain(value)
             for key, value in schema.items()}
    if kind == "default":  # a default is given as is, not validated: give it as plain data too
        if "default" in schema:
            plain["default"] = _plain_value(schema["default"])
        if "default_factory" in schema:
            if schema.get("default_factory_takes_data"):
                raise _Unplain("default factory")
            factory = schema["default_factory"]
            plain["default_factory"] = lambda: _plain_value(factory())
    return plain


def _plain_value(value: Any) -> Any:
    """A model's default as the voucher gives data: an enum as its value, a model as its JSON dump."""
    from enum import Enum

    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _read_confined(path: str) -> bytes | None:
    """The bytes of a file inside a session folder just checked (lstat) to be a real folder under a
    guarded level: opened without following a link or blocking on a FIFO, and only if regular.
    None when it cannot be read so (the full path then says why). `store.read_bytes` does the same
    with a pathlib walk of every parent, which a cold report would pay 20,000 times."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        return _read_open(fd, info)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_open(fd: int, info: os.stat_result) -> bytes | None:
    """The bytes of an open regular file of `info`'s size (more if it grew since)."""
    try:
        first = os.read(fd, info.st_size + 1)
        if len(first) <= info.st_size:  # a short read of a regular file: its end
            return first
        chunks = [first]
        while chunks[-1]:  # the file grew since fstat
            chunks.append(os.read(fd, 1 << 16))
        return b"".join(chunks)
    except OSError:
        return None


def _topic(folder: str) -> str | None:
    raw = _read_confined(folder + "/metadata.json")
    if raw is None:
        return None
    try:
        data = _loads(raw)
    except (ValueError, RecursionError):
        return None
    topic = data.get("topic") if isinstance(data, dict) else None
    return topic if isinstance(topic, str) else None


def _gc_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `fn` with Python's cycle collector paused. Summaries are trees of dicts, lists and
    scalars (no cycles) and a report allocates hundreds of thousands of them while holding the
    earlier ones: every collection would walk all that is held, a third of a cold report's time.
    Reference counting still frees everything as usual; the collector resumes afterwards, with
    what was built counted as old (a young collection over 35,000 summaries took 0.2 s)."""
    import gc

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                # what was built lives until the report is done: counted as old (the oldest
                # generation, O(1)), so the next young collections do not walk it all again
                gc.freeze()
                gc.unfreeze()
                gc.enable()

    return paused


Outside = tuple[float, float, float | None]  # (started, last touched, overall quality) of a session not summarised


class Loaded(NamedTuple):
    """What `load_summaries` read: the summaries of the window (and of every active session), the
    ids whose state file is unreadable, and three columns of each other readable session: enough
    to compare the window with the one before it (`analytics.analyse`) without decoding them."""

    summaries: list[Summary]
    unreadable: list[str]
    outside: list[Outside]


@_gc_paused
def load_summaries(store: Store, levels: Iterable[Level] | None = None, since: float | None = None,
                   until: float | None = None) -> Loaded:
    """The summaries of the sessions (of `levels`) in the window [since, until) (see `in_window`),
    plus every active one; all sessions when no window is given. Also the ids whose state file is
    unreadable, and the columns of the others (`Loaded`). Streams: a summary is decoded only when
    its session is in the window, so memory follows the window, not the history (see `SummaryCache`)."""
    store.redo.checkpoint_all()  # a change a crash left in a redo log reaches its files first (see redo.py)
    wanted = list(levels) if levels else None
    low = since if since is not None else -math.inf
    high = until if until is not None else math.inf
    summaries: list[Summary] = []
    unreadable: list[str] = []
    outside: list[Outside] = []
    with SummaryCache(store) as cache:
        known = cache.keys()
        fetch: dict[str, tuple[str, str, str]] = {}  # id -> (key, state file, folder) of cache hits in the window
        jobs: list[Job] = []  # sessions the cache has nothing (current) for
        present: dict[str, int] = {}  # id -> its place in the listing
        listed: list[str] = []  # no regular state file found there (in the listing's order)
        for level in wanted or list(LEVELS.values()):
            folder = store.level_dir(level)
            base = str(folder)
            try:
                store.guard_level(level)  # a linked level or sessions folder is damage, never followed
                with os.scandir(folder) as entries:  # the entry types come with the listing: no lstat each
                    folders = {entry.name: entry.is_dir(follow_symlinks=False) for entry in entries}
            except FileNotFoundError:
                continue
            except (OSError, SessionError):
                continue
            for session_id in _session_ids(list(folders)):
                present[session_id] = len(present)
                where = f"{base}/{session_id}"  # a plain join: os.path.join costs more than the stat
                path = f"{where}/{STATE_FILE}"
                if not folders[session_id]:  # a link or a file where a session folder belongs
                    listed.append(session_id)
                    continue
                hit = known.get(session_id)
                if hit is None:  # nothing cached: the reader takes the key from the file it opens
                    jobs.append((session_id, "", path, where))
                    continue
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode):
                        raise OSError("not a regular file")
                except OSError:
                    listed.append(session_id)
                    continue
                key = _key(st)
                if hit[0] == key:
                    if hit[3] or (hit[1] < high and hit[2] >= low):
                        fetch[session_id] = (key, path, where)
                    else:
                        outside.append((hit[1], hit[2], hit[4]))
                    continue
                jobs.append((session_id, key, path, where))
        for session_id, key, summary in _read_many(store, jobs, low, high, cache):  # cached as they are read
            if summary is None:
                (unreadable if key else listed).append(session_id)
            elif isinstance(summary, tuple):
                outside.append((summary[0], summary[1], summary[3]))
            elif summary["status"] in ACTIVE_STATUSES or (summary["started"] < high and _last_touch(summary) >= low):
                summaries.append(summary)
            else:
                outside.append((summary["started"], _last_touch(summary), summary["overall"]))
        unreadable[:0] = sorted(listed, key=present.__getitem__)  # first, as when the listing stat'ed each
        found, missing = cache.fetch(list(fetch))
        summaries += found
        for session_id in missing:  # a stub the window now reaches, or a row of the wrong shape
            key, path, where = fetch[session_id]
            try:
                summary = _read_summary(store, session_id, path, where)
            except SessionError:
                unreadable.append(session_id)
                continue
            assert not isinstance(summary, tuple)  # no window given: always a summary
            cache.put(session_id, key, summary)
            summaries.append(summary)
        cache.drop([session_id for session_id in known if session_id not in present
                    and (wanted is None or level_of(session_id) in wanted)])
    # one order whatever the cache held (cold, warm, stubs summarised late): ties in the analytics
    # (the first and last session of a recurring blocker, ...) then come out the same every time
    summaries.sort(key=itemgetter("started", "id"))
    return Loaded(summaries, unreadable, outside)


Job = tuple[str, str, str, str]  # (session id, cache key, state file, folder)
Read = tuple[str, str, Summary | Stub | None]  # (session id, cache key, what was read: None = unreadable)
PARALLEL_FROM = 2000  # sessions to read before a second process is worth its fork
SPLIT = 50  # percent of the jobs this process reads; the forked child reads the rest


def _read_many(store: Store, jobs: list[Job], low: float, high: float,
               cache: SummaryCache | None = None) -> list[Read]:
    """`_read_summary` of every job, each also kept in `cache` when one is given. With many to read
    (a cold cache: the first report after an upgrade, a fresh clone) and a second core, a forked
    child (`forked.Forked`) reads the last part while this process reads the rest (`SPLIT`). It
    answers with what it read (marshal: the same interpreter on both sides), is sent what this
    process read, and writes every cache row through its own connection while this process goes
    on to build the report (`forked.settle` waits for it). The cache's connection is closed across
    the fork (a sqlite connection must not cross one). If the child fails, this process reads its
    part and keeps every row itself."""
    child: forked.Forked | None = None
    half = len(jobs) * SPLIT // 100
    if len(jobs) >= PARALLEL_FROM and forked.available():
        def job(channel: forked.Channel) -> None:
            reads = _read_jobs(store, jobs[half:], low, high)
            channel.answer(marshal.dumps(reads))
            mine = channel.receive()
            if mine is not None:
                os.nice(10)  # the report being built comes first: the rows are for the next one
                with SummaryCache(store) as own:
                    for read in [*marshal.loads(mine), *reads]:  # the parent's first: the order of the jobs
                        own.keep(read)

        reopen = cache is not None and cache.suspend()
        child = forked.Forked.start(job)
        if reopen and cache is not None:
            cache.resume()
    if child is None:
        reads = _read_jobs(store, jobs, low, high)
    else:
        reads = _read_jobs(store, jobs[:half], low, high)
        cached = cache is not None and cache.conn is not None
        handed = child.send(marshal.dumps(reads) if cached else None)  # sent while the child may still be reading
        theirs = _their_reads(child, len(jobs) - half)
        if theirs is not None and handed:  # the child writes every row: nothing left to keep here
            forked.behind(child)
            return reads + theirs
        child.wait()
        reads += theirs if theirs is not None else _read_jobs(store, jobs[half:], low, high)
    if cache is not None:
        for read in reads:
            cache.keep(read)
    return reads


def _their_reads(child: forked.Forked, count: int) -> list[Read] | None:
    """The `count` reads a forked reader answered with, or None if it failed or answered something else."""
    answer = child.answer()
    try:
        theirs = marshal.loads(answer) if answer is not None else None
    except (ValueError, EOFError, TypeError):
        return None
    return theirs if isinstance(theirs, list) and len(theirs) == count else None


def _read_jobs(store: Store, jobs: list[Job], low: float, high: float) -> list[Read]:
    """A job whose key is "" (a session the cache does not know) was not stat'ed by the listing:
    its key comes from the file as it is opened, and ("", None) says no regular file is there."""
    reads: list[Read] = []
    for session_id, key, path, folder in jobs:
        raw = None
        if not key:
            raw, key = _read_keyed(path)
            if not key:
                reads.append((session_id, "", None))
                continue
        try:
            reads.append((session_id, key, _read_summary(store, session_id, path, folder, low, high, raw)))
        except SessionError:
            reads.append((session_id, key, None))
    return reads


def _key(info: os.stat_result) -> str:
    """The cache key of a state file: it changes with every write (an atomic write makes a new inode)."""
    return f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}"


def _read_keyed(path: str) -> tuple[bytes | None, str]:
    """(the bytes, the cache key) of a state file, from one open and fstat; ("" as the key) when no
    regular file is there, as `lstat` would say; None as the bytes when it cannot be read so."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        try:
            info = os.lstat(path)
        except OSError:
            return None, ""
        return None, _key(info) if stat.S_ISREG(info.st_mode) else ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, ""
        return _read_open(fd, info), _key(info)
    except OSError:
        return None, ""
    finally:
        os.close(fd)


ACTIVE_STATUSES = frozenset({"initialized", "in_progress", "failed"})
CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries(id TEXT PRIMARY KEY, key TEXT NOT NULL, started REAL NOT NULL,
    touched REAL NOT NULL, active INTEGER NOT NULL, overall REAL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
Row = tuple[str, str, float, float, int, float | None, Summary | None]  # a cache row to write; None: a stub


def _session_ids(names: list[str]) -> list[str]:
    from session_manager.levels import looks_like_session_id

    return [name for name in names if not name.startswith(".") and looks_like_session_id(name)]


class SummaryCache:
    """The summary cache, `.claude/.session-manager/report-cache.sqlite`: one compact row per
    session (its summary as JSON, and the columns a window filters on), keyed by its
    `pipeline_status.json`'s mtime (ns), size and inode. Every run stats every state file and
    re-reads any whose key changed (an atomic write always makes a new inode), so a stale
    summary is never believed. A cache that cannot be opened or read is thrown away and rebuilt;
    a read-only project gets its report without one.

    Rows are written when the cache is closed, or, after a cold read with a second core, by the
    forked reader while this process builds the report (`_read_many`); `forked.settle` waits for
    that, as does the next `SummaryCache` opened in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.suspended = False
        self.conn: Any = None
        self.writes: list[Row] = []

    def __enter__(self) -> SummaryCache:
        import sqlite3

        forked.settle()  # rows an earlier report is still writing land first
        try:
            path = self.store.private_file(CACHE_FILE)
        except (OSError, SessionError):
            return self
        for attempt in range(2):
            try:
                self.conn = sqlite3.connect(path, timeout=self.store.lock_timeout, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=OFF")
                self.conn.executescript(CACHE_SCHEMA)
                version = self.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                if version != (str(CACHE_VERSION),):  # another shape: start again
                    self.conn.executescript("DROP TABLE summaries;" + CACHE_SCHEMA + "INSERT OR REPLACE INTO meta"
                                            f" VALUES ('version', '{CACHE_VERSION}');")
                return self
            except sqlite3.DatabaseError:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 0:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
            except OSError:
                self.conn = None
                return self
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self._flush()
        if self.conn is not None:  # a write that failed (a full disk) closed it already
            self.conn.close()
            self.conn = None

    def suspend(self) -> bool:
        """Write what is pending and close the connection (before a fork); True if there was one."""
        if self.conn is None:
            return False
        self._flush()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.suspended = True
        return True

    def resume(self) -> None:
        """Open the connection again after `suspend` (if it had one)."""
        if self.suspended:
            self.suspended = False
            self.__enter__()

    def keep(self, read: Read) -> None:
        """Put what `_read_summary` gave: a summary, a stub, or nothing for an unreadable file."""
        session_id, key, value = read
        if isinstance(value, tuple):
            self.put_stub(session_id, key, value)
        elif value is not None:
            self.put(session_id, key, value)

    def _guarded(self, fn: Any, default: Any) -> Any:
        import sqlite3

        if self.conn is None:
            return default
        try:
            return fn()
        except sqlite3.Error:
            self.conn.close()
            self.conn = None
            return default

    def keys(self) -> dict[str, tuple[str, float, float, int, float | None]]:
        """{id: (key, started, last touched, active, overall quality)} of every cached summary."""
        rows = self._guarded(lambda: self.conn.execute(
            "SELECT id, key, started, touched, active, overall FROM summaries").fetchall(), [])
        return {row[0]: row[1:] for row in rows}

    def fetch(self, ids: list[str]) -> tuple[list[Summary], list[str]]:
        """The cached summaries of `ids`, and the ids it has no summary for (a stub, a row of the
        wrong shape, or none: the caller reads those sessions again)."""
        found: list[Summary] = []
        bad: list[str] = []
        seen: set[str] = set()
        pipelines: dict[tuple[str, ...], list[str]] = {}  # one list per pipeline (summaries only read it): 20 MB
        for offset in range(0, len(ids), 500):
            chunk = ids[offset:offset + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._guarded(lambda: self.conn.execute(
                f"SELECT id, data FROM summaries WHERE id IN ({marks})", chunk).fetchall(), [])
            for session_id, data in rows:
                seen.add(session_id)
                try:
                    summary = _loads(data) if data else None
                except (ValueError, RecursionError):
                    summary = None
                if isinstance(summary, dict) and _summary_shaped(summary) and _share_pipeline(summary, pipelines):
                    found.append(summary)
                else:
                    bad.append(session_id)
        return found, bad + [session_id for session_id in ids if session_id not in seen]

    def put_stub(self, session_id: str, key: str, stub: Stub) -> None:
        """A session vouched for but not summarised (outside the window): its columns, no data."""
        started, touched, active, overall = stub
        self.writes.append((session_id, key, started, touched, int(active), overall, None))

    def put(self, session_id: str, key: str, summary: Summary) -> None:
        self.writes.append((session_id, key, summary["started"], _last_touch(summary),
                            int(summary["status"] in ACTIVE_STATUSES), summary["overall"], summary))

    def drop(self, ids: list[str]) -> None:
        if ids:
            self._guarded(lambda: self.conn.executemany("DELETE FROM summaries WHERE id = ?",
                                                        [(i,) for i in ids]), None)

    def _flush(self) -> None:
        writes, self.writes = self.writes, []
        if writes:
            def run() -> None:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT OR REPLACE INTO summaries VALUES (?,?,?,?,?,?,?)",
                                      [(*row[:6], b"" if row[6] is None else _dumps(row[6])) for row in writes])
                self.conn.execute("COMMIT")

            self._guarded(run, None)


_SUMMARY_KEYS = frozenset({"id", "level", "status", "started", "updated", "cost", "by_stage", "stages", "quality",
                           "errors", "gates", "bypasses", "durations", "alerts", "claude_sessions", "pipeline_done"})


def _share_pipeline(summary: Summary, pipelines: dict[tuple[str, ...], list[str]]) -> bool:
    """Give `summary` the one list of its pipeline's stages that `pipelines` keeps (50,000 warm
    summaries of a few pipelines held 50,000 copies); False when its stages are not a list of names."""
    stages = summary["stages"]
    if type(stages) is not list or not all(type(stage) is str for stage in stages):
        return False
    summary["stages"] = pipelines.setdefault(tuple(stages), stages)
    return True


def _summary_shaped(summary: dict[str, Any]) -> bool:
    return _SUMMARY_KEYS <= summary.keys() and summary["status"] in SESSION_STATUSES


# -- statistics -------------------------------------------------------------------------------
class Stat(BaseModel):
    """n values: mean, population standard deviation, median, min and max (None when n is 0)."""

    n: int = 0
    mean: float | None = None
    stdev: float | None = None
    median: float | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: list[float], digits: int = 4) -> Stat:
        if not values:
            return cls()
        mean = math.fsum(values) / len(values)
        spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        return cls(n=len(values), mean=round(mean, digits), stdev=round(spread, digits),
                   median=round(statistics.median(values), digits), min=round(min(values), digits),
                   max=round(max(values), digits))


_NORMALISERS = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<id>"),
    (re.compile(r"\b(?:ep_\d+|dev|plan|code)_\d{8}_[a-z0-9-]+(?:_\d+)?\b"), "<session>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"(?:[a-z]:)?[\w.~@-]*(?:[\\/][\w.~@-]+)+[\\/]?"), "<path>"),
    (re.compile(r"\"[^\"]*\"|(?<!\w)'[^']*'(?!\w)|`[^`]*`"), "<str>"),
    (re.compile(r"\b[a-z]+_[a-z0-9]{8,}\b"), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


_NEEDS = ["-", "_", ":", "/\\", "\"'`", "_", "", ""]  # per normaliser: it matches only if one of these is in the text


def error_pattern(message: str) -> str:
    """What similar error messages have in common: ids, paths, quoted text and numbers become
    placeholders, so `timeout after 30s on /a/x.mp3` and `timeout after 45s on /b/y.mp3`
    group as `timeout after <n>s on <path>`."""
    text = message.strip().lower()
    for (pattern, placeholder), needs in zip(_NORMALISERS, _NEEDS):
        # a pattern that needs a character the text lacks cannot match (placeholders add none)
        if not needs or any(char in text for char in needs):
            text = pattern.sub(placeholder, text)
    return " ".join(text.split())


# -- the report model -----------------------------------------------------------------------------
class SessionCounts(BaseModel):
    run: int = Field(0, description="sessions in the window")
    started: int = 0
    finished: int = Field(0, description="completed inside the window")
    in_progress: int = 0
    initialized: int = 0
    failed: int = 0
    abandoned: int = 0
    completed: int = 0
    completion_rate: float | None = Field(None, description="finished / run")
    with_errors: int = Field(0, description="sessions that met a failure or a failed quality gate")
    recovered: int = 0
    error_recovery_rate: float | None = Field(None, description="recovered / with_errors")


class StageCost(BaseModel):
    stage: str
    total_usd: float
    mean_usd: float = Field(description="mean over the sessions that spent on this stage")
    sessions: int
    share: float = Field(description="share of all cost in the window")
    target_usd: float | None = Field(None, description="mean even share of the session budgets")


class BranchCost(BaseModel):
    branch: str = Field(description="the git branch the responses were made on ('' when none was recorded)")
    usd: float
    sessions: int


class CostSummary(BaseModel):
    total_usd: float = 0.0
    per_session: Stat = Field(default_factory=Stat)
    target_usd: float | None = Field(None, description="mean budget of the sessions that have one")
    vs_target: float | None = Field(None, description="mean cost / mean target (1.0 = on target)")
    over_budget: int = 0
    near_budget: int = Field(0, description="at or above the cost alert ratio, under the budget")
    by_stage: list[StageCost] = Field(default_factory=list)
    unassigned_usd: float = Field(0.0, description="cost not booked to a stage (e.g. Claude Code usage)")
    usage_by_stage: dict[str, float] = Field(default_factory=dict,
                                             description="Claude Code usage booked per stage ('' = no stage)")
    by_branch: list[BranchCost] = Field(default_factory=list, description="Claude Code usage per git branch")
    session_branches: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per session: its Claude Code usage per git branch")


class GateFailures(BaseModel):
    stage: str
    failures: int
    sessions: int


class ErrorPattern(BaseModel):
    pattern: str
    count: int
    sessions: int
    stages: list[str]
    example: str
    last_seen: Timestamp


class Bypass(BaseModel):
    session_id: str
    stage: str
    reason: str | None
    at: Timestamp | None = None


class AlertItem(BaseModel):
    session_id: str
    kind: str
    severity: str
    message: str


class DayPoint(BaseModel):
    day: str
    sessions: int = 0
    finished: int = 0
    cost_usd: float = 0.0
    budget_usd: float = 0.0
    quality: float | None = None


class Report(BaseModel):
    """Sessions of a period: how many ran and finished, how good, how costly, what failed."""

    period: str
    since: Timestamp
    until: Timestamp
    level: str | None = None
    generated_at: Timestamp
    sessions: SessionCounts
    quality: dict[str, Stat] = Field(default_factory=dict, description="per metric, plus `overall`")
    cost: CostSummary
    time_to_completion_seconds: Stat
    stage_seconds: dict[str, Stat] = Field(default_factory=dict)
    gate_failures: list[GateFailures] = Field(default_factory=list)
    recurring_errors: list[ErrorPattern] = Field(default_factory=list)
    errors: int = Field(0, description="failures recorded inside the window")
    bypasses: list[Bypass] = Field(default_factory=list, description="the latest 50")
    bypass_count: int = 0
    alerts: list[AlertItem] = Field(default_factory=list, description="critical first, at most 50")
    alert_counts: dict[str, int] = Field(default_factory=dict, description="by `kind/severity`")
    trend: list[DayPoint] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list, description="sessions whose state file could not be read")
    analytics: Analytics | None = Field(None, description="seed 003's lines, seed 000's analytics, findings, forecast")


# -- building it ------------------------------------------------------------------------------------
def window(period: str, since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """`today` starts at local midnight; `week` and `month` are the last 7 and 30 days.
    An explicit since/until wins."""
    # times are stored to the second: without an explicit end, the window runs through the
    # current second, so a session started a moment ago is counted
    end = until or now.replace(microsecond=0) + timedelta(seconds=1)
    if since is not None:
        return since, end
    if period == "today":
        local = end.astimezone()
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC), end
    return end - timedelta(days=7 if period == "week" else 30), end


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(epoch))


def _last_touch(s: Summary) -> float:
    return float(s["ended"] or s["completed"] or s["updated"])


def in_window(summaries: list[Summary], low: float, high: float) -> list[Summary]:
    return [s for s in summaries if s["started"] < high and (s["ended"] or s["completed"] or s["updated"]) >= low]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@_gc_paused
def build(loaded: Loaded, period: str, since: datetime, until: datetime, level: str | None,
          now: datetime, cost_alert_ratio: float, config: Config | None = None) -> Report:
    summaries = loaded.summaries
    low, high = since.timestamp(), until.timestamp()
    chosen = in_window(summaries, low, high)

    def inside(epoch: float | None) -> bool:
        return epoch is not None and low <= epoch < high

    positions = stage_positions(chosen)
    recurring_of = functools.cache(lambda: _recurring(chosen, inside))
    analytics = analyse_beside(summaries, chosen, since, until, level, now, lambda: recurring_of()[0], positions,
                               config, loaded.outside, _day_cache())  # on the other core while this goes on
    recurring, error_total = recurring_of()
    # one pass over the window's sessions gathers what the sections below need, in the window's order
    status: Counter[str] = Counter()
    started = troubled = recovered = 0
    done: list[float] = []  # time to completion of the sessions finished inside the window
    metrics: dict[str, list[float]] = defaultdict(list)
    costs: list[float] = []
    budgets: list[float] = []
    ratios: list[float] = []
    by_stage: dict[str, list[float]] = defaultdict(list)
    stage_targets: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    gates: dict[str, list[int]] = defaultdict(list)
    bypassed: list[tuple[str, str, str | None, float | None]] = []
    raised: list[tuple[str, str, str, str]] = []
    for s in chosen:
        state, begun, completed, names = s["status"], s["started"], s["completed"], s["stages"]
        status[state] += 1
        if low <= begun < high:
            started += 1
        ended_well = state == "completed" and s.get("pipeline_done")  # `finished`
        if ended_well and completed is not None and low <= completed < high:
            done.append(completed - begun)
        if s["error_count"] or s["gates"]:
            troubled += 1
            if ended_well or (state == "in_progress" and not s["open_failures"]):
                recovered += 1
        for metric, value in s["quality"].items():
            metrics[metric].append(value)
        if s["overall"] is not None:
            metrics["overall"].append(s["overall"])
        costs.append(s["cost"])
        budget = s["budget"]
        if budget:
            budgets.append(budget)
            ratios.append(s["cost"] / budget)
            if names:
                share = budget / len(names)
                for stage in names:
                    stage_targets[stage].append(share)
        for stage, usd in s["by_stage"].items():
            by_stage[stage].append(usd)
        for stage, value in s["durations"].items():
            seconds[stage].append(value)
        for stage, failures in s["gates"].items():
            gates[stage].append(failures)
        for stage, reason, at in s["bypasses"]:
            if at is None or low <= at < high:
                bypassed.append((s["id"], stage, reason, at))
        for kind, severity, message in s["alerts"]:
            raised.append((s["id"], kind, severity, message))

    finished_count = len(done)
    counts = SessionCounts(
        run=len(chosen), started=started, finished=finished_count, in_progress=status["in_progress"],
        initialized=status["initialized"], failed=status["failed"], abandoned=status["abandoned"],
        completed=status["completed"], completion_rate=_rate(finished_count, len(chosen)),
        with_errors=troubled, recovered=recovered, error_recovery_rate=_rate(recovered, troubled))
    quality = {metric: Stat.of(values) for metric, values in sorted(metrics.items())}
    total = round(sum(costs), 6)
    cost = CostSummary(total_usd=total, per_session=Stat.of(costs, 6),
                       target_usd=round(statistics.fmean(budgets), 6) if budgets else None)
    if cost.target_usd and cost.per_session.mean is not None:
        cost.vs_target = round(cost.per_session.mean / cost.target_usd, 4)
    cost.over_budget = sum(1 for ratio in ratios if ratio >= 1.0)
    cost.near_budget = sum(1 for ratio in ratios if cost_alert_ratio <= ratio < 1.0)
    staged = 0.0
    for stage, values in by_stage.items():
        spent = sum(values)
        staged += spent
        targets = stage_targets.get(stage)
        cost.by_stage.append(StageCost(
            stage=stage, total_usd=round(spent, 6), mean_usd=round(spent / len(values), 6), sessions=len(values),
            share=round(spent / total, 4) if total else 0.0,
            target_usd=round(statistics.fmean(targets), 6) if targets else None))
    cost.by_stage.sort(key=lambda c: (positions.get(c.stage, 10_000), c.stage))
    cost.unassigned_usd = round(max(0.0, total - staged), 6)

    time_to_completion = Stat.of(done, 1)
    stage_seconds = {stage: Stat.of(seconds[stage], 1)
                     for stage in sorted(seconds, key=lambda n: (positions.get(n, 10_000), n))}

    gate_failures = sorted((GateFailures(stage=stage, failures=sum(v), sessions=len(v)) for stage, v in gates.items()),
                           key=lambda g: (-g.failures, g.stage))

    bypassed.sort(key=lambda b: (-(b[3] or 0), b[0]))  # the latest first
    bypasses = [Bypass(session_id=sid, stage=stage, reason=reason, at=datetime.fromtimestamp(at, UTC) if at else None)
                for sid, stage, reason, at in bypassed[:LIST_LIMIT]]
    alert_counts = dict(sorted(Counter(f"{kind}/{severity}" for _sid, kind, severity, _m in raised).items()))
    raised.sort(key=lambda a: (a[2] != "critical", a[0]))  # critical first
    alerts = [AlertItem(session_id=sid, kind=kind, severity=severity, message=message)
              for sid, kind, severity, message in raised[:LIST_LIMIT]]

    return Report(period=period, since=since, until=until, level=level, generated_at=now, sessions=counts,
                  quality=quality, cost=cost, time_to_completion_seconds=time_to_completion,
                  stage_seconds=stage_seconds, gate_failures=gate_failures, recurring_errors=recurring,
                  errors=error_total, bypasses=bypasses, bypass_count=len(bypassed), alerts=alerts,
                  alert_counts=alert_counts,
                  trend=trend(chosen, since, until, inside), unreadable=loaded.unreadable,
                  analytics=analytics())


def stage_positions(summaries: list[Summary]) -> dict[str, int]:
    """Each stage's earliest position in any pipeline, so tables follow pipeline order."""
    positions: dict[str, int] = {}
    for stages in {tuple(s["stages"]) for s in summaries}:  # a few pipelines, many sessions
        for index, stage in enumerate(stages):
            if index < positions.get(stage, 10_000):
                positions[stage] = index
    return positions


def _recurring(summaries: list[Summary], inside: Any) -> tuple[list[ErrorPattern], int]:
    groups: dict[str, dict[str, Any]] = {}
    total = 0
    for s in summaries:
        for stage, message, at, pattern in s["errors"]:
            if not inside(at):
                continue
            total += 1
            group = groups.setdefault(pattern, {"count": 0, "sessions": set(), "stages": set(), "example": message,
                                                "last": at})
            group["count"] += 1
            group["sessions"].add(s["id"])
            if stage:
                group["stages"].add(stage)
            if at >= group["last"]:
                group["last"], group["example"] = at, message
    found = [ErrorPattern(pattern=p, count=g["count"], sessions=len(g["sessions"]), stages=sorted(g["stages"]),
                          example=g["example"], last_seen=datetime.fromtimestamp(g["last"], UTC))
             for p, g in groups.items() if g["count"] >= 2]
    found.sort(key=lambda e: (-e.count, -e.sessions, e.pattern))
    return found[:LIST_LIMIT], total


def trend(summaries: list[Summary], since: datetime, until: datetime, inside: Any) -> list[DayPoint]:
    """One point per local day of the window: sessions started, finished, their cost and budget
    (by start day) and their mean overall quality."""
    days: list[str] = []
    day = since.astimezone().date()
    last = (until - timedelta(microseconds=1)).astimezone().date()
    while day <= last and len(days) < 400:
        days.append(day.isoformat())
        day += timedelta(days=1)
    sums = {d: [0, 0, 0.0, 0.0] for d in days}  # sessions, finished, cost, budget
    quality: dict[str, list[float]] = defaultdict(list)
    day_of = _day_cache()
    for s in summaries:
        day = day_of(s["started"])
        start = sums.get(day)
        if start is not None:
            start[0] += 1
            start[2] += s["cost"]
            start[3] += s["budget"] or 0.0
            if s["overall"] is not None:
                quality[day].append(s["overall"])
        if s["status"] == "completed" and s.get("pipeline_done") and inside(s["completed"]):  # `finished`
            done = sums.get(day_of(s["completed"]))
            if done is not None:
                done[1] += 1
    return [DayPoint(day=d, sessions=v[0], finished=v[1], cost_usd=round(v[2], 6), budget_usd=round(v[3], 6),
                     quality=round(statistics.fmean(quality[d]), 4) if quality.get(d) else None)
            for d, v in sums.items()]


def _day_cache() -> Any:
    """Epoch seconds -> local day, cached per 15 minutes (UTC offsets are multiples of 15 min)."""
    cache: dict[int, str] = {}

    def day_of(epoch: float) -> str:
        slot = int(epoch // 900)
        found = cache.get(slot)
        if found is None:
            found = cache[slot] = _day(slot * 900)
        return found

    return day_of


# -- Claude Code usage from the bookings ledger (per stage, per branch) ----------------------------------
Figures = dict[str, dict[str, dict[str, float]]]  # session -> "branch"/"stage" -> name -> usd


def usage_stage_costs(figures: Figures, session_ids: Iterable[str]) -> dict[str, float]:
    """The Claude Code usage booked to each stage, over the given sessions."""
    totals: dict[str, float] = defaultdict(float)
    for session_id in session_ids:
        for stage, usd in figures.get(session_id, {}).get("stage", {}).items():
            totals[stage] += usd
    return {stage: round(usd, 6) for stage, usd in sorted(totals.items())}


def branch_costs(figures: Figures, session_ids: Iterable[str]) -> list[BranchCost]:
    """The Claude Code usage booked per git branch, over the given sessions, costliest first."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for session_id in session_ids:
        for branch, usd in figures.get(session_id, {}).get("branch", {}).items():
            totals[branch][0] += usd
            totals[branch][1] += 1
    rows = [BranchCost(branch=b, usd=round(v[0], 6), sessions=int(v[1])) for b, v in totals.items()]
    return sorted(rows, key=lambda r: (-r.usd, r.branch))


def session_branches(figures: Figures, session_ids: Iterable[str]) -> dict[str, dict[str, float]]:
    """The branch column of a session table: each session's usage cost per git branch."""
    return {sid: {b: round(usd, 6) for b, usd in sorted(figures[sid]["branch"].items())}
            for sid in session_ids if sid in figures}


def add_usage_figures(report: Report, summaries: list[Summary], figures: Figures) -> Report:
    """Fill the report's usage-per-stage and per-branch figures for the sessions in its window."""
    low, high = report.since.timestamp(), report.until.timestamp()
    # only the sessions with bookings count (the others add nothing): asked first, in the window's order
    ids = [s["id"] for s in summaries if s["id"] in figures and s["started"] < high and _last_touch(s) >= low
           and (report.level is None or s["level"] == report.level)]
    report.cost.usage_by_stage = usage_stage_costs(figures, ids)
    report.cost.by_branch = branch_costs(figures, ids)
    report.cost.session_branches = session_branches(figures, ids)
    return report
