"""The MCP server's lean path (issue 14): completions do not wake the backup thread on every
call, and derived work runs after the answer (or in the call when no worker runs)."""

from __future__ import annotations

import queue
from pathlib import Path

from session_manager.mcp_server import BackupWake, DerivedWork
from session_manager.service import Service


def test_a_burst_of_completions_wakes_the_backup_thread_once() -> None:
    requests: queue.Queue[str] = queue.Queue()
    wake = BackupWake(requests)
    for _ in range(20):
        wake("stage complete")
    assert requests.qsize() == 1
    wake("session end")  # not coalesced: always handed over
    assert [requests.get_nowait(), requests.get_nowait()] == ["stage complete", "session end"]


def test_derived_work_runs_after_the_answer_and_is_drained_at_stop(project: Path) -> None:
    worker = DerivedWork()
    worker.start()
    service = Service(project, actor="mcp")
    service.hand_over(worker.submit)
    session_id = service.start(level="dev").state.session_id
    service.stage_start(session_id=session_id, stage="initialization")
    result = service.stage_complete(session_id=session_id, stage="initialization", quality={"overall": 0.9},
                                    cost_usd=0.01)
    assert result.decision in ("advanced", "completed")
    worker.stop()  # everything queued is done before the worker ends
    assert not service.store.redo.path(session_id).exists()  # the checkpoint ran too
    folder = service.store.session_dir(session_id)
    assert (folder / "plan.md").is_file()
    durations = project / ".claude" / ".session-manager" / "durations.json"
    assert "dev/initialization" in durations.read_text()


def test_without_a_worker_derived_work_runs_in_the_call(project: Path) -> None:
    service = Service(project, actor="mcp")
    service.hand_over(DerivedWork().submit)  # never started
    session_id = service.start(level="dev").state.session_id
    assert (service.store.session_dir(session_id) / "plan.md").is_file()
