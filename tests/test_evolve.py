"""Templates that learn (issue 17): three successful dev sessions give proposals with their
evidence; --apply writes the config and the plan override (backed up first, journalled), and a
new session's estimate and plan use them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from conftest import Clock, git
from session_manager.service import Service

DEV = ("initialization", "planning", "execution", "validation", "review")
MINUTES = {"initialization": (4, 5, 6), "planning": (20, 20, 20), "execution": (60, 90, 120), "validation": (30, 30, 30),
           "review": (8, 10, 12)}


def run_dev_sessions(project: Path, clock: Clock, n: int = 3, cost: float = 1.0) -> list[str]:
    ids = []
    for i in range(n):
        svc = Service(project, actor="test", clock=clock)
        session_id = svc.start(level="dev", topic=f"feature {i}", budget_usd=5, tag=f"run{i}").state.session_id
        for stage in DEV:
            svc.stage_start(session_id=session_id)
            clock.advance(MINUTES[stage][i])
            svc.stage_complete(session_id=session_id, stage=stage, cost_usd=cost / len(DEV))
        svc.update(session_id=session_id, learnings=["Small commits make reviews fast.", f"one-off note {i}"])
        svc.end(session_id=session_id, summary="done")
        ids.append(session_id)
        clock.advance(60)
    return ids


def test_no_history_no_proposals(cli) -> None:
    result = cli("templates", "evolve", "--json")
    assert result.code == 0 and json.loads(result.out)["proposals"] == []
    assert "no proposals" in cli("templates", "evolve").out


def test_three_successful_dev_sessions_give_proposals_with_evidence(cli, project: Path) -> None:
    ids = run_dev_sessions(project, Clock())
    result = cli("templates", "evolve", "--level", "dev", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    by_key = {p["key"]: p for p in data["proposals"]}
    execution = by_key["pipelines.dev.execution.expected_minutes"]
    assert execution["current"] == 180 and execution["proposed"] == 90  # the median of 60, 90, 120
    assert execution["evidence"]["runs"] == 3 and execution["evidence"]["sessions"] == sorted(ids)
    assert by_key["pipelines.dev.review.expected_minutes"]["proposed"] == 10
    assert "pipelines.dev.planning.expected_minutes" not in by_key  # the median 20 is what the config says
    budget = by_key["budgets.dev"]
    assert budget["current"] is None and budget["proposed"] == 1.2  # highest successful cost x 1.2
    lessons = by_key[".claude/templates/dev/plan.md.j2"]
    assert lessons["proposed"] == ["Small commits make reviews fast."]
    assert len(lessons["evidence"]["learnings"][0]["sessions"]) == 3
    assert data["successful"] == {"dev": sorted(ids)} and not data["applied"]
    # the terminal view is a diff of the TOML and the template override, and nothing is written
    text = cli("templates", "evolve", "--level", "dev").out
    assert "+++ b/.claude/session-manager.toml" in text and "+++ b/.claude/templates/dev/plan.md.j2" in text
    assert "+## Lessons from earlier sessions" in text
    assert not (project / ".claude/session-manager.toml").exists()


def test_unsuccessful_sessions_are_not_evidence(project: Path) -> None:
    clock = Clock()
    run_dev_sessions(project, clock, n=2)
    svc = Service(project, actor="test", clock=clock)
    over = run_dev_sessions(project, clock, n=1, cost=50.0)  # over its $5 budget
    kinds = {p.kind for p in svc.templates_evolve(level="dev").proposals}
    assert kinds == {"lessons"}  # two successful runs: a recurring learning, but no figures (3 runs needed)
    assert over[0] not in svc.templates_evolve(level="dev").successful.get("dev", [])


def test_apply_writes_backs_up_journals_and_a_new_session_uses_it(cli, project: Path) -> None:
    clock = Clock()
    run_dev_sessions(project, clock)
    before = git(project, "rev-parse", "session-backups").strip()
    applied = cli("templates", "evolve", "--level", "dev", "--apply", "--json")
    assert applied.code == 0, applied
    data = json.loads(applied.out)
    assert data["applied"] and data["written"] == [".claude/session-manager.toml", ".claude/templates/dev/plan.md.j2"]
    assert data["backup_before"]  # the backup holding the files as they were before (here: the tip already did)
    held = git(project, "ls-tree", "-r", "--name-only", data["backup_before"])
    assert ".claude/session-manager.toml" not in held and before == data["backup_before"]
    config = tomllib.loads((project / ".claude/session-manager.toml").read_text())
    stages = {s["name"]: s for s in config["pipelines"]["dev"]}
    assert stages["execution"]["expected_minutes"] == 90 and config["budgets"]["dev"] == 1.2
    journal = [json.loads(line) for line in (project / ".claude/memory/evolution.jsonl").read_text().splitlines()]
    assert journal[-1]["event"] == "templates_evolved" and journal[-1]["backup_before"] == data["backup_before"]
    assert "templates evolved" in git(project, "log", "-1", "--format=%s", "session-backups")
    # a new session: its budget and its estimate come from the applied figures (the duration cache,
    # safe to delete, is deleted so the estimate cannot come from it)
    import shutil

    shutil.rmtree(project / ".claude/.session-manager")
    detail = Service(project, actor="test", clock=clock).start(level="dev", topic="next")
    assert detail.state.budget.usd == 1.2
    expected = (5 + 20 + 90 + 30 + 10) * 60
    assert detail.estimate_remaining_seconds == expected
    plan = (project / ".claude/level-1-dev/sessions" / detail.state.session_id / "plan.md").read_text()
    assert "## Lessons from earlier sessions" in plan and "- Small commits make reviews fast." in plan
    assert "estimated time: 2h35m" in plan
    # applied once: the same history changes nothing more
    assert json.loads(cli("templates", "evolve", "--level", "dev", "--json").out)["diff"] == ""


def test_a_learning_cannot_inject_template_syntax(project: Path) -> None:
    clock = Clock()
    for i in range(2):
        svc = Service(project, actor="test", clock=clock)
        session_id = svc.start(level="dev", tag=f"t{i}").state.session_id
        for stage in DEV:
            svc.stage_start(session_id=session_id)
            svc.stage_complete(session_id=session_id, stage=stage)
        svc.update(session_id=session_id, learnings=['{{ cycler.__init__ }} {% raw %} "# heading'])
        svc.end(session_id=session_id)
    result = Service(project, actor="test").templates_evolve(level="dev", apply=True)
    assert result.applied
    detail = Service(project, actor="test").start(level="dev", tag="after")
    plan = (project / ".claude/level-1-dev/sessions" / detail.state.session_id / "plan.md").read_text()
    assert '- {{ cycler.__init__ }} {% raw %} "# heading' in plan


def test_apply_is_undone_with_backup_restore(cli, project: Path) -> None:
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude/session-manager.toml").write_text("# mine\nlock_timeout_seconds = 20\n")
    run_dev_sessions(project, Clock())
    applied = json.loads(cli("templates", "evolve", "--level", "dev", "--apply", "--json").out)
    assert applied["undo"].startswith("session-manager backup restore --project-files --at ")
    assert "budgets" in (project / ".claude/session-manager.toml").read_text()
    undone = cli(*applied["undo"].split()[1:], "--json")
    assert undone.code == 0, undone
    result = json.loads(undone.out)
    assert (project / ".claude/session-manager.toml").read_text() == "# mine\nlock_timeout_seconds = 20\n"
    assert not (project / ".claude/templates/dev/plan.md.j2").exists()
    assert "templates/dev/plan.md.j2" in result["deleted"] and "session-manager.toml" in result["restored"]
    assert result["undo"]  # and the restore itself can be undone
    redo = cli(*result["undo"].split()[1:])
    assert redo.code == 0 and (project / ".claude/templates/dev/plan.md.j2").is_file()
