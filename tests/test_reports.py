"""`report`: every figure checked against hand-computed values (see fixtures/report_sessions.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.report_sessions import NOW, build, built  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("utc")  # report days are local days: expectations are in UTC
from session_manager.reports import CACHE_FILE, error_pattern
from session_manager.service import Service

WINDOW = ("--since", "2026-11-14T12:00:00Z", "--until", "2026-11-21T12:00:00Z")  # = `report week` at NOW
UTC_ENV = {"TZ": "UTC"}


@pytest.fixture
def week(built):
    root, _ids = built
    return Service(root, actor="test", clock=lambda: NOW).report(period="week")


def test_week_counts_sessions_run_and_finished_and_the_rates(week) -> None:
    s = week.sessions
    # F finished before the week; A..E are in it: A, B completed, C failed, D in progress, E abandoned
    assert (s.run, s.started, s.finished) == (5, 5, 2)
    assert (s.completed, s.in_progress, s.failed, s.abandoned, s.initialized) == (2, 1, 1, 1, 0)
    assert s.completion_rate == pytest.approx(0.4)  # 2 finished / 5 run
    # B, C and E met an error; only B (completed) recovered
    assert (s.with_errors, s.recovered) == (3, 1)
    assert s.error_recovery_rate == pytest.approx(0.3333)


def test_week_quality_mean_and_spread_per_metric(week) -> None:
    q = week.quality
    assert sorted(q) == ["accuracy", "clarity", "overall"]
    # a session's quality is the mean of its completed stages' scores: C's review failed its gate
    # (.5/.5) and never completed, so C has no quality. A's review: clarity .9, accuracy .8,
    # overall .85; B's review after the retry: .95, .85, .90
    assert (q["clarity"].n, q["clarity"].mean, q["clarity"].stdev) == (2, 0.925, 0.025)
    assert (q["accuracy"].mean, q["accuracy"].stdev) == (0.825, 0.025)
    assert (q["overall"].mean, q["overall"].stdev, q["overall"].min, q["overall"].max) == (0.875, 0.025, 0.85, 0.9)


def test_week_cost_per_session_and_per_stage_against_the_target(week) -> None:
    c = week.cost
    # A 3.00 + B 5.00 + C 0.50 + D 0.50 + E 0
    assert c.total_usd == pytest.approx(9.0)
    assert (c.per_session.mean, c.per_session.median, c.per_session.min, c.per_session.max) == (1.8, 0.5, 0.0, 5.0)
    assert c.target_usd == 5.0 and c.vs_target == pytest.approx(0.36)  # 1.80 / 5.00
    assert (c.over_budget, c.near_budget) == (1, 0)  # B spent its whole $5
    stages = {b.stage: (b.total_usd, b.mean_usd, b.sessions, b.share) for b in c.by_stage}
    assert [b.stage for b in c.by_stage] == ["research", "review", "audio"]
    assert stages == {
        "research": (2.5, 0.625, 4, 0.2778),  # 1.0 + 0.8 + 0.5 + 0.2
        "review": (2.7, 1.35, 2, 0.3),  # 1.5 + 1.2
        "audio": (3.5, 1.75, 2, 0.3889),  # 0.5 + 3.0
    }
    assert all(b.target_usd == pytest.approx(5 / 3, abs=1e-6) for b in c.by_stage)  # even share of $5
    assert c.unassigned_usd == pytest.approx(0.3)  # D's cost without a stage


def test_week_time_to_completion_and_stage_durations(week) -> None:
    t = week.time_to_completion_seconds
    assert (t.n, t.mean, t.median, t.min, t.max) == (2, 5100.0, 5100.0, 4800.0, 5400.0)  # A 80 min, B 90 min
    seconds = {name: (st.n, st.mean, st.max) for name, st in week.stage_seconds.items()}
    assert seconds == {"research": (4, 1200.0, 1800.0),  # A 30m, B 20m, C 20m (retry), D 10m
                       "review": (2, 1350.0, 1800.0),  # A 30m, B 15m (the passing attempt)
                       "audio": (2, 1050.0, 1200.0)}  # A 20m, B 15m


def test_week_gate_failures_by_stage(week) -> None:
    assert [(g.stage, g.failures, g.sessions) for g in week.gate_failures] == [("review", 2, 2)]


def test_week_groups_recurring_errors_by_pattern(week) -> None:
    assert week.errors == 3
    (pattern,) = week.recurring_errors  # "git push rejected by origin" happened once: not recurring
    assert pattern.pattern == "elevenlabs timeout after <n>s on <path>"
    assert (pattern.count, pattern.sessions, pattern.stages) == (2, 2, ["audio", "research"])
    assert pattern.example == "ElevenLabs timeout after 45s on /tmp/ep3/part7.mp3"  # the latest one


def test_week_lists_bypasses_and_alerts(week, built) -> None:
    _root, ids = built
    assert [(b.session_id, b.stage, b.reason) for b in week.bypasses] == [
        (ids["D"], "review", "manual review done offline")]
    # C's quality alert went away with its failed attempt: only completed stages set a session's quality
    assert sorted((a.session_id, a.kind, a.severity) for a in week.alerts) == [(ids["B"], "cost", "critical")]
    assert week.alert_counts == {"cost/critical": 1}


def test_week_trend_has_one_point_per_day(week) -> None:
    points = {p.day: (p.sessions, p.finished, p.cost_usd, p.quality) for p in week.trend}
    assert list(points) == [f"2026-11-{d}" for d in range(14, 22)]
    assert points["2026-11-15"] == (1, 1, 3.0, 0.85)
    assert points["2026-11-16"] == (1, 1, 5.0, 0.9)
    assert points["2026-11-17"] == (1, 0, 0.5, None)  # C completed no scored stage
    assert points["2026-11-20"] == (0, 0, 0.0, None)


@pytest.mark.parametrize(("level", "run"), [("prod", 4), ("dev", 1), ("coded", 0)])
def test_level_keeps_one_level(built, level: str, run: int) -> None:
    root, _ids = built
    report = Service(root, actor="test", clock=lambda: NOW).report(period="week", level=level)
    assert report.sessions.run == run


def test_today_and_month_windows(built) -> None:
    root, _ids = built
    service = Service(root, actor="test", clock=lambda: NOW)
    today = service.report(period="today")
    assert today.since.isoformat() == "2026-11-21T00:00:00+00:00"
    assert today.sessions.run == 0 and today.sessions.completion_rate is None and today.cost.per_session.n == 0
    month = service.report(period="month")
    assert month.sessions.run == 6 and month.sessions.finished == 3  # F is back in


def test_json_and_markdown_carry_the_same_figures(built) -> None:
    root, ids = built
    as_json = run_cli(root, "report", *WINDOW, "--json", env=UTC_ENV)
    assert as_json.code == 0, as_json
    data = as_json.json()
    week = Service(root, actor="test", clock=lambda: NOW).report(period="week")
    expected = json.loads(week.model_dump_json())
    for key in ("sessions", "quality", "cost", "time_to_completion_seconds", "stage_seconds", "gate_failures",
                "recurring_errors", "bypasses", "alert_counts", "trend"):
        assert data[key] == expected[key], key

    md = run_cli(root, "report", *WINDOW, "--format", "md", env=UTC_ENV)
    assert md.code == 0, md
    text = md.out
    assert "| run | started | finished | not started | in progress | failed | abandoned | completion rate |" in text
    assert "|   5 |       5 |        2 |           0 |           1 |      1 |         1 |             40% |" in text
    assert "1 of the 3 sessions that met an error recovered." in text
    assert "| clarity  |   2 | 0.93 | 0.025 | 0.90 | 0.95 |" in text
    assert "| accuracy |   2 | 0.82 | 0.025 | 0.80 | 0.85 |" in text  # 0.825 as a float rounds down
    assert "Total $9.00; per session mean $1.80, median $0.50" in text
    assert "the mean is 36% of it" in text and "1 over budget, 0 near it" in text
    assert "| research   | $2.50 | $0.62 |        4 |   28% |  $1.67 |" in text
    assert "| (no stage) | $0.30 |" in text
    assert "To completion (2 finished): mean 1h25m" in text
    assert "| review   |   2 | 22 min | 22 min | 30 min |" in text
    assert "| review |        2 |        2 |" in text  # gate failures
    assert "`elevenlabs timeout after <n>s on <path>`" in text
    assert f"- `{ids['D']}` review: manual review done offline" in text
    assert f"- **critical** `{ids['B']}` cost:" in text
    assert "sessions `▁" in text


def test_terminal_report_has_aligned_tables_and_sparklines(built) -> None:
    root, _ids = built
    result = run_cli(root, "report", *WINDOW, env=UTC_ENV)
    assert result.code == 0, result
    out = result.out
    assert "completion rate 40% · error recovery rate 33% (1 of 3 that met an error)" in out
    assert "Trend     sessions ▁█████▁▁" in out  # 11-14 .. 11-21: none, one a day on 15-19, none
    assert "  METRIC    N  MEAN  STDEV  MIN   MAX" in out
    assert "  research    $2.50  $0.62  4         28%    $1.67" in out
    assert "elevenlabs timeout after <n>s on <path>" in out


def test_a_hand_edited_number_in_text_is_still_read(built, tmp_path: Path) -> None:
    source, ids = built
    root = tmp_path / "copy"
    shutil.copytree(source, root, symlinks=True)
    state = root / ".claude/level-2-production/sessions" / ids["A"] / "pipeline_status.json"
    state.write_text(state.read_text().replace('"total_cost": 3.0,', '"total_cost": "3.5",'))
    assert Service(root, actor="test", clock=lambda: NOW).report(period="week").cost.total_usd == pytest.approx(9.5)


def test_report_cache_is_used_and_never_believed_when_stale(built, tmp_path: Path) -> None:
    source, ids = built
    root = tmp_path / "copy"
    shutil.copytree(source, root, symlinks=True)
    service = Service(root, actor="test", clock=lambda: NOW)
    assert service.report(period="week").cost.total_usd == pytest.approx(9.0)
    cache = root / ".claude/.session-manager" / CACHE_FILE
    assert cache.is_file()
    # a planted lie in the cache is believed only while the state file is unchanged
    import sqlite3

    with sqlite3.connect(cache) as conn:
        data = json.loads(conn.execute("SELECT data FROM summaries WHERE id = ?", (ids["A"],)).fetchone()[0])
        data["cost"] = 1000.0
        conn.execute("UPDATE summaries SET data = ? WHERE id = ?", (json.dumps(data).encode(), ids["A"]))
    conn.close()
    assert service.report(period="week").cost.total_usd == pytest.approx(1006.0)
    service.record_cost(session_id=ids["A"], usd=0.25)  # rewrites A's state file: new inode, the entry is stale
    assert service.report(period="week").cost.total_usd == pytest.approx(9.25)


@pytest.mark.parametrize("stages", [[["research"], {"x": 1}], "research", [1, 2]])
def test_a_cached_summary_with_odd_stages_is_read_again(built, tmp_path: Path, stages: object) -> None:
    """A warm read shares one list of stages per pipeline among the summaries; a cached row whose
    stages are not a list of names is not shared or believed: the session is read again."""
    source, ids = built
    root = tmp_path / "copy"
    shutil.copytree(source, root, symlinks=True)
    service = Service(root, actor="test", clock=lambda: NOW)
    before = service.report(period="week").model_dump(exclude={"generated_at"})
    import sqlite3

    from session_manager import reports

    cache = root / ".claude/.session-manager" / CACHE_FILE
    with sqlite3.connect(cache) as conn:
        data = json.loads(conn.execute("SELECT data FROM summaries WHERE id = ?", (ids["A"],)).fetchone()[0])
        data["stages"] = stages
        conn.execute("UPDATE summaries SET data = ? WHERE id = ?", (json.dumps(data).encode(), ids["A"]))
    conn.close()
    assert service.report(period="week").model_dump(exclude={"generated_at"}) == before
    reports.load_summaries(service.store)  # every session summarised in the cache: the next read is all warm
    warm = reports.load_summaries(service.store).summaries
    production = [s for s in warm if s["level"] == "production"]
    assert len(production) > 1 and all(s["stages"] is production[0]["stages"] for s in production)


@pytest.mark.parametrize("damage", ["{ not json", '{"schema_version": 1, "status": "completed"}', "[]"])
def test_a_damaged_session_is_named_not_fatal(built, tmp_path: Path, damage: str) -> None:
    source, ids = built
    root = tmp_path / "copy"
    shutil.copytree(source, root, symlinks=True)
    state = root / ".claude/level-2-production/sessions" / ids["C"] / "pipeline_status.json"
    state.write_text(damage)
    report = Service(root, actor="test", clock=lambda: NOW).report(period="week")
    assert report.unreadable == [ids["C"]] and report.sessions.run == 4
    result = run_cli(root, "report", *WINDOW, env=UTC_ENV)
    assert result.code == 0 and f"unreadable: {ids['C']}" in result.out


@pytest.mark.parametrize(("first", "second"), [
    ("Timeout after 30s on /a/x.mp3", "timeout after 45s on /b/y.mp3"),
    ("KeyError: 'script' in ep_005_20261121_0930", "KeyError: 'outline' in ep_006_20261122_1000"),
    ("HTTP 503 for request req_011CabcdEF1234567 at https://api.x.io/v1", "HTTP 429 for request req_0aaaabbbbccccdd"
                                                                          " at https://api.x.io/v2"),
    ("commit 3f2a9c1d not found", "commit 77b0e4aa9 not found"),
    ("job 8f3e2a6c-1d2b-4c3a-9e8f-0a1b2c3d4e5f failed", "job 00000000-1111-2222-3333-444444444444 failed"),
])
def test_similar_error_messages_share_a_pattern(first: str, second: str) -> None:
    assert error_pattern(first) == error_pattern(second)


def test_different_errors_keep_different_patterns() -> None:
    assert error_pattern("timeout after 30s") != error_pattern("connection refused after 30s")


@pytest.mark.parametrize("args", [("year",), ("--level", "cosmic"), ("--since", "soon"),
                                  ("--since", "2026-11-20", "--until", "2026-11-01"), ("--json", "--format", "md")])
def test_bad_report_arguments_are_refused(cli, args: tuple[str, ...]) -> None:
    result = cli("report", *args)
    assert result.code == 2, result
    assert result.err.startswith("error: ") and len(result.err.strip().splitlines()) == 1


def test_report_in_an_empty_project_says_so(cli) -> None:
    result = cli("report", "week", "--json")
    assert result.code == 0, result
    assert result.json()["sessions"]["run"] == 0


def test_window_figures_do_not_move_with_the_time_zone(built) -> None:
    root, _ids = built
    result = run_cli(root, "report", *WINDOW, "--json", env={"TZ": "America/New_York"})
    assert result.code == 0, result
    data = result.json()
    assert data["sessions"]["run"] == 5 and data["cost"]["total_usd"] == pytest.approx(9.0)


def test_report_counts_a_session_started_this_second(project) -> None:
    from session_manager.service import Service

    service = Service(project, actor="test")
    service.start(level="dev")
    assert service.report(period="today").sessions.started == 1
