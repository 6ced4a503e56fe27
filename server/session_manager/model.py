"""The domain model: what a session is, as written to `pipeline_status.json` and `metadata.json`.

Field names follow seed 000's "Pipeline Status Structure" and "Stage Completion Records" so files
written by this tool read like the ones people already know. Times are ISO-8601 UTC (`...Z`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

SCHEMA_VERSION = 2  # 2: seed 004's task model (status, agent, estimates, files, tests, ...); see migrations


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


class Model(BaseModel):
    # allow_inf_nan=False: a NaN or an infinity in a state file is damage, named on load;
    # ser_json_inf_nan="constants": one that reached a model shows in its JSON as NaN/Infinity
    # (not as null), so `dump_json` finds it in the text it writes (see `finite_json`)
    model_config = ConfigDict(extra="forbid", use_enum_values=False, allow_inf_nan=False,
                              ser_json_inf_nan="constants")

    @field_validator("*", mode="after")
    @classmethod
    def _utc_times(cls, value: Any) -> Any:
        return _aware(value) if isinstance(value, datetime) else value


class SessionStatus(StrEnum):
    initialized = "initialized"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    abandoned = "abandoned"


class StageStatus(StrEnum):
    pending = "pending"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    retrying = "retrying"
    escalated = "escalated"
    bypassed = "bypassed"
    skipped = "skipped"


DONE_STAGE = (StageStatus.completed, StageStatus.bypassed, StageStatus.skipped)
ACTIVE_SESSION = (SessionStatus.initialized, SessionStatus.in_progress, SessionStatus.failed)


class StageState(Model):
    status: StageStatus = StageStatus.pending
    attempts: int = 0
    total_attempts: int = 0
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    execution_seconds: float | None = None
    overall_score: float | None = None
    quality: dict[str, float] = Field(default_factory=dict)
    feedback: str | None = None
    last_error: str | None = None
    override_reason: str | None = None
    gate_failures: int = 0
    outputs: dict[str, str] = Field(default_factory=dict)
    model: str | None = None  # the model that ran its last completion (model selection analytics)


class TaskStatus(StrEnum):
    """Seed 004's task statuses."""

    pending = "pending"
    in_progress = "in_progress"
    done = "done"
    failed = "failed"
    blocked = "blocked"


OPEN_TASK = (TaskStatus.pending, TaskStatus.in_progress, TaskStatus.blocked)


class Task(Model):
    """Seed 004's micro-task. `actual_minutes` is measured from `started_at` to `done_at` (the time
    it was done or failed); `blockers` keeps every reason it was blocked, `status` says if it still is."""

    id: int
    title: str
    status: TaskStatus = TaskStatus.pending
    agent: str | None = None
    estimated_minutes: float | None = Field(default=None, ge=0)
    actual_minutes: float | None = Field(default=None, ge=0)
    files: list[str] = Field(default_factory=list)
    tests: list[str] = Field(default_factory=list)
    blockers: list[str] = Field(default_factory=list)
    output: str | None = None
    created_at: Timestamp
    started_at: Timestamp | None = None
    done_at: Timestamp | None = None
    carried_from: str | None = None

    @property
    def ref(self) -> str:
        return f"task-{self.id}"


class Blocker(Model):
    id: int
    text: str
    created_at: Timestamp
    cleared_at: Timestamp | None = None
    carried_from: str | None = None


class Note(Model):
    text: str
    at: Timestamp
    stage: str | None = None
    todo: bool = False  # a learning marked --todo becomes a task of the next session


class Progress(Model):
    # seed 003's progress lists: done tasks; open ones (pending, in progress or blocked); failed ones
    tasks_completed: list[Task] = Field(default_factory=list)
    tasks_pending: list[Task] = Field(default_factory=list)
    tasks_failed: list[Task] = Field(default_factory=list)
    blockers: list[Blocker] = Field(default_factory=list)
    blockers_cleared: list[Blocker] = Field(default_factory=list)
    learnings: list[Note] = Field(default_factory=list)
    decisions: list[Note] = Field(default_factory=list)
    percent: float = 0.0

    def next_task_id(self) -> int:
        return max((t.id for t in self.all_tasks()), default=0) + 1

    def all_tasks(self) -> list[Task]:
        """Every task in id order (the order they were added)."""
        return sorted([*self.tasks_completed, *self.tasks_pending, *self.tasks_failed], key=lambda t: t.id)

    def place(self, task: Task) -> None:
        """Put `task` in the list its status belongs to (taking it out of any other)."""
        for tasks in (self.tasks_completed, self.tasks_pending, self.tasks_failed):
            if task in tasks:
                tasks.remove(task)
        if task.status == TaskStatus.done:
            self.tasks_completed.append(task)
        elif task.status == TaskStatus.failed:
            self.tasks_failed.append(task)
        else:
            self.tasks_pending.append(task)

    def drop(self, task: Task) -> None:
        for tasks in (self.tasks_completed, self.tasks_pending, self.tasks_failed):
            if task in tasks:
                tasks.remove(task)

    def next_blocker_id(self) -> int:
        return max((b.id for b in [*self.blockers, *self.blockers_cleared]), default=0) + 1


class Tokens(Model):
    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read


class CostTracking(Model):
    total_cost: float = 0.0
    cost_by_stage: dict[str, float] = Field(default_factory=dict)
    cost_by_model: dict[str, float] = Field(default_factory=dict)
    tokens: Tokens = Field(default_factory=Tokens)
    tokens_used: int = 0
    api_calls: dict[str, int] = Field(default_factory=dict)
    entries: int = 0


class Outcome(Model):
    """What a session reports about itself at `end` (seed 004's performance tracking): bugs fixed
    and introduced, tests passed of those run, changes documented. None: not recorded."""

    bugs_fixed: int | None = Field(default=None, ge=0)
    bugs_introduced: int | None = Field(default=None, ge=0)
    tests_passed: int | None = Field(default=None, ge=0)
    tests_total: int | None = Field(default=None, ge=0)
    docs_changed: int | None = Field(default=None, ge=0)


class Budget(Model):
    usd: float | None = None


AlertKind = Literal["cost", "quality", "time", "error_rate"]
Severity = Literal["warning", "critical"]


class Alert(Model):
    kind: AlertKind
    severity: Severity
    message: str
    value: float
    threshold: float
    raised_at: Timestamp


class ErrorRecord(Model):
    stage: str | None
    error: str
    at: Timestamp
    attempt: int
    retryable: bool
    decision: Literal["retry", "escalate"]


class SessionState(Model):
    """`pipeline_status.json`: the single source of truth for one session."""

    schema_version: int = SCHEMA_VERSION
    # +1 per committed change; journal lines carry it as `rev` (see store.Transaction.commit)
    revision: int = Field(0, ge=0)
    session_id: str
    level: Literal["dev", "production", "platform", "coded"]
    episode_number: int | None = None
    status: SessionStatus = SessionStatus.initialized
    current_stage: str | None = None
    started_at: Timestamp
    last_updated: Timestamp
    completed_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    stages_completed: list[str] = Field(default_factory=list)
    stages_remaining: list[str] = Field(default_factory=list)
    stages: dict[str, StageState] = Field(default_factory=dict)
    # means over the completed stages' scores (an attempt that failed its gate, or a stage
    # re-opened by resume, does not count): status, alerts, reports and reviews agree
    quality_metrics: dict[str, float] = Field(default_factory=dict)
    quality_overall: float | None = None
    cost_tracking: CostTracking = Field(default_factory=CostTracking)
    error_count: int = 0
    recovery_count: int = 0
    errors: list[ErrorRecord] = Field(default_factory=list)
    progress: Progress = Field(default_factory=Progress)
    budget: Budget = Field(default_factory=Budget)
    alerts: list[Alert] = Field(default_factory=list)
    summary: str | None = None
    claude_sessions: list[str] = Field(default_factory=list)
    outcome: Outcome = Outcome()  # pydantic copies a model default per instance

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_SESSION

    @model_validator(mode="after")
    def _known_current_stage(self) -> SessionState:
        if self.current_stage is not None and self.current_stage not in self.stages:
            known = ", ".join(self.stages) or "none"
            raise ValueError(f"current_stage {self.current_stage[:64]!r} is not one of its stages ({known})")
        return self


class CreatedBy(Model):
    actor: str
    user: str | None = None
    claude_session: str | None = None


class Metadata(Model):
    """`metadata.json`: what the session is about; set at start, rarely changed."""

    session_id: str
    level: Literal["dev", "production", "platform", "coded"]
    episode_number: int | None = None
    topic: str | None = None
    complexity: int | None = None
    tag: str | None = None
    budget_usd: float | None = None
    objectives: list[str] = Field(default_factory=list)
    created_at: Timestamp
    created_by: CreatedBy


class StageQuality(Model):
    model_config = ConfigDict(extra="allow")
    overall_score: float | None = None


class HandoffData(Model):
    next_agent: str | None
    required_inputs: list[str]
    validation_passed: bool
    outputs: dict[str, str] = Field(default_factory=dict)


class CostData(Model):
    tokens_used: int | None = None
    estimated_cost: float | None = None
    model_used: str | None = None


class StageRecord(Model):
    """`<stage>_complete.json`: seed 000's stage completion record."""

    agent_id: str
    status: str
    attempt: int
    started_at: Timestamp | None
    completed_at: Timestamp
    execution_time: str
    input_hash: str
    output_quality: StageQuality
    gate: dict[str, Any] | None = None
    handoff_data: HandoffData
    cost_data: CostData
    notes: str | None = None


def format_duration(seconds: float | None) -> str:
    """`00:12:34`, the seed's execution_time format (hours may exceed 24)."""
    if seconds is None:
        return "--:--:--"
    whole = int(round(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def non_finite(value: Any, where: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in `value` (dicts, lists, models), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "value")
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = non_finite(item, f"{where}.{index}" if where else str(index))
            if found:
                return found
    return None


def has_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is anywhere in `value`: the quick check every save runs (no
    paths built); `non_finite` then names it."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is str or kind is int or kind is bool or item is None:
            continue
        elif isinstance(item, BaseModel):
            stack.extend(item.__dict__.values())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def dump_json(model: BaseModel) -> str:
    """Stable, human-readable JSON: fields in model order, two-space indent, trailing newline.
    A NaN or an infinity anywhere is refused (the file would then be "damaged"): NonFiniteNumber,
    raised before anything is written."""
    return finite_json(model, model.model_dump_json(indent=2) + "\n")


def finite_json(model: BaseModel, text: str) -> str:
    """`text` (the JSON of one of our models), or NonFiniteNumber naming the field when the model
    holds a NaN or an infinity: they serialise as NaN/Infinity tokens (ser_json_inf_nan), so text
    without those words needs no walk of the model; text with them (a note saying "NaN") gets one."""
    if "NaN" in text or "Infinity" in text:
        require_finite(model)
    return text


def require_finite(model: BaseModel) -> None:
    """Refuse a NaN or an infinity anywhere in `model`, naming the field (NonFiniteNumber)."""
    where = non_finite(model) if has_non_finite(model) else None
    if where is not None:
        from session_manager.errors import NonFiniteNumber

        raise NonFiniteNumber(f"refusing to save {where}: it is not a finite number (NaN or infinity);"
                              " nothing was written")
