"""Pattern detection, seed 003's report lines and the forecast over a generated history: 240
production sessions over four months (2026-07-01 .. 2026-10-28, two a day at 09:00 and 14:00)
written as real state files, with planted patterns whose numbers are worked out below.

Per session i (0..239), stages research, synthesis, review (gated), audio:
* research: $1.60 with claude-opus-4 (even i) or $0.40 with claude-haiku-4 (odd i), score 0.88 both,
  15 min -> the cheaper model finding: haiku $0.40 / 0.88 against opus $1.60 / 0.88, saving
  (1.60 - 0.40) x 120 runs = $144.00;
* synthesis: $0.50 for i < 120, $1.50 from i = 120 (the cost regression), 15 min;
* review: score 0.80 for i < 120, 0.90 after (the quality improvement); every 4th session (i % 4 == 0)
  retried once (a gate failure) and costs $1.50 instead of $0.50, 15 min;
* audio: $1.00, 30 min against 15 expected (time over estimate, 2.00x);
* every 10th session (i % 10 == 0) records the blocker "waiting for ElevenLabs quota on /tmp/epN.mp3"
  (24 sessions: a recurring blocker once N is normalised).

Halves: sessions 0..119 and 120..239. Cost per half: research 60 x 1.60 + 60 x 0.40 = 120; synthesis
60 or 180; review 90 x 0.50 + 30 x 1.50 = 90; audio 120: earlier 390, later 510. Synthesis share
60/390 = 0.1538 -> 180/510 = 0.3529; its mean $0.50 -> $1.50 (3.00x). Session quality (the mean of
research and review) 0.84 -> 0.89 (+0.05); review's score 0.80 -> 0.90 (+0.10).
Retries: 60 in 240 sessions (0.25 per session); a retried review costs $1.50 against $0.50, so
$1.00 extra per retried session, more than the stage itself; $60.00 in 60 sessions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from session_manager.model import (
    Blocker,
    CostTracking,
    Metadata,
    CreatedBy,
    Note,
    Progress,
    SessionState,
    SessionStatus,
    StageState,
    StageStatus,
    dump_json,
)
from session_manager.service import Service

CONFIG = """
[backup]
enabled = false

[forecast]
monthly_budget_usd = 500

[[pipelines.production]]
name = "research"

[[pipelines.production]]
name = "synthesis"

[[pipelines.production]]
name = "review"
quality_gate = { overall = 0.85, critical = 0.5 }

[[pipelines.production]]
name = "audio"
"""
FIRST = datetime(2026, 7, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 28, 23, 0, tzinfo=UTC)
SESSIONS = 240


def _stage(started: datetime, minutes: float, score: float | None = None, model: str | None = None,
           attempts: int = 1) -> StageState:
    return StageState(status=StageStatus.completed, attempts=attempts, total_attempts=attempts, started_at=started,
                      completed_at=started + timedelta(minutes=minutes), execution_seconds=minutes * 60,
                      overall_score=score, gate_failures=attempts - 1, model=model)


def _write(root: Path, state: SessionState) -> None:
    folder = root / ".claude/level-2-production/sessions" / state.session_id
    folder.mkdir(parents=True)
    (folder / "pipeline_status.json").write_text(dump_json(state))
    meta = Metadata(session_id=state.session_id, level="production", episode_number=state.episode_number,
                    created_at=state.started_at, created_by=CreatedBy(actor="test"))
    (folder / "metadata.json").write_text(dump_json(meta))


def session(i: int) -> SessionState:
    start = FIRST + timedelta(days=i // 2, hours=9 if i % 2 == 0 else 14)
    cheap = i % 2 == 1
    retried = i % 4 == 0
    review = 0.80 if i < 120 else 0.90
    costs = {"research": 0.40 if cheap else 1.60, "synthesis": 0.50 if i < 120 else 1.50,
             "review": 1.50 if retried else 0.50, "audio": 1.00}
    at = start
    stages = {}
    for name, minutes, score, model, attempts in (
            ("research", 15, 0.88, "claude-haiku-4" if cheap else "claude-opus-4", 1),
            ("synthesis", 15, None, "claude-sonnet-4-5", 1), ("review", 15, review, None, 2 if retried else 1),
            ("audio", 30, None, None, 1)):
        stages[name] = _stage(at, minutes, score, model, attempts)
        at += timedelta(minutes=minutes)
    progress = Progress(learnings=[Note(text=f"episode {i + 1}: keep the intro under a minute", at=at)])
    if i % 10 == 0:
        progress.blockers_cleared.append(Blocker(id=1, text=f"waiting for ElevenLabs quota on /tmp/ep{i + 1}.mp3",
                                                 created_at=start, cleared_at=at))
    total = round(sum(costs.values()), 2)
    return SessionState(
        session_id=f"ep_{i + 1:03d}_{start:%Y%m%d_%H%M}", level="production", episode_number=i + 1,
        status=SessionStatus.completed, started_at=start, last_updated=at, completed_at=at, ended_at=at,
        stages_completed=list(stages), stages=stages, quality_metrics={"overall": round((0.88 + review) / 2, 4)},
        quality_overall=round((0.88 + review) / 2, 4),
        cost_tracking=CostTracking(total_cost=total, cost_by_stage=costs, tokens_used=10_000), progress=progress,
        budget={"usd": 5.0},
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    (root / ".claude").mkdir()
    (root / ".claude/session-manager.toml").write_text(CONFIG)
    for i in range(SESSIONS):
        _write(root, session(i))
    return root


@pytest.fixture(scope="module")
def analytics(history: Path):  # type: ignore[no-untyped-def]
    report = Service(history, clock=lambda: NOW).report(since="2026-07-01", until="2026-10-28")
    assert report.sessions.run == SESSIONS
    return report.analytics


def _one(analytics, kind: str, subject: str):  # type: ignore[no-untyped-def]
    found = [f for f in analytics.findings if f.kind == kind and f.subject == subject]
    assert len(found) == 1, [(f.kind, f.subject) for f in analytics.findings]
    return found[0]


def test_cost_regression_on_one_stage_is_found_with_its_numbers(analytics) -> None:  # type: ignore[no-untyped-def]
    finding = _one(analytics, "cost_share_growth", "synthesis")
    assert finding.evidence == {"share_before": 0.1538, "share_after": 0.3529, "mean_usd_before": 0.5,
                                "mean_usd_after": 1.5, "growth": 3.0, "sessions_before": 120, "sessions_after": 120}
    assert finding.thresholds == {"cost_share_growth": 0.1, "cost_growth_ratio": 1.25, "min_samples": 5}
    assert {f.subject for f in analytics.findings if f.kind == "cost_share_growth"} == {"synthesis"}
    assert finding in analytics.optimisation


def test_quality_improvement_is_found_with_its_size(analytics) -> None:  # type: ignore[no-untyped-def]
    overall = _one(analytics, "quality_improvement", "overall")
    assert overall.evidence == {"mean_before": 0.84, "mean_after": 0.89, "change": 0.05, "sessions_before": 120,
                                "sessions_after": 120}
    review = _one(analytics, "quality_improvement", "review")
    assert review.evidence["change"] == 0.1
    assert not [f for f in analytics.findings if f.kind == "quality_regression"]
    assert not [f for f in analytics.findings if f.subject == "research" and f.category == "quality"]


def test_recurring_blocker_is_found_across_sessions(analytics) -> None:  # type: ignore[no-untyped-def]
    finding = _one(analytics, "recurring_blocker", "waiting for elevenlabs quota on <path>")
    assert finding.evidence["sessions"] == 24
    assert finding.evidence["first"] == "ep_001_20260701_0900"
    assert finding.thresholds == {"blocker_sessions": 3}


def test_cheaper_model_with_the_same_quality_is_an_opportunity(analytics) -> None:  # type: ignore[no-untyped-def]
    finding = _one(analytics, "cheaper_model", "research")
    assert finding.evidence == {"cheap_model": "claude-haiku-4", "cheap_mean_usd": 0.4, "cheap_quality": 0.88,
                                "cheap_runs": 120, "costly_model": "claude-opus-4", "costly_mean_usd": 1.6,
                                "costly_quality": 0.88, "costly_runs": 120, "saving_usd": 144.0}


def test_retries_and_their_cost_are_found(analytics) -> None:  # type: ignore[no-untyped-def]
    retries = _one(analytics, "retries", "review")
    assert retries.evidence == {"retries": 60, "sessions": 240, "retries_per_session": 0.25, "sessions_retried": 60}
    cost = _one(analytics, "retry_cost", "review")
    assert cost.evidence == {"extra_usd_per_retried_session": 1.0, "stage_mean_usd": 0.5, "retried_sessions": 60,
                             "extra_usd_total": 60.0}


def test_time_over_estimate_names_only_the_slow_stage(analytics) -> None:  # type: ignore[no-untyped-def]
    finding = _one(analytics, "time_over_estimate", "audio")
    assert finding.evidence == {"median_minutes": 30.0, "expected_minutes": 15.0, "ratio": 2.0, "sessions": 240}
    assert [f.subject for f in analytics.findings if f.kind == "time_over_estimate"] == ["audio"]


def test_seed_000_analytics_over_the_history(analytics) -> None:  # type: ignore[no-untyped-def]
    by_stage = {q.stage: q for q in analytics.quality_by_stage}
    assert (by_stage["research"].mean, by_stage["research"].stdev) == (0.88, 0.0)
    assert (by_stage["review"].mean, by_stage["review"].stdev, by_stage["review"].n) == (0.85, 0.05, 240)
    gate = {g.stage: g for g in analytics.gate_analysis}["review"]
    assert (gate.evaluated, gate.first_pass, gate.failures, gate.first_pass_rate) == (240, 180, 60, 0.75)
    models = {m.model: m for m in analytics.models}
    assert (models["claude-opus-4"].stages, models["claude-opus-4"].mean_cost_usd) == (120, 1.6)
    assert models["claude-haiku-4"].mean_quality == 0.88
    # over the $5 budget: the later half's retried opus sessions, 1.60 + 1.50 + 1.50 + 1.00 = $5.60 (i % 4 == 0)
    assert analytics.cost_variance.mean_target_usd == 5.0 and analytics.cost_variance.over == 30
    assert analytics.cost_variance.mean_actual_usd == 3.75  # (390 + 510) / 240
    assert analytics.episodes_produced == analytics.total_production == SESSIONS
    assert analytics.maturity.gate_first_pass_rate == 0.75
    assert analytics.token_efficiency.tokens == 2_400_000
    assert len(analytics.key_learnings) == 10 and analytics.key_learnings[0].text.startswith("episode 240:")


def test_forecast_month_end_cost_to_finish_and_episodes(history: Path) -> None:
    active = session(239).model_copy(deep=True)
    active.session_id, active.episode_number = "ep_241_20261028_2000", 241
    active.status, active.completed_at, active.ended_at = SessionStatus.in_progress, None, None
    for name in ("synthesis", "review", "audio"):
        active.stages[name] = StageState()
    active.cost_tracking = CostTracking(total_cost=1.6, cost_by_stage={"research": 1.6})
    active.started_at = active.last_updated = datetime(2026, 10, 28, 20, 0, tzinfo=UTC)
    _write(history, active)
    try:
        forecast = Service(history, clock=lambda: NOW).report(period="month").analytics.forecast
    finally:
        import shutil

        shutil.rmtree(history / ".claude/level-2-production/sessions" / active.session_id)
    # October: sessions 184..239 (56, of which 14 retried) at $4.00 + $1.00 each retried = $238, plus the active $1.60
    assert forecast.month == "2026-10" and forecast.month_to_date_usd == 239.6
    assert forecast.days_elapsed == round(27 + 23 / 24, 2)
    assert forecast.month_end_usd == round(239.6 / (27 + 23 / 24) * 31, 4)
    # the rest at the mean per stage of the report's window (the recent history, which holds the
    # regression: reports read only their window): sessions 184..239 are all after i = 120, so
    # synthesis 1.50, review (14 retried x 1.50 + 42 x 0.50) / 56 = 0.75, audio 1.00 -> 3.25
    assert forecast.active_sessions == 1 and forecast.cost_to_finish_usd == 3.25
    # the month's window (09-28 23:00 .. now): 61 finished episodes; the budget left buys whole episodes
    assert forecast.remaining_budget_usd == round(500 - 239.6 - 3.25, 4)
    assert forecast.episodes_affordable == int(forecast.remaining_budget_usd // forecast.cost_per_episode_usd)


def test_report_over_the_history_renders_in_every_view(history: Path) -> None:
    from session_manager import operations
    from session_manager.report_views import report_output

    svc = Service(history, clock=lambda: NOW)
    report = svc.report(since="2026-07-01", until="2026-10-28")
    text = report_output(report, None, {})
    assert "[cost] synthesis grew from 15% to 35% of the cost" in text
    assert "[quality] session quality rose from 0.840 to 0.890 (+0.050)" in text
    assert "[workflow] blocker seen in 24 sessions" in text
    md = report_output(report, None, {"format": "md", "service": svc})
    assert "## Findings" in md and "## Quality by stage" in md and "## Forecast" in md
    view = operations.load(operations.get("report").tool_view)(report)
    assert any("synthesis grew" in line for line in view.analytics.findings)
    data = json.loads(report.model_dump_json())
    assert data["analytics"]["forecast"]["monthly_budget_usd"] == 500
