"""Phases (issue 17): the configurable stage-to-phase map gives cost_by_phase and phase progress."""

from __future__ import annotations

from pathlib import Path

from session_manager.service import Service


def test_default_production_phases_give_cost_and_progress(project: Path) -> None:
    svc = Service(project, actor="test")
    session_id = svc.start(level="prod", number=5).state.session_id
    for stage in ("01_deep_research", "02_questions", "03_synthesis"):
        svc.stage_start(session_id=session_id)
        svc.stage_complete(session_id=session_id, stage=stage, cost_usd=0.5)
    svc.stage_start(session_id=session_id)
    detail = svc.show(session_id=session_id)
    by_phase = {p.phase: p for p in detail.phases}
    assert list(by_phase) == ["research", "quality", "polish", "audio"]
    assert (by_phase["research"].status, by_phase["research"].done, by_phase["research"].cost_usd) == ("done", 3, 1.5)
    assert by_phase["quality"].status == "in_progress" and by_phase["audio"].status == "pending"
    from session_manager import phases

    assert phases.cost_by_phase(detail.state, svc.config) == {"research": 1.5}


def test_a_configured_map_and_stages_it_does_not_name(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text(
        '[phases.dev]\nthinking = ["initialization", "planning"]\nbuilding = ["execution"]\n')
    svc = Service(project, actor="test")
    detail = svc.start(level="dev")
    assert [(p.phase, p.stages) for p in detail.phases] == [
        ("thinking", ["initialization", "planning"]), ("building", ["execution"]), ("other", ["validation", "review"])]
    (project / ".claude/session-manager.toml").write_text('[phases.dev]\na = ["planning"]\nb = ["planning"]\n')
    result = cli("status")
    assert result.code == 2 and "planning" in result.err and "two phases" in result.err


def test_levels_without_phases_show_none(project: Path) -> None:
    assert Service(project, actor="test").start(level="coded").phases == []
