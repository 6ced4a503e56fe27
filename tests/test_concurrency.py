"""Eight processes at once on the same sessions: task adds, stage completions, cost entries and
backups. Every change must be present afterwards, every file must parse, the journal must hold
one line per change, and a lock held by a killed process must not block anyone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from session_manager.errors import InvalidTransition, LockTimeout
from session_manager.service import Service
from session_manager.store import read_jsonl

N = int(os.environ.get("SM_CONCURRENCY_N", "30"))


def _child(root: Path, role: str, sessions: list[str], out: Path) -> None:
    service = Service(root, actor=role)
    done = {"tasks": 0, "costs": 0, "usd": 0.0, "stages": 0, "backups": 0, "learnings": 0}
    if role.startswith("tasks"):
        for n in range(N):
            service.update(session_id=sessions[n % 2], add_tasks=[f"{role}-{n}"])
            done["tasks"] += 1
    elif role.startswith("costs"):
        for n in range(N):
            service.record_cost(session_id=sessions[n % 2], model="claude-sonnet-4-5", input_tokens=100,
                                output_tokens=10, usd=0.01)
            done["costs"] += 1
            done["usd"] += 0.01
    elif role.startswith("stages"):
        session_id = sessions[int(role[-1])]
        while True:
            try:
                started = service.stage_start(session_id=session_id)
            except InvalidTransition:
                break  # no stage left
            service.stage_complete(session_id=session_id, stage=started.stage, cost_usd=0.001)
            done["stages"] += 1
    else:  # backups, with a learning between them
        for n in range(N // 3):
            service.update(session_id=sessions[n % 2], learnings=[f"{role}-{n}"])
            done["learnings"] += 1
            if service.backup_now(reason="manual").committed:
                done["backups"] += 1
    out.write_text(json.dumps(done))


def test_eight_processes_lose_nothing(project: Path, record_property) -> None:
    service = Service(project, actor="test")
    sessions = [service.start(level="dev").state.session_id, service.start(level="coded").state.session_id]
    roles = ["tasks0", "tasks1", "costs0", "costs1", "stages0", "stages1", "backups0", "backups1"]
    pids = []
    for role in roles:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(project, role, sessions, project / f"{role}.json")
            except BaseException as exc:  # reported through the missing result file
                (project / f"{role}.error").write_text(repr(exc))
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    errors = {p.name: p.read_text() for p in project.glob("*.error")}
    assert not errors, errors
    done = {role: json.loads((project / f"{role}.json").read_text()) for role in roles}
    total = {key: sum(d[key] for d in done.values()) for key in done["tasks0"]}

    states = [service.show(session_id=s).state for s in sessions]
    tasks = sum(len(s.progress.tasks_pending) for s in states)
    assert tasks == total["tasks"] == 2 * N
    assert sum(len(s.progress.learnings) for s in states) == total["learnings"]
    assert [s.status for s in states] == ["completed", "completed"] and total["stages"] == 5 + 4
    usd = sum(s.cost_tracking.total_cost for s in states)
    assert round(usd, 6) == round(total["usd"] + 9 * 0.001, 6)
    assert sum(s.cost_tracking.entries for s in states) == total["costs"] + 9

    for session_id in sessions:  # the journal has one line per change, and every file parses
        folder = service.store.session_dir(session_id)
        records, skipped = read_jsonl(folder / "events.jsonl")
        assert skipped == 0
        state = service.show(session_id=session_id).state
        kinds = [r["event"] for r in records]
        assert kinds.count("task_added") == len(state.progress.tasks_pending)
        assert kinds.count("learning_added") == len(state.progress.learnings)
        assert kinds.count("cost_recorded") == state.cost_tracking.entries
        assert kinds.count("stage_completed") == len(state.stages)
        for path in folder.rglob("*.json"):
            json.loads(path.read_text())

    history = subprocess.run(["git", "rev-list", "--parents", "session-backups"], cwd=project, check=True,
                             capture_output=True, text=True).stdout.splitlines()
    assert all(len(line.split()) <= 2 for line in history)  # linear: one parent each
    assert len(history) >= total["backups"]
    record_property("counts", f"concurrency test: 8 processes made {total['tasks']} task adds, {total['costs']} cost entries,"
          f" {total['stages']} stage completions, {total['learnings']} learnings, {total['backups']} backups;"
          " all found")


def test_lock_held_by_a_killed_process_is_released(project: Path) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    ready = project / "locked"
    pid = os.fork()
    if pid == 0:
        with service.store.lock(session_id):
            ready.write_text("yes")
            time.sleep(60)
        os._exit(0)
    while not ready.exists():
        time.sleep(0.01)
    service.store.lock_timeout = 0.2
    try:
        with service.store.lock(session_id):
            raise AssertionError("the lock should be held by the child")
    except LockTimeout as exc:
        assert "busy" in str(exc)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    service.store.lock_timeout = 5
    result = service.update(session_id=session_id, add_tasks=["after the kill"])
    assert result.state.progress.tasks_pending[-1].title == "after the kill"
