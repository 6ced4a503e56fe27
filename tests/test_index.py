"""The session index (issue 14): status, "no id" and `list --status active` read the active
sessions only, and the index stays right under racing processes, crashes and hand deletion."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from session_manager import index as index_module
from session_manager.levels import LEVELS
from session_manager.service import Service

STATE = "pipeline_status.json"
_opened: list[str] = []
_counting = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _counting and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # a real measure of the files a call opens (builtins.open and os.open)


def _opens(fn: Any) -> list[str]:
    global _counting
    _opened.clear()
    _counting = True
    try:
        fn()
    finally:
        _counting = False
    return list(_opened)


def _history(service: Service, ended: int) -> None:
    """`ended` ended sessions written as the store writes them (a real start, copied folders)."""
    template = service.start(level="dev", tag="seed").state.session_id
    service.end(session_id=template, close_open_stages=True)
    folder = service.store.session_dir(template)
    parent = folder.parent
    state = json.loads((folder / STATE).read_text())
    for n in range(ended):
        session_id = f"dev_2026{(n % 12) + 1:02d}{(n % 28) + 1:02d}_h{n}"
        target = parent / session_id
        target.mkdir()
        state["session_id"] = session_id
        (target / STATE).write_text(json.dumps(state))
        (target / "metadata.json").write_text((folder / "metadata.json").read_text().replace(template, session_id))


def _ids(service: Service) -> set[str]:
    return {s.session_id for s in service.list_sessions(status="active").sessions}


def test_status_with_thousands_of_ended_sessions_reads_only_the_active_ones(project: Path) -> None:
    service = Service(project, actor="test")
    _history(service, 2000)
    active = {service.start(level="dev", tag=f"live{n}").state.session_id for n in range(3)}
    service.status()  # the first call after hand-made folders rebuilds the index (once)
    rebuilds = index_module.stats["rebuilds"]
    opened = _opens(lambda: Service(project, actor="test").status())
    states = [Path(p).parent.name for p in opened if p.endswith(STATE)]
    assert sorted(states) == sorted(active)  # each active state read once, no ended one
    assert not any("report-cache" in p for p in opened)
    opened = _opens(lambda: Service(project, actor="test").list_sessions(status="active"))
    assert {Path(p).parent.name for p in opened if p.endswith(STATE)} == active
    opened = _opens(lambda: Service(project, actor="test").show())  # no id: the session touched last
    assert {Path(p).parent.name for p in opened if p.endswith(STATE)} <= active
    assert index_module.stats["rebuilds"] == rebuilds  # normal use never rebuilds
    assert _ids(service) == active


def test_no_id_means_the_session_touched_last(project: Path) -> None:
    service = Service(project, actor="test")
    first = service.start(level="dev", tag="one").state.session_id
    second = service.start(level="dev", tag="two").state.session_id
    assert service.show().state.session_id == second
    service.update(session_id=first, add_tasks=["touch"])
    assert service.show().state.session_id == first
    service.end(session_id=first, close_open_stages=True)
    assert service.show().state.session_id == second


def _race(root: str, n: int) -> None:
    service = Service(Path(root), actor=f"racer{n}")
    for k in range(4):
        session_id = service.start(level="dev", tag=f"r{n}-{k}").state.session_id
        if k % 2 == 0:
            service.end(session_id=session_id, close_open_stages=True)


def test_index_stays_right_when_processes_race_starts_and_ends(project: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_race, args=(str(project), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    service = Service(project, actor="test")
    truth = {s.session_id for s in service.list_sessions().sessions if s.status in ("initialized", "in_progress")}
    assert len(truth) == 8
    assert _ids(service) == truth


def _crash_at(root: str, session_id: str, where: str) -> None:  # a child killed at a chosen point
    service = Service(Path(root), actor="crash")
    folder = str(service.store.session_dir(session_id))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if where == "after state" and event == "open" and args and os.fsdecode(args[0]) == folder:
            os.kill(os.getpid(), signal.SIGKILL)  # the checkpoint's folder fsync: the state renamed
        if where == "before commit" and event == "open" and os.fsdecode(args[0]).endswith(f"redo/{session_id}.log"):
            os.kill(os.getpid(), signal.SIGKILL)  # before the change's redo record: nothing committed
        if where == "before state" and event == "os.rename" and isinstance(args[1], (str, os.PathLike)) and os.fsdecode(args[1]).endswith(STATE):
            os.kill(os.getpid(), signal.SIGKILL)  # committed (the redo record), the state not renamed yet

    sys.addaudithook(hook)
    service.end(session_id=session_id, close_open_stages=True)


@pytest.mark.parametrize("where", ["before commit", "before state", "after state"])
def test_crash_between_state_and_index(project: Path, where: str) -> None:
    """A change is committed by its redo record: a crash after it (even before the state file is
    replaced) is replayed by the next reader; a crash before it leaves the session as it was."""
    service = Service(project, actor="test")
    keep = service.start(level="dev", tag="keep").state.session_id
    victim = service.start(level="dev", tag="victim").state.session_id
    child = multiprocessing.get_context("spawn").Process(target=_crash_at, args=(str(project), victim, where))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    ended = service.store.read_state(victim).ended_at is not None
    assert ended == (where != "before commit")
    rebuilds = index_module.stats["rebuilds"]
    expected = {keep} if ended else {keep, victim}
    assert _ids(Service(project, actor="test")) == expected
    assert {d.state.session_id for d in Service(project, actor="test").status().sessions} == expected
    assert index_module.stats["rebuilds"] == rebuilds  # settled from the one pending row, not rebuilt


def test_hand_deleted_index_is_rebuilt_once(project: Path) -> None:
    service = Service(project, actor="test")
    live = service.start(level="dev", tag="live").state.session_id
    done = service.start(level="coded", tag="done").state.session_id
    service.end(session_id=done, close_open_stages=True)
    for path in (project / ".claude" / ".session-manager").glob("index.sqlite*"):
        path.unlink()
    rebuilds = index_module.stats["rebuilds"]
    assert _ids(service) == {live}  # the same Service: its cached connection notices the file is gone
    assert _ids(Service(project, actor="test")) == {live}
    assert index_module.stats["rebuilds"] == rebuilds + 1


def test_hand_removed_session_folder_and_damaged_index(project: Path) -> None:
    import shutil

    service = Service(project, actor="test")
    gone = service.start(level="dev", tag="gone").state.session_id
    live = service.start(level="dev", tag="live").state.session_id
    shutil.rmtree(service.store.session_dir(gone))
    assert _ids(service) == {live}  # the sessions folder's mtime moved: rebuilt
    service.store.index.close()
    (project / ".claude" / ".session-manager" / "index.sqlite").write_bytes(b"not a database at all" * 100)
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (project / ".claude" / ".session-manager" / extra).unlink(missing_ok=True)
    assert _ids(Service(project, actor="test")) == {live}


def test_status_edited_by_hand_is_corrected_by_a_full_listing(project: Path) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="dev", tag="edited").state.session_id
    path = service.store.session_dir(session_id) / STATE
    data = json.loads(path.read_text())
    data["status"] = "abandoned"
    path.write_text(json.dumps(data))
    assert _ids(service) == set()  # the candidate is read, found ended, and its row corrected
    data["status"] = "in_progress"
    path.write_text(json.dumps(data))
    service.list_sessions()  # a full listing reads every state and puts the rows right
    assert _ids(service) == {session_id}


def test_report_holds_only_the_window_of_a_long_history(project: Path) -> None:
    """Memory follows the window, not the history: over 1,500 ended sessions of which a few are
    in the last week, the report loads (cold and warm) only those and the active ones."""
    from datetime import UTC, datetime, timedelta

    from session_manager import reports

    service = Service(project, actor="test")
    _history(service, 1500)  # dated by their state: all started when the seed did
    folder = service.store.level_dir(LEVELS["dev"])
    old = (datetime.now(UTC) - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = sorted(p.name for p in folder.iterdir() if p.name.startswith("dev_"))[:7]
    for path in folder.glob("dev_*/pipeline_status.json"):
        if path.parent.name in recent:
            continue
        data = json.loads(path.read_text())
        data["started_at"] = data["last_updated"] = data["ended_at"] = old
        data["completed_at"] = None
        path.write_text(json.dumps(data))
    live = service.start(level="dev", tag="live").state.session_id
    now = datetime.now(UTC)
    since, until = reports.window("week", None, None, now)
    for _ in ("cold", "warm"):
        loaded, unreadable, _ = reports.load_summaries(service.store, None, since.timestamp(), until.timestamp())
        assert not unreadable
        assert {s["id"] for s in loaded} == set(recent) | {live}
    assert len(reports.load_summaries(service.store)[0]) == 1502  # without a window: everything
    assert service.report(period="week").sessions.run == len(recent) + 1
