"""Faults: processes killed mid-write, hand-broken state files, torn journal lines."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from conftest import run_cli, tree_snapshot
from session_manager.errors import CorruptState
from session_manager.service import Service
from session_manager.store import read_jsonl

KILLS = int(os.environ.get("SM_CRASH_KILLS", "200"))


def _writer(root: Path, session_id: str) -> None:  # runs in a forked child until killed
    service = Service(root, actor="crash")
    n = 0
    while True:
        n += 1
        service.update(session_id=session_id, add_tasks=[f"t{n}"], learnings=[f"l{n}"])
        if n % 3 == 0:
            service.update(session_id=session_id, complete_tasks=[f"t{n}"])


def test_sigkill_at_random_points_never_tears_a_file(project: Path, record_property) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    folder = service.store.session_dir(session_id)
    rng = random.Random(1234)
    torn_seen = 0
    previous_tasks = 0
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:  # child: write until killed
            try:
                _writer(project, session_id)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # every state file is the old or the new version, never torn
        state = service.show(session_id=session_id).state
        tasks = len(state.progress.tasks_pending) + len(state.progress.tasks_completed)
        assert tasks >= previous_tasks
        previous_tasks = tasks
        json.loads((folder / "metadata.json").read_text())
        # the journal is always readable; at most the line being written is lost
        records, skipped = read_jsonl(folder / "events.jsonl")
        torn_seen += skipped
        assert skipped <= 1
    # nothing was lost that the state recorded: each task in the state has its journal line
    # write-ahead: every task in the state has its journal line; a line written ahead of a state
    # that never landed (a kill between the two) is recognised by its revision and left out
    journal = service.store.read_journal(session_id)
    journaled = {r["title"] for r in journal.records if r["event"] == "task_added"}
    in_state = {t.title for t in state.progress.tasks_pending + state.progress.tasks_completed}
    assert in_state <= journaled and journaled <= in_state
    assert previous_tasks > 0
    record_property("counts", f"crash test: {KILLS} SIGKILLs survived, {previous_tasks} tasks written,"
                    f" {torn_seen} torn journal lines skipped, {journal.unapplied} journal lines written ahead"
                    " of a state that never landed recognised, every state in its journal")


def test_leftover_temp_files_are_ignored(project: Path) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    folder = service.store.session_dir(session_id)
    (folder / ".pipeline_status.json.dead.tmp").write_text("{partial")
    assert service.show(session_id=session_id).state.session_id == session_id
    assert [s.session_id for s in service.list_sessions().sessions] == [session_id]


def test_torn_journal_line_is_skipped_reported_and_not_glued(project: Path) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    journal = service.store.session_dir(session_id) / "events.jsonl"
    with journal.open("ab") as handle:
        handle.write(b'{"session_id": "torn')
    service.update(session_id=session_id, add_tasks=["after the crash"])
    records, skipped = read_jsonl(journal)
    assert skipped == 1 and records[-1]["title"] == "after the crash"
    result = run_cli(project, "log", session_id)
    assert result.code == 0 and "1 unreadable line(s)" in result.err and "task_added" in result.out


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ('{"session_id": "x", "status": "in_prog', "not valid JSON"),
        ("[]", "not a JSON object"),
        (None, "error_count"),  # wrong type
        (None, "schema_version 99"),  # from the future
        ("", "not valid JSON"),
    ],
)
def test_corrupt_state_is_named_with_the_restore_command(project: Path, content, detail) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="prod", number=3).state.session_id
    path = service.store.session_dir(session_id) / "pipeline_status.json"
    if content is None:
        data = json.loads(path.read_text())
        if "error_count" in detail:
            data["error_count"] = "many"
        else:
            data["schema_version"] = 99
        content = json.dumps(data)
    path.write_text(content)
    before = tree_snapshot(project / ".claude")
    with pytest.raises(CorruptState) as info:
        service.show(session_id=session_id)
    message = str(info.value)
    assert detail in message and f"session-manager backup restore {session_id}" in message
    result = run_cli(project, "task", "add", session_id, "x")
    assert result.code == 2 and result.err.startswith(f"error: {session_id}: pipeline_status.json")
    assert "backup restore" in result.err and len(result.err.strip().splitlines()) == 1
    assert tree_snapshot(project / ".claude") == before


def test_corrupt_session_does_not_break_listing_status(project: Path) -> None:
    service = Service(project, actor="test")
    good = service.start(level="dev").state.session_id
    bad = service.start(level="coded").state.session_id
    (service.store.session_dir(bad) / "pipeline_status.json").write_text("{")
    status = run_cli(project, "status")
    assert status.code == 0 and good in status.out
    assert f"{bad}: pipeline_status.json is not valid JSON" in status.out
    assert run_cli(project, "status", "--json").json()["damaged"][0].startswith(bad)
    # without an id, the session touched last is meant: it is the damaged one, so say so
    # rather than quietly write to another session
    before = tree_snapshot(project / ".claude")
    result = run_cli(project, "task", "add", "no id given")
    assert result.code == 2 and bad in result.err and "backup restore" in result.err
    assert tree_snapshot(project / ".claude") == before
    assert run_cli(project, "task", "add", good, "with an id").code == 0
