"""The pipeline engine: the state machine, quality gates, handoffs, retries, escalation, resume.

Every status change of a session or a stage goes through `set_session_status` or
`set_stage_status`, which check the transition tables below and journal the change.
The functions here mutate a `store.Transaction`; the service layer opens and commits it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from session_manager.config import Config, StageDef
from session_manager.errors import InvalidInput, InvalidTransition, NotFound
from session_manager.events import Event
from session_manager.model import (
    DONE_STAGE,
    Alert,
    AlertKind,
    Severity,
    CostData,
    ErrorRecord,
    HandoffData,
    SessionState,
    SessionStatus,
    StageQuality,
    StageRecord,
    StageState,
    StageStatus,
    dump_json,
    format_duration,
)
from session_manager.store import Transaction

S, T = SessionStatus, StageStatus

SESSION_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    S.initialized: frozenset({S.in_progress, S.completed, S.abandoned}),
    S.in_progress: frozenset({S.completed, S.failed, S.abandoned}),
    S.failed: frozenset({S.in_progress, S.abandoned}),
    S.completed: frozenset(),
    S.abandoned: frozenset(),
}

STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    T.pending: frozenset({T.in_progress, T.bypassed, T.skipped}),
    T.in_progress: frozenset({T.completed, T.failed, T.bypassed, T.pending}),
    T.failed: frozenset({T.retrying, T.escalated, T.pending}),
    T.retrying: frozenset({T.in_progress, T.failed, T.bypassed, T.skipped, T.pending}),
    T.escalated: frozenset({T.retrying, T.pending, T.bypassed, T.skipped}),
    T.completed: frozenset({T.pending}),
    T.bypassed: frozenset({T.pending}),
    T.skipped: frozenset({T.pending}),
}

Decision = Literal["started", "advanced", "retry", "routed_back", "escalated", "completed", "resumed"]


@dataclass
class Outcome:
    """What a pipeline operation decided; the service turns it into a result model."""

    decision: Decision
    stage: str | None
    next_stage: str | None = None
    routed_to: str | None = None
    feedback: list[str] = field(default_factory=list)
    attempts: int = 0
    attempts_left: int = 0
    overall_score: float | None = None


def _allowed(table: dict[Any, frozenset[Any]], current: Any) -> str:
    allowed = sorted(str(s) for s in table[current])
    return ", ".join(allowed) if allowed else "nothing (it is final)"


def set_session_status(tx: Transaction, new: SessionStatus, why: str) -> None:
    state = tx.state
    old = state.status
    if new == old:
        return
    if new not in SESSION_TRANSITIONS[old]:
        raise InvalidTransition(
            f"session {state.session_id} is {old}; it cannot become {new} ({why})."
            f" Allowed from {old}: {_allowed(SESSION_TRANSITIONS, old)}"
        )
    state.status = new
    if new == S.completed:
        state.completed_at = tx.now
    tx.event(Event.session_status, old=str(old), new=str(new), reason=why)


def set_stage_status(tx: Transaction, stage: str, new: StageStatus, why: str) -> StageState:
    stage_state = tx.state.stages[stage]
    old = stage_state.status
    if new not in STAGE_TRANSITIONS[old]:
        raise InvalidTransition(
            f"stage {stage} is {old}; it cannot become {new} ({why})."
            f" Allowed from {old}: {_allowed(STAGE_TRANSITIONS, old)}"
        )
    stage_state.status = new
    if new == T.retrying:  # the next attempt's clock starts when the retry is decided
        stage_state.started_at = tx.now
    tx.event(Event.stage_status, stage=stage, old=str(old), new=str(new), reason=why)
    return stage_state


# -- queries ----------------------------------------------------------------------
def stage_names(state: SessionState) -> list[str]:
    return list(state.stages)


def require_stage(state: SessionState, stage: str) -> StageState:
    if not isinstance(stage, str) or stage not in state.stages:
        raise NotFound(
            f"unknown stage {str(stage)[:80]!r} for {state.session_id}; its stages are: {', '.join(state.stages)}"
        )
    return state.stages[stage]


def first_open_stage(state: SessionState) -> str | None:
    for name, stage in state.stages.items():
        if stage.status not in DONE_STAGE:
            return name
    return None


def handed_over(state: SessionState, before: str) -> dict[str, str]:
    """Outputs handed over by the stages before `before` (later stages win)."""
    outputs: dict[str, str] = {}
    for name, stage in state.stages.items():
        if name == before:
            break
        if stage.status in DONE_STAGE:
            outputs.update(stage.outputs)
    return outputs


def refresh_progress(state: SessionState) -> None:
    """Derived fields: stages_completed/remaining, progress %, current stage."""
    state.stages_completed = [n for n, s in state.stages.items() if s.status == T.completed]
    state.stages_remaining = [n for n, s in state.stages.items() if s.status not in DONE_STAGE]
    done = sum(1 for s in state.stages.values() if s.status in DONE_STAGE)
    state.progress.percent = round(100.0 * done / len(state.stages), 1) if state.stages else 100.0
    state.current_stage = first_open_stage(state)
    refresh_quality(state)


def refresh_quality(state: SessionState) -> None:
    """Session quality: means over the completed stages' scores, overall and per metric."""
    completed = [s for s in state.stages.values() if s.status == T.completed]
    scores = [s.overall_score for s in completed if s.overall_score is not None]
    state.quality_overall = round(statistics.fmean(scores), 4) if scores else None
    by_metric: dict[str, list[float]] = {}
    for stage in completed:
        for metric, value in stage.quality.items():
            by_metric.setdefault(metric, []).append(value)
    state.quality_metrics = {m: round(statistics.fmean(v), 4) for m, v in by_metric.items()}


def _check_session_open(state: SessionState, action: str) -> None:
    if state.status == S.failed:
        raise InvalidTransition(
            f"session {state.session_id} is failed (escalated: needs a person); cannot {action}."
            f" Resume it first: session-manager resume {state.session_id}"
        )
    if state.status in (S.completed, S.abandoned):
        raise InvalidTransition(f"session {state.session_id} is {state.status}; cannot {action}")


def _check_ready(state: SessionState, stage: str, stage_def: StageDef, action: str) -> None:
    for name, earlier in state.stages.items():
        if name == stage:
            break
        if earlier.status not in DONE_STAGE:
            raise InvalidTransition(
                f"cannot {action} {stage}: earlier stage {name} is {earlier.status}"
                " (earlier stages must be completed, bypassed or skipped)"
            )
    missing = [r for r in stage_def.requires if r not in handed_over(state, stage)]
    if missing:
        raise InvalidTransition(
            f"cannot {action} {stage}: required inputs not handed over: {', '.join(missing)}"
            " (an earlier stage must complete with these outputs)"
        )


# -- operations ---------------------------------------------------------------------
def start_stage(tx: Transaction, config: Config, stage: str | None) -> Outcome:
    state = tx.state
    _check_session_open(state, "start a stage")
    name = stage or state.current_stage
    if name is None:
        raise InvalidTransition(f"session {state.session_id} has no stage left to start")
    stage_state = require_stage(state, name)
    stage_def = config.stage(state.level, name)
    if stage_state.status == T.in_progress:
        raise InvalidTransition(
            f"stage {name} is already in progress (attempt {stage_state.attempts});"
            " complete it, record a failure, or bypass it"
        )
    _check_ready(state, name, stage_def, "start")
    _begin_attempt(tx, name, "stage_start")
    return Outcome("started", name, attempts=stage_state.attempts,
                   attempts_left=max(0, stage_def.max_attempts - stage_state.attempts))


def _begin_attempt(tx: Transaction, stage: str, why: str, keep_start: bool = False) -> None:
    """Count an attempt. `keep_start`: an implicit start (completing or failing a retrying
    stage without `stage start`) keeps the clock that started when the retry was decided."""
    stage_state = set_stage_status(tx, stage, T.in_progress, why)
    stage_state.attempts += 1
    stage_state.total_attempts += 1
    if not keep_start or stage_state.started_at is None:
        stage_state.started_at = tx.now
    stage_state.completed_at = None
    if tx.state.status == S.initialized:
        set_session_status(tx, S.in_progress, f"stage {stage} started")
    tx.state.current_stage = stage


def overall_of(quality: dict[str, float]) -> float | None:
    if "overall" in quality:
        return quality["overall"]
    if "overall_score" in quality:
        return quality["overall_score"]
    return round(statistics.fmean(quality.values()), 4) if quality else None


def evaluate_gate(stage_def: StageDef, quality: dict[str, float]) -> tuple[bool, bool, list[str]]:
    """(passed, critical, feedback) for a stage's quality gate."""
    gate = stage_def.quality_gate
    if gate is None:
        return True, False, []
    overall = overall_of(quality)
    feedback: list[str] = []
    for metric, threshold in gate.metrics.items():
        value = quality.get(metric)
        if value is None:
            feedback.append(f"{metric}: missing (needs >= {threshold:.2f})")
        elif value < threshold:
            feedback.append(f"{metric}: {value:.2f} below {threshold:.2f}")
    assert overall is not None
    if overall < gate.overall:
        feedback.append(f"overall: {overall:.2f} below {gate.overall:.2f}")
    return not feedback, overall < gate.critical, feedback


def _input_hash(state: SessionState, stage: str) -> str:
    inputs = json.dumps(handed_over(state, stage), sort_keys=True).encode()
    return hashlib.sha256(inputs).hexdigest()[:16]


def complete_stage(
    tx: Transaction,
    config: Config,
    stage: str,
    outputs: dict[str, str],
    quality: dict[str, float],
    cost_usd: float | None,
    tokens: int | None,
    model: str | None,
    notes: str | None,
) -> Outcome:
    state = tx.state
    _check_session_open(state, "complete a stage")
    stage_state = require_stage(state, stage)
    stage_def = config.stage(state.level, stage)
    if stage_state.status == T.pending:
        raise InvalidTransition(
            f"stage {stage} was never started; start it first: session-manager stage start"
            f" {state.session_id} {stage}"
        )
    if stage_state.status not in (T.in_progress, T.retrying):
        raise InvalidTransition(
            f"stage {stage} is {stage_state.status}; only a stage in progress (or retrying) can complete"
        )
    _check_ready(state, stage, stage_def, "complete")
    if stage_def.quality_gate is not None and not quality:
        raise InvalidInput(
            f"stage {stage} has a quality gate (overall >= {stage_def.quality_gate.overall:.2f});"
            " give its quality scores, e.g. overall=0.9 or comprehension=0.87"
        )
    passed, critical, feedback = evaluate_gate(stage_def, quality)
    names = stage_names(state)
    next_stage = names[names.index(stage) + 1] if names.index(stage) + 1 < len(names) else None
    if passed and next_stage:
        next_def = config.stage(state.level, next_stage)
        available = {**handed_over(state, stage), **outputs}
        missing = [r for r in next_def.requires if r not in available]
        if missing:
            raise InvalidInput(
                f"stage {stage} must hand over {', '.join(missing)} to {next_stage};"
                f" give them as outputs, e.g. {missing[0]}=path/to/{missing[0]}"
            )
    if stage_state.status == T.retrying:
        _begin_attempt(tx, stage, "retry attempt", keep_start=True)

    overall = overall_of(quality)
    attempt = stage_state.attempts
    seconds = (tx.now - stage_state.started_at).total_seconds() if stage_state.started_at else None
    if quality:
        report = {
            "stage": stage, "attempt": attempt, "evaluated_at": tx.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scores": quality, "overall_score": overall, "passed": passed, "critical": critical,
            "gate": stage_def.quality_gate.model_dump() if stage_def.quality_gate else None,
            "feedback": feedback,
        }
        tx.write(f"quality_reports/{stage}_attempt{stage_state.total_attempts}.json",
                 json.dumps(report, indent=2) + "\n")
        tx.event(Event.quality_evaluated, stage=stage, attempt=attempt, overall_score=overall,
                 passed=passed, feedback=feedback)
        stage_state.overall_score = overall
    if model:
        stage_state.model = model
    if cost_usd or tokens:
        from session_manager import costs

        costs.book(tx, costs.price_table(config.prices), stage=stage, model=model, tokens_total=tokens,
                   usd=cost_usd, source="stage_complete")

    if not passed:
        stage_state.feedback = "; ".join(feedback)
        stage_state.gate_failures += 1
        set_stage_status(tx, stage, T.failed, "quality gate failed")
        exhausted = stage_state.attempts >= stage_def.max_attempts
        if critical or exhausted:
            why = "critical quality failure" if critical else f"quality gate failed {stage_state.attempts} times"
            _escalate(tx, stage, why)
            return Outcome("escalated", stage, feedback=feedback, attempts=attempt, overall_score=overall)
        set_stage_status(tx, stage, T.retrying, "quality gate failed; attempts left")
        left = stage_def.max_attempts - stage_state.attempts
        target = stage_def.on_quality_fail
        if target:
            for name in names[names.index(target): names.index(stage)]:
                _reopen(tx, name, f"routed back from {stage}")
            state.stages[target].feedback = f"from {stage}: " + "; ".join(feedback)
            refresh_progress(state)
            tx.event(Event.routed_back, stage=stage, to=target, feedback=feedback)
            return Outcome("routed_back", stage, next_stage=target, routed_to=target, feedback=feedback,
                           attempts=attempt, attempts_left=left, overall_score=overall)
        refresh_progress(state)
        return Outcome("retry", stage, next_stage=stage, feedback=feedback, attempts=attempt,
                       attempts_left=left, overall_score=overall)

    stage_state.outputs = dict(outputs)
    stage_state.quality = {k: v for k, v in quality.items() if k not in ("overall", "overall_score")}
    stage_state.execution_seconds = seconds
    stage_state.completed_at = tx.now
    stage_state.feedback = stage_state.last_error = None  # the errors stay in state.errors and the journal
    set_stage_status(tx, stage, T.completed, "stage complete")
    record = StageRecord(
        agent_id=stage, status="completed", attempt=attempt, started_at=stage_state.started_at,
        completed_at=tx.now, execution_time=format_duration(seconds), input_hash=_input_hash(state, stage),
        output_quality=StageQuality(**{k: v for k, v in quality.items() if k not in ("overall", "overall_score")},
                                    overall_score=overall),
        gate=stage_def.quality_gate.model_dump() if stage_def.quality_gate else None,
        handoff_data=HandoffData(
            next_agent=next_stage,
            required_inputs=config.stage(state.level, next_stage).requires if next_stage else [],
            validation_passed=True, outputs=dict(outputs),
        ),
        cost_data=CostData(tokens_used=tokens, estimated_cost=cost_usd, model_used=model),
        notes=notes,
    )
    _archive_record(tx, stage)
    tx.write(f"{stage}_complete.json", dump_json(record))
    tx.event(Event.stage_completed, stage=stage, attempt=attempt, execution_seconds=seconds,
             next_stage=next_stage, overall_score=overall)
    refresh_progress(state)
    if state.current_stage is None:
        set_session_status(tx, S.completed, "all stages done")
        return Outcome("completed", stage, attempts=attempt, overall_score=overall)
    return Outcome("advanced", stage, next_stage=state.current_stage, attempts=attempt, overall_score=overall)


def _archive_record(tx: Transaction, stage: str) -> None:
    """Keep an earlier round's record under history/ instead of overwriting it."""
    if (tx.folder / f"{stage}_complete.json").exists():
        n = 1
        while (tx.folder / "history" / f"{stage}_complete.{n}.json").exists():
            n += 1
        tx.move(f"{stage}_complete.json", f"history/{stage}_complete.{n}.json")


def _escalate(tx: Transaction, stage: str, why: str) -> None:
    set_stage_status(tx, stage, T.escalated, why)
    set_session_status(tx, S.failed, f"{stage} escalated: {why}")
    tx.event(Event.escalated, stage=stage, reason=why)
    refresh_progress(tx.state)


def record_failure(tx: Transaction, config: Config, stage: str, error: str, retryable: bool) -> Outcome:
    state = tx.state
    _check_session_open(state, "record a failure")
    stage_state = require_stage(state, stage)
    stage_def = config.stage(state.level, stage)
    if stage_state.status not in (T.pending, T.in_progress, T.retrying):
        raise InvalidTransition(
            f"stage {stage} is {stage_state.status}; a failure can be recorded only for a stage"
            " pending, in progress or retrying"
        )
    if stage_state.status != T.in_progress:
        _check_ready(state, stage, stage_def, "record a failure for")
        _begin_attempt(tx, stage, "attempt failed before completion", keep_start=True)
    attempt = stage_state.attempts
    state.error_count += 1
    stage_state.last_error = error
    escalate = not retryable or attempt >= stage_def.max_attempts
    state.errors.append(ErrorRecord(stage=stage, error=error, at=tx.now, attempt=attempt, retryable=retryable,
                                    decision="escalate" if escalate else "retry"))
    tx.event(Event.failure_recorded, stage=stage, error=error, attempt=attempt, retryable=retryable)
    set_stage_status(tx, stage, T.failed, "failure recorded")
    if escalate:
        why = "error is not retryable" if not retryable else f"failed {attempt} of {stage_def.max_attempts} attempts"
        _escalate(tx, stage, why)
        return Outcome("escalated", stage, feedback=[error], attempts=attempt)
    set_stage_status(tx, stage, T.retrying, "attempts left")
    refresh_progress(state)
    return Outcome("retry", stage, next_stage=stage, feedback=[error], attempts=attempt,
                   attempts_left=stage_def.max_attempts - attempt)


def resume(tx: Transaction, from_stage: str | None) -> Outcome:
    state = tx.state
    if state.status in (S.completed, S.abandoned, S.initialized):
        raise InvalidTransition(
            f"session {state.session_id} is {state.status}; only a failed or interrupted"
            " (in_progress) session can be resumed"
        )
    note = None
    if from_stage is not None:
        target_state = require_stage(state, from_stage)
        names = stage_names(state)
        current = state.current_stage
        if target_state.status not in DONE_STAGE and from_stage != current:
            raise InvalidTransition(
                f"cannot resume from {from_stage}: it is {target_state.status}; resume from a completed"
                f" stage or from the current stage {current}"
            )
        for name in names[names.index(from_stage):]:
            _reopen(tx, name, "resume")
        target = from_stage
    else:
        target = state.current_stage or ""
        stage_state = state.stages[target] if target else None
        if stage_state is None or stage_state.status not in (T.escalated, T.in_progress, T.failed):
            if state.status != S.failed:
                raise InvalidTransition(
                    f"session {state.session_id} is in progress and not interrupted (current stage"
                    f" {target} is {stage_state.status if stage_state else 'none'}); nothing to resume."
                    " To redo finished work, name a completed stage: resume ID --from STAGE"
                )
        elif stage_state.status == T.in_progress:
            set_stage_status(tx, target, T.failed, "interrupted")
            set_stage_status(tx, target, T.retrying, "resumed after interruption")
            note = f"{target} was in progress (attempt {stage_state.attempts}): that attempt counts as interrupted"
        else:
            set_stage_status(tx, target, T.retrying, "resumed")
            stage_state.attempts = 0
    state.recovery_count += 1
    if state.status == S.failed:
        set_session_status(tx, S.in_progress, "resumed")
    refresh_progress(state)
    state.current_stage = target if target else state.current_stage
    tx.event(Event.resumed, stage=target, recovery_count=state.recovery_count)
    return Outcome("resumed", target, next_stage=target, feedback=[note] if note else [])


OPEN_STAGE = (T.in_progress, T.retrying)
CLOSED_AT_END = "closed at session end"


def close_open_stages(tx: Transaction, close: bool) -> list[str]:
    """Stages still running when the session ends: refused (one line naming them and the flag
    that ends anyway) unless `close`; then each goes back to `pending` (allowed from in_progress
    and retrying; it did not finish, so it is not done) with the reason "closed at session end",
    and a `stage_closed` event. Returns the stages closed."""
    state = tx.state
    open_stages = [name for name, stage in state.stages.items() if stage.status in OPEN_STAGE]
    if not open_stages:
        return []
    if not close:
        listed = ", ".join(f"{name} ({state.stages[name].status})" for name in open_stages)
        raise InvalidTransition(
            f"session {state.session_id} has stages still open: {listed}; complete or record them first,"
            " or end anyway with --close-open-stages (they are recorded as closed at session end)"
        )
    for name in open_stages:
        stage_state = state.stages[name]
        set_stage_status(tx, name, T.pending, CLOSED_AT_END)
        stage_state.last_error = CLOSED_AT_END
        tx.event(Event.stage_closed, stage=name, reason=CLOSED_AT_END, attempts=stage_state.attempts)
    refresh_progress(state)
    return open_stages


def _reopen(tx: Transaction, stage: str, why: str) -> None:
    """Put a stage back to pending (resume, or routed back by a gate); its record is archived."""
    stage_state = tx.state.stages[stage]
    old = stage_state.status
    if old == T.pending:
        return
    set_stage_status(tx, stage, T.pending, why)
    if old == T.completed:
        _archive_record(tx, stage)
    stage_state.attempts = 0
    stage_state.override_reason = stage_state.feedback = stage_state.last_error = None
    stage_state.started_at = stage_state.completed_at = stage_state.execution_seconds = None
    stage_state.overall_score = None
    stage_state.quality = {}


def override(tx: Transaction, stage: str, kind: Literal["bypassed", "skipped"], reason: str) -> Outcome:
    """Bypass (a logged quality/failure override) or skip (not needed) a stage."""
    state = tx.state
    if state.status in (S.completed, S.abandoned):
        raise InvalidTransition(f"session {state.session_id} is {state.status}; cannot change its stages")
    stage_state = require_stage(state, stage)
    new = T.bypassed if kind == "bypassed" else T.skipped
    set_stage_status(tx, stage, new, reason)
    stage_state.override_reason = reason
    stage_state.completed_at = tx.now
    tx.event(Event.stage_bypassed if kind == "bypassed" else Event.stage_skipped, stage=stage, reason=reason)
    if state.status == S.failed and not any(s.status == T.escalated for s in state.stages.values()):
        set_session_status(tx, S.in_progress, f"{stage} {kind}")
    elif state.status == S.initialized:
        set_session_status(tx, S.in_progress, f"{stage} {kind}")
    refresh_progress(state)
    if state.current_stage is None and state.status == S.in_progress:
        set_session_status(tx, S.completed, "all stages done")
        return Outcome("completed", stage)
    return Outcome("advanced", stage, next_stage=state.current_stage)


# -- time, estimates and alerts -----------------------------------------------------------
def stage_estimate_seconds(config: Config, level: str, stage: str, history: dict[str, list[float]]) -> float:
    samples = history.get(f"{level}/{stage}")
    if samples:
        return statistics.median(samples)
    return config.stage(level, stage).expected_minutes * 60


def estimate_remaining_seconds(state: SessionState, config: Config, history: dict[str, list[float]],
                               now: datetime) -> float:
    total = 0.0
    for name, stage in state.stages.items():
        if stage.status in DONE_STAGE:
            continue
        expected = stage_estimate_seconds(config, state.level, name, history)
        if stage.status == T.in_progress and stage.started_at:
            expected = max(0.0, expected - (now - stage.started_at).total_seconds())
        total += expected
    return total


def evaluate_alerts(tx: Transaction, config: Config, history: dict[str, list[float]]) -> None:
    state, limits, now = tx.state, config.alerts, tx.now
    found: list[tuple[AlertKind, Severity, str, float, float]] = []
    budget = state.budget.usd
    spent = state.cost_tracking.total_cost
    if budget:
        ratio = spent / budget
        if ratio >= 1.0:
            found.append(("cost", "critical", f"cost ${spent:.2f} is over the ${budget:.2f} budget", ratio, 1.0))
        elif ratio >= limits.cost_ratio:
            found.append(("cost", "warning", f"cost ${spent:.2f} is {ratio:.0%} of the ${budget:.2f} budget",
                          ratio, limits.cost_ratio))
    if state.quality_overall is not None and state.quality_overall < limits.quality_min:
        found.append(("quality", "warning", f"quality {state.quality_overall:.2f} is below {limits.quality_min:.2f}",
                      state.quality_overall, limits.quality_min))
    expected = sum(stage_estimate_seconds(config, state.level, n, history) for n in state.stages)
    elapsed = ((state.completed_at or now) - state.started_at).total_seconds()
    if expected and elapsed / expected >= limits.time_ratio:
        found.append(("time", "warning", f"elapsed {format_duration(elapsed)} is {elapsed / expected:.0%} of the"
                      f" {format_duration(expected)} estimate", elapsed / expected, limits.time_ratio))
    attempts = sum(s.total_attempts for s in state.stages.values())
    if state.error_count and attempts:
        rate = state.error_count / attempts
        if rate > limits.error_rate:
            found.append(("error_rate", "warning", f"error rate {rate:.0%} ({state.error_count} errors in"
                          f" {attempts} attempts) is above {limits.error_rate:.0%}", rate, limits.error_rate))
    previous = {(a.kind, a.severity): a for a in state.alerts}
    alerts = []
    for kind, severity, message, value, threshold in found:
        earlier = previous.get((kind, severity))
        alerts.append(Alert(kind=kind, severity=severity, message=message, value=round(value, 4),
                            threshold=threshold, raised_at=earlier.raised_at if earlier else now))
        if earlier is None:
            tx.event(Event.alert_raised, kind=kind, severity=severity, message=message)
    for key in previous.keys() - {(k, s) for k, s, *_ in found}:
        tx.event(Event.alert_cleared, kind=key[0], severity=key[1])
    state.alerts = alerts
