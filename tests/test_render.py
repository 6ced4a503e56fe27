"""Markdown from templates: context gathering, carry-over, review metrics, project memory,
overrides, strictness and the sandbox; and every template for every level against reviewed
expected files (tests/expected/<level>/*.md; regenerate with UPDATE_EXPECTED=1, then read them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import Clock, git, tree_snapshot

pytestmark = pytest.mark.usefixtures("utc")  # session ids carry the local date
from session_manager import context, memory, render
from session_manager.errors import InvalidInput, InvalidTransition, NotFound, TemplateError
from session_manager.service import Service

EXPECTED = Path(__file__).parent / "expected"
LEVELS = ("dev", "production", "platform", "coded")
FILES = ("context.md", "plan.md", "tasks.md", "tests.md", "review.md", "completed.md")
FIXED_DATES = {"GIT_AUTHOR_DATE": "2026-11-19T10:00:00+00:00", "GIT_COMMITTER_DATE": "2026-11-19T10:00:00+00:00"}


def commit(root: Path, message: str, name: str = "app.txt") -> None:
    (root / name).write_text(message + "\n")
    git(root, "add", name)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=root, check=True, env={**os.environ, **FIXED_DATES})


def on_feature_branch(root: Path) -> None:
    commit(root, "Render the gantt chart")
    git(root, "checkout", "-q", "-b", "feature/x")
    (root / "notes.txt").write_text("work in progress\n")


def folder_of(service: Service, session_id: str) -> Path:
    return service.store.session_dir(session_id)


def run_scenario(project: Path, level: str) -> tuple[Service, str]:
    """Two sessions of `level`: an earlier one that ends with unfinished work, an error and a
    learning; then the fixture session, which carries that work over, runs three stages (one
    retried after an error, and a gate failure or a bypass), and ends with work left."""
    on_feature_branch(project)
    clock = Clock()
    svc = Service(project, actor="test", clock=clock)
    number = 5 if level == "production" else None
    stages = [s.name for s in svc.config.pipeline(level)]

    earlier = svc.start(level=level, number=number, tag="earlier", topic="Gantt groundwork",
                        objectives=["Sketch the gantt data model"]).state.session_id
    svc.update(session_id=earlier, add_tasks=["Sketch the data model", "Fix async params in the task API",
                                               "Persist drag and drop"])
    svc.stage_start(session_id=earlier)
    clock.advance(20)
    svc.record_failure(session_id=earlier, stage=stages[0], error="API timeout after 30 s")
    svc.update(session_id=earlier, complete_tasks=["1"], blockers=["Staging database is read-only"],
               learnings=["Route params are async in Next.js 15"])
    clock.advance(25)
    svc.end(session_id=earlier, summary="Data model sketched; the API fix is started", close_open_stages=True)

    clock.now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    session_id = svc.start(level=level, number=number, tag="fixture", topic="Fix gantt", budget_usd=5.0,
                           complexity=6, objectives=["Fix all async param issues", "Make drag and drop persist"]
                           ).state.session_id
    svc.update(session_id=session_id, add_tasks=["Add the critical path", "Write an end-to-end drag test"])
    svc.stage_start(session_id=session_id)
    clock.advance(12)
    svc.stage_complete(session_id=session_id, stage=stages[0], quality={"overall": 0.92}, cost_usd=0.35,
                       tokens=12000, model="claude-sonnet-4-5")
    svc.stage_start(session_id=session_id)
    clock.advance(8)
    svc.record_failure(session_id=session_id, stage=stages[1], error="Type check failed: params is a Promise")
    svc.stage_start(session_id=session_id)
    clock.advance(14)
    svc.stage_complete(session_id=session_id, stage=stages[1], quality={"overall": 0.88}, cost_usd=0.5,
                       tokens=20000, model="claude-sonnet-4-5", outputs={"plan": "docs/gantt-plan.md"})
    svc.update(session_id=session_id, complete_tasks=["Fix async params in the task API"],
               clear_blockers=["Staging database is read-only"],
               learnings=["Await route params before reading them"],
               decisions=["Keep drag state on the server"])
    if level == "production":
        for stage in stages[2:4]:
            svc.stage_start(session_id=session_id)
            clock.advance(9)
            score = 0.7 if stage == "04_quality_claude" else 0.9
            svc.stage_complete(session_id=session_id, stage=stage, quality={"overall": score}, cost_usd=0.6)
        svc.stage_start(session_id=session_id)
        clock.advance(11)
        svc.stage_complete(session_id=session_id, stage="04_quality_claude",
                           quality={"overall": 0.9, "comprehension": 0.88}, cost_usd=0.4)
    else:
        clock.advance(5)
        svc.bypass(session_id=session_id, stage=stages[2], reason="Covered by the manual check")
    svc.stage_start(session_id=session_id)
    svc.update(session_id=session_id, complete_tasks=["Add the critical path"],
               blockers=["Waiting for design review of the drag handles"])
    clock.advance(30)
    svc.end(session_id=session_id, summary="Async params fixed; drag and drop still open", close_open_stages=True)
    return svc, session_id


# -- every template, every level, against reviewed files ---------------------------------
@pytest.mark.parametrize("level", LEVELS)
def test_rendered_files_match_reviewed_expected(project: Path, level: str) -> None:
    svc, session_id = run_scenario(project, level)
    folder = folder_of(svc, session_id)
    mismatched = []
    for name in FILES:
        actual = (folder / name).read_text()
        expected = EXPECTED / level / name
        if os.environ.get("UPDATE_EXPECTED"):
            expected.parent.mkdir(parents=True, exist_ok=True)
            expected.write_text(actual)
        if not expected.is_file() or expected.read_text() != actual:
            mismatched.append(name)
    assert not mismatched, f"{level}: {mismatched} differ from tests/expected/{level}/ (UPDATE_EXPECTED=1 to review)"


@pytest.mark.parametrize("level", LEVELS)
def test_rendered_markdown_is_clean(project: Path, level: str) -> None:
    svc, session_id = run_scenario(project, level)
    for name in FILES:
        text = (folder_of(svc, session_id) / name).read_text()
        assert "\n\n\n" not in text and not text.startswith("\n") and text.endswith("\n")
        assert not text.endswith("\n\n")
        assert all(line == line.rstrip() for line in text.splitlines()), name
        for block in re.findall(r"(?:^\|.*\|\n)+", text, re.M):
            widths = {len(line) for line in block.splitlines()}
            assert len(widths) == 1, f"{name}: table rows of unequal width:\n{block}"


# -- done-when 1: context and plan at start ------------------------------------------------
def test_start_dev_writes_context_with_branch_and_last_commit(project: Path, cli) -> None:
    on_feature_branch(project)
    sha = git(project, "rev-parse", "--short", "HEAD").strip()
    result = cli("start", "dev", "fix", "gantt", "--objective", "Fix async params", "--json")
    assert result.code == 0, result
    folder = project / result.json()["folder"]
    text = (folder / "context.md").read_text()
    assert "- **Branch**: feature/x" in text
    assert f"- **Last commit**: `{sha}` Render the gantt chart" in text
    assert "- **Dirty files**: 1" in text
    assert "**Focus**: fix gantt" in text
    assert "1. Fix async params" in (folder / "plan.md").read_text()


def test_start_outside_git_records_no_git_facts(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    svc = Service(root, actor="test")
    session_id = svc.start(level="dev").state.session_id
    start = context.read_start_context(folder_of(svc, session_id))
    assert start is not None and start.git == context.GitFacts()
    assert "- **Branch**: none" in (folder_of(svc, session_id) / "context.md").read_text()


def test_start_in_repository_without_commits_has_branch_but_no_commit(project: Path) -> None:
    facts = context.git_facts(project)
    assert (facts.branch, facts.commit, facts.subject, facts.dirty_files) == ("main", None, None, 0)


def test_dirty_count_leaves_out_session_manager_files(project: Path, service: Service) -> None:
    commit(project, "First")
    service.start(level="dev")
    service.start(level="coded")
    assert context.git_facts(project).dirty_files == 0


def test_git_facts_ignore_a_git_dir_pointing_elsewhere(project: Path, tmp_path: Path, monkeypatch) -> None:
    commit(project, "Mine")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "elsewhere")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert context.git_facts(project).branch == "main"


def test_plan_of_production_is_the_stage_pipeline_with_gates_and_budget(service: Service) -> None:
    session_id = service.start(level="prod", number=5, topic="CRISPR").state.session_id
    plan = (folder_of(service, session_id) / "plan.md").read_text()
    assert "| 04_quality_claude     | pending | 0/3      | overall ≥ 0.85 |" in plan
    assert "| $5.00 |" in plan and "## Budget" in plan


# -- done-when 2: carry-over ---------------------------------------------------------------
def test_next_dev_session_carries_unfinished_tasks_and_blockers(service: Service) -> None:
    first = service.start(level="dev", tag="one").state.session_id
    service.update(session_id=first, add_tasks=["Done already", "Fix params", "Persist drag"],
                   blockers=["Staging is read-only"])
    service.update(session_id=first, complete_tasks=["1"])
    service.end(session_id=first)
    second = service.start(level="dev", tag="two").state
    assert [(t.title, t.carried_from) for t in second.progress.tasks_pending] == [
        ("Fix params", first), ("Persist drag", first)]
    assert [(b.text, b.carried_from) for b in second.progress.blockers] == [("Staging is read-only", first)]
    text = (folder_of(service, second.session_id) / "context.md").read_text()
    assert f"- [ ] #1 Fix params _(carried from {first})_" in text
    assert f"- #1 Staging is read-only _(carried from {first})_" in text
    carried = [e for e in service.events(second.session_id) if e["event"] == "carried_over"]
    assert carried and carried[0]["from"] == first and carried[0]["tasks"] == ["Fix params", "Persist drag"]


def test_carry_over_through_the_cli(project: Path, cli) -> None:
    assert cli("start", "dev", "--tag", "one").code == 0
    assert cli("task", "add", "Fix params", "Persist drag").code == 0
    assert cli("blocker", "add", "Staging is read-only").code == 0
    assert cli("end").code == 0
    result = cli("start", "dev", "--tag", "two", "--json")
    assert result.code == 0, result
    tasks = result.json()["state"]["progress"]["tasks_pending"]
    assert [t["title"] for t in tasks] == ["Fix params", "Persist drag"]
    context_md = (project / result.json()["folder"] / "context.md").read_text()
    assert "Persist drag _(carried from dev_" in context_md and "Staging is read-only _(carried from" in context_md


def test_active_previous_session_keeps_its_tasks(service: Service) -> None:
    first = service.start(level="dev", tag="one").state.session_id
    service.update(session_id=first, add_tasks=["Still mine"])
    second = service.start(level="dev", tag="two").state
    assert second.progress.tasks_pending == []
    assert "It is still initialized, so its tasks" in (folder_of(service, second.session_id) / "context.md").read_text()


def test_abandoned_session_is_not_the_previous_one(service: Service) -> None:
    kept = service.start(level="dev", tag="one").state.session_id
    service.update(session_id=kept, add_tasks=["Real work"])
    service.end(session_id=kept)
    dropped = service.start(level="dev", tag="two").state.session_id
    service.update(session_id=dropped, add_tasks=["Dropped idea"])
    service.end(session_id=dropped, abandoned=True)
    third = service.start(level="dev", tag="three").state
    assert [t.title for t in third.progress.tasks_pending] == ["Real work"]


def test_previous_session_is_of_the_same_level_only(service: Service) -> None:
    other = service.start(level="coded").state.session_id
    service.update(session_id=other, add_tasks=["Coded work"])
    service.end(session_id=other)
    assert service.start(level="dev").state.progress.tasks_pending == []


def test_damaged_previous_session_does_not_break_start(service: Service) -> None:
    first = service.start(level="dev", tag="one").state.session_id
    (folder_of(service, first) / "pipeline_status.json").write_text("{ torn")
    second = service.start(level="dev", tag="two")
    assert second.state.progress.tasks_pending == []


# -- done-when 3: review, completed and memory at end ----------------------------------------
def test_end_writes_review_and_completed_with_real_metrics(project: Path) -> None:
    svc, session_id = run_scenario(project, "dev")
    folder = folder_of(svc, session_id)
    review = (folder / "review.md").read_text()
    assert "| Completion rate |    50% | 2 of 4 tasks done " in review
    assert "| Quality score   |   0.90 | mean overall score of 2 completed stage(s) " in review
    # seed 004: actual / estimated over the completed stages (no task has an estimate)
    assert "| Time efficiency |   0.87 | 26 min actual / 30 min estimated " in review
    assert "| Cost            |  $0.85 | $0.85 of $5.00 (17% of budget, $4.15 left) " in review
    assert "| Score           | 74/100 |" in review
    assert "|   2 | planning       | completed | 2/3      |  0.88 |   20 min | 14 min | $0.50 |" in review
    assert "- **Error** in planning (attempt 1, then retry): Type check failed: params is a Promise" in review
    assert "- **Bypassed** execution: Covered by the manual check" in review
    assert "- (execution) Await route params before reading them" in review
    assert "- [ ] #4 Write an end-to-end drag test\n- Unblock: Waiting for design review" in review
    completed = (folder / "completed.md").read_text()
    assert "Async params fixed; drag and drop still open" in completed
    assert "|  $5.00 | $0.85 | $4.15 |  17% |" in completed


def test_end_appends_learnings_decisions_and_errors_to_memory(project: Path) -> None:
    svc, session_id = run_scenario(project, "dev")
    memory_dir = project / ".claude" / "memory"
    patterns = (memory_dir / "patterns.md").read_text()
    link = f"[{session_id}](../level-1-dev/sessions/{session_id}/review.md)"
    assert f"- 2026-11-21 · {link} · execution: Await route params before reading them <!-- sm:" in patterns
    assert "Route params are async in Next.js 15" in patterns
    assert "Keep drag state on the server" in (memory_dir / "decisions.md").read_text()
    errors = (memory_dir / "errors.md").read_text()
    assert f"{link} · planning (attempt 1, retry): Type check failed: params is a Promise" in errors


def test_memory_is_not_duplicated_by_second_end_or_rerender(project: Path) -> None:
    svc, session_id = run_scenario(project, "dev")
    memory_dir = project / ".claude" / "memory"
    before = tree_snapshot(memory_dir)
    with pytest.raises(InvalidTransition):
        svc.end(session_id=session_id)
    result = svc.render(session_id=session_id)
    assert result.memory == {} and "review.md" in result.files
    memory.record(svc.store, svc.store.read_state(session_id))
    assert tree_snapshot(memory_dir) == before


def test_memory_keeps_hand_written_lines_and_shows_them_as_known_issues(service: Service, project: Path) -> None:
    memory_dir = project / ".claude" / "memory"
    memory_dir.mkdir(parents=True)
    (memory_dir / "errors.md").write_text("# Known issues\n\n- The CI runner has no GPU\n")
    first = service.start(level="coded", tag="one").state.session_id
    service.stage_start(session_id=first)
    service.record_failure(session_id=first, stage="implement", error="flaky build")
    service.end(session_id=first, abandoned=True)
    errors = (memory_dir / "errors.md").read_text()
    assert errors.startswith("# Known issues\n\n- The CI runner has no GPU\n- ")
    second = service.start(level="coded", tag="two").state.session_id
    text = (folder_of(service, second) / "context.md").read_text()
    assert "- The CI runner has no GPU\n" in text
    assert f"- implement (attempt 1, retry): flaky build ({first}, " in text


def test_pipeline_finishing_writes_review_without_end(service: Service) -> None:
    session_id = service.start(level="coded").state.session_id
    for stage in ("implement", "test", "review", "release"):
        service.stage_start(session_id=session_id)
        service.stage_complete(session_id=session_id, stage=stage)
    assert (folder_of(service, session_id) / "review.md").is_file()


# -- only what changed ------------------------------------------------------------------------
def test_update_rewrites_tasks_but_not_context_or_production_plan(service: Service) -> None:
    session_id = service.start(level="prod", number=2).state.session_id
    folder = folder_of(service, session_id)
    before = {name: (folder / name).stat().st_mtime_ns for name in ("context.md", "tests.md", "plan.md")}
    tasks_before = (folder / "tasks.md").read_text()
    service.update(session_id=session_id, add_tasks=["New work"])
    assert "New work" in (folder / "tasks.md").read_text() != tasks_before
    assert {name: (folder / name).stat().st_mtime_ns for name in before} == before


def test_update_refreshes_a_plan_that_lists_open_work(service: Service) -> None:
    session_id = service.start(level="coded").state.session_id
    service.update(session_id=session_id, blockers=["Waiting for review"])
    assert "- #1 Waiting for review\n" in (folder_of(service, session_id) / "plan.md").read_text()


def test_stage_start_refreshes_plan(service: Service) -> None:
    session_id = service.start(level="prod", number=1).state.session_id
    service.stage_start(session_id=session_id)
    assert "| 01_deep_research      | in_progress |" in (folder_of(service, session_id) / "plan.md").read_text()


# -- done-when 4: overrides, strictness, sandbox -------------------------------------------
def override(project: Path, name: str, text: str, level: str | None = None) -> Path:
    folder = project / ".claude" / "templates" / (level or "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_project_template_overrides_the_shipped_one(service: Service, project: Path) -> None:
    override(project, "context.md.j2", "# Our context for {{ session.id }}\n\nBranch {{ git.branch }}\n")
    session_id = service.start(level="dev").state.session_id
    expected = f"# Our context for {session_id}\n\nBranch main\n"
    assert (folder_of(service, session_id) / "context.md").read_text() == expected


def test_level_override_beats_project_root_override(service: Service, project: Path) -> None:
    override(project, "plan.md.j2", "root\n")
    override(project, "plan.md.j2", "dev only\n", level="dev")
    dev = service.start(level="dev").state.session_id
    coded = service.start(level="coded").state.session_id
    assert (folder_of(service, dev) / "plan.md").read_text() == "dev only\n"
    assert (folder_of(service, coded) / "plan.md").read_text() == "root\n"


def test_project_can_override_the_shared_macros(service: Service, project: Path) -> None:
    shipped = (render.SHIPPED / "_macros.md.j2").read_text()
    override(project, "_macros.md.j2", shipped.replace("· {{ what }}", "/ {{ what }} (ours)"))
    session_id = service.start(level="coded").state.session_id
    assert (folder_of(service, session_id) / "plan.md").read_text().startswith("# Coded session / plan (ours)\n")


def test_undefined_variable_names_template_line_and_variable(service: Service, project: Path) -> None:
    session_id = service.start(level="dev").state.session_id
    plan = folder_of(service, session_id) / "plan.md"
    before = plan.read_text()
    override(project, "plan.md.j2", "# Plan\n\n{{ session.id }}\n{{ no_such_thing }}\n")
    service.update(session_id=session_id, add_tasks=["x"])  # saved: the template problem is a warning
    message = "\n".join(service.warnings)
    assert "template .claude/templates/plan.md.j2, line 4" in message
    assert "'no_such_thing' is undefined" in message
    assert f"session {session_id} was saved" in message and f"session-manager render {session_id}" in message
    assert plan.read_text() == before
    assert not list(plan.parent.glob(".*.tmp"))
    assert [t.title for t in service.show(session_id=session_id).state.progress.tasks_pending] == ["x"]


def test_error_in_an_included_macro_names_the_macro_file(service: Service, project: Path) -> None:
    override(project, "_macros.md.j2", "{% macro title(session, what) %}{{ session.nope }}{% endmacro %}\n")
    service.start(level="coded")
    assert re.search(r"template \.claude/templates/_macros\.md\.j2 \(included from "
                     r"context\.md\.j2\), line 1: undefined variable: 'dict object' has no attribute 'nope'",
                     "\n".join(service.warnings))


def test_sandbox_refuses_python_internals(service: Service, project: Path) -> None:
    override(project, "tasks.md.j2", "# Tasks\n{{ ''.__class__.__mro__ }}\n")
    service.start(level="dev")
    assert "template .claude/templates/tasks.md.j2, line 2: refused by the sandbox: access to attribute" \
           " '__class__' of 'str' object is unsafe" in "\n".join(service.warnings)


def test_failed_template_leaves_other_files_written(service: Service, project: Path) -> None:
    override(project, "tests.md.j2", "{% if %}\n")
    service.start(level="coded")
    assert re.search(r"tests\.md\.j2, line 1: syntax error", "\n".join(service.warnings))
    session_id = service.list_sessions().sessions[0].session_id
    names = sorted(p.name for p in folder_of(service, session_id).glob("*.md"))
    assert names == ["context.md", "plan.md", "tasks.md"]


def test_render_rerenders_after_the_template_is_fixed(service: Service, project: Path) -> None:
    broken = override(project, "plan.md.j2", "{{ missing }}\n")
    service.start(level="coded")
    assert service.warnings
    session_id = service.list_sessions().sessions[0].session_id
    broken.unlink()
    result = service.render(session_id=session_id, name="plan")
    assert result.files == ["plan.md"]
    assert (folder_of(service, session_id) / "plan.md").read_text().startswith("# Coded session · plan\n")


def test_changed_override_is_used_by_a_running_process(service: Service, project: Path) -> None:
    session_id = service.start(level="coded").state.session_id
    template = override(project, "plan.md.j2", "first\n")
    service.render(session_id=session_id, name="plan")
    template.write_text("second version\n")
    service.render(session_id=session_id, name="plan")
    assert (folder_of(service, session_id) / "plan.md").read_text() == "second version\n"
    template.unlink()
    service.render(session_id=session_id, name="plan")
    assert (folder_of(service, session_id) / "plan.md").read_text().startswith("# Coded session · plan\n")


def test_render_of_an_active_session_writes_the_opening_files(service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    result = service.render(session_id=session_id)
    assert result.files == ["context.md", "plan.md", "tasks.md", "tests.md"] and result.memory == {}


@pytest.mark.parametrize("name", ["_macros", "report"])
def test_render_refuses_pieces_that_are_not_session_files(service: Service, name: str) -> None:
    session_id = service.start(level="dev").state.session_id
    with pytest.raises(InvalidInput, match="shared piece|session-manager report"):
        service.render(session_id=session_id, name=name)


def test_render_text_for_other_modules(project: Path) -> None:
    override(project, "report.md.j2", "# Report {{ period }}\n\n\n\n{{ 3 | money }}   \n")
    assert render.render_text(project, "report", {"period": "week"}) == "# Report week\n\n$3.00\n"


@pytest.mark.parametrize("name", ["../plan", "/etc/passwd", "dev/plan", "plan.txt", "", "..", "PLAN", "-x"])
def test_template_names_from_input_are_plain_names_only(service: Service, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid template name"):
        service.template_show(name=name)


def test_render_refuses_a_bad_session_id(service: Service) -> None:
    with pytest.raises(InvalidInput, match="invalid session id"):
        service.render(session_id="../../etc")


def test_templates_list_shows_overrides_and_shipped_files(service: Service, project: Path) -> None:
    override(project, "review.md.j2", "x\n", level="production")
    rows = {(t.name, t.level): (t.source, t.path) for t in service.templates_list().templates}
    assert rows[("context.md.j2", "all")] == ("shipped", "context.md.j2 (shipped)")
    assert rows[("plan.md.j2", "dev")] == ("shipped", "dev/plan.md.j2 (shipped)")
    assert rows[("plan.md.j2", "coded")] == ("shipped", "plan.md.j2 (shipped)")
    assert rows[("review.md.j2", "production")] == ("project", ".claude/templates/production/review.md.j2")
    assert rows[("review.md.j2", "dev")] == ("shipped", "review.md.j2 (shipped)")


def test_template_show_prints_the_file_used(service: Service) -> None:
    assert service.template_show(name="plan", level="prod") == (render.SHIPPED / "production/plan.md.j2").read_text()
    with pytest.raises(NotFound, match="no template nothing.md.j2"):
        service.template_show(name="nothing")


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_render_templates_list_and_show(project: Path, cli) -> None:
    assert cli("start", "coded").code == 0
    result = cli("render", "plan")
    assert result.code == 0, result
    assert result.out.startswith("rendered plan.md in .claude/level-4-coded/sessions/code_")
    listing = cli("templates", "list")
    assert listing.code == 0
    assert re.search(r"^plan\.md\.j2\s+production\s+shipped\s+production/plan\.md\.j2", listing.out, re.M)
    shown = cli("templates", "show", "context")
    assert shown.code == 0 and shown.out == (render.SHIPPED / "context.md.j2").read_text()
    bad = cli("templates", "show", "../x")
    assert bad.code == 2 and bad.err.startswith("error: invalid template name") and bad.out == ""


def test_cli_render_after_end_uses_the_session_just_ended(project: Path, cli) -> None:
    assert cli("start", "dev").code == 0
    assert cli("end").code == 0
    result = cli("render", "--json")
    assert result.code == 0, result
    assert result.json()["files"] == ["context.md", "plan.md", "tasks.md", "tests.md", "review.md", "completed.md"]


def test_cli_template_error_after_a_saved_change_is_a_warning_and_exit_0(project: Path, cli) -> None:
    override(project, "context.md.j2", "{{ ''.__class__.__mro__ }}\n")
    result = cli("start", "dev", "--json")
    assert result.code == 0, result
    assert result.err.count("\n") == 1 and result.err.startswith("warning: ")
    assert "refused by the sandbox" in result.err and "was saved" in result.err and "Traceback" not in result.err
    session_id = result.json()["state"]["session_id"]
    assert cli("status", session_id).code == 0


def test_task_add_with_a_broken_template_saves_the_task_and_warns(project: Path, cli) -> None:
    session_id = cli("start", "dev", "--json").json()["state"]["session_id"]
    override(project, "tasks.md.j2", "{% for %}\n")
    result = cli("task", "add", "write the intro")
    assert result.code == 0 and "warning: " in result.err and "tasks.md.j2" in result.err, result
    state = cli("status", session_id, "--json").json()["sessions"][0]["state"]
    assert [t["title"] for t in state["progress"]["tasks_pending"]] == ["write the intro"]


def test_render_with_a_broken_template_and_nothing_written_is_exit_2(project: Path, cli) -> None:
    cli("start", "dev")
    override(project, "plan.md.j2", "{% if %}\n")
    result = cli("render", "plan")
    assert result.code == 2 and result.err.startswith("error: ") and "plan.md.j2" in result.err, result


def test_status_does_not_import_jinja(project: Path) -> None:
    code = "import sys, session_manager.cli as c; c.main(['status']); print('jinja2' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False"), proc


def test_context_json_keeps_start_facts_for_rerendering(project: Path) -> None:
    svc, session_id = run_scenario(project, "coded")
    data = json.loads((folder_of(svc, session_id) / "context.json").read_text())
    assert data["git"]["branch"] == "feature/x" and data["previous"]["session_id"].endswith("_earlier")
