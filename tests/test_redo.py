"""The redo log: a change is one durable write; the files follow without fsync and are made
durable by a checkpoint after the answer; whatever a crash or a power cut loses of them is
replayed from the log, once, and a stale log never overwrites a session put back since."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import tree_snapshot
from session_manager.errors import UnsafePath
from session_manager.service import Service
from session_manager.store import read_jsonl

STAGE = "initialization"


@pytest.fixture
def held(project: Path) -> Iterator[tuple[Service, list[Callable[[], None]]]]:
    """A service whose work after the answer (the checkpoint, markdown) waits, as in the MCP
    server between a call's answer and its worker's turn."""
    service = Service(project, actor="test")
    jobs: list[Callable[[], None]] = []
    service.hand_over(jobs.append)
    yield service, jobs


def _log(service: Service, sid: str) -> Path:
    return service.store.redo.path(sid)


def _folder(service: Service, sid: str) -> Path:
    return service.store.session_dir(sid)


def _started(service: Service, jobs: list[Callable[[], None]]) -> str:
    sid = service.start(level="dev").state.session_id
    service.stage_start(session_id=sid)
    for job in jobs:
        job()
    jobs.clear()
    return sid


class SyncCount:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync = self.fdatasync = 0
        real_fsync, real_fdatasync = os.fsync, os.fdatasync

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.fdatasync += 1
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)


def test_a_change_is_one_durable_write_and_the_checkpoint_syncs_the_rest(
        held: tuple[Service, list[Callable[[], None]]], monkeypatch: pytest.MonkeyPatch) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    syncs = SyncCount(monkeypatch)
    service.stage_complete(session_id=sid, stage=STAGE, quality={"overall": 0.9}, cost_usd=0.5, notes="done")
    assert (syncs.fdatasync, syncs.fsync) == (1, 0)  # the redo record only
    record = json.loads(_log(service, sid).read_text())
    assert record["rev"] == record["base"] + 1 == service.store.read_state(sid).revision
    assert {"pipeline_status.json", f"{STAGE}_complete.json"} <= set(record["files"])
    assert "stage_completed" in [line["event"] for line in record["journal"]]
    for job in jobs:  # the answer has gone: the checkpoint makes the files durable, the log empties
        job()
    assert syncs.fsync >= 3 and not _log(service, sid).exists()


def test_a_power_cut_after_the_commit_point_is_replayed_once(
        held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    old_state = (folder / "pipeline_status.json").read_bytes()
    old_journal = (folder / "events.jsonl").read_bytes()
    service.stage_complete(session_id=sid, stage=STAGE, quality={"overall": 0.9}, cost_usd=0.5)
    expected = tree_snapshot(folder)
    jobs.clear()  # the process died before its checkpoint; the files written without fsync are lost:
    (folder / "pipeline_status.json").write_bytes(old_state)  # the rename never reached the disk
    (folder / f"{STAGE}_complete.json").write_bytes(b"")  # the new file's data never did
    (folder / "events.jsonl").write_bytes(old_journal)  # nor the journal lines

    after = Service(folder.parents[3], actor="test")  # the next process
    state = after.store.read_state(sid)
    assert state.stages[STAGE].status == "completed" and state.cost_tracking.total_cost == 0.5
    assert tree_snapshot(folder) == expected  # every file as committed, the journal lines once
    assert not _log(after, sid).exists()
    assert after.store.read_journal(sid).unapplied == 0
    assert [s.state.session_id for s in after.status().sessions] == [sid]


def test_a_killed_process_leaves_a_change_the_next_change_builds_on(
        held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    old_state = (folder / "pipeline_status.json").read_bytes()
    service.update(session_id=sid, add_tasks=["first"])
    jobs.clear()
    (folder / "pipeline_status.json").write_bytes(old_state)  # died between the record and the state's rename
    Service(folder.parents[3], actor="test").update(session_id=sid, add_tasks=["second"])
    state = Service(folder.parents[3], actor="test").store.read_state(sid)
    assert [t.title for t in state.progress.tasks_pending] == ["first", "second"]
    added = [r["title"] for r in read_jsonl(folder / "events.jsonl")[0] if r["event"] == "task_added"]
    assert added == ["first", "second"]


def test_a_stale_log_never_overwrites_a_session_put_back_since(
        held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    early = (folder / "pipeline_status.json").read_bytes()
    service.update(session_id=sid, add_tasks=["a"])
    for job in jobs:
        job()
    jobs.clear()
    service.update(session_id=sid, add_tasks=["b"])
    service.update(session_id=sid, add_tasks=["c"])
    jobs.clear()  # two changes in the log, never checkpointed; then the user puts an older state back
    (folder / "pipeline_status.json").write_bytes(early)
    state = Service(folder.parents[3], actor="test").store.read_state(sid)
    assert state.progress.tasks_pending == [] and not _log(service, sid).exists()


def test_restore_empties_the_log_first(held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    service.backup_now()
    service.update(session_id=sid, add_tasks=["after the backup"])
    jobs.clear()
    assert _log(service, sid).stat().st_size > 0
    service.backup_restore(session_id=sid)
    assert not _log(service, sid).exists()
    assert Service(service.root, actor="test").store.read_state(sid).progress.tasks_pending == []


def test_a_failure_after_the_record_puts_everything_back(
        held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    (folder / "quality_reports").write_text("a file where the folder goes\n")  # the report cannot be written
    before = tree_snapshot(folder)
    with pytest.raises(OSError):
        service.stage_complete(session_id=sid, stage=STAGE, quality={"overall": 0.9})
    assert tree_snapshot(folder) == before
    assert not _log(service, sid).exists()
    assert service.store.read_state(sid).stages[STAGE].status == "in_progress"


def test_a_link_at_the_redo_log_is_refused(held: tuple[Service, list[Callable[[], None]]], tmp_path: Path) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    log = _log(service, sid)
    log.unlink(missing_ok=True)
    log.symlink_to(victim)
    before = tree_snapshot(_folder(service, sid))
    with pytest.raises(UnsafePath):
        service.update(session_id=sid, add_tasks=["x"])
    assert victim.read_text() == "keep me\n" and tree_snapshot(_folder(service, sid)) == before


def test_a_torn_record_is_a_change_that_never_happened(held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    before = tree_snapshot(folder)
    log = _log(service, sid)
    log.write_text('{"rev": 99, "base": 98, "files": {"pipeline_status.json": "{\\"trunc')  # died mid-append
    assert Service(service.root, actor="test").store.read_state(sid).revision < 99
    service.update(session_id=sid, add_tasks=["next"])
    for job in jobs:
        job()
    assert tree_snapshot(folder) != before and not log.exists()


def test_a_report_sees_a_change_a_crash_left_in_the_log(held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    sid = _started(service, jobs)
    folder = _folder(service, sid)
    old_state = (folder / "pipeline_status.json").read_bytes()
    service.record_cost(session_id=sid, usd=2.5)
    jobs.clear()
    (folder / "pipeline_status.json").write_bytes(old_state)  # the rename was lost with the process
    report = Service(service.root, actor="test").report(period="today")
    assert report.cost.total_usd == 2.5 and not _log(service, sid).exists()


def test_the_redo_folder_holds_only_logs_in_use(held: tuple[Service, list[Callable[[], None]]]) -> None:
    service, jobs = held
    ids = [_started(service, jobs) for _ in range(3)]
    for sid in ids:
        service.update(session_id=sid, add_tasks=["t"])
    assert sorted(os.listdir(service.store.redo.folder)) == sorted(f"{sid}.log" for sid in ids)
    for job in jobs:
        job()
    assert os.listdir(service.store.redo.folder) == []  # reports and backups list it: it never grows with history
