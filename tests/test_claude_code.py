"""Claude Code as people install and type it: `setup`, the statusline, the budget guard, the
SessionStart context at its size limit, Claude Code's task list mirrored, the autosave that
survives, and the launcher's bootstrap (a plugin copy with no virtualenv and nothing on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git, run_cli
from session_manager.service import Service
from test_hooks import CLAUDE_SESSION, backups, context_of, payload, wait_for_backup

REPO = Path(__file__).resolve().parents[1]


def hook(cwd: Path, event: str, data: dict[str, object]) -> tuple[int, str]:
    result = run_cli(cwd, "hook", event, stdin=json.dumps({"session_id": CLAUDE_SESSION, "cwd": str(cwd), **data}),
                     env={"CLAUDE_PROJECT_DIR": str(cwd)})
    assert result.err == ""
    return result.code, result.out


def bound(service: Service, budget: float | None = 1.0, spent: float = 0.0, level: str = "dev") -> str:
    number = 5 if level == "prod" else None
    session_id = service.start(level=level, number=number, budget_usd=budget).state.session_id
    service.attach_claude_session(session_id, CLAUDE_SESSION)
    if spent:
        service.record_cost(session_id=session_id, usd=spent)
    return session_id


def enforce(project: Path, on: bool = True) -> None:
    (project / ".claude/session-manager.toml").write_text(f"[alerts]\nenforce_budget = {'true' if on else 'false'}\n")


# -- the budget guard -----------------------------------------------------------------------------
def test_pre_tool_use_denies_once_the_budget_is_spent_and_enforced(project: Path, service: Service) -> None:
    session_id = bound(service, budget=1.0, spent=1.25)
    enforce(project)
    code, out = hook(project, "pre-tool-use", {"hook_event_name": "PreToolUse", "tool_name": "Bash",
                                                "tool_input": {"command": "make"}})
    answer = json.loads(out)["hookSpecificOutput"]
    assert code == 0 and answer["hookEventName"] == "PreToolUse" and answer["permissionDecision"] == "deny"
    reason = answer["permissionDecisionReason"]
    assert session_id in reason and "$1.25 of its $1.00" in reason and "\n" not in reason


@pytest.mark.parametrize("tool", ["Read", "Grep", "Glob", "mcp__plugin_session-manager_sessions__session_end",
                                  "mcp__sessions__session_status"])
def test_pre_tool_use_leaves_reading_and_the_session_tools_allowed(project: Path, service: Service, tool: str) -> None:
    bound(service, budget=1.0, spent=2.0)
    enforce(project)
    assert hook(project, "pre-tool-use", {"hook_event_name": "PreToolUse", "tool_name": tool}) == (0, "")


@pytest.mark.parametrize(("spent", "enforced"), [(2.0, False), (0.5, True)])
def test_pre_tool_use_says_nothing_without_enforcement_or_under_budget(project: Path, service: Service,
                                                                     spent: float, enforced: bool) -> None:
    bound(service, budget=1.0, spent=spent)
    enforce(project, enforced)
    # no output at all: an "allow" would skip the user's own permission rules
    assert hook(project, "pre-tool-use", {"hook_event_name": "PreToolUse", "tool_name": "Bash"}) == (0, "")


def test_pre_tool_use_ignores_a_conversation_bound_to_no_session(project: Path, service: Service) -> None:
    session_id = service.start(level="dev", budget_usd=1.0).state.session_id
    service.record_cost(session_id=session_id, usd=5.0)
    enforce(project)
    assert hook(project, "pre-tool-use", {"hook_event_name": "PreToolUse", "tool_name": "Bash"}) == (0, "")


def test_enforce_budget_is_a_checked_config_key(project: Path, service: Service, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text("[alerts]\nenforce_budget = 3\n")
    result = cli("status")
    assert result.code == 2 and "alerts.enforce_budget" in result.err


def test_user_prompt_submit_warns_at_80_percent(project: Path, service: Service) -> None:
    session_id = bound(service, budget=1.0, spent=0.85)
    code, out = hook(project, "user-prompt-submit", {"hook_event_name": "UserPromptSubmit", "prompt": "go on"})
    answer = json.loads(out)["hookSpecificOutput"]
    assert answer["hookEventName"] == "UserPromptSubmit"
    assert session_id in answer["additionalContext"] and "85%" in answer["additionalContext"]
    assert "\n" not in answer["additionalContext"]


def test_user_prompt_submit_is_quiet_below_80_percent(project: Path, service: Service) -> None:
    bound(service, budget=1.0, spent=0.5)
    assert hook(project, "user-prompt-submit", {"hook_event_name": "UserPromptSubmit", "prompt": "go on"}) == (0, "")


# -- SessionStart context at its limit ----------------------------------------------------------------
def test_session_start_context_stays_under_10000_characters_bound_session_first(project: Path,
                                                                                service: Service) -> None:
    sessions = [service.start(level="dev", tag=f"t{index}").state.session_id for index in range(25)]
    for session_id in sessions:
        service.update(session_id=session_id, add_tasks=[f"task {n} " + "x" * 400 for n in range(12)],
                       blockers=["blocked " + "y" * 300])
    mine = sessions[3]  # neither the newest nor the oldest
    service.attach_claude_session(mine, CLAUDE_SESSION)
    code, out = hook(project, "session-start", json.loads(payload("session-start", project)))
    context = context_of(out)
    assert code == 0 and len(context) <= 10_000
    assert context.index(mine) < min(context.index(s) for s in sessions if s != mine and s in context)
    assert f"This conversation works on {mine}" in context.splitlines()[0]
    assert context.splitlines()[-1].startswith("... cut here")
    lines = context.splitlines()
    mine_at = next(i for i, line in enumerate(lines) if line.startswith(f"- {mine}"))
    assert lines[mine_at + 1].startswith("  blockers:")  # blockers before the tasks


def test_session_start_context_of_a_few_sessions_is_whole(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    context = context_of(hook(project, "session-start", json.loads(payload("session-start", project)))[1])
    assert session_id in context and "cut here" not in context


# -- Claude Code's task list ------------------------------------------------------------------------------
def test_task_created_and_completed_are_mirrored_into_the_bound_session(project: Path, service: Service) -> None:
    session_id = bound(service)
    created = {"hook_event_name": "TaskCreated", "task_id": "1", "task_subject": "Write the intro"}
    for _ in range(2):  # once only
        assert hook(project, "task-created", created) == (0, "")
    state = service.show(session_id=session_id).state
    assert [t.title for t in state.progress.tasks_pending] == ["Write the intro"]
    assert hook(project, "task-completed", {**created, "hook_event_name": "TaskCompleted"}) == (0, "")
    assert hook(project, "task-completed", {"hook_event_name": "TaskCompleted", "task_id": "2",
                                            "task_subject": "Created before the binding"}) == (0, "")
    state = service.show(session_id=session_id).state
    assert not state.progress.tasks_pending
    assert [t.title for t in state.progress.tasks_completed] == ["Write the intro", "Created before the binding"]


def test_tasks_of_an_unbound_conversation_go_nowhere(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    service.start(level="coded")
    assert hook(project, "task-created", {"hook_event_name": "TaskCreated", "task_subject": "x"}) == (0, "")
    assert not service.show(session_id=session_id).state.progress.tasks_pending


# -- autosave that lands ---------------------------------------------------------------------------
def test_session_end_hands_the_backup_to_a_process_that_outlives_it(project: Path, service: Service) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text("[backup]\ncoalesce_seconds = 0\n")
    session_id = service.start(level="dev").state.session_id
    before = backups(project)
    service.update(session_id=session_id, add_tasks=["saved at the end"])
    proc = subprocess.Popen([sys.executable, "-m", "session_manager", "hook", "session-end"], cwd=project,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CLAUDE_PROJECT_DIR": str(project)}, start_new_session=True)
    out, err = proc.communicate(payload("session-end", project), timeout=60)
    assert (proc.returncode, out, err) == (0, "", "")
    os.killpg(proc.pid, 9) if _group_alive(proc.pid) else None  # what Claude Code does to its hooks on exit
    after = wait_for_backup(project, len(before) + 1)
    assert "session end" in after[0]
    assert "saved at the end" in git(project, "show", f"session-backups:.claude/level-1-dev/sessions/{session_id}"
                                                      "/pipeline_status.json")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_failed_autosave_is_said_by_the_next_hook_once(project: Path, service: Service) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/session-manager.toml").write_text('[backup]\nbranch = "main"\n')  # the user's branch
    git(project, "commit", "-q", "--allow-empty", "-m", "user work")
    service.start(level="dev")
    failure = project / ".claude/.session-manager/autosave-failed.txt"
    hook(project, "stop", json.loads(payload("stop", project)))
    import time

    deadline = time.monotonic() + 30
    while not failure.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    code, out = hook(project, "stop", json.loads(payload("stop", project)))
    message = json.loads(out.splitlines()[0])["systemMessage"]
    assert code == 0 and "autosave (stop) failed" in message and "\n" not in message
    assert not failure.exists()


# -- the statusline ----------------------------------------------------------------------------------------
def statusline(cwd: Path, stdin: str, env: dict[str, str] | None = None) -> str:
    result = run_cli(cwd, "statusline", stdin=stdin, env=env)
    assert result.code == 0 and result.err == ""
    assert result.out.endswith("\n") and result.out.count("\n") == 1
    return result.out.strip()


def test_statusline_shows_the_session_stage_cost_and_context(project: Path, service: Service) -> None:
    session_id = bound(service, budget=2.0, spent=0.5, level="prod")
    service.stage_start(session_id=session_id)
    line = statusline(project, json.dumps({"session_id": CLAUDE_SESSION, "workspace": {"current_dir": str(project)},
                                           "cost": {"total_cost_usd": 0.1},
                                           "context_window": {"used_percentage": 42.4}}))
    assert line.startswith(f"{session_id} 01_deep_research 0%")
    assert "$0.50/$2.00" in line and "left" in line and line.endswith("ctx 42%")


def test_statusline_without_a_binding_shows_the_active_session_changed_last(project: Path, service: Service) -> None:
    service.start(level="dev")
    latest = service.start(level="coded").state.session_id
    line = statusline(project, json.dumps({"session_id": "other", "workspace": {"current_dir": str(project)}}))
    assert line.startswith(latest) and "+1 active" in line


@pytest.mark.parametrize("stdin", ["", "{broken", "[]", json.dumps({"workspace": {"current_dir": 7}})])
def test_statusline_never_fails(tmp_path: Path, stdin: str) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert statusline(plain, stdin) == "sessions: -"


# -- setup -------------------------------------------------------------------------------------------------------
def test_setup_writes_the_short_command_once(project: Path, cli) -> None:
    first = cli("setup")
    assert first.code == 0, first
    command = project / ".claude/commands/session-manager.md"
    text = command.read_text()
    assert "allowed-tools: mcp__plugin_session-manager_sessions, mcp__sessions\n" in text
    assert "wrote .claude/commands/session-manager.md" in first.out and f"rm {command}" in first.out
    again = cli("setup")
    assert again.code == 0 and "up to date: .claude/commands/session-manager.md" in again.out
    assert command.read_text() == text


def test_setup_user_writes_into_the_claude_home(project: Path, cli) -> None:
    result = cli("setup", "--user", "--statusline")
    assert result.code == 0, result
    home = Path(os.environ["HOME"]) / ".claude"
    assert (home / "commands/session-manager.md").is_file()
    assert json.loads((home / "settings.json").read_text())["statusLine"]["command"].endswith("statusline")
    assert not (project / ".claude").exists()


def test_setup_standalone_registers_server_and_hooks_keeping_other_settings(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/settings.json").write_text(json.dumps({"model": "opus", "hooks": {"Stop": [
        {"hooks": [{"type": "command", "command": "echo mine"}]}]}}))
    assert cli("setup", "--standalone").code == 0
    settings = json.loads((project / ".claude/settings.json").read_text())
    assert settings["model"] == "opus" and settings["enabledMcpjsonServers"] == ["sessions"]
    assert "mcp__sessions" in settings["permissions"]["allow"]
    stop = [h["command"] for g in settings["hooks"]["Stop"] for h in g["hooks"]]
    assert stop[0] == "echo mine" and stop[1].endswith("hook stop")
    assert settings["hooks"]["PreToolUse"][0]["matcher"] == "*"
    server = json.loads((project / ".mcp.json").read_text())["mcpServers"]["sessions"]
    assert server["args"][-1] == "serve"
    before = (project / ".claude/settings.json").read_text()
    assert "up to date" in cli("setup", "--standalone").out
    assert (project / ".claude/settings.json").read_text() == before


def test_setup_standalone_never_adds_a_second_server_next_to_the_plugin(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/settings.json").write_text(json.dumps({"enabledPlugins": {
        "session-manager@session-manager": True}}))
    result = cli("setup", "--standalone")
    assert result.code == 0 and "plugin is enabled" in result.out
    assert not (project / ".mcp.json").exists()


def test_setup_keeps_a_statusline_of_the_users_own(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/settings.json").write_text(json.dumps({"statusLine": {"type": "command",
                                                                              "command": "ccusage statusline"}}))
    result = cli("setup", "--statusline")
    assert result.code == 0 and "kept your own statusLine" in result.out
    assert json.loads((project / ".claude/settings.json").read_text())["statusLine"]["command"] == "ccusage statusline"


def test_setup_refuses_a_broken_settings_file_and_writes_nothing(project: Path, cli) -> None:
    (project / ".claude").mkdir()
    (project / ".claude/settings.json").write_text("{oops")
    result = cli("setup", "--statusline")
    assert result.code == 2 and ".claude/settings.json is not valid JSON" in result.err
    assert (project / ".claude/settings.json").read_text() == "{oops"


# -- the launcher's bootstrap ----------------------------------------------------------------------------------
def marketplace_copy(tmp_path: Path) -> Path:
    """The plugin as `claude plugin install` leaves it: its files, no .venv."""
    target = tmp_path / "cache/session-manager/session-manager/0.1.0"
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(".venv", ".git", ".ci", "*.whl", "__pycache__",
                                                                "*.egg-info", "node_modules", "tests", "bench"))
    return target


def bare_path(tmp_path: Path) -> str:
    """A PATH with python3 (the test's interpreter, which has the dependencies) and no session-manager."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # a symlink would lose the venv
    (folder / "python3").chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_launcher_builds_its_environment_under_plugin_data_then_runs_from_it(project: Path, tmp_path: Path) -> None:
    plugin = marketplace_copy(tmp_path)
    data = tmp_path / "plugin-data"
    env = {"PATH": bare_path(tmp_path), "HOME": os.environ["HOME"], "CLAUDE_PLUGIN_DATA": str(data)}
    first = subprocess.run([str(plugin / "scripts/session-manager"), "--version"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("session-manager 0.1.0")
    progress = [line for line in first.stderr.splitlines() if "setting up" in line]
    assert len(progress) == 1
    assert (data / "venv/.plugin-version").read_text().strip() == "0.1.0"
    second = subprocess.run([str(plugin / "scripts/session-manager"), "--version"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and second.stderr == ""  # built once
    # a new plugin version rebuilds
    manifest = plugin / ".claude-plugin/plugin.json"
    manifest.write_text(manifest.read_text().replace('"version": "0.1.0"', '"version": "0.1.1"'))
    third = subprocess.run([str(plugin / "scripts/session-manager"), "--version"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "setting up 0.1.1" in third.stderr


def test_a_hook_starts_the_bootstrap_in_the_background_and_exits_0(project: Path, tmp_path: Path) -> None:
    plugin = marketplace_copy(tmp_path)
    data = tmp_path / "plugin-data"
    env = {"PATH": bare_path(tmp_path), "HOME": os.environ["HOME"], "CLAUDE_PLUGIN_DATA": str(data)}
    result = subprocess.run([str(plugin / "scripts/session-manager"), "hook", "session-start"], cwd=project,
                            env=env, input="{}", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "setting itself up" in json.loads(result.stdout)["systemMessage"]
    import time

    deadline = time.monotonic() + 300
    while not (data / "venv/.plugin-version").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (data / "venv/bin/session-manager").exists()


def test_a_failed_bootstrap_says_why_in_one_line(project: Path, tmp_path: Path) -> None:
    plugin = marketplace_copy(tmp_path)
    shutil.rmtree(plugin / "server")  # a broken copy: nothing to install
    data = tmp_path / "plugin-data"
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "CLAUDE_PLUGIN_DATA": str(data),
           "SESSION_MANAGER_PYTHON": sys.executable}
    serve = subprocess.run([str(plugin / "scripts/session-manager"), "serve"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=300)
    assert serve.returncode == 1
    reasons = [line for line in serve.stderr.splitlines() if "could not set itself up" in line]
    assert reasons, serve.stderr
    hook_result = subprocess.run([str(plugin / "scripts/session-manager"), "hook", "stop"], cwd=project, env=env,
                                 input="{}", capture_output=True, text=True, timeout=60)
    assert hook_result.returncode == 0
    assert "could not set itself up" in json.loads(hook_result.stdout)["systemMessage"]
