"""Cost accounting: the price table, one booking path for stages and `cost add`, budget alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tree_snapshot
from session_manager.config import Prices
from session_manager.costs import price_table
from session_manager.errors import InvalidInput, NotFound
from session_manager.model import Tokens
from session_manager.service import Service

MILLION = 1_000_000


def _state(project: Path, session_id: str) -> dict:
    folder = project / ".claude/level-2-production/sessions" / session_id
    return json.loads((folder / "pipeline_status.json").read_text())


def _events(project: Path, session_id: str, name: str) -> list[dict]:
    folder = project / ".claude/level-2-production/sessions" / session_id
    lines = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return [line for line in lines if line["event"] == name]


@pytest.fixture
def episode(service: Service) -> str:
    return service.start(level="prod", number=7, budget_usd=5.0).state.session_id


def test_sonnet_prices_every_token_kind() -> None:
    table = price_table(Prices())
    usd, key, warning = table.model_usd("claude-sonnet-4-5", Tokens(input=MILLION, output=MILLION,
                                                                    cache_write=MILLION, cache_read=MILLION))
    # $3 input + $15 output + $3.75 cache write (1.25x) + $0.30 cache read (0.1x)
    assert usd == pytest.approx(22.05) and key == "claude-sonnet-4-5" and warning is None


@pytest.mark.parametrize("name", [
    "claude-opus-4-5-20251101", "us.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5@20251101",
    "anthropic/claude-opus-4-5", "CLAUDE-OPUS-4-5",
])
def test_provider_prefixes_and_dates_resolve_to_one_price(name: str) -> None:
    usd, key, warning = price_table(Prices()).model_usd(name, Tokens(input=2 * MILLION, output=MILLION))
    assert (usd, key, warning) == (pytest.approx(35.0), "claude-opus-4-5", None)  # 2 x $5 + 1 x $25


def test_unknown_model_is_a_warning_not_a_silent_zero(service: Service, episode: str, project: Path) -> None:
    result = service.record_cost(session_id=episode, model="gpt-9-turbo", input_tokens=1000, output_tokens=10)
    assert result.usd == 0.0 and result.computed
    assert len(result.warnings) == 1
    assert "unknown model 'gpt-9-turbo'" in result.warnings[0]
    assert '[prices.models."gpt-9-turbo"]' in result.warnings[0]
    assert _events(project, episode, "cost_recorded")[-1]["warnings"] == result.warnings
    assert _state(project, episode)["cost_tracking"]["tokens"] == {"input": 1000, "output": 10, "cache_write": 0,
                                                                  "cache_read": 0}


def test_unknown_provider_is_a_warning(service: Service, episode: str) -> None:
    result = service.record_cost(session_id=episode, calls={"openai": 2})
    assert result.usd == 0.0
    assert "unknown provider 'openai'" in result.warnings[0] and "[prices.calls]" in result.warnings[0]


def test_project_prices_override_the_bundled_table(project: Path) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text(
        '[prices.models."claude-sonnet-4-5"]\ninput = 1.0\noutput = 2.0\n\n'
        '[prices.models."house-model"]\ninput = 0.5\noutput = 0.5\ncache_read = 0.01\n\n'
        "[prices.calls]\nperplexity = 0.25\n")
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    sonnet = service.record_cost(session_id=session_id, model="claude-sonnet-4-5-20250929", input_tokens=MILLION,
                                 output_tokens=MILLION, cache_write_tokens=MILLION, calls={"perplexity": 4})
    # 1 + 2 + cache write at 1.25 x 1.0 (no cache_write price given) + 4 calls x 0.25
    assert sonnet.usd == pytest.approx(5.25) and not sonnet.warnings
    house = service.record_cost(session_id=session_id, model="house-model", cache_read_tokens=2 * MILLION)
    assert house.usd == pytest.approx(0.02) and house.priced_as == "house-model"


def test_stage_costs_and_cost_add_sum_exactly_into_cost_tracking(service: Service, episode: str,
                                                                 project: Path) -> None:
    service.stage_start(session_id=episode)
    service.stage_complete(session_id=episode, stage="01_deep_research", cost_usd=1.25, tokens=9000,
                           model="claude-opus-4-5")
    service.stage_start(session_id=episode)
    # 200,000 input x $3/M = 0.60; 40,000 output x $15/M = 0.60; 2 perplexity calls x $0.005 = 0.01
    added = service.record_cost(session_id=episode, stage="02_questions", model="claude-sonnet-4-5",
                                input_tokens=200_000, output_tokens=40_000, calls={"perplexity": 2})
    assert added.usd == pytest.approx(1.21) and added.computed and added.priced_as == "claude-sonnet-4-5"
    service.record_cost(session_id=episode, usd=0.5)

    costs = _state(project, episode)["cost_tracking"]
    assert costs["total_cost"] == pytest.approx(2.96, abs=1e-9)
    assert costs["cost_by_stage"] == pytest.approx({"01_deep_research": 1.25, "02_questions": 1.21})
    assert costs["cost_by_model"] == pytest.approx({"claude-opus-4-5": 1.25, "claude-sonnet-4-5": 1.21})
    assert costs["tokens"] == {"input": 200_000, "output": 40_000, "cache_write": 0, "cache_read": 0}
    assert costs["tokens_used"] == 9000 + 240_000
    assert costs["api_calls"] == {"perplexity": 2}
    assert costs["entries"] == 3
    sources = [e["source"] for e in _events(project, episode, "cost_recorded")]
    assert sources == ["stage_complete", "manual", "manual"]


def test_crossing_80_percent_of_budget_raises_the_alert_in_result_and_status(service: Service, episode: str) -> None:
    below = service.record_cost(session_id=episode, usd=3.9)
    assert below.alerts == [] and below.budget_used == pytest.approx(0.78)
    crossing = service.record_cost(session_id=episode, usd=0.1)
    assert [(a.kind, a.severity) for a in crossing.alerts] == [("cost", "warning")]
    assert crossing.alerts[0].value == pytest.approx(0.8)
    status = service.list_sessions(status="active").sessions[0]
    assert [(a.kind, a.severity) for a in status.alerts] == [("cost", "warning")]
    over = service.record_cost(session_id=episode, usd=1.0)
    assert [(a.kind, a.severity) for a in over.alerts] == [("cost", "critical")]
    assert [(a.kind, a.severity) for a in service.show(session_id=episode).state.alerts] == [("cost", "critical")]


def test_cost_add_cli_reports_the_alert_and_status_shows_it(cli, project: Path) -> None:
    session_id = cli("start", "prod", "3", "--budget", "1", "--json").json()["state"]["session_id"]
    result = cli("cost", "add", "--model", "claude-haiku-4-5-20251001", "--input", "300000", "--output", "100000",
                 "--json")
    assert result.code == 0, result
    data = result.json()
    # 300,000 x $1/M + 100,000 x $5/M = 0.80 = 80% of the $1 budget
    assert data["usd"] == pytest.approx(0.8) and data["session_id"] == session_id
    assert [a["kind"] for a in data["alerts"]] == ["cost"]
    human = cli("cost", "add", session_id, "--calls", "web_search=3")
    assert human.code == 0, human
    assert "booked $0.0300 (computed)" in human.out and "! " in human.out and "cost:" in human.out
    status = cli("status", "--json").json()["sessions"][0]["state"]
    assert status["alerts"][0]["kind"] == "cost" and status["cost_tracking"]["total_cost"] == pytest.approx(0.83)


@pytest.mark.parametrize("args", [
    ("--input", "-5", "--model", "claude-sonnet-4-5"),
    ("--usd", "nan"),
    ("--usd", "-1"),
    ("--usd", "inf"),
    ("--calls", "perplexity"),
    ("--calls", "perplexity=two"),
    ("--calls", "../x=1"),
    ("--stage", "no_such_stage", "--usd", "1"),
    ("--stage", "../../etc", "--usd", "1"),
    ("--model", "claude;rm -rf", "--input", "5"),
    ("--input", "100"),  # tokens without a model cannot be priced
    (),
])
def test_bad_cost_input_is_refused_and_writes_nothing(cli, project: Path, args: tuple[str, ...]) -> None:
    assert cli("start", "prod", "3").code == 0
    before = tree_snapshot(project / ".claude")
    result = cli("cost", "add", *args)
    assert result.code == 2, result
    assert result.err.startswith("error: ") and len(result.err.strip().splitlines()) == 1
    assert tree_snapshot(project / ".claude") == before


def test_cost_for_an_unknown_stage_names_the_stages(service: Service, episode: str) -> None:
    with pytest.raises(NotFound, match="its stages are: 01_deep_research"):
        service.record_cost(session_id=episode, stage="99_nope", usd=1.0)


def test_cost_with_nothing_to_record_is_refused(service: Service, episode: str) -> None:
    with pytest.raises(InvalidInput, match="nothing to record"):
        service.record_cost(session_id=episode, model="claude-sonnet-4-5")


# -- bad input, property-based: a clear SessionError (nothing written) or a success, never a crash ----------
MY_OPERATIONS = {
    "record_cost": ["session_id", "stage", "model", "input_tokens", "output_tokens", "cache_write_tokens",
                    "cache_read_tokens", "calls", "usd"],
    "cost_remove": ["session_id", "entry", "reason"],
    "usage": ["period", "since", "until", "unattributed"],
    "usage_attach": ["session_id"],
    "usage_bind": ["session_id", "claude_session", "since"],
    "report": ["period", "since", "until", "level"],
    "dashboard": ["days", "level"],
}


@pytest.mark.parametrize("operation", sorted(MY_OPERATIONS))
def test_bad_input_to_cost_usage_report_and_dashboard_is_refused_cleanly(project: Path, operation: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from session_manager.errors import SessionError

    service = Service(project, actor="test")
    session_id = service.start(level="prod", number=1).state.session_id
    text = st.one_of(st.sampled_from(["../", "/etc/passwd", "a\x00b", "x" * 5000, "", " ", "-rf", "NaN", "week",
                                      "daily", "prod", "01_deep_research", "2026-11-01", "claude-sonnet-4-5",
                                      "dev_20261121_0930/../../x", "{{ 7*7 }}"]), st.text(max_size=30))
    number = st.sampled_from([float("nan"), float("inf"), -1, -0.5, 0, 3, 1.5, 10**20, 2**63, True])
    nasty = st.one_of(st.none(), text, number, st.lists(text, max_size=3),
                      st.dictionaries(text, st.one_of(text, number), max_size=3))
    fields = MY_OPERATIONS[operation]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.fixed_dictionaries({}, optional={f: nasty for f in fields}), st.booleans())
    def check(kwargs: dict, real_id: bool) -> None:
        if "session_id" in fields and real_id:
            kwargs["session_id"] = session_id
        before = tree_snapshot(project / ".claude")
        try:
            getattr(service, operation)(**kwargs)
        except SessionError as exc:
            assert str(exc) and "\n" not in str(exc).strip() and "Traceback" not in str(exc)
            assert tree_snapshot(project / ".claude") == before, f"{operation}({kwargs!r}) wrote despite refusing"

    check()
