"""The session lifecycle through the CLI, run as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, tree_snapshot
from session_manager.model import SCHEMA_VERSION

SEED_FIELDS = {
    "session_id", "episode_number", "status", "current_stage", "started_at", "last_updated",
    "stages_completed", "stages_remaining", "quality_metrics", "cost_tracking", "error_count", "recovery_count",
}
PRODUCTION_STAGES = [
    "01_deep_research", "02_questions", "03_synthesis", "04_quality_claude", "05_quality_gemini",
    "06_feedback_synthesis", "07_script_polish", "08_final_review", "09_audio_synthesis",
]


def test_start_prod_creates_seed_state_in_empty_repo(project: Path, cli) -> None:
    result = cli("start", "prod", "5", "--topic", "CRISPR", "--json")
    assert result.code == 0, result
    session_id = result.json()["state"]["session_id"]
    assert re.fullmatch(r"ep_005_\d{8}_\d{4}", session_id)
    folder = project / ".claude/level-2-production/sessions" / session_id
    state = json.loads((folder / "pipeline_status.json").read_text())
    assert SEED_FIELDS <= state.keys()
    assert state["schema_version"] == SCHEMA_VERSION and state["level"] == "production"
    assert state["episode_number"] == 5 and state["status"] == "initialized"
    assert state["stages_remaining"] == PRODUCTION_STAGES
    assert [s["status"] for s in state["stages"].values()] == ["pending"] * 9
    assert {"total_cost", "cost_by_stage"} <= state["cost_tracking"].keys()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", state["started_at"])
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["topic"] == "CRISPR" and metadata["created_by"]["actor"] == "cli"
    events = (folder / "events.jsonl").read_text().splitlines()
    assert json.loads(events[0])["event"] == "session_started"


@pytest.mark.parametrize(
    ("args", "directory", "prefix"),
    [
        (("dev", "fix gantt"), "level-1-dev", "dev_"),
        (("1",), "level-1-dev", "dev_"),
        (("platform",), "level-3-platform-dev", "plan_"),
        (("plan",), "level-3-platform-dev", "plan_"),
        (("coded",), "level-4-coded", "code_"),
        (("4",), "level-4-coded", "code_"),
        (("production", "7"), "level-2-production", "ep_007_"),
    ],
)
def test_start_each_level_uses_its_directory_and_id(project: Path, cli, args, directory, prefix) -> None:
    result = cli("start", *args, "--json")
    assert result.code == 0, result
    session_id = result.json()["state"]["session_id"]
    assert session_id.startswith(prefix)
    assert (project / ".claude" / directory / "sessions" / session_id / "pipeline_status.json").is_file()


def test_status_json_lists_active_sessions_of_all_levels_and_one_by_id(cli) -> None:
    ids = [cli("start", *args, "--json").json()["state"]["session_id"]
           for args in (("prod", "5"), ("dev",), ("platform",), ("coded",))]
    listed = [s["state"] for s in cli("status", "--json").json()["sessions"]]
    assert sorted(s["session_id"] for s in listed) == sorted(ids)
    assert {s["level"] for s in listed} == {"production", "dev", "platform", "coded"}
    one = cli("status", ids[0], "--json").json()
    assert one["one"] and [s["state"]["session_id"] for s in one["sessions"]] == [ids[0]]


def test_two_starts_in_the_same_minute_are_distinct(cli) -> None:
    first = cli("start", "prod", "5", "--tag", "same", "--json").json()["state"]["session_id"]
    second = cli("start", "prod", "5", "--tag", "same", "--json").json()["state"]["session_id"]
    assert first != second and second == first + "_2"
    plain = {cli("start", "prod", "5", "--json").json()["state"]["session_id"] for _ in range(3)}
    assert len(plain) == 3


def test_tag_replaces_time_in_id(cli) -> None:
    session_id = cli("start", "prod", "1", "--tag", "test", "--json").json()["state"]["session_id"]
    assert re.fullmatch(r"ep_001_\d{8}_test", session_id)


def test_seed_init_spelling_starts_production(cli) -> None:
    result = cli("init", "--episode", "1", "--topic", "T", "--complexity", "3", "--json")
    assert result.code == 0, result
    data = result.json()
    assert data["state"]["session_id"].startswith("ep_001_") and data["metadata"]["complexity"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("start", "prod"), "needs an episode number"),
        (("start", "nonsense", "5"), "unknown level 'nonsense'"),
        (("start", "prod", "five"), "a production session needs an episode number"),
        (("start", "dev", "--tag", "Bad Tag"), "tag"),
        (("start", "prod", "5", "--budget", "-3"), "budget_usd: Input should be greater than or equal to 0"),
        (("status", "../../etc/passwd"), "invalid session id"),
        (("status", "/etc/passwd"), "invalid session id"),
        (("status", "ep_001_20200101_0000"), "no session"),
        (("end", "dev_20200101_0000"), "no session"),
        (("task", "add", "dev_20200101_0000", "x"), "no session"),
        (("frobnicate",), "unknown command"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(project: Path, cli, args, message) -> None:
    cli("start", "dev", "existing")
    before = tree_snapshot(project / ".claude")
    result = cli(*args)
    assert result.code == 2, result
    assert result.err.startswith("error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert tree_snapshot(project / ".claude") == before


def test_malformed_config_is_named_and_writes_nothing(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text("[alerts]\nquality_min = 7\n")
    before = tree_snapshot(project / ".claude")
    result = cli("start", "dev")
    assert result.code == 2
    assert "session-manager.toml: alerts.quality_min" in result.err
    assert tree_snapshot(project / ".claude") == before
    (project / ".claude/session-manager.toml").write_text("[alerts\n")
    before = tree_snapshot(project / ".claude")
    result = cli("start", "dev")
    assert result.code == 2 and "not valid TOML" in result.err
    assert tree_snapshot(project / ".claude") == before


def test_end_marks_completed_with_summary_and_second_end_is_refused(project: Path, cli) -> None:
    session_id = cli("start", "dev", "--json").json()["state"]["session_id"]
    result = cli("end", session_id, "--summary", "shipped it", "--json")
    assert result.code == 0, result
    state = result.json()["state"]
    assert state["status"] == "completed" and state["summary"] == "shipped it" and state["ended_at"]
    before = tree_snapshot(project / ".claude")
    again = cli("end", session_id)
    assert again.code == 2 and "already ended" in again.err
    assert tree_snapshot(project / ".claude") == before


def test_end_abandon(cli) -> None:
    session_id = cli("start", "coded", "--json").json()["state"]["session_id"]
    state = cli("end", session_id, "--abandon", "--json").json()["state"]
    assert state["status"] == "abandoned"
    assert cli("status", "--json").json()["sessions"] == []


def test_commands_without_id_use_the_most_recently_touched_active_session(cli) -> None:
    old = cli("start", "dev", "--json").json()["state"]["session_id"]
    new = cli("start", "coded", "--json").json()["state"]["session_id"]
    cli("task", "add", old, "touch old")
    result = cli("task", "add", "second", "--json")
    assert result.json()["session_id"] == old
    cli("end", old)
    assert cli("task", "add", "third", "--json").json()["session_id"] == new


def test_tasks_blockers_learnings_decisions(cli) -> None:
    session_id = cli("start", "dev", "--json").json()["state"]["session_id"]
    cli("task", "add", session_id, "write tests", "fix bug")
    cli("task", "done", session_id, "#1")
    cli("task", "done", session_id, "fix bug")
    cli("blocker", "add", session_id, "waiting for API key")
    cli("blocker", "add", session_id, "flaky CI")
    cli("blocker", "clear", session_id, "1")
    cli("learning", "add", session_id, "small commits help")
    state = cli("decision", "add", session_id, "use filelock", "--json").json()["state"]
    progress = state["progress"]
    assert [t["title"] for t in progress["tasks_completed"]] == ["write tests", "fix bug"]
    assert progress["tasks_pending"] == []
    assert [b["text"] for b in progress["blockers"]] == ["flaky CI"]
    assert [b["text"] for b in progress["blockers_cleared"]] == ["waiting for API key"]
    assert progress["learnings"][0]["text"] == "small commits help"
    assert progress["decisions"][0]["text"] == "use filelock"
    missing = cli("task", "done", session_id, "#9")
    assert missing.code == 2 and "no task" in missing.err


def test_list_filters(cli) -> None:
    cli("start", "dev")
    prod = cli("start", "prod", "2", "--json").json()["state"]["session_id"]
    cli("end", prod)
    assert [s["level"] for s in cli("list", "--level", "prod", "--json").json()["sessions"]] == ["production"]
    assert [s["session_id"] for s in cli("list", "--status", "completed", "--json").json()["sessions"]] == [prod]
    assert len(cli("list", "--since", "2000-01-01", "--json").json()["sessions"]) == 2
    assert cli("list", "--since", "2999-01-01", "--json").json()["sessions"] == []
    assert cli("list", "--since", "yesterday").code == 2


def test_human_views_are_aligned_tables(cli) -> None:
    session_id = cli("start", "prod", "5", "--topic", "CRISPR", "--json").json()["state"]["session_id"]
    cli("task", "add", session_id, "record intro")
    out = cli("status", session_id).out
    assert "CRISPR" in out and "01_deep_research" in out and "[ ] #1 record intro" in out
    listing = cli("status").out.splitlines()
    assert listing[0].split()[:3] == ["ID", "LEVEL", "STATUS"]
    assert listing[1].startswith(session_id)


# 100 per process is the figure (`SM_CLI_STRESS=100`); the default keeps the suite to a few minutes.
PER_PROCESS = int(__import__("os").environ.get("SM_CLI_STRESS", "40"))


def test_concurrent_task_adds_lose_nothing(project: Path, cli) -> None:
    """Four processes each run `task add` PER_PROCESS times on one session, while a reader checks
    that every file parses at every moment."""
    session_id = cli("start", "dev", "--json").json()["state"]["session_id"]
    folder = project / ".claude/level-1-dev/sessions" / session_id
    script = (
        f'for i in $(seq 1 {PER_PROCESS}); do "{sys.executable}" -m session_manager task add {session_id} "w$W-$i"'
        ' >/dev/null || exit 1; done'
    )
    writers = [subprocess.Popen(["bash", "-c", script], cwd=project, env={**__import__("os").environ, "W": str(w)})
               for w in range(4)]
    reads = 0
    while any(w.poll() is None for w in writers):
        for name in ("pipeline_status.json", "metadata.json"):
            json.loads((folder / name).read_text())
        # every complete line parses (the last one may be caught mid-append: readers skip it)
        for line in (folder / "events.jsonl").read_text().split("\n")[:-1]:
            json.loads(line)
        reads += 1
    assert all(w.wait() == 0 for w in writers)
    state = json.loads((folder / "pipeline_status.json").read_text())
    titles = [t["title"] for t in state["progress"]["tasks_pending"]]
    assert len(titles) == 4 * PER_PROCESS and len(set(titles)) == 4 * PER_PROCESS
    assert sorted(t["id"] for t in state["progress"]["tasks_pending"]) == list(range(1, 4 * PER_PROCESS + 1))
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in events if e["event"] == "task_added") == 4 * PER_PROCESS
    assert reads > 0


def test_internal_error_hides_traceback_and_logs_only_the_command_name(project: Path, tmp_path: Path) -> None:
    # a bug cannot be caused by typing, so one is planted: the pipeline raises inside `stage start`
    session_id = run_cli(project, "start", "dev", "--json").json()["state"]["session_id"]
    state_home = tmp_path / "state"
    planted = ("import sys; from session_manager import pipeline, cli\n"
               "def broken(*a, **k): raise RuntimeError('planted bug')\n"
               "pipeline.start_stage = broken\n"
               "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", planted, "stage", "start", session_id, "--json"], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "XDG_STATE_HOME": str(state_home)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: internal")
    assert proc.stderr.count("\n") == 1 and "planted bug" in proc.stderr
    log = state_home / "session-manager" / "errors.log"
    text = log.read_text()
    assert "stage start" in text and "RuntimeError: planted bug" in text and session_id not in text.split("\n")[0]
    assert log.stat().st_mode & 0o777 == 0o600
