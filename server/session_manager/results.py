"""What service operations return: pydantic models the CLI formats and MCP sends as structured content."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from session_manager.metrics import SessionMetrics
from session_manager.model import Alert, Metadata, SessionState, Timestamp
from session_manager.phases import PhaseProgress


class SessionSummary(BaseModel):
    session_id: str
    level: str
    status: str
    topic: str | None = None
    current_stage: str | None = None
    current_stage_status: str | None = None
    progress_percent: float
    started_at: Timestamp
    last_updated: Timestamp
    total_cost: float
    budget_usd: float | None = None
    tasks_pending: int
    blockers: int
    alerts: list[Alert] = Field(default_factory=list)

    @classmethod
    def of(cls, state: SessionState, metadata: Metadata | None = None) -> SessionSummary:
        current = state.stages.get(state.current_stage) if state.current_stage else None
        return cls(
            session_id=state.session_id, level=state.level, status=str(state.status),
            topic=metadata.topic if metadata else None, current_stage=state.current_stage,
            current_stage_status=str(current.status) if current else None,
            progress_percent=state.progress.percent, started_at=state.started_at,
            last_updated=state.last_updated, total_cost=state.cost_tracking.total_cost,
            budget_usd=state.budget.usd, tasks_pending=len(state.progress.tasks_pending),
            blockers=len(state.progress.blockers), alerts=state.alerts,
        )


class SessionList(BaseModel):
    sessions: list[SessionSummary]
    damaged: list[str] = Field(default_factory=list, description="sessions whose files cannot be read, and how to restore them")


class SessionDetail(BaseModel):
    """One session: its state, what it is about, and the time estimate for what is left."""

    state: SessionState
    metadata: Metadata
    estimate_remaining_seconds: float | None = None
    folder: str
    phases: list[PhaseProgress] = Field(default_factory=list, description="stages grouped by phase: done, cost")
    metrics: SessionMetrics | None = Field(None, description="seed 004's success metrics (metrics.py)")


class StageContext(BaseModel):
    """Seed 001's cross-phase state: the previous stage's outputs, gate feedback and notes."""

    phase: str | None = None
    previous_stage: str | None = None
    previous_phase: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict, description="outputs handed over by earlier stages")
    previous_score: float | None = None
    feedback: list[str] = Field(default_factory=list, description="gate feedback: this stage's, and the previous stage's failed attempts")
    notes: str | None = None
    learnings: list[str] = Field(default_factory=list, description="learnings recorded during the previous stage")



class StageDecision(BaseModel):
    """The decision of a pipeline operation and where the session now stands."""

    session_id: str
    decision: str
    stage: str | None
    next_stage: str | None = None
    routed_to: str | None = None
    feedback: list[str] = Field(default_factory=list)
    attempts: int = 0
    attempts_left: int = 0
    overall_score: float | None = None
    session_status: str
    progress_percent: float
    total_cost: float
    # stage_start only: what the agent starting this stage needs from before it (cross-phase context)
    context: StageContext | None = None


class StageResult(StageDecision):
    alerts: list[Alert] = Field(default_factory=list)


class Status(BaseModel):
    """One session (`one`), or every active session across levels; damaged ones named with their restore command."""

    sessions: list[SessionDetail]
    damaged: list[str] = Field(default_factory=list)
    one: bool = False


class Journal(BaseModel):
    """A session's last events (events.jsonl), oldest first."""

    session_id: str
    events: list[dict[str, Any]]
    total: int
    skipped: int = Field(0, description="unreadable lines (a write cut short by a crash) skipped")
