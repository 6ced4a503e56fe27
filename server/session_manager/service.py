"""The service layer: one method per operation. The CLI, the MCP server and the hooks call
these and nothing else; every business rule lives here or in the modules it calls.

Each operation validates its arguments into its request model (`requests.py`) first, so bad
input is refused before anything is read or written.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, ValidationError

from session_manager import pipeline
from session_manager.config import CONFIG_NAME, Config, load_config
from session_manager.events import Event, Trigger
from session_manager.errors import (
    CorruptState,
    InvalidInput,
    SessionError,
    InvalidTransition,
    NotFound,
    TemplateError,
    describe_validation_error,
)
from session_manager.levels import LEVELS
from session_manager.model import (
    Blocker,
    Budget,
    CreatedBy,
    Metadata,
    Note,
    SessionState,
    SessionStatus,
    StageState,
    dump_json,
    utcnow,
)
from session_manager.requests import (
    EndRequest,
    JournalRequest,
    ListRequest,
    NoArguments,
    OverrideRequest,
    RenderRequest,
    TemplateRequest,
    RecordFailureRequest,
    ResumeRequest,
    SessionRequest,
    StageCompleteRequest,
    StageStartRequest,
    StartRequest,
    TaskRequest,
    UpdateRequest,
)
from session_manager.requests import (
    CostRemoveRequest,
    DashboardRequest,
    RecordCostRequest,
    ReportRequest,
    UsageAttachRequest,
    UsageBindRequest,
    UsageRequest,
)
from session_manager.requests import BatchRequest, EvolveRequest
from session_manager.results import (
    Journal,
    SessionDetail,
    SessionList,
    SessionSummary,
    StageContext,
    StageResult,
    Status,
)
from session_manager.store import EVENTS_FILE, METADATA_FILE, STATE_FILE, Store, Transaction, atomic_write, find_root

if TYPE_CHECKING:  # imported when their operations run: git and jinja stay off the hot path
    from session_manager.backup_models import (
        BackupHistory,
        BackupHistoryRequest,
        BackupNowRequest,
        BackupPushRequest,
        BackupRestoreRequest,
        BackupResult,
        PushResult,
        RestoreResult,
    )
    from session_manager.render import RenderResult, TemplateCopy, TemplateList
    from session_manager.costs import CostRemoval, CostResult
    from session_manager.trail import Trail
    from session_manager.dashboard import Dashboard
    from session_manager.reports import Report
    from session_manager.tasks import TaskResult
    from session_manager.usage import BindResult as UsageBindResult  # noqa: F401
    from session_manager.usage import UsageAttachResult, UsageReport
    from session_manager.batch import BatchNext, BatchReport, BatchStatus
    from session_manager.evolve import Evolution

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res")
DURATIONS_FILE = "durations.json"
OUTCOME_FIELDS = ("bugs_fixed", "bugs_introduced", "tests_passed", "tests_total", "docs_changed")
DURATION_SAMPLES = 50


class Op(Generic[Req, Res]):
    """A service operation declared in the registry (`operations.py`). Call it with its request
    model, or with keyword arguments, which are validated into that model first: bad input is
    refused before anything is read or written."""

    def __init__(self, fn: Callable[[Service, Req], Res]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, svc: None, owner: type[Service]) -> Op[Req, Res]: ...

    @overload
    def __get__(self, svc: Service, owner: type[Service]) -> Callable[..., Res]: ...

    def __get__(self, svc: Service | None, owner: type[Service]) -> Op[Req, Res] | Callable[..., Res]:
        if svc is None:
            return self
        return functools.partial(self.call, svc)

    def call(self, svc: Service, req: Req | None = None, /, **kwargs: Any) -> Res:
        if req is None:
            req = validate_request(self.name, kwargs)
        elif kwargs:
            raise TypeError(f"{self.name}: give a request model or keyword arguments, not both")
        return self.fn(svc, req)


def operation(fn: Callable[[Service, Req], Res]) -> Op[Req, Res]:
    return Op(fn)


def validate_request(name: str, arguments: dict[str, Any]) -> Any:
    """`arguments` validated into the request model the registry declares for operation `name`."""
    from session_manager import operations

    model = operations.get(name).request_model()
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None


class Service:
    def __init__(
        self,
        root: Path | None = None,
        *,
        actor: str = "api",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.root = (root or find_root()).resolve()
        self.actor = actor
        self.clock = clock
        self._config: Config | None = None
        self.store = Store(self.root)
        # set by a long-running process (the MCP server) that takes trigger backups in its own thread
        self.defer_backup: Callable[[str], None] | None = None
        # set by the MCP server (`hand_over`): derived work after a commit (the checkpoint, markdown,
        # duration history, the backup request) runs after the answer, in its worker thread,
        # outside the session lock
        self.defer_after: Callable[[Callable[[], None]], None] | None = None
        # problems met after a change was committed ("saved; plan.md not updated: ..."): the change
        # stands, so the surfaces show these as warnings (exit 0, not isError) instead of errors
        self.warnings: list[str] = []

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.store.claude_dir)
            self.store.lock_timeout = self._config.lock_timeout_seconds
        return self._config

    # -- helpers ---------------------------------------------------------------------
    def resolve_id(self, session_id: str | None) -> str:
        """The given id, or the active session touched most recently when none is given (from
        the session index: only the active sessions' state files are read, see index.py)."""
        if session_id is not None:
            self.store.session_dir(session_id)
            return session_id
        for candidate, state in self.store.active_states():
            # a damaged session touched last is most likely the one being worked on: say so
            # (CorruptState names it and the restore command) rather than pick another one
            if isinstance(state, CorruptState):
                raise state
            return candidate
        raise NotFound("no active session; start one with `session-manager start LEVEL`")

    def _transaction(self, session_id: str) -> Any:
        self.config  # a malformed config is refused before any lock or write
        return self.store.transaction(session_id, self.actor, self.clock())

    def _durations(self) -> dict[str, list[float]]:
        """The durations cache; anything of the wrong shape (or unreadable) is dropped, so the
        cache rebuilds itself instead of failing every write."""
        from session_manager.store import read_bytes

        path = self.store.claude_dir / ".session-manager" / DURATIONS_FILE
        try:
            data = json.loads(read_bytes(path))
        except (OSError, ValueError, RecursionError, CorruptState):
            return {}
        if not isinstance(data, dict):
            return {}
        clean: dict[str, list[float]] = {}
        for key, samples in data.items():
            if isinstance(samples, list):
                numbers = [float(v) for v in samples if type(v) in (int, float) and math.isfinite(v) and v >= 0]
                if numbers:
                    clean[key] = numbers[-DURATION_SAMPLES:]
        return clean

    def _remember_duration(self, level: str, stage: str, seconds: float | None) -> None:
        """Feed this project's own history of stage durations, used for time estimates."""
        if seconds is None or not math.isfinite(seconds):
            return
        from filelock import FileLock

        from filelock import Timeout

        folder = self.store.private_dir()
        try:
            with FileLock(str(self.store.private_file("durations.lock")), timeout=self.config.lock_timeout_seconds):
                data = self._durations()
                samples = data.setdefault(f"{level}/{stage}", [])
                samples.append(round(seconds, 1))
                del samples[:-DURATION_SAMPLES]
                atomic_write(folder / DURATIONS_FILE, json.dumps(data, indent=1) + "\n", durable=False)
        except (Timeout, OSError) as exc:  # derived data: the stage completion itself is saved
            self.warnings.append(f"saved; the stage duration history was not updated ({exc})")

    def _finish(self, tx: Transaction) -> None:
        pipeline.evaluate_alerts(tx, self.config, self._durations())

    def _later(self, job: Callable[[], None]) -> None:
        """Derived work after a commit: handed to the server's worker when there is one (the answer
        does not wait for it), else run now."""
        if self.defer_after is not None:
            self.defer_after(job)
        else:
            job()

    def _after_change(self, session_id: str, trigger: Trigger) -> None:
        """Runs after every committed change, outside the session lock (in the MCP server, after
        the answer: see `defer_after`)."""
        self._later(lambda: self._derive(session_id, trigger))

    def _derive(self, session_id: str, trigger: str) -> None:
        """Refreshes the rendered markdown and takes the backups the design asks for at this
        trigger ("session start", "stage complete", "before recovery", "resume", "session end", ...)."""
        from session_manager import render

        problem = render.refresh(self.store, self.config, self.clock, session_id, trigger)  # markdown first, so a backup holds it
        if problem is not None:
            self.warnings.append(str(problem))
        self.store.mark_changed(session_id)  # the markdown changed after the transaction's mark
        self._auto_backup(session_id, trigger)  # never raises: a failed backup becomes a warning and an event

    def hand_over(self, submit: Callable[[Callable[[], None]], None]) -> None:
        """Run the work that follows a commit after the answer, through `submit`: each change's
        checkpoint (see redo.py), then its derived files."""
        self.defer_after = submit
        self.store.defer_checkpoint = lambda session_id: submit(lambda: self._checkpoint(session_id))

    def _checkpoint(self, session_id: str) -> None:
        """The change is committed (its redo record is on disk); this makes its files durable
        and empties the redo log. A failure here loses nothing: the log stays for the next access."""
        try:
            self.store.redo.checkpoint(session_id)
        except (SessionError, OSError) as exc:
            self.warnings.append(f"saved; the files of {session_id} are not synced to disk yet ({exc})")

    def _stage_result(self, state: SessionState, outcome: pipeline.Outcome) -> StageResult:
        return StageResult(
            session_id=state.session_id, decision=outcome.decision, stage=outcome.stage,
            next_stage=outcome.next_stage, routed_to=outcome.routed_to, feedback=outcome.feedback,
            attempts=outcome.attempts, attempts_left=outcome.attempts_left, overall_score=outcome.overall_score,
            session_status=str(state.status), progress_percent=state.progress.percent,
            total_cost=state.cost_tracking.total_cost, alerts=state.alerts,
        )

    # -- lifecycle --------------------------------------------------------------------
    @operation
    def start(self, req: StartRequest) -> SessionDetail:
        level = req.level
        if level.needs_number and req.number is None:
            raise InvalidInput("a production session needs an episode number, e.g. `start prod 5`")
        if not level.needs_number and req.number is not None:
            raise InvalidInput(f"only production sessions take an episode number; {level.name} does not")
        config = self.config
        now = self.clock()
        stages = config.pipeline(level.name)
        budget = req.budget_usd if req.budget_usd is not None else getattr(config.budgets, level.name)
        from session_manager import context

        gathered = context.gather(self.store, level.name, now)  # git facts, previous session, known issues

        def build(session_id: str) -> dict[str, str]:
            state = SessionState(
                session_id=session_id, level=level.name, episode_number=req.number, started_at=now,
                last_updated=now, stages={s.name: StageState() for s in stages}, budget=Budget(usd=budget),
                claude_sessions=[req.claude_session] if req.claude_session else [],
            )
            pipeline.refresh_progress(state)
            carried = gathered.carry_into(state)
            metadata = Metadata(
                session_id=session_id, level=level.name, episode_number=req.number, topic=req.topic,
                complexity=req.complexity, tag=req.tag, budget_usd=budget, objectives=req.objectives or [],
                created_at=now, created_by=CreatedBy(actor=self.actor, user=_user(), claude_session=req.claude_session),
            )
            event = {"session_id": session_id, "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "actor": self.actor,
                     "event": Event.session_started, "level": level.name, "episode_number": req.number,
                     "topic": req.topic}
            events = [event]
            if carried:
                events.append({"session_id": session_id, "at": event["at"], "actor": self.actor,
                               "event": Event.carried_over, **carried})
            from session_manager import tasks

            return {STATE_FILE: dump_json(state), METADATA_FILE: dump_json(metadata), tasks.TASKS_FILE: tasks.dump(state),
                    EVENTS_FILE: "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events),
                    context.CONTEXT_FILE: gathered.dump()}

        session_id = self.store.create_session(level, req.number, req.tag, now, build)
        self._after_change(session_id, Trigger.session_start)
        return self.show(session_id=session_id)

    @operation
    def show(self, req: SessionRequest) -> SessionDetail:
        session_id = self.resolve_id(req.session_id)
        state = self.store.read_state(session_id)
        estimate = None
        if state.active:
            estimate = pipeline.estimate_remaining_seconds(state, self.config, self._durations(), self.clock())
        from session_manager import metrics

        return SessionDetail(state=state, metadata=self.store.read_metadata(session_id),
                             estimate_remaining_seconds=estimate,
                             metrics=metrics.compute(state, self._expected_minutes(state.level)),
                             folder=str(self.store.session_dir(session_id).relative_to(self.root)),
                             phases=self._phases(state))

    @operation
    def list_sessions(self, req: ListRequest) -> SessionList:
        self.config  # a malformed config is reported here too, not only when writing
        if req.status == "active":
            return self._list_active(req)
        levels = [req.level] if req.level else None
        summaries: list[SessionSummary] = []
        damaged: list[str] = []
        seen: list[tuple[str, str, str]] = []
        for session_id in self.store.iter_ids(levels, req.since):
            try:
                state = self.store.read_state(session_id)
            except CorruptState as exc:  # one damaged session must not hide the others
                damaged.append(str(exc))
                continue
            seen.append((session_id, state.level, str(state.status)))
            if req.since and state.started_at < req.since:
                continue
            if req.status is not None and state.status != req.status:
                continue
            try:
                metadata = self.store.read_metadata(session_id)
            except CorruptState as exc:
                damaged.append(str(exc))
                continue
            summaries.append(SessionSummary.of(state, metadata))
            if req.limit and len(summaries) >= req.limit:
                break
        self.store.index.correct(seen)  # a full listing read every state: rows edited by hand are put right
        summaries.sort(key=lambda s: s.started_at, reverse=True)
        return SessionList(sessions=summaries, damaged=damaged)

    def _active(self, level: str | None = None) -> tuple[list[tuple[SessionState, Metadata]], list[str]]:
        """The active sessions (of `level`) with their metadata, touched last first, read once
        each through the index; and the damage met."""
        found: list[tuple[SessionState, Metadata]] = []
        damaged: list[str] = []
        for session_id, state in self.store.active_states():
            if isinstance(state, CorruptState):
                if level is None or session_id.startswith(LEVELS[level].prefix + "_"):
                    damaged.append(str(state))
                continue
            if level is not None and state.level != level:
                continue
            try:
                found.append((state, self.store.read_metadata(session_id)))
            except CorruptState as exc:
                damaged.append(str(exc))
        return found, damaged

    def _list_active(self, req: ListRequest) -> SessionList:
        found, damaged = self._active(req.level.name if req.level else None)
        summaries = [SessionSummary.of(state, metadata) for state, metadata in found
                     if not (req.since and state.started_at < req.since)]
        summaries.sort(key=lambda s: s.started_at, reverse=True)
        if req.limit:
            summaries = summaries[:req.limit]
        return SessionList(sessions=summaries, damaged=damaged)

    @operation
    def status(self, req: SessionRequest) -> Status:
        """One session in detail, or every active session across levels when no id is given.
        The CLI, the MCP tool and the SessionStart hook all show this."""
        self.config  # a malformed config is said here too, not only when something is written
        if req.session_id is not None:
            return Status(sessions=[self.show(session_id=req.session_id)], one=True)
        found, damaged = self._active()
        found.sort(key=lambda pair: pair[0].started_at, reverse=True)
        durations = self._durations() if found else {}
        details = [self._detail(state, metadata, durations) for state, metadata in found]
        return Status(sessions=details, damaged=damaged, one=False)

    def _detail(self, state: SessionState, metadata: Metadata, durations: dict[str, list[float]]) -> SessionDetail:
        estimate = None
        if state.active:
            estimate = pipeline.estimate_remaining_seconds(state, self.config, durations, self.clock())
        folder = self.store.level_dir(LEVELS[state.level]) / state.session_id
        return SessionDetail(state=state, metadata=metadata, estimate_remaining_seconds=estimate,
                             folder=str(folder.relative_to(self.root)))

    @operation
    def update(self, req: UpdateRequest) -> SessionDetail:
        from session_manager import tasks

        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            state, progress, now = tx.state, tx.state.progress, tx.now
            if state.status in (SessionStatus.completed, SessionStatus.abandoned) and state.ended_at:
                raise InvalidTransition(f"session {session_id} has ended ({state.status}); it cannot change")
            for ref in req.complete_tasks or []:
                tasks.move(tx, tasks.find(progress, ref), "done")
            for ref in req.clear_blockers or []:
                blocker = _find(progress.blockers, ref, "blocker", lambda b: b.text)
                progress.blockers.remove(blocker)
                blocker.cleared_at = now
                progress.blockers_cleared.append(blocker)
                tx.event(Event.blocker_cleared, blocker_id=blocker.id, text=blocker.text)
            for title in req.add_tasks or []:
                tasks.add(tx, title)
            for text in req.blockers or []:
                blocker = Blocker(id=progress.next_blocker_id(), text=text, created_at=now)
                progress.blockers.append(blocker)
                tx.event(Event.blocker_added, blocker_id=blocker.id, text=text)
            for kind, texts in (("learning", req.learnings), ("decision", req.decisions)):
                todo = req.todo and kind == "learning"
                for text in texts or []:
                    getattr(progress, kind + "s").append(Note(text=text, at=now, stage=state.current_stage, todo=todo))
                    tx.event(Event.learning_added if kind == "learning" else Event.decision_added, text=text, **({"todo": True} if todo else {}))
            if not tx.events:
                raise InvalidInput("nothing to update: give tasks, blockers, learnings or decisions")
            if req.add_tasks or req.complete_tasks:
                tasks.write(tx)
            self._finish(tx)
        self._after_change(session_id, Trigger.update)
        return self.show(session_id=session_id)

    @operation
    def end(self, req: EndRequest) -> SessionDetail:
        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            state = tx.state
            if state.ended_at is not None:
                raise InvalidTransition(
                    f"session {session_id} already ended ({state.status}) at"
                    f" {state.ended_at:%Y-%m-%d %H:%M} UTC; a session ends once"
                )
            # open stages are refused unless asked to close them; abandoning closes them (it says the work stops)
            pipeline.close_open_stages(tx, req.close_open_stages or req.abandoned)
            if req.abandoned:
                pipeline.set_session_status(tx, SessionStatus.abandoned, "ended as abandoned")
            elif state.status == SessionStatus.failed:
                raise InvalidTransition(
                    f"session {session_id} is failed (escalated); resume it, or end it with --abandon"
                )
            else:
                pipeline.set_session_status(tx, SessionStatus.completed, "ended")
            state.ended_at = tx.now
            if req.summary:
                state.summary = req.summary
            recorded = {key: getattr(req, key) for key in OUTCOME_FIELDS if getattr(req, key) is not None}
            state.outcome = state.outcome.model_copy(update=recorded)
            from session_manager import metrics, tasks

            figures = metrics.compute(state, self._expected_minutes(state.level))
            tx.event(Event.session_ended, status=str(state.status), summary=req.summary, **recorded,
                     completion_rate=figures.completion_rate, time_efficiency=figures.time_efficiency,
                     score=figures.score)
            tasks.write(tx)
            self._finish(tx)
        self._after_change(session_id, Trigger.session_end)
        return self.show(session_id=session_id)

    # -- pipeline ---------------------------------------------------------------------
    @operation
    def stage_start(self, req: StageStartRequest) -> StageResult:
        from session_manager import batch

        session_id = self.resolve_id(req.session_id)
        with batch.admission(self, session_id), self._transaction(session_id) as tx:  # a batch's cap (issue 17)
            outcome = pipeline.start_stage(tx, self.config, req.stage)
            self._finish(tx)
        self._after_change(session_id, Trigger.stage_start)
        result = self._stage_result(tx.state, outcome)
        result.context = self._stage_context(tx.state, outcome.stage)
        return result

    @operation
    def stage_complete(self, req: StageCompleteRequest) -> StageResult:
        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            outcome = pipeline.complete_stage(
                tx, self.config, req.stage, req.outputs or {}, req.quality or {}, req.cost_usd, req.tokens,
                req.model, req.notes,
            )
            self._finish(tx)
        stage = tx.state.stages[req.stage]
        if outcome.decision in ("advanced", "completed"):
            level, seconds = tx.state.level, stage.execution_seconds
            self._later(lambda: self._remember_duration(level, req.stage, seconds))
        self._after_change(session_id, Trigger.stage_complete)
        return self._stage_result(tx.state, outcome)

    @operation
    def record_failure(self, req: RecordFailureRequest) -> StageResult:
        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            outcome = pipeline.record_failure(tx, self.config, req.stage, req.error, req.retryable)
            self._finish(tx)
        self._after_change(session_id, Trigger.before_recovery)
        return self._stage_result(tx.state, outcome)

    @operation
    def resume(self, req: ResumeRequest) -> StageResult:
        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            outcome = pipeline.resume(tx, req.from_stage)
            self._finish(tx)
        self._after_change(session_id, Trigger.resume)
        return self._stage_result(tx.state, outcome)

    def bypass(self, **kwargs: Any) -> StageResult:
        return self.override(action="bypass", **kwargs)

    def skip(self, **kwargs: Any) -> StageResult:
        return self.override(action="skip", **kwargs)

    @operation
    def override(self, req: OverrideRequest) -> StageResult:
        """Bypass a stage's gate or failure, or skip a stage: a logged override with a reason."""
        kind: Literal["bypassed", "skipped"] = "bypassed" if req.action == "bypass" else "skipped"
        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            outcome = pipeline.override(tx, req.stage, kind, req.reason)
            self._finish(tx)
        self._after_change(session_id, Trigger.stage_bypassed if kind == "bypassed" else Trigger.stage_skipped)
        return self._stage_result(tx.state, outcome)

    @operation
    def journal(self, req: JournalRequest) -> Journal:
        """The session's last events, and how many lines were left out: torn (a crash mid-write), of
        the wrong shape, or written ahead for a change that never reached the state."""
        resolved = self.resolve_id(req.session_id)
        records, skipped = self.store.read_events(resolved)
        if skipped:
            self.warnings.append(f"{skipped} unreadable line(s) in {resolved}/events.jsonl skipped"
                                 " (a write cut short by a crash)")
        return Journal(session_id=resolved, events=records[-req.limit:], skipped=skipped, total=len(records))

    def events(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Every event of the session (for Python callers and tests)."""
        return self.store.read_events(self.resolve_id(session_id))[0]

    # -- hooks ------------------------------------------------------------------------
    def attach_claude_session(self, session_id: str, claude_session: str, since: datetime | None = None) -> bool:
        """Bind the Claude Code conversation `claude_session` to this session from `since` (default
        now; the SessionStart hook calls it only when exactly one session is active, or hands it to
        a detached process with the hook's time). True when newly recorded; a conversation already
        bound to this session writes nothing."""
        if not isinstance(claude_session, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", claude_session):
            raise InvalidInput(f"invalid Claude Code session id {str(claude_session)[:40]!r}: letters, digits, - and _")
        return self._bind(session_id, claude_session, since, "hook")[0]

    # -- templates --------------------------------------------------------------------
    @operation
    def render(self, req: RenderRequest) -> RenderResult:
        """Re-render a session's markdown (one template, or all that apply: review.md and
        completed.md once it has ended) and make sure an ended session's memory is recorded."""
        from session_manager import memory, render

        try:
            session_id = self.resolve_id(req.session_id)
        except NotFound:  # no active session: the one changed last, e.g. just ended
            recent = self.store.ids_by_recent_change() if req.session_id is None else []
            if not recent:
                raise
            session_id = recent[0]
        state = self.store.read_state(session_id)
        names = render.rerender_names(req.name, finished=not state.active)  # refused before anything is written
        added = {} if state.active else memory.record(self.store, state, self.config.lock_timeout_seconds)
        written, failures = render.render_session(self.store, self.config, self.clock, session_id, names)
        if failures and not written and not added:  # nothing was written: the user's mistake, exit 2
            raise failures[0]
        self.warnings += [f"not rendered: {failure}" for failure in failures]
        folder = self.store.session_dir(session_id).relative_to(self.root)
        return render.RenderResult(session_id=session_id, folder=str(folder), files=written, memory=added)

    @operation
    def templates_list(self, req: NoArguments) -> TemplateList:
        """Every template and the file used for it per level: the project's override or the shipped one."""
        from session_manager import render

        return render.list_templates(self.root)

    @operation
    def template_copy(self, req: TemplateRequest) -> TemplateCopy:
        """Copy a shipped template into .claude/templates/ (never over an existing file) to edit it."""
        from session_manager import render

        return render.copy_template(self.root, req.name, req.level.name if req.level else None)

    @operation
    def template_show(self, req: TemplateRequest) -> str:
        """The text of the template used for NAME (at a level), to copy into .claude/templates/ and edit."""
        from session_manager import render

        return render.show_template(self.root, req.name, req.level.name if req.level else None)

    # -- backups ----------------------------------------------------------------------
    def _trail(self) -> Trail:
        from session_manager.backup import Trail

        return Trail(self.root, self.config.backup, self.config.lock_timeout_seconds, self.store)

    def _auto_backup(self, session_id: str, trigger: str) -> None:
        """The backup a trigger asks for (see backup.IMMEDIATE). The change is already committed:
        a failing backup must not fail it, so the failure is recorded in the session's events."""
        from session_manager import backup
        from session_manager.errors import BackupError

        if trigger not in backup.IMMEDIATE or not self.config.backup.enabled:
            return
        if self.defer_backup is not None:  # a long-running server backs up off the request path
            self.defer_backup(trigger)
            return
        try:
            self._trail().backup(trigger)
        except BackupError as exc:
            logging.getLogger("session_manager").warning("backup failed: %s", exc)
            self.warnings.append(f"saved; the backup failed ({exc})")
            self.store.append_event(session_id, self.actor, Event.backup_failed, trigger=trigger, error=str(exc))

    @operation
    def backup_now(self, req: BackupNowRequest) -> BackupResult:
        """Commit the session files to the backup branch now (no commit when nothing changed).
        Only a "manual" backup runs when backup.enabled is false."""
        from session_manager.backup import BackupResult

        if req.reason != "manual" and not self.config.backup.enabled:
            return BackupResult(committed=False, reason=req.reason, branch=self.config.backup.branch,
                                skipped="backups are disabled (backup.enabled = false)")
        return self._trail().backup(req.reason)

    @operation
    def backup_history(self, req: BackupHistoryRequest) -> BackupHistory:
        """The backups that changed a session, newest first (the session folder need not exist)."""
        return self._trail().history(req.session_id or self.resolve_id(None))

    @operation
    def backup_restore(self, req: BackupRestoreRequest) -> RestoreResult:
        """Bring a session's files back as they were at backup `at` (default: the newest backup
        with a readable state), after backing up the present state so the restore can be undone."""
        if req.project_files:  # the config and the template overrides (undoes `templates evolve --apply`)
            from session_manager import restore

            if req.session_id is not None:
                raise InvalidInput("give a session id or --project-files, not both")
            return restore.restore_project_files(self._trail(), req.at, self.actor)
        return self._trail().restore(req.session_id or self.resolve_id(None), req.at, self.actor)

    @operation
    def backup_push(self, req: BackupPushRequest) -> PushResult:
        """Push the backup branch to `remote` (default: backup.remote from the config)."""
        return self._trail().push(req.remote)

    # -- costs, usage, reports --------------------------------------------------------
    @operation
    def record_cost(self, req: RecordCostRequest) -> CostResult:
        """Book a cost: tokens per kind with their model, API calls per provider, or USD.
        USD is computed from the price table when not given; budget alerts are re-evaluated."""
        from session_manager import costs
        from session_manager.model import Tokens

        session_id = self.resolve_id(req.session_id)
        tokens = Tokens(input=req.input_tokens, output=req.output_tokens, cache_write=req.cache_write_tokens,
                        cache_read=req.cache_read_tokens)
        if tokens.total and req.model is None and req.usd is None:
            raise InvalidInput("tokens without a model cannot be priced: give the model (--model), or the amount"
                               " in USD (--usd)")
        with self._transaction(session_id) as tx:
            if req.stage is not None:
                pipeline.require_stage(tx.state, req.stage)
            booked = costs.book(tx, costs.price_table(self.config.prices), stage=req.stage, model=req.model,
                                tokens=tokens, calls=req.calls, usd=req.usd)
            self._finish(tx)
        self._after_change(session_id, Trigger.cost_recorded)
        return costs.result(tx.state, booked, req.stage, req.model, tokens, req.calls)

    @operation
    def usage(self, req: UsageRequest) -> UsageReport:
        """Claude Code token usage read from its transcripts (only what is new since the last
        run), de-duplicated, per day, week, month or Claude Code session, priced per model."""
        from session_manager import costs, usage

        ledger, stats, dirs, folder = usage.update(self.store, self.config.lock_timeout_seconds)
        owners, buckets = None, ledger.buckets
        if req.period == "session" or req.unattributed:
            rule = usage.load_rule(self.store)
            owners = {claude: ", ".join(rule.sessions_of(claude)) for claude in rule.chains}
            if req.unattributed:
                entries = usage.load_entries(folder, ledger)
                buckets = usage.buckets_of(usage.unattributed(entries, usage.Bookings.load(self.store.claude_dir),
                                                              rule))
        rows, totals, warnings = usage.summarize(buckets, req.period, req.since, req.until,
                                                 costs.price_table(self.config.prices), owners)
        if not dirs:
            warnings.append(usage.NO_TRANSCRIPTS)
        return usage.UsageReport(period=req.period, since=req.since, until=req.until, unattributed=req.unattributed,
                                 rows=rows, totals=totals, warnings=warnings, sources=[str(d) for d in dirs],
                                 imported=stats)

    @operation
    def usage_attach(self, req: UsageAttachRequest) -> UsageAttachResult:
        """Book the Claude Code responses the attribution rule gives this session (those of the
        conversations bound to it, at times they were bound to it, inside its start..end) and
        that no session has booked yet, each to the stage in progress at its time."""
        from filelock import Timeout

        from session_manager import costs, usage
        from session_manager.errors import LockTimeout

        session_id = self.resolve_id(req.session_id)
        ledger, stats, dirs, folder = usage.update(self.store, self.config.lock_timeout_seconds)
        entries = usage.load_entries(folder, ledger)
        try:
            with usage.bookings_lock(self.store, self.config.lock_timeout_seconds):
                rule = usage.load_rule(self.store)
                bookings = usage.Bookings.load(self.store.claude_dir)
                with self._transaction(session_id) as tx:
                    result = usage.attach(tx, entries, bookings, rule, costs.price_table(self.config.prices), stats)
                    if not dirs:
                        result.warnings.append(usage.NO_TRANSCRIPTS)
                    self._finish(tx)
        except Timeout:
            raise LockTimeout("another process held the usage bookings lock too long; try again") from None
        self._after_change(session_id, Trigger.usage_attached)
        result.total_cost, result.alerts = tx.state.cost_tracking.total_cost, list(tx.state.alerts)
        return result

    @operation
    def report(self, req: ReportRequest) -> Report:
        """Sessions of a period (today, the last 7 or 30 days, or since/until), per level or all."""
        from session_manager import reports

        now = self.clock()
        since, until = reports.window(req.period, req.since, req.until, now)
        # only the window's sessions (and the active ones) are decoded and held: memory follows the window
        loaded = reports.load_summaries(self.store, [req.level] if req.level else None,
                                        since.timestamp(), until.timestamp())
        report = reports.build(loaded, req.period, since, until, req.level.name if req.level else None, now,
                               self.config.alerts.cost_ratio, self.config)
        return self._usage_figures(report, loaded.summaries)

    @operation
    def dashboard(self, req: DashboardRequest) -> Dashboard:
        """Sessions in progress, and the last `days` days: finished, failures, minutes and
        dollars per episode, average quality, and the series the charts draw."""
        from session_manager import dashboard, reports

        from datetime import timedelta

        now = self.clock()
        loaded = reports.load_summaries(self.store, [req.level] if req.level else None,
                                        (now - timedelta(days=req.days + 1)).timestamp())
        return dashboard.build(loaded, req.days, req.level.name if req.level else None, now,
                               self.config.alerts.quality_min, self.config)


    # -- cost attribution (helper-c) ------------------------------------------------------
    def _usage_figures(self, report: Report, summaries: list[dict[str, Any]]) -> Report:
        """Claude Code usage per stage and per git branch, from the bookings ledger."""
        from session_manager import reports, usage

        return reports.add_usage_figures(report, summaries, usage.booked_figures(self.store.claude_dir))

    def _bind(self, session_id: str, conversation: str, since: datetime | None,
              via: str) -> tuple[bool, str | None, str]:
        """Record a binding (conversation -> session from `since`, default now) unless the
        conversation is already bound to this session at that time: (recorded, the session it
        was bound to before, the time it is bound from)."""
        from session_manager.usage.bookings import load_bindings

        now = self.clock()
        moment = since or now
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        known = sorted((b.since, b.session) for b in load_bindings(self.store.claude_dir)
                       if b.conversation == conversation and b.since <= moment.timestamp())
        if known and known[-1][1] == session_id:  # already bound (the hook firing again): no lock, no write
            return False, None, stamp
        from filelock import Timeout

        from session_manager import usage
        from session_manager.errors import LockTimeout

        try:
            with usage.bookings_lock(self.store, self.config.lock_timeout_seconds):
                chain = sorted((b.since, b.session) for b in usage.load_bindings(self.store.claude_dir)
                               if b.conversation == conversation and b.since <= moment.timestamp())
                if not chain or chain[-1][1] != session_id:  # with the bindings recorded at start, too
                    chain = [(since, owner) for since, owner in
                             usage.load_rule(self.store).chains.get(conversation, []) if since <= moment.timestamp()]
                previous = chain[-1][1] if chain else None
                if previous == session_id:
                    return False, None, stamp
                with self._transaction(session_id) as tx:
                    if conversation not in tx.state.claude_sessions:
                        tx.state.claude_sessions.append(conversation)
                    tx.event(Event.claude_session_attached, claude_session=conversation, since=stamp, via=via,
                             previous_session=previous)
                    usage.record_binding(self.store.claude_dir, conversation, session_id, moment, via, now)
        except Timeout:
            raise LockTimeout("another process held the usage bookings lock too long; try again") from None
        return True, previous, stamp

    @operation
    def usage_bind(self, req: UsageBindRequest) -> UsageBindResult:
        """Bind a Claude Code conversation to a session from a point in time (default now): its
        responses from then on, inside the session's start..end, are the session's. Responses
        already booked keep their owner."""
        from session_manager.usage.api import BindResult

        session_id = self.resolve_id(req.session_id)
        recorded, previous, since = self._bind(session_id, req.claude_session, req.since, "explicit")
        if recorded:
            self._after_change(session_id, Trigger.usage_bound)
        return BindResult(session_id=session_id, claude_session=req.claude_session, since=since, recorded=recorded,
                          previous_session=previous)

    @operation
    def cost_remove(self, req: CostRemoveRequest) -> CostRemoval:
        """Take a manual cost entry (`cost add`) back out of the session's cost tracking,
        journalled as `cost_removed` with the amount and the reason."""
        from session_manager import costs

        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            removal = costs.remove(tx, req.entry, req.reason)
            self._finish(tx)
        self._after_change(session_id, Trigger.cost_removed)
        removal.total_cost, removal.alerts = tx.state.cost_tracking.total_cost, list(tx.state.alerts)
        return removal

    # -- batches, cross-phase context, templates that learn (issue 17) ---------------------------
    def _stage_context(self, state: SessionState, stage: str | None) -> StageContext | None:
        """What the agent starting `stage` needs from before it: the outputs handed over, the
        previous stage's notes, score and failed gate attempts, this stage's own gate feedback
        (a retry or a route-back), and the learnings recorded during the previous stage."""
        from session_manager import phases
        from session_manager.model import DONE_STAGE

        if stage is None or stage not in state.stages:
            return None
        names = list(state.stages)
        before = names[: names.index(stage)]
        previous = next((n for n in reversed(before) if state.stages[n].status in DONE_STAGE), None)
        own = state.stages[stage].feedback
        context = StageContext(phase=phases.phase_of(self.config, state.level, stage),
                               inputs=pipeline.handed_over(state, stage),
                               feedback=[f"{stage}: {own}"] if own else [])
        if previous is None:
            return context
        done = state.stages[previous]
        context.previous_stage = previous
        context.previous_phase = phases.phase_of(self.config, state.level, previous)
        context.previous_score = done.overall_score
        folder = self.store.session_dir(state.session_id)
        try:
            record = json.loads((folder / f"{previous}_complete.json").read_bytes())
            context.notes = record.get("notes") if isinstance(record, dict) else None
        except (OSError, ValueError):
            pass
        reports = folder / "quality_reports"
        try:
            attempts = sorted(reports.glob(f"{previous}_attempt*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            attempts = []
        for path in attempts[-5:]:
            try:
                report = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(report, dict) and report.get("passed") is False:
                context.feedback.append(f"{previous} attempt {report.get('attempt')}: "
                                        + "; ".join(str(f) for f in report.get("feedback") or []))
        context.learnings = [n.text for n in state.progress.learnings if n.stage == previous]
        return context

    def _phases(self, state: SessionState) -> list[Any]:
        """Phase progress and cost (issue 17), when the level has phases configured."""
        from session_manager import phases

        return phases.progress(state, self.config) if self.config.phases.for_level(state.level) else []

    def _project_backup(self, reason: Trigger) -> None:
        """A backup after a change that belongs to no one session (a batch, the config); a
        failure is a warning: the change is saved."""
        from session_manager.errors import BackupError

        if not self.config.backup.enabled:
            return
        if self.defer_backup is not None:
            self.defer_backup(reason)
            return
        try:
            self._trail().backup(reason)
        except BackupError as exc:
            self.warnings.append(f"saved; the backup failed ({exc})")

    @operation
    def batch(self, req: BatchRequest) -> BatchStatus | BatchNext | BatchReport:
        """Batches of production episodes with a cap on members in progress: start, status,
        next (which member to run), report, end."""
        from session_manager import batch

        batches = batch.Batches(self.store, self.config.lock_timeout_seconds)
        if req.action == "start":
            return self._batch_start(req, batches)
        if req.action == "end":
            return self._batch_end(req, batches)
        chosen = batch.resolve(batches, req.batch_id)
        if req.action == "next":
            return batch.next_member(self, chosen)
        if req.action == "report":
            return batch.report(self, chosen)
        return batch.status(self, chosen)

    def _batch_start(self, req: BatchRequest, batches: Any) -> BatchStatus:
        from session_manager import batch

        assert req.level is not None and req.episodes is not None  # the request model requires them
        if req.level.name != "production":
            raise InvalidInput(f"a batch is of production episodes (batch start prod 2-8), not {req.level.name}")
        episodes = batch.parse_episodes(req.episodes)
        topics: list[str | None] = (list(batch.read_topics(req.topics_file, len(episodes), Path.cwd(), self.root))
                                    if req.topics_file else [req.topic] * len(episodes))
        config, now = self.config, self.clock()
        member_budget = round(req.budget_usd / len(episodes), 4) if req.budget_usd is not None else None
        made = batch.Batch(batch_id=f"batch_{now.astimezone():%Y%m%d_%H%M}", episodes=episodes,
                           max_concurrent=req.max_concurrent or config.batch.max_concurrent,
                           budget_usd=req.budget_usd, member_budget_usd=member_budget, created_at=now,
                           created_by=self.actor)
        batch_id = batches.create(made, self.actor)
        deferred: list[str] = []
        saved, self.defer_backup = self.defer_backup, deferred.append  # one backup for the whole batch
        try:
            for number, topic in zip(episodes, topics):
                detail = self.start(level="production", number=number, topic=topic, budget_usd=member_budget)
                session_id = detail.state.session_id
                batches.add_to_index({session_id: batch_id})
                with batches.lock(batch_id):
                    current = batches.read(batch_id)
                    current.members.append(batch.Member(session_id=session_id, episode_number=number, topic=topic,
                                                        budget_usd=detail.state.budget.usd))
                    batches.commit(current, self.actor, self.clock(),
                                   [{"event": Event.member_added, "session_id": session_id, "episode_number": number}])
        finally:
            self.defer_backup = saved
        self._project_backup(Trigger.batch_start)
        return batch.status(self, batches.read(batch_id))

    def _batch_end(self, req: BatchRequest, batches: Any) -> BatchStatus:
        from session_manager import batch

        chosen = batch.resolve(batches, req.batch_id, active_only=req.batch_id is None)
        with batches.lock(chosen.batch_id):
            current = batches.read(chosen.batch_id)
            if current.status == "ended":
                raise InvalidTransition(f"batch {current.batch_id} already ended; a batch ends once")
            shown = batch.status(self, current)
            active = shown.in_progress + shown.waiting
            if active and not req.force:
                raise InvalidTransition(
                    f"batch {current.batch_id} has members still active: {', '.join(active)}; end them first,"
                    " or end the batch anyway with --force (they go on alone, no longer held to the cap)")
            current.status, current.ended_at = "ended", self.clock()
            batches.commit(current, self.actor, current.ended_at, [{"event": Event.batch_ended, "still_active": active}])
        self._project_backup(Trigger.batch_end)
        return batch.status(self, batches.read(chosen.batch_id))

    @operation
    def templates_evolve(self, req: EvolveRequest) -> Evolution:
        """Propose, from this project's successful sessions, expected minutes per stage, budget
        targets, gate thresholds and plan lessons; with apply, write them (backed up first)."""
        from session_manager import evolve

        result = evolve.propose(self.store, self.config, evolve.levels_of(req.level.name if req.level else None),
                                self.root)
        if not req.apply or not result.diff:
            return result
        return self._evolve_apply(result)

    def _evolve_apply(self, result: Evolution) -> Evolution:
        from session_manager import evolve
        from session_manager.errors import BackupError
        from session_manager.store import append_lines, guard, undo_append

        new_toml, old_toml = evolve.render_config(self.store.claude_dir, self.config, result.proposals)
        templates = evolve.template_changes(self.root, result.proposals)
        before = None
        if self.config.backup.enabled:
            try:
                before = self._trail().backup("before evolve").revision
            except BackupError as exc:
                raise BackupError(f"nothing was written: the backup before applying failed ({exc})") from None
        else:
            self.warnings.append("the files were not backed up first: backups are disabled (backup.enabled = false)")
        written = ([f".claude/{CONFIG_NAME}"] if new_toml != old_toml else []) + \
            [str(path.relative_to(self.root)) for path, _, _ in templates]
        journal = evolve.journal_path(self.store)
        guard(journal.parent)
        journal.parent.mkdir(parents=True, exist_ok=True)
        record = {"at": self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"), "actor": self.actor, "event": Event.templates_evolved,
                  "written": written, "backup_before": before,
                  "proposals": [p.model_dump(mode="json", exclude={"evidence"}) for p in result.proposals]}
        mark = append_lines(journal, [record])
        try:
            if new_toml != old_toml:
                atomic_write(self.store.claude_dir / CONFIG_NAME, new_toml)
            for path, _, text in templates:
                guard(path.parent)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text)
        except BaseException:
            undo_append(journal, *mark)
            raise
        self._config = None  # the next read sees the new file
        self._project_backup(Trigger.templates_evolved)
        undo = f"session-manager backup restore --project-files --at {before[:12]}" if before else None
        return result.model_copy(update={"applied": True, "written": written, "backup_before": before, "undo": undo})

    # -- tasks (seed 004) ----------------------------------------------------------------
    def _expected_minutes(self, level: str) -> dict[str, float | None]:
        """Each stage's expected minutes from the config (for time efficiency)."""
        try:
            return {stage.name: stage.expected_minutes for stage in self.config.pipeline(level)}
        except SessionError:
            return {}

    @operation
    def task(self, req: TaskRequest) -> TaskResult:
        """Seed 004's task lifecycle: add, start, done, fail, block, unblock, edit, remove; journalled,
        with `tasks.json` written in the same transaction."""
        from session_manager import tasks

        session_id = self.resolve_id(req.session_id)
        with self._transaction(session_id) as tx:
            state, touched = tx.state, []
            if state.ended_at is not None:
                raise InvalidTransition(f"session {session_id} has ended ({state.status}); its tasks cannot change")
            if req.action == "add":
                for title in req.items:
                    touched.append(tasks.add(tx, title, req.agent, req.estimate, req.files, req.tests))
            else:
                for ref in req.items:
                    task = tasks.find(state.progress, ref)
                    if req.action == "edit":
                        tasks.edit(tx, task, {"title": req.title, "agent": req.agent, "estimated_minutes": req.estimate,
                                              "files": req.files, "tests": req.tests, "output": req.output})
                    elif req.action == "remove":
                        tasks.remove(tx, task, req.reason)
                    else:
                        tasks.move(tx, task, req.action, req.output, req.reason)
                    touched.append(task)
            tasks.write(tx)
            self._finish(tx)
        self._after_change(session_id, Trigger.update)
        return tasks.TaskResult(session_id=session_id, action=req.action, tasks=[tasks.entry(t) for t in touched],
                                metrics=tasks.task_metrics(tx.state.progress))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _find(items: list[Any], ref: str, what: str, text: Callable[[Any], str]) -> Any:
    """An item by id (`3` or `#3`) or by its exact text."""
    key = ref.lstrip("#")
    for item in items:
        if key.isdigit() and item.id == int(key):
            return item
    for item in items:
        if text(item) == ref:
            return item
    known = "; ".join(f"#{item.id} {text(item)[:40]}" for item in items[:10]) or "none"
    raise NotFound(f"no {what} {ref!r} (by id or exact text); {what}s: {known}")


__all__ = ["Service"]
