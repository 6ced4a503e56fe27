"""The MCP server: session tools, resources and prompts over stdio (`session-manager serve`).

Thin by design: each tool passes its arguments to one `Service` method and turns the result
into a compact view model. Validation, state and every rule live in the service layer.

The tool list is context every conversation pays for, so tools return compact views (the full
state is the resource `session://{session_id}`) and schemas carry no generated titles.
A `SessionError` (the user's mistake) comes back as a tool error holding the message the CLI
prints; anything else is our fault and is logged by the SDK.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from session_manager import __version__
from session_manager.errors import InvalidInput, NotFound, SessionError, describe_validation_error
from session_manager.results import SessionDetail, StageDecision, StageResult
from session_manager.service import Service
from session_manager.store import find_root

SERVER_NAME = "sessions"
INSTRUCTIONS = (
    "Durable work sessions kept in .claude/ (levels: dev, prod, platform, coded). Call session_status"
    " first to see active sessions; pass their session_id to the other tools. Record progress as it"
    " happens: stage_start/stage_complete around each stage, record_failure on errors, session_update"
    " for tasks, blockers, learnings and decisions. Full state: resource session://{session_id}."
)
BACKUP_STOP_TIMEOUT = 30.0
BACKUP_THREAD = "session-manager-backups"


# -- result views ------------------------------------------------------------------------
def compact_schema(node: Any, names: bool = False) -> Any:
    """The same JSON schema, smaller: no generated titles, no `default: null`, and `X | None`
    written as a type list (`["string", "null"]`) instead of an `anyOf`."""
    if isinstance(node, list):
        return [compact_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if names:  # a mapping of property (or definition) names to schemas
        return {key: compact_schema(value) for key, value in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        out[key] = compact_schema(value, names=key in ("properties", "$defs"))
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = options[0] if options[1] == {"type": "null"} else options[1]
        if isinstance(other.get("type"), str):
            del out["anyOf"]
            out.update({**other, "type": [other["type"], "null"]})
    return out



class SessionView(BaseModel):
    """A session; stages as `name: status (attempts, score: note)`, tasks and blockers as `#id text`."""

    session_id: str
    level: str
    status: str
    topic: str | None = None
    current_stage: str | None = None
    progress_percent: float
    stages: list[str]
    total_cost: float
    budget_usd: float | None = None
    quality: float | None = None
    errors: int
    tasks_pending: list[str]
    tasks_done: int
    blockers: list[str]
    alerts: list[str]
    minutes_left: float | None = None
    summary: str | None = None

    @classmethod
    def of(cls, detail: SessionDetail) -> SessionView:
        state, meta = detail.state, detail.metadata
        progress = state.progress
        return cls(
            session_id=state.session_id, level=state.level, status=str(state.status), topic=meta.topic,
            current_stage=state.current_stage, progress_percent=progress.percent,
            stages=[_stage_line(name, stage) for name, stage in state.stages.items()],
            total_cost=state.cost_tracking.total_cost, budget_usd=state.budget.usd,
            quality=state.quality_overall, errors=state.error_count,
            tasks_pending=[f"#{t.id} {t.title}" for t in progress.tasks_pending],
            tasks_done=len(progress.tasks_completed),
            blockers=[f"#{b.id} {b.text}" for b in progress.blockers],
            alerts=[f"{a.severity} {a.kind}: {a.message}" for a in state.alerts],
            minutes_left=(round(detail.estimate_remaining_seconds / 60, 1)
                          if detail.estimate_remaining_seconds is not None else None),
            summary=state.summary,
        )


def _stage_line(name: str, stage: Any) -> str:
    details = []
    if stage.attempts:
        details.append(f"attempt {stage.attempts}")
    if stage.overall_score is not None:
        details.append(f"score {stage.overall_score:.2f}")
    line = f"{name}: {stage.status}" + (f" ({', '.join(details)})" if details else "")
    note = stage.override_reason or stage.feedback or stage.last_error
    return line + (f": {note[:200]}" if note else "")


class SessionsView(BaseModel):
    sessions: list[SessionView]


class StageOutcome(StageDecision):
    """The pipeline's decision: started, advanced, completed, retry, routed_back, escalated or resumed."""

    alerts: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: StageResult) -> StageOutcome:
        return cls(**result.model_dump(exclude={"alerts"}),
                   alerts=[f"{a.severity} {a.kind}: {a.message}" for a in result.alerts])


class ReportView(BaseModel):
    """A period's sessions in figures; rates are 0..1, money in USD, lines as short text."""

    period: str
    since: str
    until: str
    level: str | None = None
    sessions: int
    finished: int
    in_progress: int
    failed: int
    abandoned: int
    completion_rate: float | None = None
    error_recovery_rate: float | None = None
    quality_mean: float | None = None
    quality_stdev: float | None = None
    cost_usd: float
    cost_per_session_usd: float | None = None
    cost_vs_target: float | None = None
    minutes_to_complete: float | None = None
    cost_by_stage: list[str]
    gate_failures: list[str]
    recurring_errors: list[str]
    alerts: list[str]
    trend: list[str]

    @classmethod
    def of(cls, report: Any) -> ReportView:
        counts, cost = report.sessions, report.cost
        quality = report.quality.get("overall")
        done = report.time_to_completion_seconds.median
        return cls(
            period=report.period, since=_day(report.since), until=_day(report.until), level=report.level,
            sessions=counts.run, finished=counts.finished, in_progress=counts.in_progress, failed=counts.failed,
            abandoned=counts.abandoned, completion_rate=counts.completion_rate,
            error_recovery_rate=counts.error_recovery_rate,
            quality_mean=quality.mean if quality else None, quality_stdev=quality.stdev if quality else None,
            cost_usd=round(cost.total_usd, 4), cost_per_session_usd=cost.per_session.mean,
            cost_vs_target=cost.vs_target, minutes_to_complete=round(done / 60, 1) if done is not None else None,
            cost_by_stage=[f"{c.stage}: ${c.total_usd:.2f} ({c.share:.0%})" for c in cost.by_stage],
            gate_failures=[f"{g.stage}: {g.failures} in {g.sessions} session(s)" for g in report.gate_failures],
            recurring_errors=[f"{e.pattern} x{e.count} in {e.sessions} session(s) ({', '.join(e.stages)})"
                              for e in report.recurring_errors],
            alerts=[f"{a.session_id} {a.severity} {a.kind}: {a.message}" for a in report.alerts],
            trend=[f"{d.day}: {d.sessions} run, {d.finished} done, ${d.cost_usd:.2f}"
                   + (f", q {d.quality:.2f}" if d.quality is not None else "") for d in report.trend],
        )


def _day(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


class BackupLine(BaseModel):
    revision: str
    time: str
    reason: str


class BackupOutcome(BaseModel):
    """now: the commit made, or why none; history: a session's backups, newest first;
    restore: the files brought back, and how to undo it."""

    action: str
    committed: bool = False
    revision: str | None = None
    sessions: list[str] = Field(default_factory=list)
    skipped: str | None = None
    backups: list[BackupLine] = Field(default_factory=list)
    restored: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    undo: str | None = None


# -- the server --------------------------------------------------------------------------
class SessionServer(MCPServer):
    """One place turns the user's mistakes into tool errors, like the CLI's one handler."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, SessionError):
                return tool_error(str(cause))
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                return tool_error(describe_validation_error(cause))
            raise


def tool_error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


LEVEL = "dev, prod, platform or coded (or 1-4)"


def build_server(root: Path | None = None, *, backups: bool = True) -> SessionServer:
    """The server for the project at `root` (found like git finds .git when not given).
    `backups=False` leaves out the background backup loop (tests of the tools alone)."""
    project = (root or find_root()).resolve()
    # backups asked for by triggers (stage complete, session end...) go to the loop's thread,
    # so a tool call never waits for git; without the loop they run inline
    backup_requests: queue.Queue[str] | None = queue.Queue() if backups else None

    def service() -> Service:
        svc = Service(project, actor="mcp")
        if backup_requests is not None:
            svc.defer_backup = backup_requests.put
        return svc

    # -- tools ------------------------------------------------------------------------
    def session_start(
        level: Annotated[str, Field(description=LEVEL)],
        number: Annotated[int | None, Field(description="episode number (prod only)")] = None,
        topic: str | None = None,
        complexity: Annotated[int | None, Field(description="1-10")] = None,
        tag: Annotated[str | None, Field(description="replaces the time in the id")] = None,
        budget_usd: float | None = None,
        objectives: list[str] | None = None,
    ) -> SessionView:
        # the conversation's token usage belongs to this session: start records its id
        detail = service().start(level=level, number=number, topic=topic, complexity=complexity, tag=tag,
                                 budget_usd=budget_usd, objectives=objectives, claude_session=_claude_session())
        return SessionView.of(detail)

    def session_status(
        session_id: Annotated[str | None, Field(description="omit for every active session")] = None,
    ) -> SessionsView:
        svc = service()
        if session_id is not None:
            return SessionsView(sessions=[SessionView.of(svc.show(session_id=session_id))])
        active = svc.list_sessions(status="active").sessions
        return SessionsView(sessions=[SessionView.of(svc.show(session_id=s.session_id)) for s in active])

    def stage_start(
        session_id: str,
        stage: Annotated[str | None, Field(description="omit for the next pending stage")] = None,
    ) -> StageOutcome:
        return StageOutcome.of(service().stage_start(session_id=session_id, stage=stage))

    def stage_complete(
        session_id: str,
        stage: str,
        outputs: Annotated[dict[str, str] | None, Field(description="handed to the next stage")] = None,
        quality: Annotated[dict[str, float] | None, Field(description="metric: 0..1; overall sets the score")] = None,
        cost_usd: float | None = None,
        tokens: int | None = None,
        model: str | None = None,
        notes: str | None = None,
    ) -> StageOutcome:
        return StageOutcome.of(service().stage_complete(
            session_id=session_id, stage=stage, outputs=outputs, quality=quality, cost_usd=cost_usd,
            tokens=tokens, model=model, notes=notes))

    def record_failure(
        session_id: str,
        stage: str,
        error: str,
        retryable: Annotated[bool, Field(description="false escalates at once")] = True,
    ) -> StageOutcome:
        return StageOutcome.of(service().record_failure(
            session_id=session_id, stage=stage, error=error, retryable=retryable))

    def session_resume(
        session_id: str,
        from_stage: Annotated[str | None, Field(description="a completed stage to redo from")] = None,
    ) -> StageOutcome:
        return StageOutcome.of(service().resume(session_id=session_id, from_stage=from_stage))

    def session_update(
        session_id: str,
        add_tasks: list[str] | None = None,
        complete_tasks: Annotated[list[str] | None, Field(description="task ids (#3) or exact titles")] = None,
        blockers: list[str] | None = None,
        clear_blockers: Annotated[list[str] | None, Field(description="blocker ids or exact texts")] = None,
        learnings: list[str] | None = None,
        decisions: list[str] | None = None,
    ) -> SessionView:
        return SessionView.of(service().update(
            session_id=session_id, add_tasks=add_tasks, complete_tasks=complete_tasks, blockers=blockers,
            clear_blockers=clear_blockers, learnings=learnings, decisions=decisions))

    def session_end(
        session_id: str,
        summary: str | None = None,
        abandoned: bool = False,
    ) -> SessionView:
        return SessionView.of(service().end(session_id=session_id, summary=summary, abandoned=abandoned))

    def session_report(
        period: Literal["today", "week", "month"] = "week",
        since: Annotated[str | None, Field(description="YYYY-MM-DD, overrides period")] = None,
        until: Annotated[str | None, Field(description="YYYY-MM-DD")] = None,
        level: Annotated[str | None, Field(description=LEVEL + "; omit for all")] = None,
    ) -> ReportView:
        return ReportView.of(service().report(period=period, since=since, until=until, level=level))

    def session_backup(
        action: Literal["now", "history", "restore"] = "now",
        session_id: Annotated[str | None, Field(description="history/restore; omit for the active one")] = None,
        at: Annotated[str | None, Field(description="restore: a revision from history")] = None,
    ) -> BackupOutcome:
        svc = service()
        if action == "now":
            if session_id is not None or at is not None:
                raise InvalidInput("backup now saves every session: give no session_id or at")
            done = svc.backup_now(reason="manual")
            return BackupOutcome(action=action, committed=done.committed, revision=done.short,
                                 sessions=done.sessions, skipped=done.skipped)
        if action == "history":
            if at is not None:
                raise InvalidInput("at is for restore; history lists every backup of the session")
            found = svc.backup_history(session_id=session_id)
            return BackupOutcome(action=action, sessions=[found.session_id], backups=[
                BackupLine(revision=e.short, time=e.time.strftime("%Y-%m-%dT%H:%M:%S%z"), reason=e.reason)
                for e in found.entries])
        back = svc.backup_restore(session_id=session_id, at=at)
        return BackupOutcome(action=action, committed=back.backup_before.committed, revision=back.short,
                             sessions=[back.session_id], restored=back.restored, deleted=back.deleted,
                             undo=back.undo)

    write = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                            open_world_hint=False)
    read = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    tools: list[tuple[Callable[..., Any], str, ToolAnnotations]] = [
        (session_start, "Start a work session; production needs an episode number.", write),
        (session_status, "Show a session, or every active session.", read),
        (stage_start, "Start a pipeline stage (the next one when none is named).", write),
        (stage_complete, "Complete a stage: record outputs, quality, cost; the gate decides what is next.", write),
        (record_failure, "Record a stage failure: retry while attempts remain, else escalate.", write),
        (session_resume, "Resume a failed or interrupted session, optionally from a completed stage.", write),
        (session_update, "Add or complete tasks, add or clear blockers, record learnings and decisions.", write),
        (session_end, "End a session as completed, or abandoned.", write),
        (session_report, "Report on sessions of today, the week, the month or a date range.", read),
        (session_backup, "Back up session files to git now, list a session's backups, or restore one.",
         ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)),
    ]

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        stop = threading.Event()
        thread = _start_backup_loop(project, stop, backup_requests) if backup_requests is not None else None
        try:
            yield {"root": project}
        finally:
            stop.set()
            if thread is not None:
                import anyio.to_thread

                await anyio.to_thread.run_sync(thread.join, BACKUP_STOP_TIMEOUT)

    server = SessionServer(
        SERVER_NAME, version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan,
        tools=[_tool(fn, description, annotations) for fn, description, annotations in tools],
    )
    _add_resources(server, service)
    _add_prompts(server)
    return server


def _claude_session() -> str | None:
    """The Claude Code conversation that started this server (Claude Code sets
    CLAUDE_CODE_SESSION_ID for its MCP servers); None outside Claude Code or when malformed."""
    value = os.environ.get("CLAUDE_CODE_SESSION_ID", "")
    return value if re.fullmatch(r"[A-Za-z0-9_-]{1,100}", value) else None


def _tool(fn: Callable[..., Any], description: str, annotations: ToolAnnotations) -> Tool:
    tool = Tool.from_function(fn, description=description, annotations=annotations)
    tool.parameters = compact_schema(tool.parameters)
    tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool


def _start_backup_loop(project: Path, stop: threading.Event, requests: queue.Queue[str]) -> threading.Thread:
    """The periodic backup (backup.interval_seconds, 5 minutes by default) and the backups that
    tools ask for run in their own thread: git work never blocks the event loop or a tool call.
    Failures go to stderr (the MCP log) and never end it."""
    from session_manager import backup

    thread = threading.Thread(target=backup.run_loop, args=(project,), kwargs={"stop": stop, "requests": requests},
                              name=BACKUP_THREAD, daemon=True)
    thread.start()
    return thread


# -- resources ---------------------------------------------------------------------------
def _add_resources(server: MCPServer, service: Callable[[], Service]) -> None:
    @server.resource("session://{session_id}", name="session", mime_type="application/json",
                     description="A session's state, metadata and time estimate (JSON).")
    def session_state(session_id: str) -> str:
        with _resource_errors():
            return service().show(session_id=session_id).model_dump_json(indent=2)

    @server.resource("session://{session_id}/{+file}", name="session-file",
                     description="A file of a session: context.md, plan.md, events.jsonl, stage records...")
    def session_file(session_id: str, file: str) -> str:
        with _resource_errors():
            return service().store.session_file(session_id, file).read_text(encoding="utf-8", errors="replace")


@contextmanager
def _resource_errors() -> Iterator[None]:
    """SessionError -> ResourceError with the same message (NotFound -> not found)."""
    try:
        yield
    except NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from None
    except SessionError as exc:
        raise ResourceError(str(exc)) from None


# -- prompts -----------------------------------------------------------------------------
PROMPTS: dict[str, tuple[str, str]] = {
    "start": ("Start a session: level (dev, prod, platform, coded), episode number for prod, topic.",
              "Start a session-manager session with session_start using: {args}. Then show its id, stages"
              " and the first stage, and ask what to work on if no topic was given."),
    "status": ("Show the active sessions, or one session.",
               "Call session_status{args_suffix} and summarise each session: stage, progress, cost against"
               " budget, open tasks, blockers and alerts."),
    "stage": ("Start, complete or fail a stage of a session.",
              "Carry out this stage operation with stage_start, stage_complete or record_failure: {args}."
              " Report the decision and what comes next."),
    "task": ("Add or complete tasks, blockers, learnings or decisions.",
             "Update the session with session_update: {args}. Show the open tasks afterwards."),
    "end": ("End a session with a summary.",
            "End the session with session_end: {args}. Write a one-paragraph summary of what was achieved"
            " if none was given, and list learnings worth keeping."),
    "resume": ("Resume a failed or interrupted session.",
               "Resume the session with session_resume: {args}. Explain where work restarts and why it stopped."),
    "report": ("Report on sessions: today, week, month or a date range.",
               "Call session_report with: {args}. Present the figures, trends and recurring errors, and"
               " suggest improvements."),
    "backup": ("Back up session files now, list backups, or restore one.",
               "Call session_backup with: {args}. Say what was committed or restored."),
}


def _add_prompts(server: MCPServer) -> None:
    for verb, (description, text) in PROMPTS.items():
        server.add_prompt(Prompt.from_function(_prompt(text), name=verb, description=description))


def _prompt(text: str) -> Callable[..., str]:
    def render(arguments: str = "") -> str:
        args = arguments.strip()
        return text.format(args=args or "no arguments (use sensible defaults; ask if something is missing)",
                           args_suffix=f" ({args})" if args else "")

    return render
