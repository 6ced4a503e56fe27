"""One input model per service operation, named after it.

Every surface (CLI, MCP, hooks, Python callers) passes plain arguments; the service validates
them into these models before anything is read or written, so bad input is refused in one
place with one message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from session_manager.levels import Level, check_session_id, resolve_level


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _session_id(value: str) -> str:
    check_session_id(value)
    return value


def _level(value: object) -> Level:
    if isinstance(value, Level):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("must be a level name like dev or prod (or 1-4)")
    return resolve_level(value)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _when(value: object) -> object:
    """Dates as `2026-11-21` (start of that day, UTC) or full ISO-8601 times."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(), UTC)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be a date like 2026-11-21 or a time like 2026-11-21T09:30:00Z") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


Text = Annotated[str, Field(max_length=4000), AfterValidator(_clean_text)]
Title = Annotated[str, Field(max_length=500), AfterValidator(_clean_text)]
# the schemas clients see carry the id's shape; the validator gives the message
SessionId = Annotated[str, Field(max_length=100), AfterValidator(_session_id),
                      WithJsonSchema({"type": "string", "pattern": r"^(dev|plan|code|ep_\d{3,6})_\d{8}_[a-z0-9-]+(_\d+)?$"})]
StageName = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
LevelArg = Annotated[Level, BeforeValidator(_level), WithJsonSchema({"type": "string"})]
Money = Annotated[float, Field(ge=0, le=1_000_000), AfterValidator(_finite)]
Score = Annotated[float, Field(ge=0, le=1), AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0, le=10**12)]
When = Annotated[datetime, BeforeValidator(_when), WithJsonSchema({"type": "string", "format": "date"})]
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


LEVEL_HELP = "dev, prod, platform or coded (or 1-4)"
# no per-field description: the server's instructions and the CLI's help say it once ("omit for the active
# session touched last"), which keeps the tool list small
OptionalId = Annotated[SessionId | None, Field()]


class Request(BaseModel):
    # defer_build: a CLI run validates one request; building every schema at import costs ~10 ms
    # allow_inf_nan=False: no NaN or infinity enters through any float of any request
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True, defer_build=True,
                              allow_inf_nan=False)


class StartRequest(Request):
    level: Annotated[LevelArg, Field(description=LEVEL_HELP)]
    number: Annotated[int | None, Field(ge=1, le=999_999, description="episode number (production only)")] = None
    topic: Annotated[Title | None, Field(description="what the session is about")] = None
    complexity: Annotated[int | None, Field(ge=1, le=10, description="1 (simple) to 10")] = None
    tag: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
                                     description="replaces the time in the id: ep_001_20261121_TAG")] = None
    budget_usd: Annotated[Money | None, Field(description="budget in USD (default from the config)")] = None
    objectives: Annotated[list[Title] | None, Field(max_length=100, description="objectives of the session")] = None
    claude_session: Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


class SessionRequest(Request):
    session_id: OptionalId = None


class JournalRequest(Request):
    session_id: OptionalId = None
    limit: Annotated[int, Field(ge=1, le=100_000, description="the last N events")] = 50


class ListRequest(Request):
    level: Annotated[LevelArg | None, Field(description="only this level (any alias)")] = None
    status: Literal["active", "initialized", "in_progress", "completed", "failed", "abandoned"] | None = None
    since: Annotated[When | None, Field(description="started on or after this date (YYYY-MM-DD)")] = None
    limit: Annotated[int | None, Field(ge=1, le=100_000, description="at most N sessions")] = None


class UpdateRequest(Request):
    session_id: OptionalId = None
    add_tasks: Annotated[list[Title] | None, Field(max_length=200, description="task titles")] = None
    complete_tasks: Annotated[list[Title] | None, Field(max_length=200, description="task #ids or exact titles")] = None
    blockers: Annotated[list[Text] | None, Field(max_length=200, description="blockers to record")] = None
    clear_blockers: Annotated[list[Title] | None, Field(max_length=200, description="blocker #ids or exact texts")] = None
    learnings: Annotated[list[Text] | None, Field(max_length=200)] = None
    decisions: Annotated[list[Text] | None, Field(max_length=200)] = None
    todo: Annotated[bool, Field(description="these learnings become tasks of the next session")] = False


def _count(value: int) -> int:
    if value < 0 or value > 10**7:
        raise ValueError("must be between 0 and 10000000")
    return value


Tally = Annotated[int, AfterValidator(_count)]  # bounds by validator: the MCP schema stays small


class EndRequest(Request):
    session_id: OptionalId = None
    summary: Annotated[Text | None, Field(description="what the session achieved")] = None
    abandoned: Annotated[bool, Field(description="end it as abandoned instead of completed")] = False
    close_open_stages: Annotated[bool, Field(description="end even with stages in progress: they are closed")] = False
    # seed 004's outcome figures (metrics.py); bounds checked by validators to keep the MCP schema small
    bugs_fixed: Tally | None = None
    bugs_introduced: Tally | None = None
    tests_passed: Tally | None = None
    tests_total: Tally | None = None
    docs_changed: Tally | None = None

    @model_validator(mode="after")
    def _tests(self) -> EndRequest:
        if self.tests_passed is not None and (self.tests_total is None or self.tests_passed > self.tests_total):
            raise ValueError("tests_passed needs tests_total, and cannot exceed it")
        return self


class StageStartRequest(Request):
    session_id: OptionalId = None
    stage: Annotated[StageName | None, Field(description="omit for the next pending stage")] = None


class StageCompleteRequest(Request):
    session_id: OptionalId = None
    stage: StageName
    outputs: Annotated[dict[Key, Title] | None, Field(max_length=100, description="NAME=VALUE handed to the next stage")] = None
    quality: Annotated[dict[Key, Score] | None, Field(max_length=100, description="METRIC=SCORE, 0..1; overall sets the score")] = None
    cost_usd: Annotated[Money | None, Field(description="what the stage cost in USD")] = None
    tokens: Annotated[Count | None, Field(description="tokens the stage used")] = None
    model: Annotated[str | None, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$",
                                       description="the model that ran the stage")] = None
    notes: Annotated[Text | None, Field(description="kept in the stage record")] = None


class RecordFailureRequest(Request):
    session_id: OptionalId = None
    stage: StageName
    error: Annotated[Text, Field(description="what went wrong")]
    retryable: Annotated[bool, Field(description="false escalates at once")] = True


class ResumeRequest(Request):
    session_id: OptionalId = None
    from_stage: Annotated[StageName | None, Field(description="re-open this completed stage and the ones after it")] = None


class OverrideRequest(Request):
    session_id: OptionalId = None
    action: Annotated[Literal["bypass", "skip"], Field(description="bypass a gate or failure, or skip the stage")]
    stage: StageName
    reason: Annotated[Text, Field(description="why (kept in the journal and the status)")]


# -- costs, usage, reports ---------------------------------------------------------------
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9<][A-Za-z0-9_.:@/\[\]>-]*$")]
Provider = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ReportLevel = LevelArg


def _until(value: object) -> object:
    """`--until 2026-11-21` means through the end of that day."""
    if isinstance(value, str) and len(value.strip()) == 10:
        parsed = _when(value)
        assert isinstance(parsed, datetime)
        return parsed + timedelta(days=1)
    return _when(value)


Until = Annotated[datetime, BeforeValidator(_until), WithJsonSchema({"type": "string", "format": "date"})]


class RecordCostRequest(Request):
    session_id: OptionalId = None
    stage: Annotated[StageName | None, Field(description="the stage the cost belongs to")] = None
    model: Annotated[ModelName | None, Field(description="the model that used the tokens, e.g. claude-sonnet-4-5")] = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_write_tokens: Annotated[Count, Field(description="cache creation tokens")] = 0
    cache_read_tokens: Count = 0
    calls: Annotated[dict[Provider, Count] | None, Field(max_length=50, description="API calls per provider, e.g. perplexity=3")] = None
    usd: Annotated[Money | None, Field(description="the amount in USD (skips the price table)")] = None

    @model_validator(mode="after")
    def _something(self) -> RecordCostRequest:
        tokens = self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens
        if not tokens and not any((self.calls or {}).values()) and self.usd is None:
            raise ValueError("nothing to record: give token counts (with a model), API calls, or a USD amount")
        return self


def _window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise ValueError("until must be after since")


SINCE_HELP = "from this date (YYYY-MM-DD) or time"
UNTIL_HELP = "through this date (YYYY-MM-DD, inclusive) or up to this time"


class UsageRequest(Request):
    period: Annotated[Literal["daily", "weekly", "monthly", "session", "branch"], Field(
        description="per day, week, month, Claude Code conversation, or git branch")] = "daily"
    since: Annotated[When | None, Field(description=SINCE_HELP)] = None
    until: Annotated[Until | None, Field(description=UNTIL_HELP)] = None
    unattributed: Annotated[bool, Field(description="only usage booked to no session")] = False

    @model_validator(mode="after")
    def _order(self) -> UsageRequest:
        _window(self.since, self.until)
        return self


class UsageAttachRequest(Request):
    session_id: OptionalId = None


class ReportRequest(Request):
    period: Annotated[Literal["today", "week", "month"], Field(
        description="today (since midnight), week (last 7 days), month (last 30 days)")] = "week"
    since: Annotated[When | None, Field(description=SINCE_HELP + "; overrides period")] = None
    until: Annotated[Until | None, Field(description=UNTIL_HELP)] = None
    level: Annotated[ReportLevel | None, Field(description="only this level; omit for all")] = None

    @model_validator(mode="after")
    def _order(self) -> ReportRequest:
        _window(self.since, self.until)
        return self


class DashboardRequest(Request):
    days: Annotated[int, Field(ge=1, le=366, description="the window of the figures and charts")] = 30
    level: Annotated[ReportLevel | None, Field(description="only this level; omit for all")] = None


# -- markdown ----------------------------------------------------------------------------------
def _template_name(value: str) -> str:
    from session_manager.render import template_name

    return template_name(value)


TemplateName = Annotated[str, Field(max_length=80), AfterValidator(_template_name)]


class RenderRequest(Request):
    session_id: OptionalId = None
    name: Annotated[TemplateName | None, Field(description="one of context, plan, tasks, tests, review, completed")] = None


class TemplateRequest(Request):
    name: Annotated[TemplateName, Field(description="e.g. plan, review.md, _macros")]
    level: Annotated[LevelArg | None, Field(description="the level's variant (dev, prod, platform, coded)")] = None


class NoArguments(Request):
    pass


# -- commands that are surfaces of their own ----------------------------------------------------
class ServeRequest(Request):
    no_backups: Annotated[bool, Field(description="do not run the periodic backup loop")] = False


class HookRequest(Request):
    event: Annotated[str | None, Field(max_length=64, description="session-start, user-prompt-submit, pre-tool-use,"
                                       " stop, pre-compact, session-end, task-created or task-completed"
                                       " (default: hook_event_name from stdin)")] = None


class WatchRequest(Request):
    interval: Annotated[float | None, Field(gt=0, le=86_400, allow_inf_nan=False,
                                            description="seconds between backups (default: backup.interval_seconds)")] = None


# -- cost attribution ------------------------------------------------------------------------
ClaudeSessionId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class UsageBindRequest(Request):
    session_id: OptionalId = None
    claude_session: Annotated[ClaudeSessionId, Field(description="the Claude Code conversation id")]
    since: Annotated[When | None, Field(description="bound from this time (default: now)")] = None


class CostRemoveRequest(Request):
    session_id: OptionalId = None
    entry: Annotated[int, Field(ge=1, le=10**9, description="the entry number `cost add` printed")]
    reason: Annotated[Title, Field(description="why it is taken back (journalled)")]


# -- batches and templates that learn (issue 17) ---------------------------------------------------
BatchId = Annotated[str, Field(max_length=60, pattern=r"^batch_\d{8}_[a-z0-9-]{1,40}(_\d{1,3})?$")]
START_ONLY = ("level", "episodes", "topic", "topics_file", "max_concurrent", "budget_usd")


class BatchRequest(Request):
    action: Literal["start", "status", "next", "report", "end"] = "status"
    batch_id: Annotated[BatchId | None, Field(description="omit: the active one")] = None
    level: Annotated[LevelArg | None, Field(description="start: prod")] = None
    episodes: Annotated[str | None, Field(max_length=200, pattern=r"^[0-9, -]+$",
                                          description="start: episode numbers, e.g. 2-8 or 2,4,6")] = None
    topic: Annotated[Title | None, Field(description="start: every member's")] = None
    topics_file: Annotated[str | None, Field(max_length=1000, description="start: a topic per line")] = None
    max_concurrent: Annotated[int | None, Field(ge=1, le=1000, description="start: the cap (default 5)")] = None
    budget_usd: Annotated[Money | None, Field(description="start: split over members")] = None
    force: Annotated[bool, Field(description="end: with members active")] = False

    @model_validator(mode="after")
    def _fits_action(self) -> BatchRequest:
        if self.action == "start":
            if self.level is None or self.episodes is None:
                raise ValueError("batch start needs a level and episodes, e.g. batch start prod 2-8")
            if self.batch_id is not None:
                raise ValueError("batch start makes a new batch: give no batch_id")
            if self.topic is not None and self.topics_file is not None:
                raise ValueError("give topic or topics_file, not both")
        else:
            given = [name for name in START_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for action start")
        if self.force and self.action != "end":
            raise ValueError("force: only for action end")
        return self


class EvolveRequest(Request):
    level: Annotated[LevelArg | None, Field(description="only this level; omit for every level with history")] = None
    apply: Annotated[bool, Field(description="write the proposals (backed up first, journalled)")] = False


class SetupRequest(Request):
    user: Annotated[bool, Field(description="for every project: ~/.claude instead of this project's .claude/")] = False
    standalone: Annotated[bool, Field(description="without the plugin: also register the MCP server (.mcp.json)"
                                                  " and the hooks (.claude/settings.json)")] = False
    statusline: Annotated[bool, Field(description="also install the status line (statusLine in the settings)")] = False

# -- tasks (seed 004) ------------------------------------------------------------------------
# Bounds are checked by validators rather than shown in the schema: the MCP tools/list has a
# 16 KB budget, and these fields' names say what they are.
def _bounded(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = _clean_text(value)
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        return value

    return check


def _at_most(limit: int) -> Callable[[list[str]], list[str]]:
    def check(value: list[str]) -> list[str]:
        if len(value) > limit:
            raise ValueError(f"must have at most {limit} items")
        return value

    return check


Short = Annotated[str, AfterValidator(_bounded(500))]
Long = Annotated[str, AfterValidator(_bounded(4000))]
Shorts = Annotated[list[Short], AfterValidator(_at_most(200))]
Agent = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Minutes = Annotated[float, Field(ge=0, le=100_000), AfterValidator(_finite)]


class TaskRequest(Request):
    session_id: OptionalId = None
    action: Literal["add", "start", "done", "fail", "block", "unblock", "edit", "remove"]
    items: Annotated[Shorts, Field(description="add: titles; else refs (task-N, #N, title)")]
    title: Annotated[Short | None, Field(description="edit: new title")] = None
    agent: Agent | None = None
    estimate: Annotated[Minutes | None, Field(description="minutes")] = None
    files: Shorts | None = None
    tests: Shorts | None = None
    output: Long | None = None
    reason: Long | None = None

    @model_validator(mode="after")
    def _targets(self) -> TaskRequest:
        if not self.items:
            raise ValueError("give one or more task titles (add) or refs (task-N, #N or the exact title)")
        if self.action == "edit" and len(self.items) > 1:
            raise ValueError("edit changes one task at a time")
        return self
