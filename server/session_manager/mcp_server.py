"""The MCP server: session tools, resources and prompts over stdio (`session-manager serve`).

Thin by design: each tool passes its arguments to one `Service` method and turns the result
into a compact view model. Validation, state and every rule live in the service layer.

The tool list is context every conversation pays for, so tools return compact views (the full
state is the resource `session://{session_id}`) and schemas carry no generated titles.
A `SessionError` (the user's mistake) comes back as a tool error holding the message the CLI
prints; anything else is our fault and is logged by the SDK.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from mcp_types import Tool as MCPTool
from pydantic import BaseModel, Field, ValidationError

from session_manager import __version__, operations
from session_manager.errors import InvalidInput, NotFound, SessionError
from session_manager.operations import Effect, Operation
from session_manager.service import Service
from session_manager.store import find_root

SERVER_NAME = "sessions"
INSTRUCTIONS = (
    "Durable work sessions kept in .claude/ (levels: dev, prod, platform, coded). Call session_status"
    " first to see active sessions; pass their session_id to the other tools (omitted, it means the active"
    " session touched last). Record progress as it"
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



# -- the server --------------------------------------------------------------------------
class SessionServer(MCPServer):
    """The session tools are generated from the operation registry: listed with the request model's
    strict schema, validated by that model, run in a worker thread, answered with a compact view.
    One place turns the user's mistakes into tool errors, like the CLI's one handler."""

    service_factory: Callable[[], Service]
    derived: DerivedWork

    async def list_tools(self) -> list[MCPTool]:
        return [*registry_tools(), *await super().list_tools()]

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        op = operations.BY_TOOL.get(name)
        return input_schema(op) if op is not None else super()._tool_input_schema(name)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        op = operations.BY_TOOL.get(name)
        if op is None:
            return await super().call_tool(name, arguments, context)
        import anyio.to_thread

        try:
            view = await anyio.to_thread.run_sync(invoke, op, arguments, self.service_factory)
        except SessionError as exc:
            return tool_error(str(exc))
        late = self.derived.take_warnings()
        if late and hasattr(view, "warnings"):
            view.warnings = [*(view.warnings or []), *late]
        data = view.model_dump(mode="json", exclude_none=True)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _internal_values() -> dict[str, Callable[[], Any]]:
    """Request fields the server sets itself, not the caller."""
    return {"claude_session": _claude_session}


def invoke(op: Operation, arguments: dict[str, Any], factory: Callable[[], Service]) -> BaseModel:
    """Run one tool call: unknown argument names are refused (naming the allowed ones) before
    anything is read or written; the request model validates the rest."""
    allowed = op.exposed_fields()
    unknown = [key for key in arguments if key not in allowed]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise InvalidInput(f"unknown argument{'s' if len(unknown) > 1 else ''} {names} for {op.tool};"
                           f" allowed: {', '.join(allowed) or 'none'}")
    values = dict(arguments)
    internal = _internal_values()
    for name in op.internal:
        if name in internal:
            values[name] = internal[name]()
    svc = factory()
    result = getattr(svc, op.name)(**values)
    if op.tool_view is None:
        raise TypeError(f"operation {op.name} has a tool but no tool_view")
    view: BaseModel = operations.load(op.tool_view)(result)
    if svc.warnings and hasattr(view, "warnings"):
        view.warnings = [*(view.warnings or []), *svc.warnings]
    return view


def annotations_of(op: Operation) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=op.effect == Effect.read, destructive_hint=op.effect == Effect.destroy,
                           idempotent_hint=op.effect == Effect.read, open_world_hint=op.open_world)


def input_schema(op: Operation) -> dict[str, Any]:
    return _input_schema(op.name)


@functools.cache
def _input_schema(name: str) -> dict[str, Any]:
    """The request model's JSON schema, compact, without the fields the server sets itself;
    strict: `additionalProperties: false`."""
    op = operations.get(name)
    schema: dict[str, Any] = compact_schema(op.request_model().model_json_schema())
    properties = schema.get("properties", {})
    for name in op.internal:
        properties.pop(name, None)
    if "required" in schema:
        schema["required"] = [name for name in schema["required"] if name in properties]
    for prop in properties.values():  # optional means "omit it": `null` is accepted, not advertised
        kinds = prop.get("type")
        if isinstance(kinds, list) and "null" in kinds and len(kinds) == 2:
            prop["type"] = next(kind for kind in kinds if kind != "null")
    schema["properties"] = properties
    schema["additionalProperties"] = False
    return schema


@functools.cache
def registry_tools() -> tuple[MCPTool, ...]:
    return tuple(MCPTool(name=op.tool, description=op.tool_summary or op.summary, input_schema=input_schema(op),
                         annotations=annotations_of(op))
                 for op in operations.OPERATIONS if op.tool)


def tool_error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


LEVEL = "dev, prod, platform or coded (or 1-4)"


def build_server(root: Path | None = None, *, backups: bool = True, after_answer: bool | None = None) -> SessionServer:
    """The server for the project at `root` (found like git finds .git when not given).
    `backups=False` leaves out the background backup loop (tests of the tools alone)."""
    project = (root or find_root()).resolve()
    # backups asked for by triggers (stage complete, session end...) go to the loop's thread,
    # so a tool call never waits for git; without the loop they run inline
    backup_requests: queue.Queue[str] | None = queue.Queue() if backups else None

    worker = DerivedWork()
    # derived work (markdown, duration history, backup requests) runs after the answer; set
    # SESSION_MANAGER_AFTER_ANSWER=0 to run it inside each call instead
    defer = after_answer if after_answer is not None else os.environ.get("SESSION_MANAGER_AFTER_ANSWER") != "0"
    wake = BackupWake(backup_requests) if backup_requests is not None else None

    def service() -> Service:
        svc = Service(project, actor="mcp")
        if wake is not None:
            svc.defer_backup = wake
        if defer:
            svc.hand_over(worker.submitter(svc))
        return svc

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        stop = threading.Event()
        thread = _start_backup_loop(project, stop, backup_requests) if backup_requests is not None else None
        worker.start()
        try:
            yield {"root": project}
        finally:
            import anyio.to_thread

            await anyio.to_thread.run_sync(worker.stop)  # the derived work still queued is done first
            stop.set()
            if thread is not None:
                import anyio.to_thread

                await anyio.to_thread.run_sync(thread.join, BACKUP_STOP_TIMEOUT)

    server = SessionServer(
        SERVER_NAME, version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan,
    )
    server.service_factory = service
    server.derived = worker
    _add_resources(server, service)
    _add_prompts(server)
    return server


def _claude_session() -> str | None:
    """The Claude Code conversation that started this server (Claude Code sets
    CLAUDE_CODE_SESSION_ID for its MCP servers); None outside Claude Code or when malformed."""
    value = os.environ.get("CLAUDE_CODE_SESSION_ID", "")
    return value if re.fullmatch(r"[A-Za-z0-9_-]{1,100}", value) else None


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


class DerivedWork:
    """One worker thread for the derived work of the tool calls (markdown, duration history,
    backup requests): a call answers once its change is committed; this runs after it, outside
    the session lock. Without a running worker (no lifespan), the work runs in the call."""

    # a job starts this long after it was handed over: the answer it follows is serialised and
    # written first, without a worker holding the GIL for milliseconds of fsyncs and rendering
    START_DELAY = 0.01

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[Callable[[], None], float] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.pending: list[str] = []  # warnings of derived work done after its call answered

    def submitter(self, svc: Service) -> Callable[[Callable[[], None]], None]:
        """How `svc` hands over its derived work: warnings the work raises after the call has
        answered are kept and given to the next call's result (they are not lost)."""

        def submit(job: Callable[[], None]) -> None:
            def run() -> None:
                before = len(svc.warnings)
                job()
                late = svc.warnings[before:]
                if late and self.thread is not None:
                    with self.lock:
                        self.pending += [f"after an earlier call: {w}" for w in late]

            self.submit(run)

        return submit

    def take_warnings(self) -> list[str]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken

    def drain(self) -> None:
        """Wait until the derived work handed over so far is done (tests, shutdown)."""
        if self.thread is not None and self.thread.is_alive():
            self.jobs.join()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="session-manager-derived", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        if self.thread is None or not self.thread.is_alive():
            job()
            return
        self.jobs.put((job, time.monotonic() + self.START_DELAY))

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join(BACKUP_STOP_TIMEOUT)
            self.thread = None

    def _run(self) -> None:
        import logging

        while True:
            item = self.jobs.get()
            if item is None:
                return
            job, due = item
            try:
                time.sleep(max(0.0, due - time.monotonic()))
                job()
            except Exception:  # a derived file failing must not end the worker
                logging.getLogger("session_manager").exception("derived work failed")
            finally:
                self.jobs.task_done()


class BackupWake:
    """Hands trigger backups to the backup thread without waking it on every call: a coalesced
    trigger (a stage completion, a start) is not passed on while a request is still queued (that
    backup runs after this change, so it holds it)."""

    def __init__(self, requests: queue.Queue[str]) -> None:
        self.requests = requests
        self.lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        from session_manager.backup_models import COALESCED

        with self.lock:
            if reason in COALESCED and not self.requests.empty():
                return  # the queued request's backup runs after this change: it holds it
            self.requests.put(reason)
