"""One input model per service operation, named after it.

Every surface (CLI, MCP, hooks, Python callers) passes plain arguments; the service validates
them into these models before anything is read or written, so bad input is refused in one
place with one message.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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
    return resolve_level(value)  # type: ignore[arg-type]


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
SessionId = Annotated[str, Field(max_length=100), AfterValidator(_session_id)]
StageName = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
LevelArg = Annotated[Level, BeforeValidator(_level)]
Money = Annotated[float, Field(ge=0, le=1_000_000), AfterValidator(_finite)]
Score = Annotated[float, Field(ge=0, le=1), AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0, le=10**12)]
When = Annotated[datetime, BeforeValidator(_when)]
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class Request(BaseModel):
    # defer_build: a CLI run validates one request; building every schema at import costs ~10 ms
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True, defer_build=True)


class StartRequest(Request):
    level: LevelArg
    number: Annotated[int, Field(ge=1, le=999_999)] | None = None
    topic: Title | None = None
    complexity: Annotated[int, Field(ge=1, le=10)] | None = None
    tag: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")] | None = None
    budget_usd: Money | None = None
    objectives: Annotated[list[Title], Field(max_length=100)] | None = None
    claude_session: Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


class SessionRequest(Request):
    session_id: SessionId | None = None


class ListRequest(Request):
    level: LevelArg | None = None
    status: Literal["initialized", "in_progress", "completed", "failed", "abandoned", "active"] | None = None
    since: When | None = None
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = None


class UpdateRequest(Request):
    session_id: SessionId | None = None
    add_tasks: Annotated[list[Title], Field(max_length=200)] | None = None
    complete_tasks: Annotated[list[Title], Field(max_length=200)] | None = None
    blockers: Annotated[list[Text], Field(max_length=200)] | None = None
    clear_blockers: Annotated[list[Title], Field(max_length=200)] | None = None
    learnings: Annotated[list[Text], Field(max_length=200)] | None = None
    decisions: Annotated[list[Text], Field(max_length=200)] | None = None


class EndRequest(Request):
    session_id: SessionId | None = None
    summary: Text | None = None
    abandoned: bool = False


class StageStartRequest(Request):
    session_id: SessionId | None = None
    stage: StageName | None = None


class StageCompleteRequest(Request):
    session_id: SessionId | None = None
    stage: StageName
    outputs: Annotated[dict[Key, Title], Field(max_length=100)] | None = None
    quality: Annotated[dict[Key, Score], Field(max_length=100)] | None = None
    cost_usd: Money | None = None
    tokens: Count | None = None
    model: Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")] | None = None
    notes: Text | None = None


class RecordFailureRequest(Request):
    session_id: SessionId | None = None
    stage: StageName
    error: Text
    retryable: bool = True


class ResumeRequest(Request):
    session_id: SessionId | None = None
    from_stage: StageName | None = None


class OverrideRequest(Request):
    session_id: SessionId | None = None
    stage: StageName
    reason: Text


# -- costs, usage, reports ---------------------------------------------------------------
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9<][A-Za-z0-9_.:@/\[\]>-]*$")]
Provider = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ReportLevel = Annotated[Level, BeforeValidator(_level)]


def _until(value: object) -> object:
    """`--until 2026-11-21` means through the end of that day."""
    if isinstance(value, str) and len(value.strip()) == 10:
        parsed = _when(value)
        assert isinstance(parsed, datetime)
        return parsed + timedelta(days=1)
    return _when(value)


Until = Annotated[datetime, BeforeValidator(_until)]


class RecordCostRequest(Request):
    session_id: SessionId | None = None
    stage: StageName | None = None
    model: ModelName | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_write_tokens: Count = 0
    cache_read_tokens: Count = 0
    calls: Annotated[dict[Provider, Count], Field(max_length=50)] | None = None
    usd: Money | None = None

    @model_validator(mode="after")
    def _something(self) -> RecordCostRequest:
        tokens = self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens
        if not tokens and not any((self.calls or {}).values()) and self.usd is None:
            raise ValueError("nothing to record: give token counts (with a model), API calls, or a USD amount")
        return self


def _window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise ValueError("until must be after since")


class UsageRequest(Request):
    period: Literal["daily", "weekly", "monthly", "session", "branch"] = "daily"
    since: When | None = None
    until: Until | None = None
    unattributed: bool = False

    @model_validator(mode="after")
    def _order(self) -> UsageRequest:
        _window(self.since, self.until)
        return self


class UsageAttachRequest(Request):
    session_id: SessionId | None = None


class ReportRequest(Request):
    period: Literal["today", "week", "month"] = "week"
    since: When | None = None
    until: Until | None = None
    level: ReportLevel | None = None

    @model_validator(mode="after")
    def _order(self) -> ReportRequest:
        _window(self.since, self.until)
        return self


class DashboardRequest(Request):
    days: Annotated[int, Field(ge=1, le=366)] = 30
    level: ReportLevel | None = None


# -- cost attribution (helper-c) ---------------------------------------------------------
ClaudeSessionId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


class UsageBindRequest(Request):
    session_id: SessionId | None = None
    claude_session: ClaudeSessionId
    since: When | None = None


class CostRemoveRequest(Request):
    session_id: SessionId | None = None
    entry: Annotated[int, Field(ge=1, le=10**9)]
    reason: Title
