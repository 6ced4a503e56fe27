"""Claude Code transcripts: counted once per response, API errors skipped, incremental."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from session_manager.service import Service
from session_manager.usage import ENTRIES_FILE, project_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from transcripts import make_corpus  # noqa: E402

pytestmark = pytest.mark.usefixtures("utc")  # usage days are local days: expectations are in UTC

SONNET, OPUS, HAIKU = "claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001"

# The de-duplicated truth of the hand-made corpus below, per day and model:
# [input, output, cache_write, cache_read]
EXPECTED = {
    ("2026-10-01", SONNET): [10, 50, 100, 1000],  # r1: three lines, the streamed first one smaller
    ("2026-10-01", OPUS): [20, 200, 0, 5000],  # r2 (replayed in s2: counted once)
    ("2026-10-02", SONNET): [30, 300, 300, 3000],  # r3
    ("2026-10-02", HAIKU): [41, 402, 3, 404],  # r4 (no message id) + r5 (subagent file)
    ("2026-10-03", SONNET): [50, 500, 500, 0],  # r6 (the resumed session's own response)
    ("2026-10-03", OPUS): [60, 600, 0, 6000],  # r7 (another project)
}


def assistant(msg: str | None, req: str | None, model: str, at: str, tokens: list[int], **extra: object) -> str:
    message: dict = {"type": "message", "role": "assistant", "model": model,
                     "content": [{"type": "text", "text": "some words about the \"usage\":{ of things"}],
                     "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": tokens[0], "cache_creation_input_tokens": tokens[2],
                               "cache_read_input_tokens": tokens[3], "output_tokens": tokens[1],
                               "service_tier": "standard"}}
    if msg is not None:
        message = {"id": msg, **message}
    record: dict = {"parentUuid": None, "isSidechain": False, "sessionId": "x", "version": "2.0.31",
                    "message": message}
    if req is not None:
        record["requestId"] = req
    record.update({"type": "assistant", "uuid": f"u-{msg}-{at}-{tokens[1]}", "timestamp": at, **extra})
    return json.dumps(record, separators=(",", ":"))


def user(text: str, **extra: object) -> str:
    return json.dumps({"type": "user", "message": {"role": "user", "content": text}, "uuid": "u",
                       "timestamp": "2026-10-01T09:59:00.000Z", **extra}, separators=(",", ":"))


R1_FINAL = assistant("msg_1", "req_1", SONNET, "2026-10-01T10:00:00.000Z", [10, 50, 100, 1000])
R2 = assistant("msg_2", "req_2", OPUS, "2026-10-01T11:00:00.000Z", [20, 200, 0, 5000])


def write_corpus(config: Path) -> dict[str, Path]:
    p1 = config / "projects" / "-home-me-app"
    p2 = config / "projects" / "-home-me-other"
    (p1 / "s1" / "subagents").mkdir(parents=True)
    p2.mkdir(parents=True)
    files = {"s1": p1 / "s1.jsonl", "agent": p1 / "s1" / "subagents" / "agent-abc.jsonl", "s2": p1 / "s2.jsonl",
             "s3": p2 / "s3.jsonl"}
    files["s1"].write_text("\n".join([
        user("hello"),
        assistant("msg_1", "req_1", SONNET, "2026-10-01T10:00:00.000Z", [10, 5, 100, 1000]),  # streamed, partial
        R1_FINAL,
        R1_FINAL.replace('"text":"some', '"text":"other'),  # another content block of r1, same usage
        assistant("msg_err", "req_err", SONNET, "2026-10-01T10:30:00.000Z", [999_999, 999_999, 0, 0],
                  isApiErrorMessage=True),
        R2,
        user("task done", toolUseResult={"usage": {"input_tokens": 7777, "output_tokens": 7777}}),
        assistant("msg_3", "req_3", SONNET, "2026-10-02T09:00:00.000Z", [30, 300, 300, 3000]),
        assistant(None, None, HAIKU, "2026-10-02T09:30:00.000Z", [1, 2, 3, 4]),
        assistant("msg_syn", "req_syn", "<synthetic>", "2026-10-02T09:40:00.000Z", [0, 0, 0, 0]),
    ]) + "\n")
    files["agent"].write_text(assistant("msg_5", "req_5", HAIKU, "2026-10-02T10:00:00.000Z", [40, 400, 0, 400],
                                        isSidechain=True) + "\n")
    files["s2"].write_text("\n".join([
        R1_FINAL, R2, assistant("msg_6", "req_6", SONNET, "2026-10-03T08:00:00.000Z", [50, 500, 500, 0])]) + "\n")
    files["s3"].write_text(assistant("msg_7", "req_7", OPUS, "2026-10-03T09:00:00.000Z", [60, 600, 0, 6000]) + "\n")
    return files


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    config = tmp_path / "claude-config"
    files = write_corpus(config)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    return files


def by_day_model(rows: list) -> dict[tuple[str, str], list[int]]:
    found = {}
    for row in rows:
        for m in row["models"] if isinstance(row, dict) else [m.model_dump() for m in row.models]:
            period = row["period"] if isinstance(row, dict) else row.period
            found[(period, m["model"])] = [m["input_tokens"], m["output_tokens"], m["cache_write_tokens"],
                                           m["cache_read_tokens"]]
    return found


def test_usage_daily_json_equals_the_deduplicated_sums_per_day_and_model(cli, corpus) -> None:
    result = cli("usage", "daily", "--json")
    assert result.code == 0, result
    data = result.json()
    assert by_day_model(data["rows"]) == EXPECTED
    assert [r["period"] for r in data["rows"]] == ["2026-10-01", "2026-10-02", "2026-10-03"]
    day1 = data["rows"][0]
    assert [day1["input_tokens"], day1["output_tokens"], day1["cache_write_tokens"], day1["cache_read_tokens"]] \
        == [30, 250, 100, 6000]
    # sonnet 10x3 + 50x15 + 100x3.75 + 1000x0.3 = 1455; opus 20x5 + 200x25 + 5000x0.5 = 7600 (per million)
    assert day1["cost_usd"] == pytest.approx(0.009055)
    totals = data["totals"]
    assert [totals["input_tokens"], totals["output_tokens"], totals["cache_write_tokens"],
            totals["cache_read_tokens"]] == [211, 2052, 903, 15404]
    assert totals["responses"] == 7
    assert data["warnings"] == []


def test_second_run_reads_nothing_and_gives_the_same_totals(service: Service, corpus) -> None:
    first = service.usage()
    assert first.imported.files_read == 4 and first.imported.bytes_read == sum(p.stat().st_size
                                                                                for p in corpus.values())
    second = service.usage()
    assert second.imported.bytes_read == 0 and second.imported.files_read == 0
    assert second.imported.files_seen == 4
    assert second.rows == first.rows and second.totals == first.totals


def test_appended_lines_are_read_alone_and_a_larger_repeat_replaces_the_count(service: Service, corpus) -> None:
    service.usage()
    appended = "\n".join([
        assistant("msg_3", "req_3", SONNET, "2026-10-02T09:00:05.000Z", [30, 350, 300, 3000]),  # r3, final usage
        assistant("msg_8", "req_8", OPUS, "2026-10-03T12:00:00.000Z", [1, 1, 1, 1]),
    ]) + "\n"
    with corpus["s1"].open("a") as handle:
        handle.write(appended)
    result = service.usage()
    assert result.imported.bytes_read == len(appended.encode())
    assert (result.imported.responses_new, result.imported.responses_updated) == (1, 1)
    found = by_day_model([row.model_dump() for row in result.rows])
    assert found[("2026-10-02", SONNET)] == [30, 350, 300, 3000]
    assert found[("2026-10-03", OPUS)] == [61, 601, 1, 6001]
    assert result.totals.output_tokens == 2052 + 50 + 1


def test_a_torn_last_line_is_counted_once_it_is_complete(service: Service, corpus) -> None:
    service.usage()
    line = assistant("msg_9", "req_9", HAIKU, "2026-10-03T13:00:00.000Z", [0, 9, 0, 0])
    with corpus["s3"].open("a") as handle:
        handle.write(line[:40])
    assert service.usage().totals.output_tokens == 2052
    with corpus["s3"].open("a") as handle:
        handle.write(line[40:] + "\n")
    assert service.usage().totals.output_tokens == 2052 + 9
    assert service.usage().totals.output_tokens == 2052 + 9


def test_weeks_months_and_claude_sessions_regroup_the_same_totals(service: Service, corpus) -> None:
    daily = service.usage(period="daily").totals
    weekly = service.usage(period="weekly")
    monthly = service.usage(period="monthly")
    sessions = service.usage(period="session")
    assert [r.period for r in weekly.rows] == ["2026-09-28"]  # the Monday of the week of 2026-10-01
    assert [r.period for r in monthly.rows] == ["2026-10"]
    assert weekly.totals == monthly.totals == sessions.totals == daily
    by_session = {r.period: (r.project, r.output_tokens) for r in sessions.rows}
    # s1 holds r1, r2, r3, r4 and its subagent's r5; s2 only its own r6 (its replays were counted in s1)
    assert by_session == {"s1": ("-home-me-app", 50 + 200 + 300 + 2 + 400), "s2": ("-home-me-app", 500),
                          "s3": ("-home-me-other", 600)}


def test_since_and_until_pick_whole_days(cli, corpus) -> None:
    result = cli("usage", "--since", "2026-10-02", "--until", "2026-10-02", "--json")
    assert result.code == 0, result
    assert by_day_model(result.json()["rows"]) == {k: v for k, v in EXPECTED.items() if k[0] == "2026-10-02"}


def test_comma_separated_config_dirs_are_all_read(service: Service, tmp_path: Path, corpus,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    second = tmp_path / "second-config" / "projects"
    second.mkdir(parents=True)
    (corpus["s3"].parent).rename(second / "-home-me-other")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path / 'claude-config'}, {tmp_path / 'second-config'}")
    result = service.usage()
    assert by_day_model([r.model_dump() for r in result.rows]) == EXPECTED
    assert len(result.sources) == 2


def test_without_config_dir_home_claude_and_xdg_config_claude_are_read(service: Service, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_corpus(home / ".claude")
    (home / ".config" / "claude" / "projects" / "-x").mkdir(parents=True)
    (home / ".config" / "claude" / "projects" / "-x" / "s9.jsonl").write_text(
        assistant("msg_x", "req_x", HAIKU, "2026-10-04T10:00:00.000Z", [1, 1, 1, 1]) + "\n")
    result = service.usage()
    assert len(result.sources) == 2
    assert result.totals.input_tokens == 211 + 1


def test_generated_corpus_totals_match_its_truth(service: Service, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    truth = make_corpus(tmp_path / "generated", 4000, seed=3, days=5)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "generated"))
    result = service.usage()
    assert by_day_model([r.model_dump() for r in result.rows]) == {
        key: tokens for key, tokens in truth.by_day_model().items()}
    assert service.usage().imported.bytes_read == 0


def test_scanning_in_worker_processes_gives_the_same_totals(service: Service, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from session_manager.usage import transcripts as usage

    truth = make_corpus(tmp_path / "generated", 3000, seed=5, days=3)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "generated"))
    monkeypatch.setattr(usage, "PARALLEL_BYTES", 0)  # a big import is split across processes
    monkeypatch.setattr(usage.os, "cpu_count", lambda: 2)
    assert usage._fork_is_safe()
    result = service.usage()
    assert by_day_model([r.model_dump() for r in result.rows]) == truth.by_day_model()


def test_lost_entries_are_counted_again_not_twice(service: Service, project: Path, corpus) -> None:
    service.usage()
    (project / ".claude/.session-manager" / ENTRIES_FILE).unlink()
    with corpus["s3"].open("a") as handle:
        handle.write(assistant("msg_10", "req_10", OPUS, "2026-10-03T14:00:00.000Z", [0, 10, 0, 0]) + "\n")
    assert service.usage().totals.output_tokens == 2052 + 10


def test_no_transcripts_is_said_plainly(cli, tmp_path: Path) -> None:
    result = cli("usage", env={"CLAUDE_CONFIG_DIR": str(tmp_path / "nothing-here")})
    assert result.code == 0, result
    assert "no Claude Code transcripts found" in result.out


@pytest.mark.parametrize("args", [("hourly",), ("daily", "weekly"), ("--since", "yesterday"),
                                  ("--since", "2026-10-05", "--until", "2026-10-01"), ("attach", "a", "b"),
                                  ("attach", "../../etc")])
def test_bad_usage_arguments_are_refused(cli, corpus, args: tuple[str, ...]) -> None:
    result = cli("usage", *args)
    assert result.code == 2, result
    assert result.err.startswith("error: ")


# -- attribution (the rest is in test_attribution.py) ------------------------------------------
def test_attach_books_the_conversation_started_in_the_session_once(corpus, project: Path) -> None:
    clock = [datetime(2026, 10, 1, 9, 0, tzinfo=UTC)]
    service = Service(project, actor="test", clock=lambda: clock[0])
    session_id = service.start(level="dev", claude_session="s1").state.session_id
    first = service.usage_attach(session_id=session_id)
    assert first.claude_sessions == ["s1"]
    assert first.responses == 5  # r1, r2, r3, r4 and the subagent's r5
    assert (first.tokens.input, first.tokens.output) == (10 + 20 + 30 + 41, 50 + 200 + 300 + 402)
    # sonnet (r1 + r3): 40x3 + 350x15 + 400x3.75 + 4000x0.3 = 8070; opus (r2): 7600;
    # haiku (r4 + r5): 41x1 + 402x5 + 3x1.25 + 404x0.1 = 2095.15 (per million)
    assert first.usd == pytest.approx(0.01776515, abs=2e-6)
    assert first.added_usd == pytest.approx(first.usd, abs=2e-6)
    state = service.show(session_id=session_id).state
    assert state.cost_tracking.total_cost == pytest.approx(first.usd, abs=2e-6)
    assert state.cost_tracking.tokens.output == 952

    again = service.usage_attach(session_id=session_id)
    assert again.added_usd == 0.0 and again.added_responses == 0 and again.usd == first.usd
    assert service.show(session_id=session_id).state.cost_tracking.total_cost == state.cost_tracking.total_cost

    with corpus["s1"].open("a") as handle:
        handle.write(assistant("msg_11", "req_11", OPUS, "2026-10-04T10:00:00.000Z", [0, 40_000, 0, 0]) + "\n")
    third = service.usage_attach(session_id=session_id)
    assert third.added_usd == pytest.approx(1.0)  # 40,000 x $25/M
    final = service.show(session_id=session_id).state.cost_tracking
    assert final.total_cost == pytest.approx(state.cost_tracking.total_cost + 1.0, abs=2e-6)
    assert final.tokens.output == 952 + 40_000
    assert (project / ".claude/level-1-dev/sessions" / session_id / "claude_usage.json").is_file()
    assert (project / ".claude/usage/bookings.jsonl").is_file()


def test_a_session_with_no_bound_conversation_books_nothing_and_says_how_to_bind(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "claude-config"
    mine = config / "projects" / project_key(project.resolve())
    mine.mkdir(parents=True)
    (mine / "a.jsonl").write_text(assistant("m2", "q2", HAIKU, "2026-11-20T09:30:00.000Z", [0, 2000, 0, 0]) + "\n")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    clock = [datetime(2026, 11, 20, 9, 0, tzinfo=UTC)]
    service = Service(project, actor="test", clock=lambda: clock[0])
    session_id = service.start(level="coded").state.session_id
    result = service.usage_attach(session_id=session_id)
    assert result.responses == 0 and result.usd == 0.0
    assert "usage bind" in result.warnings[0]
    assert service.usage(unattributed=True).totals.output_tokens == 2000
