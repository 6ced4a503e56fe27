"""The operation registry: every operation declared once.

An `Operation` names its request model, the `Service` method (or, for a few CLI-only commands,
the function) it runs, a one-line summary, its effect (read, write, destroy), its CLI spellings and
its MCP tool. The CLI parser (`cli.py`), the MCP tools (`mcp_server.py`), the slash command's verb
table and the reference docs (`docs.py`) are all generated from this table, so adding an operation
is one entry here plus its service method.

This module is data only and cheap to import: models, services and views are named as
"module:attribute" strings and imported when an operation runs.

The CLI grammar of positional words (`Cli.args`), read left to right:
- `ID?`       an optional session id, taken when the word has the shape of one;
- `name`      a required word for the request field `name`;
- `name?`     an optional word;
- `name...`   one or more words, a list field (one item per word);
- `name*`     the remaining words joined by spaces into a text field (may be empty);
- `name...:TEXT` (any token) names the words TEXT in the help instead of NAME.
Every other request field becomes a `--flag` (underscores as dashes, renamed by `Cli.flags`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Effect(StrEnum):
    """What an operation does to the user's data; MCP annotations are derived from it."""

    read = "read"
    write = "write"
    destroy = "destroy"


@dataclass(frozen=True)
class Option:
    """A CLI-only presentation option (not a request field), handled by the CLI view."""

    flag: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Cli:
    """One CLI spelling of an operation."""

    path: str  # "stage complete"
    args: str = ""  # positional grammar, see the module docstring
    summary: str | None = None  # the CLI help line; the operation's summary when None
    only: tuple[str, ...] | None = None  # the request fields this spelling exposes (None: all)
    flags: Mapping[str, str] = field(default_factory=dict)  # field -> flag name, "!name" for a negated bool
    fixed: Mapping[str, Any] = field(default_factory=dict)  # fields this spelling sets itself
    defaults: Mapping[str, Any] = field(default_factory=dict)  # CLI defaults that differ from the model's
    required: tuple[str, ...] = ()  # flags the CLI requires although the model has a default
    options: tuple[Option, ...] = ()  # presentation options for the view
    view: str | None = None  # "module:function(result, options) -> str"; the operation's view when None
    json: bool = True  # offer --json


@dataclass(frozen=True)
class Operation:
    name: str  # the Service method (or the function named by `runs`)
    request: str  # "module:Model"
    summary: str
    effect: Effect
    cli: tuple[Cli, ...] = ()
    tool: str | None = None  # the MCP tool name; None keeps it off MCP
    tool_summary: str | None = None  # a shorter description for MCP when the summary is long
    tool_view: str | None = None  # "module:function(result) -> BaseModel" for MCP results
    view: str | None = None  # "module:function(result, options) -> str" for the terminal
    internal: tuple[str, ...] = ()  # request fields no surface exposes (set by the surface itself)
    runs: str | None = None  # "module:function(service_or_None, request)" instead of a Service method
    open_world: bool = False  # talks to something outside the project (a git remote)

    def request_model(self) -> Any:
        return load(self.request)

    def exposed_fields(self) -> list[str]:
        fields = self.request_model().model_fields
        return [name for name in fields if name not in self.internal]


def load(path: str) -> Any:
    """Import "module:attribute" (a module of this package, or a dotted name)."""
    module, _, attribute = path.partition(":")
    if "." not in module:
        module = f"session_manager.{module}"
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


W, R, D = Effect.write, Effect.read, Effect.destroy
UPDATE_ONE = ("session_id",)

OPERATIONS: tuple[Operation, ...] = (
    # -- lifecycle ------------------------------------------------------------------------
    Operation(
        "start", "requests:StartRequest",
        "Start a session: start prod 5 --topic CRISPR, start dev \"fix gantt\". Production needs an episode number.",
        W, tool="session_start", tool_summary="Start a work session; production needs an episode number.",
        cli=(
            Cli("start", "level number? topic*", flags={"budget_usd": "budget", "objectives": "objective"},
                view="views:started"),
            Cli("init", "", summary="Start a production session (seed spelling of `start prod N`).",
                fixed={"level": "production"}, flags={"number": "episode", "budget_usd": "budget",
                                                      "objectives": "objective"},
                required=("number",), view="views:started"),
        ),
        view="views:session_detail", tool_view="tool_views:session", internal=("claude_session",),
    ),
    Operation(
        "status", "requests:SessionRequest", "Show one session, or every active session across levels.", R,
        cli=(Cli("status", "ID?"),), tool="session_status", view="views:status", tool_view="tool_views:status",
    ),
    Operation(
        "show", "requests:SessionRequest", "Show one session in detail.", R,
        cli=(Cli("show", "ID?"),), view="views:session_detail",
    ),
    Operation(
        "list_sessions", "requests:ListRequest", "List sessions, newest first.", R,
        cli=(Cli("list"),), view="views:session_list",
    ),
    Operation(
        "update", "requests:UpdateRequest",
        "Add or complete tasks, add or clear blockers, record learnings and decisions.", W,
        tool="session_update", view="views:update_summary", tool_view="tool_views:session",
        cli=(
            Cli("blocker add", "ID? blockers...:TEXT", "Record blockers: blocker add [ID] TEXT...",
                only=("session_id", "blockers")),
            Cli("blocker clear", "ID? clear_blockers...:REF",
                "Clear blockers by #id or exact text: blocker clear [ID] REF...", only=("session_id", "clear_blockers")),
            Cli("learning add", "ID? learnings...:TEXT",
                "Record learnings: learning add [ID] TEXT... (--todo: a task of the next session)",
                only=("session_id", "learnings", "todo")),
            Cli("decision add", "ID? decisions...:TEXT", "Record decisions: decision add [ID] TEXT...",
                only=("session_id", "decisions")),
        ),
    ),
    Operation(
        "task", "requests:TaskRequest",
        "Seed 004's tasks: add, start, done, fail, block, unblock, edit, remove (journalled; tasks.json).", W,
        tool="task_update", tool_summary="Add tasks, or start/done/fail/block/unblock/edit/remove them.",
        view="views:task_result", tool_view="tool_views:task",
        cli=(
            Cli("task add", "ID? items...:TEXT", "Add tasks: task add [ID] TEXT... [--agent A] [--estimate MIN]"
                " [--file F]... [--test T]...", fixed={"action": "add"},
                only=("session_id", "items", "agent", "estimate", "files", "tests"),
                flags={"files": "file", "tests": "test"}),
            Cli("task start", "ID? items...:REF", "Start tasks: task start [ID] REF...", fixed={"action": "start"},
                only=("session_id", "items")),
            Cli("task done", "ID? items...:REF", "Complete tasks by task-N, #N or exact title: task done [ID] REF...",
                fixed={"action": "done"}, only=("session_id", "items", "output")),
            Cli("task fail", "ID? items...:REF", "Mark tasks failed: task fail [ID] REF... [--reason R]",
                fixed={"action": "fail"}, only=("session_id", "items", "reason", "output")),
            Cli("task block", "ID? items...:REF", "Block tasks: task block [ID] REF... --reason R",
                fixed={"action": "block"}, only=("session_id", "items", "reason")),
            Cli("task unblock", "ID? items...:REF", "Unblock tasks: task unblock [ID] REF...",
                fixed={"action": "unblock"}, only=("session_id", "items")),
            Cli("task edit", "ID? items...:REF", "Change a task: task edit [ID] REF [--title T] [--agent A] [--estimate MIN]"
                " [--file F]... [--test T]... [--output X]", fixed={"action": "edit"},
                only=("session_id", "items", "title", "agent", "estimate", "files", "tests", "output"),
                flags={"files": "file", "tests": "test"}),
            Cli("task remove", "ID? items...:REF", "Remove tasks (journalled): task remove [ID] REF... [--reason R]",
                fixed={"action": "remove"}, only=("session_id", "items", "reason")),
        ),
    ),
    Operation(
        "end", "requests:EndRequest", "End a session: completed, or abandoned with --abandon.", W,
        tool="session_end", tool_summary="End a session as completed, or abandoned.",
        cli=(Cli("end", "ID?", flags={"abandoned": "abandon"}),), view="views:ended", tool_view="tool_views:session",
    ),
    # -- pipeline -------------------------------------------------------------------------
    Operation(
        "stage_start", "requests:StageStartRequest",
        "Start a stage (the next one when none is named): stage start [ID] [STAGE].", W,
        tool="stage_start", tool_summary="Start a pipeline stage (the next one when none is named).",
        cli=(Cli("stage start", "ID? stage?"),), view="views:stage_result", tool_view="tool_views:stage",
    ),
    Operation(
        "stage_complete", "requests:StageCompleteRequest",
        "Complete a stage: record outputs, quality, cost; the gate decides what is next.", W,
        tool="stage_complete",
        cli=(Cli("stage complete", "ID? stage", flags={"cost_usd": "cost"}),),
        view="views:stage_result", tool_view="tool_views:stage",
    ),
    Operation(
        "record_failure", "requests:RecordFailureRequest",
        "Record a stage failure: retry while attempts remain, else escalate.", W, tool="record_failure",
        cli=(Cli("stage fail", "ID? stage", flags={"retryable": "!fatal"}, required=("error",)),),
        view="views:stage_result", tool_view="tool_views:stage",
    ),
    Operation(
        "override", "requests:OverrideRequest",
        "Bypass a stage's gate or failure, or skip a stage: a logged override with a reason.", W,
        tool="stage_override",
        cli=(
            Cli("bypass", "ID? stage", "Bypass a stage's gate or failure: a logged override with a reason.",
                fixed={"action": "bypass"}),
            Cli("stage skip", "ID? stage", "Skip a stage that is not needed (logged).", fixed={"action": "skip"},
                defaults={"reason": "not needed"}),
        ),
        view="views:override_result", tool_view="tool_views:stage",
    ),
    Operation(
        "resume", "requests:ResumeRequest",
        "Resume a failed or interrupted session, at the failure point or from a completed stage.", W,
        tool="session_resume", cli=(Cli("resume", "ID?", flags={"from_stage": "from"}),),
        view="views:stage_result", tool_view="tool_views:stage",
    ),
    Operation(
        "journal", "requests:JournalRequest", "Show the session's journal (events.jsonl).", R,
        cli=(Cli("log", "ID?"),), view="views:journal",
    ),
    # -- markdown -------------------------------------------------------------------------
    Operation(
        "render", "requests:RenderRequest",
        "Re-render a session's markdown (all files, or one: context, plan, tasks, tests, review, completed);"
        " with no active session, the session changed last.", W,
        cli=(Cli("render", "ID? name?"),), view="views:rendered",
    ),
    Operation(
        "templates_list", "requests:NoArguments",
        "List every template and the file used for it per level: the project's override or the shipped one.", R,
        cli=(Cli("templates list"),), view="views:templates",
    ),
    Operation(
        "template_show", "requests:TemplateRequest",
        "Print a template (the file used for it), to copy into .claude/templates/ and edit.", R,
        cli=(Cli("templates show", "name", json=False),), view="views:text",
    ),
    Operation(
        "template_copy", "requests:TemplateRequest",
        "Copy a shipped template into .claude/templates/ (a level's variant into its level folder) to edit it.", W,
        cli=(Cli("templates copy", "name"),), view="views:template_copied",
    ),
    # -- backups --------------------------------------------------------------------------
    Operation(
        "backup_now", "backup_models:BackupNowRequest",
        "Back up the session files to the git backup branch now (no commit when nothing changed).", W,
        tool="backup_now", cli=(Cli("backup", only=()),), view="backup_views:backup_line",
        tool_view="tool_views:backup_now", internal=("reason",),
    ),
    Operation(
        "backup_history", "backup_models:BackupHistoryRequest", "List the backups that changed a session, newest first.",
        R, tool="backup_history", cli=(Cli("backup history", "ID?"),), view="backup_views:history_view",
        tool_view="tool_views:backup_history",
    ),
    Operation(
        "backup_restore", "backup_models:BackupRestoreRequest",
        "Bring a session's files back as they were at a backup (default: the newest with a readable state);"
        " the present state is backed up first, so it can be undone.", D,
        tool="backup_restore", tool_summary="Restore a session's files from a backup (undoable). Only when asked.",
        cli=(Cli("backup restore", "ID?"),), view="backup_views:restore_view", tool_view="tool_views:backup_restore",
    ),
    Operation(
        "backup_push", "backup_models:BackupPushRequest", "Push the backup branch to a remote, so a team shares one trail.",
        W, cli=(Cli("backup push"),), view="backup_views:push_view", open_world=True,
    ),
    # -- costs, usage, reports ------------------------------------------------------------
    Operation(
        "record_cost", "requests:RecordCostRequest",
        "Record a cost: tokens per kind with their model, API calls per provider, or USD; USD is computed from"
        " the price table ([prices] in .claude/session-manager.toml) unless given.", W,
        tool="record_cost", tool_summary="Book a cost to a session: tokens with their model, API calls, or USD.",
        cli=(Cli("cost add", "ID?", flags={"input_tokens": "input", "output_tokens": "output",
                                           "cache_write_tokens": "cache-write", "cache_read_tokens": "cache-read"}),),
        view="report_views:cost_view", tool_view="tool_views:cost",
    ),
    Operation(
        "cost_remove", "requests:CostRemoveRequest",
        "Take back a manual cost entry (by the number `cost add` printed), with a reason; journalled.", W,
        tool="cost_remove", cli=(Cli("cost remove", "ID? entry"),), view="report_views:removal_view",
        tool_view="tool_views:removal",
    ),
    Operation(
        "usage", "requests:UsageRequest",
        "Claude Code token usage from its transcripts, per day, week, month, conversation or git branch;"
        " --unattributed: what no session owns.", R,
        tool="usage_report", tool_summary="Claude Code token usage and cost per day, week, month, conversation or branch.",
        cli=(Cli("usage", "period?"),), view="report_views:usage_view", tool_view="tool_views:usage",
    ),
    Operation(
        "usage_attach", "requests:UsageAttachRequest",
        "Book Claude Code's real token usage into a session as cost: the responses of the conversations bound to"
        " it, each booked once, to the stage in progress at its time.",
        W, tool="usage_attach", tool_summary="Book Claude Code's real token usage into a session as cost.",
        cli=(Cli("usage attach", "ID?"),), view="report_views:attach_view",
        tool_view="tool_views:attach",
    ),
    Operation(
        "usage_bind", "requests:UsageBindRequest",
        "Bind a Claude Code conversation to a session from a point in time: its later responses are booked there.",
        W, tool="usage_bind", tool_summary="Bind a Claude Code conversation to a session from a time on.",
        cli=(Cli("usage bind", "ID? claude_session:CONVERSATION"),), view="report_views:bind_view", tool_view="tool_views:bind",
    ),
    Operation(
        "report", "requests:ReportRequest", "Report on sessions: today, the last 7 or 30 days, or --since/--until.",
        R, tool="session_report",
        cli=(Cli("report", "period?", options=(Option("--format", "md: the report.md template; table: the terminal"
                                                      " view (default)", choices=("md", "table")),)),),
        view="report_views:report_output", tool_view="tool_views:report",
    ),
    Operation(
        "dashboard", "requests:DashboardRequest",
        "Sessions in progress, finished, failures, minutes and dollars per episode, average quality;"
        " --html FILE writes a page with charts.", R,
        tool="session_dashboard", tool_summary="Dashboard: sessions in progress, finished, failures, $ and minutes"
        " per episode, quality.",
        cli=(Cli("dashboard", options=(Option("--html", "write a self-contained HTML page (inline SVG charts)",
                                              metavar="FILE"),)),),
        view="report_views:dashboard_output", tool_view="tool_views:dashboard",
    ),
    # -- batches and templates that learn (issue 17) ---------------------------------------
    Operation(
        "batch", "requests:BatchRequest",
        "Batches of production episodes, at most N members in progress at once: start, status, next, report, end.",
        W, tool="batch", tool_summary="Episode batches, capped members in progress: start (level, episodes 2-8), status,"
        " next, report, end.",
        cli=(
            Cli("batch start", "level? episodes?", "Start a batch: batch start prod 2-8 [--topic T | --topics-file F]"
                " [--max-concurrent N] [--budget USD]; one session per episode.", fixed={"action": "start"},
                only=("level", "episodes", "topic", "topics_file", "max_concurrent", "budget_usd"),
                flags={"budget_usd": "budget"}),
            Cli("batch status", "batch_id?", "Each member of a batch: in progress, waiting, done.",
                fixed={"action": "status"}, only=("batch_id",)),
            Cli("batch next", "batch_id?", "Which member of a batch to run next, and why.", fixed={"action": "next"},
                only=("batch_id",), view="views:batch_next"),
            Cli("batch report", "batch_id?", "A batch's cost and time per member and in total, wall time against"
                " the sum of member times, quality spread, gate failures by stage.", fixed={"action": "report"},
                only=("batch_id",), view="views:batch_report"),
            Cli("batch end", "batch_id?", "End a batch (--force: with members still active).",
                fixed={"action": "end"}, only=("batch_id", "force")),
        ),
        view="views:batch_status", tool_view="tool_views:batch",
    ),
    Operation(
        "templates_evolve", "requests:EvolveRequest",
        "Propose, from this project's successful sessions, expected minutes per stage, budget targets, gate"
        " thresholds and plan lessons, as a diff; --apply writes them (backed up first, journalled).", W,
        cli=(Cli("templates evolve"),), view="views:evolution",
    ),
    # -- commands that are surfaces of their own -------------------------------------------
    Operation(
        "serve", "requests:ServeRequest", "Run the MCP server over stdio (Claude Code starts it from .mcp.json).", R,
        cli=(Cli("serve", json=False),), runs="commands:serve",
    ),
    Operation(
        "hook", "requests:HookRequest",
        "Run a Claude Code hook with its JSON on stdin: session-start (context), stop, pre-compact, session-end"
        " (autosave). Never fails a conversation: exits 0.", W,
        cli=(Cli("hook", "event?", json=False),), runs="commands:hook",
    ),
    Operation(
        "setup", "requests:SetupRequest",
        "Make `/session-manager ...` work in Claude Code: write the command file (this project, or --user);"
        " --standalone also registers the server and hooks without the plugin; --statusline the status line."
        " Idempotent; prints what it wrote and how to undo it.", W,
        cli=(Cli("setup", json=False),), runs="commands:setup",
    ),
    Operation(
        "statusline", "requests:NoArguments",
        "One line for Claude Code's status line (its JSON on stdin): the session, stage, progress, cost against"
        " budget, time left, the worst alert. Never fails.", R,
        cli=(Cli("statusline", json=False),), runs="commands:statusline",
    ),
    Operation(
        "watch", "requests:WatchRequest",
        "Autosave in the foreground: a backup now and every S seconds when anything changed, one line per commit;"
        " Ctrl-C stops it.", W, cli=(Cli("watch", json=False),), runs="commands:watch",
    ),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
BY_TOOL: dict[str, Operation] = {op.tool: op for op in OPERATIONS if op.tool}
BY_PATH: dict[str, tuple[Operation, Cli]] = {cli.path: (op, cli) for op in OPERATIONS for cli in op.cli}


def get(name: str) -> Operation:
    return BY_NAME[name]


def cli_match(words: list[str]) -> tuple[Operation, Cli, int] | None:
    """The CLI spelling named by the longest prefix of `words`, and how many words it used."""
    for size in (2, 1):
        if len(words) >= size:
            found = BY_PATH.get(" ".join(words[:size]))
            if found is not None:
                return (*found, size)
    return None


def groups() -> dict[str, list[str]]:
    """CLI command groups (`task`, `stage`, ...) and their verbs, for help and docs."""
    out: dict[str, list[str]] = {}
    for path in BY_PATH:
        head, _, verb = path.partition(" ")
        if verb:
            out.setdefault(head, []).append(verb)
    return out
