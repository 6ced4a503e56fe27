"""Batches (seed 001 "Batch Research Sessions"): one batch of production episodes, one session per
episode, at most `max_concurrent` members in progress at once.

On disk, beside the sessions and backed up with them:

    .claude/level-2-production/batches/batch_YYYYMMDD_HHMM/batch.json   the batch (members, cap, budget)
    .claude/level-2-production/batches/batch_YYYYMMDD_HHMM/events.jsonl  its journal, one line per change
    .claude/level-2-production/batches/members.json                      session id -> batch id

A member holds a slot from its first stage start (session `in_progress`) until it ends, fails
(escalated) or is abandoned. The cap is enforced in `admission`: under the batch's lock file, the
members in progress are counted and the stage is started while the lock is still held, so racing
processes cannot overshoot it. A member refused for the cap stays `initialized`: it is shown as
waiting, and nothing is written for the refusal.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from session_manager.errors import CorruptState, InvalidInput, InvalidTransition, LockTimeout, NotFound
from session_manager.levels import LEVELS, Level
from session_manager.model import Model, SessionState, SessionStatus, Timestamp, _iso, dump_json
from session_manager.store import (
    EVENTS_FILE,
    Store,
    fsync_dir,
    append_lines,
    atomic_write,
    guard,
    read_bytes,
    undo_append,
)

if TYPE_CHECKING:
    from session_manager.service import Service

BATCHES_DIR = "batches"
BATCH_FILE = "batch.json"
INDEX_FILE = "members.json"
BATCH_ID = re.compile(r"^batch_\d{8}_[a-z0-9-]{1,40}(_\d{1,3})?$")
EPISODES = re.compile(r"^\d{1,6}(-\d{1,6})?(,\d{1,6}(-\d{1,6})?)*$")
MAX_MEMBERS = 100
MemberState = Literal["in_progress", "waiting", "done", "failed", "abandoned", "damaged"]


# -- the model ----------------------------------------------------------------------------------
class Member(Model):
    session_id: str
    episode_number: int
    topic: str | None = None
    budget_usd: float | None = None


class Batch(Model):
    """`batch.json`."""

    schema_version: int = 1
    batch_id: str
    level: Literal["production"] = "production"
    episodes: list[int]
    max_concurrent: int = Field(ge=1)
    budget_usd: float | None = None
    member_budget_usd: float | None = None
    members: list[Member] = Field(default_factory=list)
    status: Literal["active", "ended"] = "active"
    created_at: Timestamp
    created_by: str
    ended_at: Timestamp | None = None


# -- results ------------------------------------------------------------------------------------
class MemberStatus(BaseModel):
    session_id: str
    episode_number: int
    topic: str | None = None
    state: MemberState
    session_status: str | None = None
    current_stage: str | None = None
    stage_status: str | None = None
    progress_percent: float = 0.0
    cost_usd: float = 0.0
    budget_usd: float | None = None
    quality: float | None = None


class BatchStatus(BaseModel):
    """A batch: each member's progress; in progress (holding a slot), waiting, done."""

    batch_id: str
    status: str
    folder: str
    max_concurrent: int
    episodes: list[int]
    in_progress: list[str]
    waiting: list[str]
    done: list[str]
    ended: list[str] = Field(default_factory=list, description="failed or abandoned: their slots are free")
    members: list[MemberStatus]
    budget_usd: float | None = None
    total_cost: float = 0.0
    damaged: list[str] = Field(default_factory=list)


class BatchNext(BaseModel):
    """Which member to run next, and why."""

    batch_id: str
    session_id: str | None = None
    stage: str | None = None
    reason: str
    command: str | None = None
    free_slots: int


class MemberFigures(BaseModel):
    session_id: str
    episode_number: int
    status: str
    cost_usd: float
    budget_usd: float | None = None
    minutes: float | None = Field(None, description="first stage start to end (or now)")
    stage_minutes: float = Field(0.0, description="the sum of its completed stages' execution times")
    quality: float | None = None
    gate_failures: int = 0
    cost_by_phase: dict[str, float] = Field(default_factory=dict)


class QualitySpread(BaseModel):
    members: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stdev: float | None = None
    spread: float | None = Field(None, description="max - min")


class BatchReport(BaseModel):
    """Cost and time per member and in total, wall time against the sum of member times, quality
    spread across members, gate failures by stage."""

    batch_id: str
    status: str
    members: list[MemberFigures]
    total_cost: float
    budget_usd: float | None = None
    wall_minutes: float | None = Field(None, description="the first member's start to the last one's end (or now)")
    member_minutes: float = Field(0.0, description="the sum of the members' times")
    parallel_gain: float | None = Field(None, description="member_minutes / wall_minutes: >1 means members overlapped")
    quality: QualitySpread
    gate_failures_by_stage: dict[str, int]
    cost_by_phase: dict[str, float]
    damaged: list[str] = Field(default_factory=list)


BatchResult = BatchStatus | BatchNext | BatchReport


# -- storage ----------------------------------------------------------------------------------
def production() -> Level:
    return LEVELS["production"]


class Batches:
    """The batches of a project: paths, reading, locked journalled writes, the member index."""

    def __init__(self, store: Store, lock_timeout: float) -> None:
        self.store = store
        self.lock_timeout = lock_timeout
        self.folder = store.claude_dir / production().dirname / BATCHES_DIR

    def path(self, batch_id: str) -> Path:
        if not BATCH_ID.match(batch_id):
            raise InvalidInput(f"invalid batch id {batch_id[:60]!r}: batch ids look like batch_20261121_0930")
        return self.folder / batch_id

    def ids(self) -> list[str]:
        """Batch ids, newest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted((n for n in names if BATCH_ID.match(n)), reverse=True)

    def read(self, batch_id: str) -> Batch:
        path = self.path(batch_id) / BATCH_FILE
        restore = "restore it from the backup trail (session-manager backup history)"
        try:
            raw = read_bytes(path)
        except FileNotFoundError:
            raise NotFound(f"no batch {batch_id!r} (run `session-manager batch status` for the active one)") from None
        try:
            return Batch.model_validate(json.loads(raw))
        except (ValueError, ValidationError, RecursionError):
            raise CorruptState(f"{batch_id}: {BATCH_FILE} is damaged; {restore}") from None

    def index(self) -> dict[str, str]:
        """session id -> batch id; a damaged index reads as empty (the batches hold the truth)."""
        try:
            data = json.loads(read_bytes(self.folder / INDEX_FILE))
        except (OSError, ValueError, RecursionError, CorruptState):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def batch_of(self, session_id: str) -> str | None:
        if not self.folder.is_dir():  # most projects: no batches, no file read
            return None
        return self.index().get(session_id)

    @contextmanager
    def lock(self, batch_id: str) -> Iterator[None]:
        """The batch's lock file (an flock, freed by the kernel if its holder dies)."""
        from filelock import FileLock, Timeout

        self.path(batch_id)
        self.store.private_dir("locks")
        lock = FileLock(str(self.store.private_file(f"locks/{batch_id}.lock")), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise LockTimeout(f"batch {batch_id} is busy: another process held its lock for"
                              f" {self.lock_timeout:g} s; try again") from None
        try:
            yield
        finally:
            lock.release()

    def create(self, batch: Batch, actor: str) -> str:
        """A new batch folder (built under a temp name, then renamed); a clash gets `_2`, `_3`..."""
        guard(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        base = batch.batch_id
        for n in range(1, 1000):
            batch_id = base if n == 1 else f"{base}_{n}"
            if os.path.lexists(self.folder / batch_id):
                continue
            staging = self.folder / f".{batch_id}.{secrets.token_hex(4)}.creating"
            staging.mkdir()
            made = batch.model_copy(update={"batch_id": batch_id})
            event = {"batch_id": batch_id, "at": _iso(made.created_at), "actor": actor, "event": "batch_started",
                     "episodes": made.episodes, "max_concurrent": made.max_concurrent, "budget_usd": made.budget_usd}
            try:
                atomic_write(staging / BATCH_FILE, dump_json(made), sync_dir=False)
                atomic_write(staging / EVENTS_FILE, json.dumps(event, separators=(",", ":")) + "\n", sync_dir=False)
                fsync_dir(staging)
                os.rename(staging, self.folder / batch_id)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if (self.folder / batch_id).exists():
                    continue
                raise
            fsync_dir(self.folder)
            return batch_id
        raise InvalidInput(f"too many batches named {base}")

    def commit(self, batch: Batch, actor: str, now: datetime, events: list[dict[str, Any]]) -> None:
        """Write-ahead like a session: the journal lines, then `batch.json` (call under `lock`)."""
        folder = self.path(batch.batch_id)
        text = dump_json(batch)
        journal = folder / EVENTS_FILE
        records = [{"batch_id": batch.batch_id, "at": _iso(now), "actor": actor, **e} for e in events]
        mark = append_lines(journal, records) if records else None
        try:
            atomic_write(folder / BATCH_FILE, text)
        except BaseException:
            if mark is not None:
                undo_append(journal, *mark)
            raise

    def add_to_index(self, entries: dict[str, str]) -> None:
        from filelock import FileLock, Timeout

        self.store.private_dir("locks")
        lock = FileLock(str(self.store.private_file("locks/batches-index.lock")), timeout=self.lock_timeout)
        try:
            with lock:
                index = self.index()
                index.update(entries)
                atomic_write(self.folder / INDEX_FILE, json.dumps(index, indent=1, sort_keys=True) + "\n")
        except Timeout:
            raise LockTimeout("the batch index is busy; try again") from None

    def events(self, batch_id: str) -> list[dict[str, Any]]:
        from session_manager.store import read_jsonl

        return read_jsonl(self.path(batch_id) / EVENTS_FILE)[0]


# -- episodes and topics --------------------------------------------------------------------------
def parse_episodes(text: str) -> list[int]:
    """`2-8`, `2,4,6` or `2-4,7` -> the episode numbers, in order, each once."""
    text = text.replace(" ", "")
    if not EPISODES.match(text):
        raise InvalidInput(f"episodes {text[:40]!r}: give a range like 2-8, or a list like 2,4,6")
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low < 1 or high < low:
            raise InvalidInput(f"episodes {part!r}: a range goes from a low number (1 or more) to a higher one")
        if high - low >= MAX_MEMBERS:
            raise InvalidInput(f"episodes {part!r}: a batch has at most {MAX_MEMBERS} members")
        out += [n for n in range(low, high + 1) if n not in out]
    if len(out) > MAX_MEMBERS:
        raise InvalidInput(f"a batch has at most {MAX_MEMBERS} members; {len(out)} episodes given")
    return out


def read_topics(path_text: str, count: int, base: Path, root: Path) -> list[str]:
    """One topic per line (blank lines and `#` comments skipped); exactly one per episode.
    The file must be a regular file inside the project (a path from a tool call could otherwise
    copy any file, a credentials file, into session files and the backup trail), at most 1 MB."""
    import os
    import stat

    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        resolved = path.resolve(strict=True)
        resolved.relative_to(root.resolve())
    except FileNotFoundError:
        raise InvalidInput(f"topics file {path_text[:200]!r} does not exist") from None
    except (OSError, ValueError, RuntimeError):
        raise InvalidInput(f"topics file {path_text[:200]!r} must be inside the project ({root})") from None
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > 1_000_000:
                raise InvalidInput(f"topics file {path_text[:200]!r} must be a regular file of at most 1 MB")
            text = os.read(fd, info.st_size + 1).decode("utf-8")
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"topics file {path_text[:200]!r}: cannot read it ({exc})") from None
    topics = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(topics) != count:
        raise InvalidInput(f"topics file {path_text[:200]!r} has {len(topics)} topic(s) for {count} episode(s);"
                           " give one line per episode")
    long = next((t for t in topics if len(t) > 500), None)
    if long is not None:
        raise InvalidInput(f"topics file {path_text[:200]!r}: a topic is longer than 500 characters")
    return topics


# -- states of members ------------------------------------------------------------------------------
def member_state(state: SessionState) -> MemberState:
    return {
        SessionStatus.in_progress: "in_progress", SessionStatus.initialized: "waiting",
        SessionStatus.completed: "done", SessionStatus.failed: "failed", SessionStatus.abandoned: "abandoned",
    }[state.status]  # type: ignore[return-value]


def read_members(store: Store, batch: Batch) -> tuple[list[tuple[Member, SessionState | None]], list[str]]:
    out: list[tuple[Member, SessionState | None]] = []
    damaged: list[str] = []
    for member in batch.members:
        try:
            out.append((member, store.read_state(member.session_id)))
        except (CorruptState, NotFound) as exc:
            damaged.append(str(exc))
            out.append((member, None))
    return out, damaged


def in_progress(store: Store, batch: Batch, besides: str) -> list[str]:
    """Members holding a slot (session in progress), other than `besides`."""
    running = []
    for member in batch.members:
        if member.session_id == besides:
            continue
        try:
            if store.read_state(member.session_id).status == SessionStatus.in_progress:
                running.append(member.session_id)
        except (CorruptState, NotFound):
            continue  # a damaged member holds no slot; `batch status` names it
    return running


@contextmanager
def admission(svc: Service, session_id: str) -> Iterator[None]:
    """Run a stage start of `session_id` inside this block: when the session is a member of an
    active batch and does not hold a slot yet, the batch's lock is held for the whole block and
    the start is refused (one line naming the cap and the members in progress) when the cap is
    reached. Sessions outside batches pass through without a lock."""
    batches = Batches(svc.store, svc.config.lock_timeout_seconds)
    batch_id = batches.batch_of(session_id)
    if batch_id is None:
        yield
        return
    try:
        batch = batches.read(batch_id)
    except (NotFound, CorruptState):  # a batch gone or damaged does not stop its member's work
        yield
        return
    if batch.status != "active":
        yield
        return
    with batches.lock(batch_id):
        batch = batches.read(batch_id)
        if batch.status == "active" and svc.store.read_state(session_id).status == SessionStatus.initialized:
            running = in_progress(svc.store, batch, besides=session_id)
            if len(running) >= batch.max_concurrent:
                raise InvalidTransition(
                    f"batch {batch_id} is at its cap of {batch.max_concurrent} members in progress"
                    f" ({', '.join(running)}); {session_id} waits until one of them ends, fails or is abandoned"
                    " (`session-manager batch next` tells which member to run)")
        yield


# -- operations (called by the Service) ----------------------------------------------------------------
def resolve(batches: Batches, batch_id: str | None, active_only: bool = False) -> Batch:
    """The named batch, else the newest active one (else, unless `active_only`, the newest)."""
    if batch_id is not None:
        return batches.read(batch_id)
    newest: Batch | None = None
    for candidate in batches.ids():
        try:
            batch = batches.read(candidate)
        except CorruptState:
            continue
        if batch.status == "active":
            return batch
        newest = newest or batch
    if newest is None or active_only:
        raise NotFound("no active batch; start one with `session-manager batch start prod 2-8`")
    return newest


def status(svc: Service, batch: Batch) -> BatchStatus:
    members, damaged = read_members(svc.store, batch)
    rows: list[MemberStatus] = []
    for member, state in members:
        if state is None:
            rows.append(MemberStatus(session_id=member.session_id, episode_number=member.episode_number,
                                     topic=member.topic, state="damaged", budget_usd=member.budget_usd))
            continue
        stage = state.stages.get(state.current_stage) if state.current_stage else None
        rows.append(MemberStatus(
            session_id=member.session_id, episode_number=member.episode_number, topic=member.topic,
            state=member_state(state), session_status=str(state.status), current_stage=state.current_stage,
            stage_status=str(stage.status) if stage else None, progress_percent=state.progress.percent,
            cost_usd=state.cost_tracking.total_cost, budget_usd=state.budget.usd, quality=state.quality_overall))
    folder = svc.store.claude_dir / production().dirname / BATCHES_DIR / batch.batch_id
    return BatchStatus(
        batch_id=batch.batch_id, status=batch.status, folder=str(folder.relative_to(svc.root)),
        max_concurrent=batch.max_concurrent, episodes=batch.episodes,
        in_progress=[r.session_id for r in rows if r.state == "in_progress"],
        waiting=[r.session_id for r in rows if r.state == "waiting"],
        done=[r.session_id for r in rows if r.state == "done"],
        ended=[r.session_id for r in rows if r.state in ("failed", "abandoned")],
        members=rows, budget_usd=batch.budget_usd, total_cost=round(sum(r.cost_usd for r in rows), 6),
        damaged=damaged)


def next_member(svc: Service, batch: Batch) -> BatchNext:
    """A free slot goes to the first waiting member (episode order); otherwise the member in
    progress that has no stage running and the least progress; otherwise nobody can start."""
    shown = status(svc, batch)
    free = max(0, batch.max_concurrent - len(shown.in_progress)) if batch.status == "active" else 0
    by_id = {m.session_id: m for m in shown.members}
    idle = [by_id[s] for s in shown.in_progress if by_id[s].stage_status != "in_progress"]
    if idle:
        pick = min(idle, key=lambda m: (m.progress_percent, m.episode_number))
        return BatchNext(batch_id=batch.batch_id, session_id=pick.session_id, stage=pick.current_stage,
                         free_slots=free, reason=f"{pick.session_id} holds a slot and its next stage"
                         f" {pick.current_stage} is ready ({pick.progress_percent:.0f}% done)",
                         command=f"session-manager stage start {pick.session_id}")
    if shown.waiting and (free or batch.status != "active"):
        pick = by_id[shown.waiting[0]]
        why = (f"{free} of {batch.max_concurrent} slots free" if batch.status == "active"
               else "the batch has ended: no cap")
        return BatchNext(batch_id=batch.batch_id, session_id=pick.session_id, stage=pick.current_stage,
                         free_slots=free, reason=f"{why}; {pick.session_id} is the first waiting member",
                         command=f"session-manager stage start {pick.session_id}")
    if shown.waiting:
        return BatchNext(batch_id=batch.batch_id, free_slots=0,
                         reason=f"all {batch.max_concurrent} slots are busy with stages running"
                         f" ({', '.join(shown.in_progress)}); {len(shown.waiting)} member(s) wait")
    return BatchNext(batch_id=batch.batch_id, free_slots=free,
                     reason="every member is running a stage or has ended; nothing to start")


def _member_span(state: SessionState, now: datetime) -> tuple[datetime, datetime] | None:
    """A member's time: its first stage start to its end (or now while it is active)."""
    starts = [s.started_at for s in state.stages.values() if s.started_at is not None]
    if not starts:
        return None
    end = state.ended_at or state.completed_at or (now if state.active else state.last_updated)
    return min(starts), max(min(starts), end)


def report(svc: Service, batch: Batch) -> BatchReport:
    from session_manager import phases

    members, damaged = read_members(svc.store, batch)
    now = svc.clock()
    rows: list[MemberFigures] = []
    gates: dict[str, int] = {}
    by_phase: dict[str, float] = {}
    spans: list[tuple[datetime, datetime]] = []
    for member, state in members:
        if state is None:
            continue
        span = _member_span(state, now)
        minutes = round((span[1] - span[0]).total_seconds() / 60, 2) if span else None
        if span:
            spans.append(span)
        for name, stage in state.stages.items():
            if stage.gate_failures:
                gates[name] = gates.get(name, 0) + stage.gate_failures
        member_phases = phases.cost_by_phase(state, svc.config)
        for phase, usd in member_phases.items():
            by_phase[phase] = round(by_phase.get(phase, 0.0) + usd, 6)
        rows.append(MemberFigures(
            session_id=member.session_id, episode_number=member.episode_number, status=str(state.status),
            cost_usd=state.cost_tracking.total_cost, budget_usd=state.budget.usd, minutes=minutes,
            stage_minutes=round(sum(s.execution_seconds or 0.0 for s in state.stages.values()) / 60, 2),
            quality=state.quality_overall, gate_failures=sum(s.gate_failures for s in state.stages.values()),
            cost_by_phase=member_phases))
    wall = None
    if spans:
        wall = round((max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds() / 60, 2)
    total_minutes = round(sum(r.minutes or 0.0 for r in rows), 2)
    scores = [r.quality for r in rows if r.quality is not None]
    quality = QualitySpread(members=len(scores))
    if scores:
        quality = QualitySpread(members=len(scores), min=min(scores), max=max(scores),
                                mean=round(statistics.fmean(scores), 4),
                                stdev=round(statistics.stdev(scores), 4) if len(scores) > 1 else 0.0,
                                spread=round(max(scores) - min(scores), 4))
    return BatchReport(
        batch_id=batch.batch_id, status=batch.status, members=rows,
        total_cost=round(sum(r.cost_usd for r in rows), 6), budget_usd=batch.budget_usd, wall_minutes=wall,
        member_minutes=total_minutes, parallel_gain=round(total_minutes / wall, 2) if wall else None,
        quality=quality, gate_failures_by_stage=dict(sorted(gates.items())), cost_by_phase=by_phase,
        damaged=damaged)

