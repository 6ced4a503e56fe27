"""The session lifecycle through the service directly (the CLI tests cover the same as a process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Clock, tree_snapshot
from session_manager.errors import InvalidInput, InvalidTransition, NotFound
from session_manager.results import SessionDetail, SessionList
from session_manager.service import Service


@pytest.fixture
def svc(project: Path) -> Service:
    return Service(project, actor="test", clock=Clock())


@pytest.mark.parametrize(("level", "number", "folder", "prefix"), [
    ("prod", 5, "level-2-production", "ep_005"),
    ("dev", None, "level-1-dev", "dev"),
    ("platform", None, "level-3-platform-dev", "plan"),
    ("coded", None, "level-4-coded", "code"),
])
def test_start_writes_the_session_folder(svc: Service, project: Path, level, number, folder, prefix) -> None:
    detail = svc.start(level=level, number=number, topic="t")
    stamp = svc.clock().astimezone().strftime("%Y%m%d_%H%M")  # ids use the local time
    assert detail.state.session_id == f"{prefix}_{stamp}"
    session = project / ".claude" / folder / "sessions" / detail.state.session_id
    assert {p.name for p in session.iterdir()} >= {"pipeline_status.json", "metadata.json", "events.jsonl"}


def test_same_minute_gives_a_clash_suffix(svc: Service) -> None:
    ids = [svc.start(level="prod", number=5).state.session_id for _ in range(3)]
    assert ids[1] == ids[0] + "_2" and ids[2] == ids[0] + "_3"


def test_status_lists_active_sessions_or_shows_one(svc: Service) -> None:
    first = svc.start(level="dev").state.session_id
    second = svc.start(level="coded").state.session_id
    svc.end(session_id=first)
    listed = svc.status()
    assert not listed.one and [s.state.session_id for s in listed.sessions] == [second]
    one = svc.status(session_id=first)
    assert one.one and one.sessions[0].state.status == "completed"


def test_update_and_end(svc: Service, project: Path) -> None:
    session_id = svc.start(level="dev").state.session_id
    svc.update(session_id=session_id, add_tasks=["a", "b"], blockers=["waiting"], learnings=["l"], decisions=["d"])
    detail = svc.update(session_id=session_id, complete_tasks=["#1"], clear_blockers=["waiting"])
    progress = detail.state.progress
    assert [t.title for t in progress.tasks_completed] == ["a"] and progress.blockers == []
    ended = svc.end(session_id=session_id, summary="done")
    assert ended.state.status == "completed" and ended.state.summary == "done" and ended.state.ended_at
    before = tree_snapshot(project / ".claude")
    with pytest.raises(InvalidTransition, match="already ended"):
        svc.end(session_id=session_id)
    with pytest.raises(InvalidTransition, match="has ended"):
        svc.update(session_id=session_id, add_tasks=["late"])
    assert tree_snapshot(project / ".claude") == before


@pytest.mark.parametrize(("call", "error", "text"), [
    (lambda s: s.start(level="prod"), InvalidInput, "needs an episode number"),
    (lambda s: s.start(level="dev", number=3), InvalidInput, "only production sessions take an episode number"),
    (lambda s: s.start(level="nonsense"), InvalidInput, "unknown level"),
    (lambda s: s.show(session_id="../../etc/passwd"), InvalidInput, "invalid session id"),
    (lambda s: s.show(session_id="ep_001_20200101_0000"), NotFound, "no session"),
    (lambda s: s.update(session_id="dev_20200101_0000", add_tasks=["x"]), NotFound, "no session"),
    (lambda s: s.end(), NotFound, "no active session"),
])
def test_bad_input_raises_one_clear_error_and_writes_nothing(svc: Service, project: Path, call, error, text) -> None:
    before = tree_snapshot(project / ".claude")
    with pytest.raises(error, match=text):
        call(svc)
    assert tree_snapshot(project / ".claude") == before


def test_list_filters_by_level_status_and_since(svc: Service) -> None:
    dev = svc.start(level="dev").state.session_id
    prod = svc.start(level="prod", number=1).state.session_id
    svc.end(session_id=prod, abandoned=True)
    assert [s.session_id for s in svc.list_sessions(level="2").sessions] == [prod]
    assert [s.session_id for s in svc.list_sessions(status="active").sessions] == [dev]
    assert [s.session_id for s in svc.list_sessions(status="abandoned").sessions] == [prod]
    assert svc.list_sessions(since="2026-11-21").sessions == []
    assert len(svc.list_sessions(since="2026-11-20").sessions) == 2
