"""Phases: the stages of a pipeline grouped as seed 001 names them (research -> quality ->
polish -> audio), from the configurable map `[phases.<level>]` in `.claude/session-manager.toml`.

They give `cost_by_phase` and phase progress alongside the per-stage figures. A level with no
phases configured counts each stage as its own phase; a stage the map does not name is "other".
"""

from __future__ import annotations

from pydantic import BaseModel

from session_manager.config import Config
from session_manager.model import DONE_STAGE, SessionState, StageStatus

OTHER = "other"


class PhaseProgress(BaseModel):
    """One phase of a session: its stages, how many are done, what it cost."""

    phase: str
    stages: list[str]
    done: int
    percent: float
    cost_usd: float
    status: str  # pending, in_progress, done


def phase_map(config: Config, level: str, stages: list[str]) -> dict[str, str]:
    """stage -> phase for the stages of a session, in pipeline order."""
    configured = config.phases.for_level(level)
    if not configured:
        return {stage: stage for stage in stages}
    owner = {stage: phase for phase, names in configured.items() for stage in names}
    return {stage: owner.get(stage, OTHER) for stage in stages}


def phase_of(config: Config, level: str, stage: str) -> str:
    configured = config.phases.for_level(level)
    if not configured:
        return stage
    for phase, names in configured.items():
        if stage in names:
            return phase
    return OTHER


def cost_by_phase(state: SessionState, config: Config) -> dict[str, float]:
    """The session's cost per phase (cost booked to no stage is left out, as in cost_by_stage)."""
    mapping = phase_map(config, state.level, list(state.stages))
    out: dict[str, float] = {}
    for stage, usd in state.cost_tracking.cost_by_stage.items():
        phase = mapping.get(stage, phase_of(config, state.level, stage))
        out[phase] = round(out.get(phase, 0.0) + usd, 6)
    return out


def progress(state: SessionState, config: Config) -> list[PhaseProgress]:
    """Each phase of the session in pipeline order: stages done, percent, cost, status."""
    mapping = phase_map(config, state.level, list(state.stages))
    costs = cost_by_phase(state, config)
    grouped: dict[str, list[str]] = {}
    for stage, phase in mapping.items():
        grouped.setdefault(phase, []).append(stage)
    out = []
    for phase, stages in grouped.items():
        statuses = [state.stages[s].status for s in stages]
        done = sum(1 for s in statuses if s in DONE_STAGE)
        if done == len(stages):
            status = "done"
        elif done or any(s != StageStatus.pending for s in statuses):
            status = "in_progress"
        else:
            status = "pending"
        out.append(PhaseProgress(phase=phase, stages=stages, done=done, percent=round(100.0 * done / len(stages), 1),
                                 cost_usd=costs.get(phase, 0.0), status=status))
    return out
