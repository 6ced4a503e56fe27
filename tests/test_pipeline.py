"""The pipeline engine through the service: transitions, gates, handoffs, retries, escalation, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Clock, tree_snapshot
from session_manager.errors import InvalidInput, InvalidTransition, NotFound
from session_manager.model import SessionStatus as S
from session_manager.model import StageStatus as T
from session_manager.pipeline import SESSION_TRANSITIONS, STAGE_TRANSITIONS
from session_manager.service import Service

GATED_CONFIG = """
[[pipelines.coded]]
name = "implement"
expected_minutes = 30
[[pipelines.coded]]
name = "test"
requires = ["patch"]
[[pipelines.coded]]
name = "review"
on_quality_fail = "implement"
max_attempts = 3
quality_gate = { overall = 0.85, critical = 0.5, metrics = { correctness = 0.9 } }
[[pipelines.coded]]
name = "release"
"""


@pytest.fixture
def gated(project: Path, clock: Clock) -> Service:
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude/session-manager.toml").write_text(GATED_CONFIG)
    return Service(project, actor="test", clock=clock)


def start(svc: Service, level: str = "prod", **kw) -> str:
    return svc.start(level=level, number=5 if level == "prod" else None, **kw).state.session_id


def events(svc: Service, sid: str) -> list[dict]:
    return svc.events(sid)


def state(svc: Service, sid: str):
    return svc.show(session_id=sid).state


# -- the transition tables, rule by rule ----------------------------------------------------
SESSION_RULES = [
    (S.initialized, S.in_progress, True), (S.initialized, S.completed, True), (S.initialized, S.abandoned, True),
    (S.initialized, S.failed, False), (S.in_progress, S.completed, True), (S.in_progress, S.failed, True),
    (S.in_progress, S.abandoned, True), (S.in_progress, S.initialized, False), (S.failed, S.in_progress, True),
    (S.failed, S.abandoned, True), (S.failed, S.completed, False), (S.completed, S.in_progress, False),
    (S.abandoned, S.in_progress, False),
]
STAGE_RULES = [
    (T.pending, T.in_progress, True), (T.pending, T.completed, False), (T.pending, T.bypassed, True),
    (T.pending, T.skipped, True), (T.in_progress, T.completed, True), (T.in_progress, T.failed, True),
    (T.in_progress, T.retrying, False), (T.failed, T.retrying, True), (T.failed, T.escalated, True),
    (T.failed, T.completed, False), (T.retrying, T.in_progress, True), (T.retrying, T.completed, False),
    (T.escalated, T.retrying, True), (T.escalated, T.completed, False), (T.completed, T.pending, True),
    (T.completed, T.in_progress, False), (T.bypassed, T.pending, True), (T.skipped, T.completed, False),
]


@pytest.mark.parametrize(("old", "new", "allowed"), SESSION_RULES)
def test_session_transition_table(old, new, allowed) -> None:
    assert (new in SESSION_TRANSITIONS[old]) is allowed


@pytest.mark.parametrize(("old", "new", "allowed"), STAGE_RULES)
def test_stage_transition_table(old, new, allowed) -> None:
    assert (new in STAGE_TRANSITIONS[old]) is allowed


# -- refusals name what is allowed or missing, and write nothing ---------------------------------
def _refused(svc: Service, project: Path, error: type[Exception], text: str, call) -> None:
    before = tree_snapshot(project / ".claude")
    with pytest.raises(error) as info:
        call()
    assert text in str(info.value)
    assert tree_snapshot(project / ".claude") == before


def test_complete_a_stage_never_started_is_refused(svc: Service, project: Path) -> None:
    sid = start(svc)
    _refused(svc, project, InvalidTransition, "never started",
             lambda: svc.stage_complete(session_id=sid, stage="01_deep_research"))


def test_start_stage_3_before_stage_2_is_refused(svc: Service, project: Path) -> None:
    sid = start(svc)
    svc.stage_start(session_id=sid)
    svc.stage_complete(session_id=sid, stage="01_deep_research")
    _refused(svc, project, InvalidTransition, "earlier stage 02_questions is pending",
             lambda: svc.stage_start(session_id=sid, stage="03_synthesis"))


def test_requires_not_handed_over_is_refused(gated: Service, project: Path) -> None:
    sid = start(gated, "coded")
    gated.stage_start(session_id=sid)
    _refused(gated, project, InvalidInput, "must hand over patch to test",
             lambda: gated.stage_complete(session_id=sid, stage="implement"))
    # the handoff check also guards the stage that needs the input
    gated.stage_complete(session_id=sid, stage="implement", outputs={"patch": "p.diff"})
    assert gated.stage_start(session_id=sid).stage == "test"


def test_requires_checked_when_a_stage_is_bypassed_without_handoff(gated: Service, project: Path) -> None:
    sid = start(gated, "coded")
    gated.bypass(session_id=sid, stage="implement", reason="done by hand")
    _refused(gated, project, InvalidTransition, "required inputs not handed over: patch",
             lambda: gated.stage_start(session_id=sid, stage="test"))


def test_unknown_stage_names_the_stages(svc: Service) -> None:
    sid = start(svc, "dev")
    with pytest.raises(NotFound, match="initialization, planning, execution"):
        svc.stage_start(session_id=sid, stage="nope")


def test_gated_stage_needs_quality(svc: Service, project: Path) -> None:
    sid = start(svc)
    for stage in ("01_deep_research", "02_questions", "03_synthesis"):
        svc.stage_start(session_id=sid)
        svc.stage_complete(session_id=sid, stage=stage)
    svc.stage_start(session_id=sid)
    _refused(svc, project, InvalidInput, "has a quality gate",
             lambda: svc.stage_complete(session_id=sid, stage="04_quality_claude"))


@pytest.mark.parametrize("quality", [{"overall": 1.5}, {"overall": -0.1}, {"overall": float("nan")}])
def test_quality_outside_0_1_is_refused(svc: Service, project: Path, quality) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    _refused(svc, project, InvalidInput, "quality.overall",
             lambda: svc.stage_complete(session_id=sid, stage="initialization", quality=quality))


def test_starting_a_stage_twice_is_refused(svc: Service, project: Path) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    _refused(svc, project, InvalidTransition, "already in progress", lambda: svc.stage_start(session_id=sid))


def test_failed_session_refuses_stage_work_until_resumed(svc: Service, project: Path) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    svc.record_failure(session_id=sid, stage="initialization", error="boom", retryable=False)
    _refused(svc, project, InvalidTransition, "Resume it first", lambda: svc.stage_start(session_id=sid))


# -- gates ------------------------------------------------------------------------------
def _to_gate(svc: Service, sid: str) -> None:
    for stage in ("01_deep_research", "02_questions", "03_synthesis"):
        svc.stage_start(session_id=sid)
        svc.stage_complete(session_id=sid, stage=stage)
    svc.stage_start(session_id=sid)


def test_gate_below_threshold_retries_with_feedback(svc: Service) -> None:
    sid = start(svc)
    _to_gate(svc, sid)
    result = svc.stage_complete(session_id=sid, stage="04_quality_claude", quality={"overall": 0.80})
    assert result.decision == "retry" and result.attempts_left == 2
    assert result.feedback == ["overall: 0.80 below 0.85"]
    st = state(svc, sid)
    assert st.stages["04_quality_claude"].status == T.retrying
    assert st.stages["04_quality_claude"].gate_failures == 1
    assert st.quality_overall is None  # a failed attempt is not the session's quality
    passed = svc.stage_complete(session_id=sid, stage="04_quality_claude", quality={"overall": 0.9})
    assert passed.decision == "advanced" and passed.next_stage == "05_quality_gemini"
    folder = svc.store.session_dir(sid) / "quality_reports"
    assert sorted(p.name for p in folder.iterdir()) == ["04_quality_claude_attempt1.json", "04_quality_claude_attempt2.json"]
    assert state(svc, sid).quality_overall == 0.9


def test_session_quality_is_the_mean_of_completed_stages_and_alerts_below_target(svc: Service) -> None:
    sid = start(svc, "coded")
    svc.stage_start(session_id=sid)
    svc.stage_complete(session_id=sid, stage="implement", quality={"correctness": 0.9, "style": 0.7})
    svc.stage_start(session_id=sid)
    result = svc.stage_complete(session_id=sid, stage="test", quality={"overall": 0.7, "correctness": 0.8})
    st = state(svc, sid)
    assert st.quality_overall == 0.75  # (0.8 + 0.7) / 2
    assert st.quality_metrics == {"correctness": 0.85, "style": 0.7}
    assert [a.kind for a in result.alerts] == ["quality"]
    svc.resume(session_id=sid, from_stage="test")  # a re-opened stage no longer counts
    st = state(svc, sid)
    assert st.quality_overall == 0.8 and st.quality_metrics == {"correctness": 0.9, "style": 0.7}


def test_gate_metric_threshold_and_overall_from_mean(gated: Service) -> None:
    sid = start(gated, "coded")
    _to_review(gated, sid, "p.diff")
    result = gated.stage_complete(session_id=sid, stage="review", quality={"correctness": 0.8, "style": 1.0})
    assert result.overall_score == 0.9
    assert result.decision == "routed_back" and result.routed_to == "implement"
    assert result.feedback == ["correctness: 0.80 below 0.90"]


def test_gate_routes_back_with_feedback(gated: Service) -> None:
    sid = start(gated, "coded")
    _to_review(gated, sid, "v1.diff")
    result = gated.stage_complete(session_id=sid, stage="review", quality={"overall": 0.7, "correctness": 0.95})
    assert result.decision == "routed_back" and result.routed_to == "implement"
    st = state(gated, sid)
    assert st.current_stage == "implement"
    assert [st.stages[n].status for n in ("implement", "test", "review")] == [T.pending, T.pending, T.retrying]
    assert st.stages["implement"].feedback == "from review: overall: 0.70 below 0.85"
    folder = gated.store.session_dir(sid)
    assert (folder / "history/implement_complete.1.json").is_file()
    # second round goes through, the old record is kept
    gated.stage_start(session_id=sid)
    gated.stage_complete(session_id=sid, stage="implement", outputs={"patch": "v2.diff"})
    gated.stage_start(session_id=sid)
    gated.stage_complete(session_id=sid, stage="test")
    gated.stage_start(session_id=sid)
    final = gated.stage_complete(session_id=sid, stage="review", quality={"overall": 0.9, "correctness": 0.95})
    assert final.decision == "advanced"
    record = json.loads((folder / "implement_complete.json").read_text())
    assert record["handoff_data"]["outputs"] == {"patch": "v2.diff"}
    assert any(e["event"] == "routed_back" for e in events(gated, sid))


def test_gate_critical_failure_escalates_at_once(gated: Service) -> None:
    sid = start(gated, "coded")
    _to_review(gated, sid, "p")
    result = gated.stage_complete(session_id=sid, stage="review", quality={"overall": 0.3, "correctness": 0.3})
    assert result.decision == "escalated" and result.session_status == "failed"


def test_gate_escalates_when_attempts_are_exhausted(svc: Service) -> None:
    sid = start(svc)
    _to_gate(svc, sid)
    decisions = [svc.stage_complete(session_id=sid, stage="04_quality_claude", quality={"overall": 0.8}).decision
                 for _ in range(3)]
    assert decisions == ["retry", "retry", "escalated"]
    assert state(svc, sid).status == S.failed


def _to_review(gated: Service, sid: str, patch: str) -> None:
    """Walk the gated coded pipeline to its review stage, started."""
    gated.stage_start(session_id=sid)
    gated.stage_complete(session_id=sid, stage="implement", outputs={"patch": patch})
    gated.stage_start(session_id=sid)
    gated.stage_complete(session_id=sid, stage="test")
    gated.stage_start(session_id=sid)


# -- failures, retries, escalation, resume ------------------------------------------------
def test_failures_retry_then_escalate_then_resume(svc: Service) -> None:
    sid = start(svc, "dev")
    first = svc.record_failure(session_id=sid, stage="initialization", error="timeout 1")
    assert (first.decision, first.attempts, first.attempts_left) == ("retry", 1, 2)
    assert svc.record_failure(session_id=sid, stage="initialization", error="timeout 2").decision == "retry"
    third = svc.record_failure(session_id=sid, stage="initialization", error="timeout 3")
    assert third.decision == "escalated" and third.session_status == "failed"
    st = state(svc, sid)
    assert st.error_count == 3 and st.stages["initialization"].status == T.escalated
    assert [e.decision for e in st.errors] == ["retry", "retry", "escalate"]
    resumed = svc.resume(session_id=sid)
    assert resumed.decision == "resumed" and resumed.stage == "initialization"
    st = state(svc, sid)
    assert st.status == S.in_progress and st.recovery_count == 1
    assert st.stages["initialization"].status == T.retrying and st.stages["initialization"].attempts == 0
    assert svc.stage_complete(session_id=sid, stage="initialization").decision == "advanced"


def test_non_retryable_failure_escalates_at_once(svc: Service) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    result = svc.record_failure(session_id=sid, stage="initialization", error="disk full", retryable=False)
    assert result.decision == "escalated"


def test_failure_of_a_finished_stage_is_refused(svc: Service, project: Path) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    svc.stage_complete(session_id=sid, stage="initialization")
    _refused(svc, project, InvalidTransition, "initialization is completed",
             lambda: svc.record_failure(session_id=sid, stage="initialization", error="late"))


def test_resume_from_a_completed_stage_reopens_it_and_later_ones(svc: Service) -> None:
    sid = start(svc, "dev")
    for stage in ("initialization", "planning", "execution"):
        svc.stage_start(session_id=sid)
        svc.stage_complete(session_id=sid, stage=stage)
    result = svc.resume(session_id=sid, from_stage="planning")
    assert result.stage == "planning"
    st = state(svc, sid)
    assert [s.status for s in st.stages.values()] == [T.completed, T.pending, T.pending, T.pending, T.pending]
    assert st.current_stage == "planning" and st.recovery_count == 1 and st.stages_completed == ["initialization"]
    folder = svc.store.session_dir(sid)
    assert (folder / "history/planning_complete.1.json").is_file()
    assert (folder / "history/execution_complete.1.json").is_file()


def test_resume_an_interrupted_stage(svc: Service) -> None:
    sid = start(svc, "dev")
    svc.stage_start(session_id=sid)
    result = svc.resume(session_id=sid)
    assert result.stage == "initialization"
    assert state(svc, sid).stages["initialization"].status == T.retrying


def test_resume_with_nothing_to_resume_is_refused(svc: Service, project: Path) -> None:
    sid = start(svc, "dev")
    _refused(svc, project, InvalidTransition, "only a failed or interrupted", lambda: svc.resume(session_id=sid))


def test_bypass_and_skip_are_logged_and_advance(svc: Service) -> None:
    sid = start(svc, "coded")
    svc.stage_start(session_id=sid)
    svc.record_failure(session_id=sid, stage="implement", error="bad", retryable=False)
    result = svc.bypass(session_id=sid, stage="implement", reason="debugging the gate")
    assert result.decision == "advanced" and result.next_stage == "test" and result.session_status == "in_progress"
    svc.skip(session_id=sid, stage="test", reason="no tests for docs")
    st = state(svc, sid)
    assert st.stages["implement"].override_reason == "debugging the gate"
    assert st.stages["test"].status == T.skipped
    kinds = [e["event"] for e in events(svc, sid)]
    assert "stage_bypassed" in kinds and "stage_skipped" in kinds
    assert st.progress.percent == 50.0


# -- time, progress, estimates and alerts ------------------------------------------------------
def test_execution_time_progress_and_estimate_from_history(svc: Service, clock: Clock) -> None:
    sid = start(svc, "coded")
    svc.stage_start(session_id=sid)
    clock.advance(12)
    svc.stage_complete(session_id=sid, stage="implement")
    st = state(svc, sid)
    assert st.stages["implement"].execution_seconds == 720 and st.progress.percent == 25.0
    record = json.loads((svc.store.session_dir(sid) / "implement_complete.json").read_text())
    assert record["execution_time"] == "00:12:00"
    other = start(svc, "coded")
    # history says implement takes 12 minutes; the other stages fall back to config (30 each)
    assert svc.show(session_id=other).estimate_remaining_seconds == 12 * 60 + 3 * 30 * 60


def test_time_and_error_rate_alerts(svc: Service, clock: Clock) -> None:
    sid = start(svc, "coded")  # 4 stages x 30 min expected
    svc.stage_start(session_id=sid)
    svc.record_failure(session_id=sid, stage="implement", error="x")
    st = state(svc, sid)
    assert {a.kind for a in st.alerts} == {"error_rate"}
    clock.advance(150)  # 125% of 120 minutes
    result = svc.stage_complete(session_id=sid, stage="implement")
    assert {a.kind for a in result.alerts} == {"error_rate", "time"}


def test_cost_alert_at_80_percent_of_budget(svc: Service) -> None:
    sid = start(svc, "dev", budget_usd=10)
    svc.stage_start(session_id=sid)
    result = svc.stage_complete(session_id=sid, stage="initialization", cost_usd=8.5)
    assert [(a.kind, a.severity) for a in result.alerts] == [("cost", "warning")]


def test_events_hold_every_transition_in_order(svc: Service) -> None:
    sid = start(svc, "coded")
    svc.stage_start(session_id=sid)
    svc.stage_complete(session_id=sid, stage="implement")
    names = [(e["event"], e.get("stage"), e.get("new")) for e in events(svc, sid)]
    assert names == [
        ("session_started", None, None),
        ("stage_status", "implement", "in_progress"),
        ("session_status", None, "in_progress"),
        ("stage_status", "implement", "completed"),
        ("stage_completed", "implement", None),
    ]


def test_retry_attempt_time_runs_from_the_retry_decision(svc: Service, clock: Clock) -> None:
    sid = start(svc)
    _to_gate(svc, sid)
    clock.advance(5)
    svc.stage_complete(session_id=sid, stage="04_quality_claude", quality={"overall": 0.8})
    clock.advance(7)  # the second attempt, without an explicit stage start
    svc.stage_complete(session_id=sid, stage="04_quality_claude", quality={"overall": 0.9})
    assert state(svc, sid).stages["04_quality_claude"].execution_seconds == 7 * 60
