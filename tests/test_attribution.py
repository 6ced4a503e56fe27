"""Every dollar counted once: one owner per response, bindings by time, cost per stage and per
branch, prices per cache lifetime, correctable entries. Through the Service, with real files
and a fake CLAUDE_CONFIG_DIR holding generated transcripts."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import Clock, tree_snapshot
from session_manager import hooks
from session_manager.errors import InvalidInput, NotFound
from session_manager.service import Service

pytestmark = pytest.mark.usefixtures("utc")

SONNET, OPUS, HAIKU = "claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001"
DAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MILLION = 1_000_000


def at(minutes: float) -> datetime:
    return DAY + timedelta(minutes=minutes)


def line(msg: str, model: str, when: datetime, tokens: list[int], *, hour: int = 0, branch: str = "main",
         conversation: str = "x", compact: bool = True) -> str:
    usage = {"input_tokens": tokens[0], "cache_creation_input_tokens": tokens[2],
             "cache_read_input_tokens": tokens[3], "output_tokens": tokens[1],
             "cache_creation": {"ephemeral_5m_input_tokens": tokens[2] - hour, "ephemeral_1h_input_tokens": hour}}
    record = {"parentUuid": None, "isSidechain": False, "cwd": "/home/me/app", "sessionId": conversation,
              "version": "2.0.40", "gitBranch": branch, "type": "assistant", "requestId": f"req_{msg}",
              "message": {"id": f"msg_{msg}", "type": "message", "role": "assistant", "model": model,
                          "content": [{"type": "text", "text": "ok"}], "usage": usage},
              "uuid": f"u-{msg}", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    return json.dumps(record, separators=(",", ":") if compact else (", ", ": "))


class Transcripts:
    """A fake Claude Code config dir: one file per conversation."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "projects" / "-home-me-app"
        self.folder.mkdir(parents=True)

    def add(self, conversation: str, *lines: str) -> Path:
        path = self.folder / f"{conversation}.jsonl"
        with path.open("a") as handle:
            handle.write("".join(text + "\n" for text in lines))
        return path


@pytest.fixture
def transcripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Transcripts:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    return Transcripts(tmp_path / "claude-config")


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY)


def usd(model: str, tokens: list[int], hour: int = 0) -> float:
    from session_manager.config import Prices
    from session_manager.costs import price_table
    from session_manager.model import Tokens

    value, _key, _warning = price_table(Prices()).model_usd(
        model, Tokens(input=tokens[0], output=tokens[1], cache_write=tokens[2], cache_read=tokens[3]), hour)
    return value


def events(project: Path, session_id: str) -> list[dict]:
    folder = next((project / ".claude").glob(f"level-*/sessions/{session_id}"))
    return [json.loads(text) for text in (folder / "events.jsonl").read_text().splitlines()]


def fire_hook(project: Path, conversation: str) -> None:
    out = io.StringIO()
    assert hooks.run("session-start", json.dumps({"session_id": conversation, "cwd": str(project)}), out) == 0
    assert "failed" not in out.getvalue()


def no_negative_amounts(project: Path) -> None:
    for journal in (project / ".claude").glob("level-*/sessions/*/events.jsonl"):
        for text in journal.read_text().splitlines():
            record = json.loads(text)
            for key in ("usd", "added_usd"):
                assert (record.get(key) or 0) >= 0, record
    ledger = project / ".claude/usage/bookings.jsonl"
    for text in ledger.read_text().splitlines():
        record = json.loads(text)
        assert record["usd"] >= 0 and min(record["tokens"]) >= 0, record


# -- done when 1 --------------------------------------------------------------------------------
def test_two_conversations_two_sessions_hooks_and_repeated_attach_count_each_dollar_once(
        svc: Service, clock: Clock, project: Path, transcripts: Transcripts) -> None:
    a = svc.start(level="dev", claude_session="conv-a").state.session_id
    clock.advance(5)
    b = svc.start(level="coded", claude_session="conv-b").state.session_id
    a1, a2, a3 = [20, 3000, 1000, 50_000], [10, 800, 0, 70_000], [5, 90_000, 0, 0]
    b1, b2 = [30, 2000, 4000, 10_000], [1, 500, 0, 0]
    early, stray = [0, 7000, 0, 0], [0, 11_000, 0, 0]
    transcripts.add("conv-a", line("early", SONNET, at(-5), early, conversation="conv-a"),  # before A started
                    line("a1", SONNET, at(10), a1, conversation="conv-a"),
                    line("a2", OPUS, at(20), a2, hour=0, conversation="conv-a"))
    transcripts.add("conv-b", line("b1", SONNET, at(15), b1, hour=1000, conversation="conv-b"))
    transcripts.add("conv-c", line("c1", HAIKU, at(40), stray, conversation="conv-c"))  # bound to nothing
    for _round in range(3):
        for conversation in ("conv-a", "conv-b", "conv-c"):
            fire_hook(project, conversation)  # two sessions are active: the hook binds nothing
        svc.usage_attach(session_id=a)
        svc.usage_attach(session_id=b)
    transcripts.add("conv-a", line("a3", HAIKU, at(50), a3, conversation="conv-a"))
    transcripts.add("conv-b", line("b2", HAIKU, at(55), b2, conversation="conv-b"),
                    line("b1", SONNET, at(15), b1, hour=1000, conversation="conv-b"))  # a repeated line
    # conversation b resumed into a new file: its old response replayed, never booked twice
    transcripts.add("conv-b2", line("b1", SONNET, at(15), b1, hour=1000, conversation="conv-b2"))
    svc.usage_bind(session_id=a, claude_session="conv-b2")
    for _round in range(2):
        fire_hook(project, "conv-a")
        svc.usage_attach(session_id=b)
        svc.usage_attach(session_id=a)

    cost_a = usd(SONNET, a1) + usd(OPUS, a2) + usd(HAIKU, a3)
    cost_b = usd(SONNET, b1, 1000) + usd(HAIKU, b2)
    state_a, state_b = svc.show(session_id=a).state, svc.show(session_id=b).state
    assert state_a.cost_tracking.total_cost == pytest.approx(cost_a, abs=1e-5)
    assert state_b.cost_tracking.total_cost == pytest.approx(cost_b, abs=1e-5)
    assert state_a.claude_sessions == ["conv-a", "conv-b2"] and state_b.claude_sessions == ["conv-b"]
    no_negative_amounts(project)

    unattributed = svc.usage(unattributed=True)
    assert unattributed.totals.output_tokens == early[1] + stray[1]
    assert unattributed.totals.cost_usd == pytest.approx(usd(SONNET, early) + usd(HAIKU, stray), abs=1e-6)
    daily = svc.usage(period="daily")
    assert [row.period for row in daily.rows] == ["2026-11-20"]
    assert state_a.cost_tracking.total_cost + state_b.cost_tracking.total_cost + unattributed.totals.cost_usd \
        == pytest.approx(daily.rows[0].cost_usd, abs=1e-5)


def test_the_hook_binds_a_conversation_only_when_exactly_one_session_is_active(
        project: Path, transcripts: Transcripts) -> None:
    service = Service(project, actor="test")
    only = service.start(level="dev").state.session_id
    fire_hook(project, "conv-1")  # the hook answers at once; a detached process writes the binding
    deadline = time.monotonic() + 30
    while service.show(session_id=only).state.claude_sessions != ["conv-1"]:
        assert time.monotonic() < deadline, "the detached binding never landed"
        time.sleep(0.1)
    fire_hook(project, "conv-1")  # again: nothing new
    bindings = (project / ".claude/usage/bindings.jsonl").read_text().splitlines()
    assert [json.loads(b)["session"] for b in bindings] == [only]
    assert service.show(session_id=only).state.claude_sessions == ["conv-1"]
    service.start(level="coded")
    fire_hook(project, "conv-2")
    assert len((project / ".claude/usage/bindings.jsonl").read_text().splitlines()) == 1
    assert [e["event"] for e in events(project, only)].count("claude_session_attached") == 1


def test_an_explicit_bind_moves_later_responses_and_keeps_earlier_ones(
        svc: Service, clock: Clock, project: Path, transcripts: Transcripts) -> None:
    a = svc.start(level="dev", claude_session="conv").state.session_id
    b = svc.start(level="coded").state.session_id
    transcripts.add("conv", line("r1", SONNET, at(10), [0, 1000, 0, 0], conversation="conv"),
                    line("r2", SONNET, at(30), [0, 2000, 0, 0], conversation="conv"))
    svc.usage_attach(session_id=a)
    bound = svc.usage_bind(session_id=b, claude_session="conv", since=at(20))
    assert bound.recorded and bound.previous_session == a
    assert not svc.usage_bind(session_id=b, claude_session="conv", since=at(25)).recorded
    assert svc.usage_attach(session_id=b).tokens.output == 0  # r2 was already booked to a: it stays there
    assert svc.usage_attach(session_id=a).tokens.output == 3000
    transcripts.add("conv", line("r3", SONNET, at(40), [0, 4000, 0, 0], conversation="conv"))
    assert svc.usage_attach(session_id=a).added_responses == 0
    assert svc.usage_attach(session_id=b).tokens.output == 4000


def test_a_response_after_the_session_ended_is_unattributed(
        svc: Service, clock: Clock, transcripts: Transcripts) -> None:
    a = svc.start(level="dev", claude_session="conv").state.session_id
    clock.advance(30)
    svc.end(session_id=a)
    transcripts.add("conv", line("in", SONNET, at(10), [0, 1000, 0, 0], conversation="conv"),
                    line("after", SONNET, at(45), [0, 2000, 0, 0], conversation="conv"))
    assert svc.usage_attach(session_id=a).tokens.output == 1000
    assert svc.usage(unattributed=True).totals.output_tokens == 2000


# -- done when 2 --------------------------------------------------------------------------------
def test_usage_goes_to_the_stage_in_progress_at_its_time(
        svc: Service, clock: Clock, project: Path, transcripts: Transcripts) -> None:
    episode = svc.start(level="prod", number=4, claude_session="conv").state.session_id
    clock.advance(1)
    svc.stage_start(session_id=episode)  # 01_deep_research from minute 1
    clock.advance(9)
    svc.stage_complete(session_id=episode, stage="01_deep_research")
    clock.advance(1)
    svc.stage_start(session_id=episode)  # 02_questions from minute 11
    first, second, between = [10, 4000, 2000, 30_000], [5, 1500, 0, 9000], [0, 100, 0, 0]
    transcripts.add("conv", line("s1", SONNET, at(3), first, conversation="conv"),
                    line("gap", SONNET, at(10.5), between, conversation="conv"),
                    line("s2", OPUS, at(12), second, conversation="conv"))
    result = svc.usage_attach(session_id=episode)
    costs = svc.show(session_id=episode).state.cost_tracking
    assert costs.cost_by_stage == pytest.approx({"01_deep_research": usd(SONNET, first),
                                                 "02_questions": usd(OPUS, second)}, abs=1e-6)
    assert costs.total_cost == pytest.approx(usd(SONNET, first) + usd(OPUS, second) + usd(SONNET, between), abs=1e-6)
    assert result.by_stage == pytest.approx({"": usd(SONNET, between), "01_deep_research": usd(SONNET, first),
                                             "02_questions": usd(OPUS, second)}, abs=1e-6)
    report = svc.report(period="week", since=DAY - timedelta(days=1), until=DAY + timedelta(days=1))
    assert report.cost.usage_by_stage["01_deep_research"] == pytest.approx(usd(SONNET, first), abs=1e-6)
    assert {s.stage: s.total_usd for s in report.cost.by_stage}["02_questions"] == \
        pytest.approx(usd(OPUS, second), abs=1e-6)


# -- done when 3, and the transcript details ---------------------------------------------------
def test_a_million_one_hour_cache_write_tokens_on_sonnet_4_5_cost_six_dollars(
        svc: Service, transcripts: Transcripts) -> None:
    assert usd("claude-sonnet-4-5", [0, 0, MILLION, 0], MILLION) == pytest.approx(6.00)
    assert usd("claude-sonnet-4-5", [0, 0, MILLION, 0], 0) == pytest.approx(3.75)
    transcripts.add("conv", line("big", SONNET, at(1), [0, 0, MILLION, 0], hour=MILLION, conversation="conv"))
    assert svc.usage().totals.cost_usd == pytest.approx(6.00)


def test_newer_claude_models_are_priced_by_family_with_a_warning_and_unknown_ones_never_silently(
        svc: Service, transcripts: Transcripts) -> None:
    transcripts.add("conv", line("n", "claude-opus-4-7-20261201", at(1), [MILLION, 0, 0, 0], conversation="conv"),
                    line("u", "mystery-model", at(2), [MILLION, 0, 0, 0], conversation="conv"))
    report = svc.usage()
    assert report.totals.cost_usd == pytest.approx(5.0)  # as claude-opus-4-6; mystery-model at $0
    assert any("priced as claude-opus-4-6" in w for w in report.warnings)
    assert any("unknown model 'mystery-model'" in w for w in report.warnings)


def test_lines_written_with_spaces_are_read(svc: Service, transcripts: Transcripts) -> None:
    transcripts.add("conv", line("spaced", SONNET, at(1), [1, 2, 3, 4], conversation="conv", compact=False))
    assert svc.usage().totals.total_tokens == 10


def test_usage_by_branch_and_the_branch_column_of_reports(
        svc: Service, clock: Clock, transcripts: Transcripts) -> None:
    session = svc.start(level="dev", claude_session="conv").state.session_id
    transcripts.add("conv", line("f1", SONNET, at(1), [0, 1000, 0, 0], branch="feature/login", conversation="conv"),
                    line("f2", SONNET, at(2), [0, 3000, 0, 0], branch="feature/login", conversation="conv"),
                    line("m1", SONNET, at(3), [0, 500, 0, 0], branch="main", conversation="conv"))
    by_branch = svc.usage(period="branch")
    assert {r.period: r.output_tokens for r in by_branch.rows} == {"feature/login": 4000, "main": 500}
    svc.usage_attach(session_id=session)
    report = svc.report(period="week", since=DAY - timedelta(days=1), until=DAY + timedelta(days=1))
    assert report.cost.session_branches[session] == pytest.approx(
        {"feature/login": usd(SONNET, [0, 4000, 0, 0]), "main": usd(SONNET, [0, 500, 0, 0])})
    assert [b.branch for b in report.cost.by_branch] == ["feature/login", "main"]


def test_bookings_outlive_the_transcripts(svc: Service, project: Path, transcripts: Transcripts) -> None:
    session = svc.start(level="dev", claude_session="conv").state.session_id
    path = transcripts.add("conv", line("r", OPUS, at(1), [0, 40_000, 0, 0], conversation="conv"))
    assert svc.usage_attach(session_id=session).usd == pytest.approx(1.0)
    path.unlink()  # Claude Code's 30-day cleanup
    (project / ".claude/.session-manager/usage-entries.jsonl").unlink()  # and the private cache with it
    again = svc.usage_attach(session_id=session)
    assert again.usd == pytest.approx(1.0) and again.added_usd == 0.0
    assert svc.show(session_id=session).state.cost_tracking.total_cost == pytest.approx(1.0)
    report = svc.report(period="week", since=DAY - timedelta(days=1), until=DAY + timedelta(days=1))
    assert report.cost.total_usd == pytest.approx(1.0)
    assert report.cost.session_branches[session] == pytest.approx({"main": 1.0})


def test_a_batch_in_the_ledger_but_not_in_the_session_is_booked_on_the_next_attach(
        svc: Service, project: Path, transcripts: Transcripts) -> None:
    session = svc.start(level="dev", claude_session="conv").state.session_id
    transcripts.add("conv", line("r", OPUS, at(1), [0, 40_000, 0, 0], conversation="conv"))
    folder = next((project / ".claude").glob(f"level-*/sessions/{session}"))
    before = {name: (folder / name).read_bytes() for name in ("pipeline_status.json", "events.jsonl")}
    svc.usage_attach(session_id=session)
    for name, data in before.items():  # as if the process died after the ledger write, before the state's
        (folder / name).write_bytes(data)
    assert svc.show(session_id=session).state.cost_tracking.total_cost == 0.0
    recovered = svc.usage_attach(session_id=session)
    assert recovered.added_usd == pytest.approx(1.0)
    assert svc.show(session_id=session).state.cost_tracking.total_cost == pytest.approx(1.0)
    assert svc.usage_attach(session_id=session).added_usd == 0.0


# -- done when 4 --------------------------------------------------------------------------------
def test_tokens_without_a_model_are_refused_and_nothing_is_written(svc: Service, project: Path) -> None:
    session = svc.start(level="dev").state.session_id
    before = tree_snapshot(project / ".claude")
    with pytest.raises(InvalidInput, match="tokens without a model"):
        svc.record_cost(session_id=session, input_tokens=100)
    assert tree_snapshot(project / ".claude") == before
    given = svc.record_cost(session_id=session, input_tokens=100, usd=0.25)
    assert given.usd == 0.25 and not given.computed


def test_cost_remove_takes_a_manual_entry_back_and_journals_it(svc: Service, project: Path) -> None:
    episode = svc.start(level="prod", number=9).state.session_id
    svc.stage_start(session_id=episode)
    keep = svc.record_cost(session_id=episode, stage="01_deep_research", usd=0.40)
    wrong = svc.record_cost(session_id=episode, stage="01_deep_research", model="claude-sonnet-4-5",
                            input_tokens=100_000, calls={"perplexity": 2})
    assert (keep.entry, wrong.entry) == (1, 2)
    removed = svc.cost_remove(session_id=episode, entry=wrong.entry, reason="booked twice")
    assert removed.usd == pytest.approx(0.31) and removed.total_cost == pytest.approx(0.40)
    costs = svc.show(session_id=episode).state.cost_tracking
    assert costs.cost_by_stage == pytest.approx({"01_deep_research": 0.40})
    assert costs.cost_by_model == {} and costs.api_calls == {} and costs.tokens.input == 0
    journal = [e for e in events(project, episode) if e["event"] == "cost_removed"]
    assert journal == [{**journal[0], "entry": 2, "usd": pytest.approx(0.31), "reason": "booked twice"}]
    with pytest.raises(InvalidInput, match="already removed"):
        svc.cost_remove(session_id=episode, entry=2, reason="again")
    with pytest.raises(NotFound, match="no cost entry 7"):
        svc.cost_remove(session_id=episode, entry=7, reason="x")
    before = tree_snapshot(project / ".claude")
    with pytest.raises(InvalidInput):
        svc.cost_remove(session_id=episode, entry=0, reason="x")
    with pytest.raises(InvalidInput):
        svc.cost_remove(session_id=episode, entry=1, reason="  ")
    assert tree_snapshot(project / ".claude") == before


def test_usage_bookings_cannot_be_removed_as_manual_entries(
        svc: Service, transcripts: Transcripts) -> None:
    session = svc.start(level="dev", claude_session="conv").state.session_id
    transcripts.add("conv", line("r", OPUS, at(1), [0, 40_000, 0, 0], conversation="conv"))
    svc.usage_attach(session_id=session)
    with pytest.raises(InvalidInput, match="owned by the bookings ledger"):
        svc.cost_remove(session_id=session, entry=1, reason="x")


def test_entries_journalled_before_ids_existed_are_numbered_by_position(svc: Service, project: Path) -> None:
    session = svc.start(level="dev").state.session_id
    svc.record_cost(session_id=session, usd=1.0)
    svc.record_cost(session_id=session, usd=2.0)
    journal = next((project / ".claude").glob(f"level-*/sessions/{session}")) / "events.jsonl"
    records = [json.loads(text) for text in journal.read_text().splitlines()]
    for record in records:
        record.pop("entry", None)  # as an older version wrote them
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert svc.cost_remove(session_id=session, entry=2, reason="old entry").usd == 2.0


def test_the_ledger_and_bindings_are_in_the_backup_trail(svc: Service, project: Path,
                                                         transcripts: Transcripts) -> None:
    from conftest import git

    session = svc.start(level="dev", claude_session="conv").state.session_id
    svc.usage_bind(session_id=session, claude_session="conv-2")
    transcripts.add("conv", line("r", OPUS, at(1), [0, 40_000, 0, 0], conversation="conv"))
    svc.usage_attach(session_id=session)
    svc.backup_now(reason="manual")
    branch = svc.config.backup.branch
    files = set(git(project, "ls-tree", "-r", "--name-only", branch).split())
    assert {".claude/usage/bookings.jsonl", ".claude/usage/bindings.jsonl"} <= files
