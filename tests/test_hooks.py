"""Claude Code hooks, run as subprocesses with the JSON Claude Code sends on stdin."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import git, run_cli
from session_manager.service import Service

CLAUDE_SESSION = "5f1c2e0a-8a7b-4d1e-9c3f-2b6a7d8e9f01"
EVENTS = {
    "session-start": {"hook_event_name": "SessionStart", "source": "startup"},
    "stop": {"hook_event_name": "Stop", "stop_hook_active": False},
    "pre-compact": {"hook_event_name": "PreCompact", "trigger": "auto", "custom_instructions": ""},
    "session-end": {"hook_event_name": "SessionEnd", "reason": "prompt_input_exit"},
}


def payload(event: str, cwd: Path, **extra: object) -> str:
    return json.dumps({"session_id": CLAUDE_SESSION, "transcript_path": str(cwd / "transcript.jsonl"),
                       "cwd": str(cwd), "permission_mode": "default", **EVENTS[event], **extra})


def hook(cwd: Path, event: str | None, stdin: str) -> tuple[int, str, str]:
    args = ("hook", event) if event else ("hook",)
    result = run_cli(cwd, *args, stdin=stdin, env={"CLAUDE_PROJECT_DIR": str(cwd)})
    return result.code, result.out, result.err


def context_of(out: str) -> str:
    message = json.loads(out)
    assert message["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    return message["hookSpecificOutput"]["additionalContext"]


def test_session_start_gives_the_active_session_stage_and_open_tasks(project: Path, service: Service) -> None:
    session_id = service.start(level="prod", number=5, topic="CRISPR").state.session_id
    service.update(session_id=session_id, add_tasks=["write intro", "check refs"], blockers=["no API key"])
    service.stage_start(session_id=session_id)
    code, out, err = hook(project, "session-start", payload("session-start", project))
    assert code == 0 and err == ""
    context = context_of(out)
    assert session_id in context and "CRISPR" in context
    assert "stage 01_deep_research (in_progress)" in context
    assert "open tasks: #1 write intro; #2 check refs" in context
    assert "blockers: #1 no API key" in context


def test_session_start_lists_every_active_session_but_not_ended_ones(project: Path, service: Service) -> None:
    active = service.start(level="dev", topic="gantt").state.session_id
    ended = service.start(level="coded").state.session_id
    service.end(session_id=ended)
    context = context_of(hook(project, "session-start", payload("session-start", project))[1])
    assert active in context and ended not in context


def test_session_start_records_the_claude_session_once(project: Path, service: Service) -> None:
    """The hook answers at once and hands the binding to a detached process; a second start of the
    same conversation finds it bound and writes nothing."""
    session_id = service.start(level="dev").state.session_id
    for _ in range(2):
        assert hook(project, "session-start", payload("session-start", project))[0] == 0
        deadline = time.monotonic() + 30
        while service.show(session_id=session_id).state.claude_sessions != [CLAUDE_SESSION]:
            assert time.monotonic() < deadline, "the detached binding never landed"
            time.sleep(0.1)
    attached = [e for e in service.events(session_id) if e["event"] == "claude_session_attached"]
    assert len(attached) == 1 and attached[0]["actor"] == "hook"


def test_two_binders_racing_write_one_binding(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    argv = [sys.executable, "-m", "session_manager.autosave", "bind", str(project), session_id, CLAUDE_SESSION,
            str(int(time.time()))]
    children = [subprocess.Popen(argv, cwd=project) for _ in range(2)]
    assert [child.wait(60) for child in children] == [0, 0]
    attached = [e for e in service.events(session_id) if e["event"] == "claude_session_attached"]
    assert len(attached) == 1 and service.show(session_id=session_id).state.claude_sessions == [CLAUDE_SESSION]
    bindings = (project / ".claude" / "usage" / "bindings.jsonl").read_text().splitlines()
    assert len(bindings) == 1


def test_session_start_with_no_active_session_says_nothing(project: Path, service: Service) -> None:
    service.end(session_id=service.start(level="dev").state.session_id)
    assert hook(project, "session-start", payload("session-start", project)) == (0, "", "")


def test_event_defaults_to_hook_event_name_from_stdin(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    code, out, _ = hook(project, None, payload("session-start", project))
    assert code == 0 and session_id in context_of(out)


@pytest.mark.parametrize("event", list(EVENTS))
def test_hooks_exit_0_quietly_in_a_folder_without_claude_dir(tmp_path: Path, event: str) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    assert hook(plain, event, payload(event, plain)) == (0, "", "")
    assert not (plain / ".claude").exists()


@pytest.mark.parametrize("event", list(EVENTS))
def test_hooks_with_no_stdin_exit_0(project: Path, service: Service, event: str) -> None:
    service.start(level="dev")
    code, _, err = hook(project, event, "")
    assert code == 0 and "Traceback" not in err


@pytest.mark.parametrize(("event", "stdin", "says"), [
    ("session-start", "{not json", "stdin is not the JSON Claude Code sends"),
    ("stop", "[1, 2]", "stdin is not a JSON object"),
    ("bogus", "{}", "unknown hook event 'bogus'; use one of: session-start, user-prompt-submit, pre-tool-use, stop,"
                    " pre-compact, session-end, task-created, task-completed"),
])
def test_hook_errors_exit_0_with_a_short_message(project: Path, service: Service, event, stdin, says) -> None:
    service.start(level="dev")
    code, out, err = hook(project, event, stdin)
    assert code == 0 and err == ""
    message = json.loads(out)["systemMessage"]
    assert says in message and "\n" not in message


def test_malformed_config_is_named_and_the_hook_still_exits_0(project: Path, service: Service) -> None:
    service.start(level="dev")
    (project / ".claude/session-manager.toml").write_text("[alerts]\nquality_min = 7\n")
    code, out, _ = hook(project, "session-start", payload("session-start", project))
    assert code == 0
    assert "session-manager.toml: alerts.quality_min" in json.loads(out)["systemMessage"]


def backups(project: Path) -> list[str]:
    return git(project, "log", "--format=%s", "session-backups").splitlines()


def wait_for_backup(project: Path, count: int, seconds: float = 30) -> list[str]:
    """The backups once there are `count` of them (the autosave runs detached), or as they are
    after `seconds`."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = backups(project)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return backups(project)


def wait_for_stamp(project: Path, seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not (project / ".claude/.session-manager/autosave.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize(("event", "reason"), [("stop", "stop"), ("pre-compact", "pre-compact"),
                                                ("session-end", "session end")])
def test_autosave_hooks_make_a_backup_commit(project: Path, service: Service, event: str, reason: str) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text("[backup]\ncoalesce_seconds = 0\n")
    session_id = service.start(level="dev").state.session_id
    before = backups(project)
    service.update(session_id=session_id, add_tasks=["not yet backed up"])  # waits for the interval
    assert backups(project) == before
    code, out, err = hook(project, event, payload(event, project))
    assert (code, out, err) == (0, "", "")
    after = wait_for_backup(project, len(before) + 1)  # taken by a detached process
    assert len(after) == len(before) + 1 and reason in after[0]
    shown = git(project, "show", "session-backups:" + f".claude/level-1-dev/sessions/{session_id}/pipeline_status.json")
    assert "not yet backed up" in shown


def test_stop_hook_with_nothing_changed_makes_no_commit(project: Path, service: Service) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text("[backup]\ncoalesce_seconds = 0\n")
    service.start(level="dev")
    hook(project, "stop", payload("stop", project))
    wait_for_stamp(project)
    before = backups(project)
    stamp = (project / ".claude/.session-manager/autosave.json").read_text()
    assert hook(project, "stop", payload("stop", project)) == (0, "", "")
    assert backups(project) == before
    assert (project / ".claude/.session-manager/autosave.json").read_text() == stamp  # no worker ran


def test_attach_claude_session_refuses_a_malformed_id_and_writes_nothing(project: Path, service: Service) -> None:
    from conftest import tree_snapshot
    from session_manager.errors import InvalidInput

    session_id = service.start(level="dev").state.session_id
    before = tree_snapshot(project / ".claude")
    with pytest.raises(InvalidInput, match="invalid Claude Code session id"):
        service.attach_claude_session(session_id, "../../etc")
    assert tree_snapshot(project / ".claude") == before
