"""Batches (issue 17): seven episodes, at most five in progress, enforced under a lock against
real racing processes; status, next, report and end; the batch is journalled and backed up; the
cross-phase context `stage_start` hands the next agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from conftest import Clock, git, tree_snapshot
from session_manager.mcp_server import build_server
from session_manager.service import Service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def members(result: Any) -> list[str]:
    return [m["session_id"] for m in result["members"]]


def test_batch_start_prod_2_8_makes_seven_sessions_with_the_budget_split(cli, project: Path) -> None:
    result = cli("batch", "start", "prod", "2-8", "--topic", "Stoicism", "--budget", "35", "--json")
    assert result.code == 0, result
    batch = json.loads(result.out)
    assert len(batch["members"]) == 7 and batch["max_concurrent"] == 5
    assert [m["episode_number"] for m in batch["members"]] == [2, 3, 4, 5, 6, 7, 8]
    assert all(m["budget_usd"] == 5.0 and m["state"] == "waiting" for m in batch["members"])
    folder = project / batch["folder"]
    assert (folder / "batch.json").is_file()
    events = [json.loads(line)["event"] for line in (folder / "events.jsonl").read_text().splitlines()]
    assert events == ["batch_started"] + ["member_added"] * 7
    sessions = sorted(p.name for p in (project / ".claude/level-2-production/sessions").iterdir())
    assert sessions == sorted(members(batch))
    # backed up with the trail, batch folder included, in one commit for the whole batch
    tracked = git(project, "ls-tree", "-r", "--name-only", "session-backups")
    assert f"{batch['folder']}/batch.json" in tracked
    assert git(project, "log", "-1", "--format=%s", "session-backups").startswith("session-manager: batch start")


def test_topics_file_gives_one_topic_per_member_and_a_wrong_count_writes_nothing(cli, project: Path) -> None:
    (project / "topics.txt").write_text("# topics\nCRISPR\n\nFall of Rome\n")
    before = tree_snapshot(project / ".claude")
    refused = cli("batch", "start", "prod", "2-4", "--topics-file", "topics.txt")
    assert refused.code == 2 and "has 2 topic(s) for 3 episode(s)" in refused.err
    assert tree_snapshot(project / ".claude") == before
    both = cli("batch", "start", "prod", "2-3", "--topic", "x", "--topics-file", "topics.txt")
    assert both.code == 2 and "not both" in both.err
    made = cli("batch", "start", "prod", "2-3", "--topics-file", "topics.txt", "--json")
    assert [m["topic"] for m in json.loads(made.out)["members"]] == ["CRISPR", "Fall of Rome"]


def test_only_production_episodes_make_a_batch(cli) -> None:
    result = cli("batch", "start", "dev", "1-3")
    assert result.code == 2 and "production episodes" in result.err
    assert cli("batch", "start", "prod", "8-2").code == 2


RACE = """
import sys
from session_manager.cli import main
sys.exit(main(["stage", "start", sys.argv[1]]))
"""


def test_seven_racing_processes_leave_exactly_five_in_progress(cli, project: Path) -> None:
    batch = json.loads(cli("batch", "start", "prod", "2-8", "--json").out)
    ids = members(batch)
    procs = [subprocess.Popen([sys.executable, "-c", RACE, session_id], cwd=project, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for session_id in ids]
    outcomes = {session_id: (proc.wait(timeout=120), proc.stderr.read()) for session_id, proc in zip(ids, procs)}
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    started = [s for s, (code, _) in outcomes.items() if code == 0]
    refused = {s: err for s, (code, err) in outcomes.items() if code != 0}
    assert len(started) == 5 and len(refused) == 2, outcomes
    for session_id, err in refused.items():
        assert err.count("\n") == 1 and err.startswith("error: batch ") and "at its cap of 5 members in progress" in err
        assert f"{session_id} waits" in err and all(s in err for s in started)
    status = json.loads(cli("batch", "status", "--json").out)
    assert sorted(status["in_progress"]) == sorted(started)
    assert sorted(status["waiting"]) == sorted(refused)
    # nothing was written for a refusal: the waiting members are as they were born
    for session_id in refused:
        state = json.loads((project / ".claude/level-2-production/sessions" / session_id /
                            "pipeline_status.json").read_text())
        assert state["status"] == "initialized" and state["revision"] == 0


def test_a_freed_slot_lets_the_next_member_start(project: Path) -> None:
    svc = Service(project, actor="test", clock=Clock())
    batch = svc.batch(action="start", level="prod", episodes="2-8", max_concurrent=2)
    ids = [m.session_id for m in batch.members]
    svc.stage_start(session_id=ids[0])
    svc.stage_start(session_id=ids[1])
    with pytest.raises(Exception, match="at its cap of 2"):
        svc.stage_start(session_id=ids[2])
    nxt = svc.batch(action="next")
    assert nxt.session_id is None and nxt.free_slots == 0 and "slots are busy" in nxt.reason
    # ends, fails or is abandoned: each frees its slot
    svc.end(session_id=ids[0], abandoned=True)
    assert svc.batch(action="next").session_id == ids[2]
    svc.stage_start(session_id=ids[2])
    svc.record_failure(session_id=ids[1], stage="01_deep_research", error="503", retryable=False)  # escalated
    svc.stage_start(session_id=ids[3])
    status = svc.batch(action="status")
    assert status.in_progress == [ids[2], ids[3]] and status.ended == [ids[0], ids[1]]
    assert status.waiting == ids[4:]


def test_next_prefers_a_member_holding_a_slot_with_its_next_stage_ready(project: Path) -> None:
    svc = Service(project, actor="test", clock=Clock())
    ids = [m.session_id for m in svc.batch(action="start", level="prod", episodes="1-3", max_concurrent=1).members]
    svc.stage_start(session_id=ids[0])
    svc.stage_complete(session_id=ids[0], stage="01_deep_research")
    nxt = svc.batch(action="next")
    assert (nxt.session_id, nxt.stage) == (ids[0], "02_questions") and "holds a slot" in nxt.reason


def test_report_gives_cost_time_quality_spread_and_gate_failures(cli, project: Path) -> None:
    clock = Clock()
    svc = Service(project, actor="test", clock=clock)
    ids = [m.session_id for m in svc.batch(action="start", level="prod", episodes="2-3", budget_usd=10).members]
    for session_id, score in zip(ids, (0.95, 0.88)):
        for stage in ("01_deep_research", "02_questions", "03_synthesis"):
            svc.stage_start(session_id=session_id, stage=stage)
            clock.advance(10)
            svc.stage_complete(session_id=session_id, stage=stage, cost_usd=0.5)
        svc.stage_start(session_id=session_id)
        svc.stage_complete(session_id=session_id, stage="04_quality_claude", quality={"overall": 0.5 + 0.3})  # fails
        svc.stage_complete(session_id=session_id, stage="04_quality_claude", quality={"overall": score},
                           cost_usd=0.25)
        svc.end(session_id=session_id, summary="stopped after the first gate")
    report = svc.batch(action="report").model_dump(mode="json")  # at the test's clock
    assert json.loads(cli("batch", "report", "--json").out)["members"][0]["cost_usd"] == 1.75
    assert report["total_cost"] == pytest.approx(3.5) and report["budget_usd"] == 10
    assert [m["cost_usd"] for m in report["members"]] == [1.75, 1.75]
    assert report["gate_failures_by_stage"] == {"04_quality_claude": 2}
    assert report["quality"]["min"] == pytest.approx(0.88) and report["quality"]["max"] == pytest.approx(0.95)
    assert report["quality"]["spread"] == pytest.approx(0.07)
    assert report["cost_by_phase"] == {"research": 3.0, "quality": 0.5}
    # the two members ran one after the other: wall time equals the sum of their times
    assert report["wall_minutes"] == pytest.approx(60) and report["member_minutes"] == pytest.approx(60)
    from session_manager.views import batch_report

    assert "wall time 1h00m against 1h00m of member time (1.0x)" in batch_report(svc.batch(action="report"))


def test_end_refuses_active_members_unless_forced_and_frees_the_cap(cli, project: Path) -> None:
    svc = Service(project, actor="test")
    ids = [m.session_id for m in svc.batch(action="start", level="prod", episodes="1-2", max_concurrent=1).members]
    svc.stage_start(session_id=ids[0])
    refused = cli("batch", "end")
    assert refused.code == 2 and "members still active" in refused.err and "--force" in refused.err
    ended = cli("batch", "end", "--force", "--json")
    assert ended.code == 0 and json.loads(ended.out)["status"] == "ended"
    assert Service(project).stage_start(session_id=ids[1]).decision == "started"  # no cap once ended
    assert cli("batch", "end").code == 2  # no active batch left


def test_batch_arguments_that_belong_to_another_action_are_refused(cli) -> None:
    result = cli("batch", "status", "--topic", "x")
    assert result.code == 2  # not a flag of `batch status`
    svc_error = cli("batch", "status", "batch_2026")
    assert svc_error.code == 2


async def test_the_same_over_mcp_as_one_tool(project: Path) -> None:
    server = build_server(project, backups=False)
    async with Client(server) as client:
        started = await client.call_tool("batch", {"action": "start", "level": "prod", "episodes": "2-8",
                                                    "max_concurrent": 5})
        assert not started.is_error, started.content
        view = started.structured_content
        assert len(view["members"]) == 7 and view["waiting"] and not view["in_progress"]
        report = await client.call_tool("batch", {"action": "report"})
        assert not report.is_error and report.structured_content["batch_id"] == view["batch_id"]
        nxt = await client.call_tool("batch", {"action": "next"})
        assert nxt.structured_content["session_id"].startswith("ep_002_")
        wrong = await client.call_tool("batch", {"action": "status", "topic": "x"})
        assert wrong.is_error and "only for action start" in wrong.content[0].text


def test_stage_start_hands_over_outputs_feedback_and_notes(project: Path) -> None:
    svc = Service(project, actor="test")
    session_id = svc.start(level="prod", number=5).state.session_id
    svc.stage_start(session_id=session_id)
    svc.update(session_id=session_id, learnings=["primary sources beat summaries"])
    svc.stage_complete(session_id=session_id, stage="01_deep_research", outputs={"findings": "research/f.md"},
                       notes="three experts interviewed")
    ctx = svc.stage_start(session_id=session_id).context  # 02_questions
    assert ctx is not None and ctx.previous_stage == "01_deep_research" and ctx.phase == "research"
    assert ctx.inputs == {"findings": "research/f.md"} and ctx.notes == "three experts interviewed"
    assert ctx.learnings == ["primary sources beat summaries"]
    svc.stage_complete(session_id=session_id, stage="02_questions")
    svc.stage_start(session_id=session_id)
    svc.stage_complete(session_id=session_id, stage="03_synthesis")
    svc.stage_start(session_id=session_id)
    assert svc.stage_complete(session_id=session_id, stage="04_quality_claude", quality={"overall": 0.7}).decision == "retry"
    svc.stage_complete(session_id=session_id, stage="04_quality_claude", quality={"overall": 0.9})
    ctx = svc.stage_start(session_id=session_id).context  # 05_quality_gemini
    assert ctx is not None and ctx.phase == "quality" and ctx.previous_phase == "quality"
    assert ctx.previous_score == 0.9
    assert ctx.feedback == ["04_quality_claude attempt 1: overall: 0.70 below 0.85"]


def test_topics_file_outside_the_project_or_not_a_regular_file_is_refused(cli, project: Path, tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("AWS_KEY=abc\nAWS_SECRET=def\n")
    (project / "linked.txt").symlink_to(secret)
    os.mkfifo(project / "pipe.txt")
    for name, expected in ((str(secret), "inside the project"), ("linked.txt", "inside the project"),
                           ("pipe.txt", "regular file"), ("missing.txt", "does not exist")):
        before = tree_snapshot(project / ".claude") if (project / ".claude").exists() else {}
        refused = cli("batch", "start", "prod", "2-3", "--topics-file", name)
        assert refused.code == 2 and expected in refused.err, (name, refused)
        assert (tree_snapshot(project / ".claude") if (project / ".claude").exists() else {}) == before
    assert "AWS" not in "".join(p.read_text(errors="replace") for p in project.rglob("*.json"))
