"""Seed 004's task model: the lifecycle (CLI, MCP, Service), `tasks.json`, the v1 -> v2 migration,
the success metrics of an ended session and the carry-over of learnings into the next session."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from session_manager.errors import InvalidInput, InvalidTransition, NotFound
from session_manager.metrics import compute, score
from session_manager.model import SCHEMA_VERSION, TaskStatus
from session_manager.service import Service

FIXTURES = Path(__file__).parent / "fixtures"
TASK_KEYS = ["id", "title", "agent", "status", "estimatedMinutes", "actualMinutes", "files", "tests", "blockers",
             "output", "carriedFrom"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def later(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(project: Path, clock: Clock) -> Service:
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude/session-manager.toml").write_text("[backup]\nenabled = false\n")
    return Service(project, actor="test", clock=clock)


def folder(svc: Service, session_id: str) -> Path:
    return svc.store.session_dir(session_id)


def tasks_json(svc: Service, session_id: str) -> dict[str, Any]:
    return json.loads((folder(svc, session_id) / "tasks.json").read_text())


# -- done-when 1: tasks.json in seed 004's shape; the lifecycle, journalled --------------------------
def test_task_lifecycle_measures_minutes_and_writes_tasks_json(svc: Service, clock: Clock) -> None:
    sid = svc.start(level="dev", tag="t").state.session_id
    assert tasks_json(svc, sid) == {"sessionId": sid, "tasks": [], "metrics": {
        "totalTasks": 0, "completed": 0, "failed": 0, "blocked": 0, "timeSpent": 0.0, "timeEstimated": 0.0}}
    svc.task(session_id=sid, action="add", items=["Fix API async params"], agent="backend-specialist", estimate=30,
             files=["src/app/api/v1/tasks/[id]/route.ts"], tests=["Should return 200 for valid request"])
    svc.task(session_id=sid, action="add", items=["Persist drag and drop", "Critical path"], estimate=45)
    svc.task(session_id=sid, action="start", items=["task-1"])
    clock.later(12)
    svc.task(session_id=sid, action="block", items=["#1"], reason="staging database is read-only")
    clock.later(10)
    svc.task(session_id=sid, action="unblock", items=["1"])
    clock.later(14)
    svc.task(session_id=sid, action="done", items=["Fix API async params"], output="params awaited")
    svc.task(session_id=sid, action="start", items=["task-2"])
    clock.later(5)
    svc.task(session_id=sid, action="fail", items=["task-2"], reason="library cannot persist order")
    svc.task(session_id=sid, action="edit", items=["task-3"], title="Add the critical path", agent="frontend")
    data = tasks_json(svc, sid)
    assert data["sessionId"] == sid and [list(t) for t in data["tasks"]] == [TASK_KEYS] * 3
    first, second, third = data["tasks"]
    assert first == {"id": "task-1", "title": "Fix API async params", "agent": "backend-specialist", "status": "done",
                     "estimatedMinutes": 30.0, "actualMinutes": 36.0, "files": ["src/app/api/v1/tasks/[id]/route.ts"],
                     "tests": ["Should return 200 for valid request"], "blockers": ["staging database is read-only"],
                     "output": "params awaited", "carriedFrom": None}
    assert (second["status"], second["actualMinutes"], second["output"]) == ("failed", 5.0, "library cannot persist order")
    assert (third["title"], third["agent"], third["status"]) == ("Add the critical path", "frontend", "pending")
    assert data["metrics"] == {"totalTasks": 3, "completed": 1, "failed": 1, "blocked": 0, "timeSpent": 41.0,
                               "timeEstimated": 120.0}
    kinds = [e["event"] for e in svc.events(sid) if e["event"].startswith("task_")]
    assert kinds == ["task_added"] * 3 + ["task_started", "task_blocked", "task_unblocked", "task_completed",
                                          "task_started", "task_failed", "task_edited"]
    svc.task(session_id=sid, action="remove", items=["task-3"], reason="moved to the next sprint")
    assert [t["id"] for t in tasks_json(svc, sid)["tasks"]] == ["task-1", "task-2"]
    assert svc.events(sid)[-1]["event"] == "task_removed"
    state = svc.show(session_id=sid).state
    assert [t.title for t in state.progress.tasks_completed] == ["Fix API async params"]
    assert [t.status for t in state.progress.tasks_failed] == [TaskStatus.failed]


def test_refused_task_transitions_write_nothing(svc: Service) -> None:
    sid = svc.start(level="dev", tag="t").state.session_id
    svc.task(session_id=sid, action="add", items=["a"])
    svc.task(session_id=sid, action="done", items=["a"])
    before = (folder(svc, sid) / "pipeline_status.json").read_bytes()
    with pytest.raises(InvalidTransition, match="task-1 is done: it cannot start"):
        svc.task(session_id=sid, action="start", items=["task-1"])
    with pytest.raises(InvalidTransition, match="cannot unblock"):
        svc.task(session_id=sid, action="unblock", items=["task-1"])
    with pytest.raises(NotFound, match="no task 'task-9'"):
        svc.task(session_id=sid, action="done", items=["task-9"])
    with pytest.raises(InvalidInput, match="edit changes one task"):
        svc.task(session_id=sid, action="edit", items=["1", "2"], title="x")
    with pytest.raises(InvalidInput, match="nothing to change"):
        svc.task(session_id=sid, action="edit", items=["1"])
    assert (folder(svc, sid) / "pipeline_status.json").read_bytes() == before


def test_task_commands_on_the_cli(cli, project: Path) -> None:  # type: ignore[no-untyped-def]
    sid = cli("start", "dev", "--json").json()["state"]["session_id"]
    out = cli("task", "add", "write the docs", "--agent", "writer", "--estimate", "20", "--file", "docs/a.md",
              "--file", "README.md", "--test", "links resolve")
    assert out.code == 0 and "added task-1 'write the docs'" in out.out
    assert cli("task", "start", "task-1").code == 0
    blocked = cli("task", "block", "task-1", "--reason", "waiting for review", "--json")
    assert blocked.json()["tasks"][0]["status"] == "blocked" and blocked.json()["tasks"][0]["blockers"] == [
        "waiting for review"]
    assert cli("task", "unblock", "task-1").code == 0
    assert cli("task", "edit", "task-1", "--estimate", "25").code == 0
    done = cli("task", "done", "task-1", "--output", "docs/a.md written")
    assert done.code == 0 and "1 done" in done.out
    refused = cli("task", "start", "task-1")
    assert refused.code == 2 and "task-1 is done" in refused.err
    data = json.loads((project / ".claude/level-1-dev/sessions" / sid / "tasks.json").read_text())
    assert data["tasks"][0]["estimatedMinutes"] == 25.0 and data["tasks"][0]["files"] == ["docs/a.md", "README.md"]
    assert "[x] #1 write the docs" in cli("status", sid).out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_task_update_over_mcp(project: Path) -> None:
    from mcp import Client

    from session_manager.mcp_server import build_server

    server = build_server(project, backups=False)
    async with Client(server) as client:
        started = await client.call_tool("session_start", {"level": "dev"})
        sid = started.structured_content["session_id"]
        added = await client.call_tool("task_update", {"action": "add", "items": ["outline", "draft"],
                                                       "estimate": 15})
        assert not added.is_error and added.structured_content["tasks"] == ["task-1 pending: outline",
                                                                             "task-2 pending: draft"]
        done = await client.call_tool("task_update", {"action": "done", "items": ["task-1"]})
        assert done.structured_content["metrics"]["completed"] == 1
        wrong = await client.call_tool("task_update", {"action": "start", "items": ["task-1"]})
        assert wrong.is_error and "task-1 is done" in wrong.content[0].text
        old = await client.call_tool("session_update", {"complete_tasks": ["#2"]})  # the older tool still works
        assert not old.is_error and old.structured_content["tasks_done"] == 2
    events = [e["event"] for e in Service(project).events(sid)]
    assert events.count("task_completed") == 2 and events.count("task_added") == 2


# -- the migration ----------------------------------------------------------------------------------------
def test_a_schema_1_session_is_migrated_on_load(svc: Service, project: Path) -> None:
    target = project / ".claude/level-1-dev/sessions/dev_20261120_old"
    target.mkdir(parents=True)
    for name in ("pipeline_status.json", "metadata.json"):
        shutil.copy(FIXTURES / "v1" / name, target / name)
    assert json.loads((target / "pipeline_status.json").read_text())["schema_version"] == 1
    state = svc.show(session_id="dev_20261120_old").state
    assert state.schema_version == SCHEMA_VERSION == 2
    assert [(t.id, t.title, t.status) for t in state.progress.all_tasks()] == [
        (1, "write tests", TaskStatus.done), (2, "fix the bug", TaskStatus.pending)]
    assert state.progress.tasks_failed == [] and state.outcome.bugs_fixed is None
    svc.task(session_id="dev_20261120_old", action="start", items=["task-2"])  # the first write saves version 2
    saved = json.loads((target / "pipeline_status.json").read_text())
    assert saved["schema_version"] == 2 and saved["progress"]["tasks_pending"][0]["status"] == "in_progress"
    report = svc.report(since="2026-11-01")
    assert report.sessions.run == 1 and report.unreadable == []


# -- done-when 2: an ended session shows its completion rate, time efficiency and score -----------------
def test_ended_session_shows_completion_time_efficiency_and_score(cli, project: Path) -> None:  # type: ignore[no-untyped-def]
    sid = cli("start", "dev", "--json").json()["state"]["session_id"]
    cli("task", "add", "a", "b", "c", "d", "--estimate", "30")
    cli("task", "done", "a", "b", "c")
    ended = cli("end", "--bugs-fixed", "3", "--bugs-introduced", "1", "--tests-passed", "9", "--tests-total", "10")
    assert ended.code == 0, ended.err
    # completion 3/4 = 0.75, quality 9/10, bug rate 1/3; done without start: no actual minutes, no time efficiency
    expected = round(100 * (0.35 * 0.75 + 0.30 * 0.9 + 0.10 * (1 - 1 / 3)) / 0.75)
    assert f"score {expected}/100 · completion 75% (3/4 tasks) · quality 0.90 (tests)" in ended.out
    metrics = cli("status", sid, "--json").json()["sessions"][0]["metrics"]
    assert metrics["completion_rate"] == 0.75 and metrics["score"] == expected and metrics["bug_rate"] == 0.3333
    review = (project / ".claude/level-1-dev/sessions" / sid / "review.md").read_text()
    assert f"| Score           | {expected}/100 |" in review and "9 of 10 tests passed" in review


def test_time_efficiency_is_actual_over_estimated(svc: Service, clock: Clock) -> None:
    sid = svc.start(level="dev", tag="t").state.session_id
    svc.task(session_id=sid, action="add", items=["a", "b"], estimate=30, files=["docs/a.md"])
    svc.task(session_id=sid, action="start", items=["a", "b"])
    clock.later(45)
    svc.task(session_id=sid, action="done", items=["a", "b"])
    detail = svc.end(session_id=sid)
    m = detail.metrics
    assert m is not None
    assert (m.minutes_actual, m.minutes_estimated, m.time_efficiency) == (90.0, 60.0, 1.5)
    assert m.docs_coverage == 1.0 and m.completion_rate == 1.0 and m.quality_score is None
    assert m.score == round(100 * (0.35 + 0.15 / 1.5 + 0.10) / 0.60)


def test_score_formula_renormalises_the_known_components() -> None:
    assert score({"completion": None}) is None
    assert score({"completion": 0.8}) == 80
    # seed 004's example: 8 of 10 tasks, 25 of 25 tests, no bug introduced, 210 of 180 minutes
    # (0.35 x 0.8 + 0.30 x 1.0 + 0.15 x 180/210 + 0.10 x 1.0) / 0.90 = 0.898
    assert score({"completion": 0.8, "quality": 1.0, "time": 180 / 210, "bugs": 1.0}) == 90


def test_metrics_without_tasks_use_the_stages(svc: Service) -> None:
    sid = svc.start(level="coded", tag="t").state.session_id
    svc.stage_start(session_id=sid)
    svc.stage_complete(session_id=sid, stage="implement", quality={"overall": 0.9})
    m = compute(svc.show(session_id=sid).state)
    assert (m.completion_rate, m.quality_score, m.quality_source) == (0.25, 0.9, "stages")


# -- done-when 4: the next session's context carries the previous one's learnings -------------------------
def test_next_context_carries_learnings_decisions_and_todo_learnings(svc: Service) -> None:
    first = svc.start(level="dev", tag="one").state.session_id
    svc.update(session_id=first, learnings=["route params are async in Next.js 15"],
               decisions=["await params in every handler"])
    svc.update(session_id=first, learnings=["write a drag-and-drop regression test"], todo=True)
    svc.task(session_id=first, action="add", items=["persist order"], agent="frontend", estimate=40)
    svc.end(session_id=first)
    second = svc.start(level="dev", tag="two").state
    assert [(t.title, t.carried_from, t.agent, t.estimated_minutes) for t in second.progress.tasks_pending] == [
        ("persist order", first, "frontend", 40.0), ("write a drag-and-drop regression test", first, None, None)]
    context = (folder(svc, second.session_id) / "context.md").read_text()
    assert "### What it learned\n\n- route params are async in Next.js 15\n" in context
    assert "- write a drag-and-drop regression test (todo)" in context
    assert "### What it decided\n\n- await params in every handler\n" in context
    carried = [e for e in svc.events(second.session_id) if e["event"] == "carried_over"][0]
    assert carried["tasks"] == ["persist order", "write a drag-and-drop regression test"]
    assert [t["id"] for t in tasks_json(svc, second.session_id)["tasks"]] == ["task-1", "task-2"]


# -- done-when 3: report today and report month --json --------------------------------------------------
def test_report_today_lists_the_days_key_learnings(cli) -> None:  # type: ignore[no-untyped-def]
    cli("start", "dev")
    cli("learning", "add", "small commits make reviews fast")
    cli("end")
    out = cli("report", "today").out
    assert "Key learnings\n  - small commits make reviews fast" in out
    md = cli("report", "today", "--format", "md").out
    assert "### Key learnings\n\n- small commits make reviews fast" in md


def test_report_month_json_has_quality_by_stage_forecast_and_opportunities(cli) -> None:  # type: ignore[no-untyped-def]
    sid = cli("start", "coded", "--json").json()["state"]["session_id"]
    cli("stage", "start", sid)
    cli("stage", "complete", sid, "implement", "--quality", "overall=0.9", "--cost", "1.5", "--model", "claude-opus-4")
    data = cli("report", "month", "--json").json()["analytics"]
    assert data["quality_by_stage"] == [{"stage": "implement", "n": 1, "mean": 0.9, "stdev": 0.0, "min": 0.9,
                                         "max": 0.9}]
    assert data["forecast"]["active_sessions"] == 1 and data["forecast"]["month_to_date_usd"] == 1.5
    assert data["optimisation"] == [] and "findings" in data
    assert data["models"][0]["model"] == "claude-opus-4"
