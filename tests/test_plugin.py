"""The Claude Code plugin: manifest, marketplace entry, .mcp.json, hooks, the slash command, the
launcher script; `claude plugin validate`, and Claude Code itself against a local fake of the
Messages API (both skipped when the `claude` binary is absent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from conftest import git

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = "${CLAUDE_PLUGIN_ROOT}/scripts/session-manager"
TOOL_PREFIX = "mcp__plugin_session-manager_sessions__"
VERBS = ["start", "status", "end", "report", "resume", "stage", "task", "backup"]
CLAUDE = shutil.which("claude")
needs_claude = pytest.mark.skipif(
    CLAUDE is None, reason="the `claude` binary is not installed (npm install -g @anthropic-ai/claude-code)")


def load(relative: str) -> dict:
    return json.loads((REPO / relative).read_text())


def frontmatter(text: str) -> tuple[dict[str, str], str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "the command needs a frontmatter block"
    fields = dict(line.split(": ", 1) for line in match.group(1).splitlines())
    return fields, match.group(2)


# -- structure ------------------------------------------------------------------------------------
def test_plugin_manifest_names_the_plugin() -> None:
    manifest = load(".claude-plugin/plugin.json")
    assert manifest["name"] == "session-manager"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"]) and manifest["description"]


def test_marketplace_lists_the_plugin_from_this_folder() -> None:
    marketplace = load(".claude-plugin/marketplace.json")
    (entry,) = marketplace["plugins"]
    assert entry["name"] == "session-manager" and entry["source"] == "./"
    assert entry["version"] == load(".claude-plugin/plugin.json")["version"]


def test_mcp_json_starts_the_server_named_sessions_through_the_launcher() -> None:
    server = load(".mcp.json")["mcpServers"]["sessions"]
    assert server["command"] == LAUNCHER and server["args"] == ["serve"]
    assert os.access(REPO / "scripts/session-manager", os.X_OK)


def test_hooks_json_runs_each_hook_through_the_launcher() -> None:
    hooks = load("hooks/hooks.json")["hooks"]
    expected = {"SessionStart": "session-start", "UserPromptSubmit": "user-prompt-submit",
                "PreToolUse": "pre-tool-use", "Stop": "stop", "PreCompact": "pre-compact",
                "SessionEnd": "session-end", "TaskCreated": "task-created", "TaskCompleted": "task-completed"}
    assert set(hooks) == set(expected)
    for event, name in expected.items():
        (group,) = hooks[event]
        (command,) = group["hooks"]
        assert command["type"] == "command" and command["command"] == f'"{LAUNCHER}" hook {name}'
        assert 0 < command["timeout"] <= 60
        # no hook runs "async": Claude Code kills those when it exits (print mode lost its autosave);
        # the autosave hooks return at once and hand the backup to a detached process instead
        assert "async" not in command
    assert hooks["PreToolUse"][0]["matcher"] == "*"
    # SessionEnd hooks of a plugin get 1.5 s in all, whatever they ask for
    assert hooks["SessionEnd"][0]["hooks"][0]["timeout"] <= 5


def test_slash_command_is_generated_from_the_registry() -> None:
    from session_manager import reference

    assert (REPO / "commands/session-manager.md").read_text() == reference.slash_command().rstrip("\n") + "\n"


def test_reference_docs_are_up_to_date() -> None:
    from session_manager import reference

    assert reference.main(["--check"]) == 0, "run `python -m session_manager.reference` and commit the docs"


def test_slash_command_maps_every_verb_to_existing_tools() -> None:
    from session_manager.mcp_server import build_server

    fields, body = frontmatter((REPO / "commands/session-manager.md").read_text())
    assert fields["description"] and fields["argument-hint"]
    assert fields["allowed-tools"] == TOOL_PREFIX.rstrip("_")
    assert "$ARGUMENTS" in body and "`$0`" in body
    for verb in VERBS:
        assert f"| `{verb}" in body, verb
        assert verb in fields["argument-hint"], verb
    named = set(re.findall(r"`(\w+)\(", body))
    tools = {t.name for t in anyio.run(build_server(REPO, backups=False).list_tools)}
    assert named == tools


def test_this_repository_enables_its_own_plugin() -> None:
    settings = load(".claude/settings.json")
    assert settings["enabledPlugins"] == {"session-manager@session-manager": True}
    assert settings["extraKnownMarketplaces"]["session-manager"]["source"] == {"source": "directory", "path": "."}
    assert settings["disabledMcpjsonServers"] == ["sessions"]  # the plugin starts it, not the project scope
    assert TOOL_PREFIX.rstrip("_") in settings["permissions"]["allow"]


# -- the launcher ------------------------------------------------------------------------------------
def plugin_copy(tmp_path: Path) -> Path:
    """A plugin folder without a virtualenv, as a marketplace install leaves it."""
    root = tmp_path / "plugin"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts/session-manager", root / "scripts/session-manager")
    return root


def launch(root: Path, *args: str, env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "scripts/session-manager"), *args], cwd=cwd, input=stdin, text=True,
                          capture_output=True, env=env, timeout=60)


def test_launcher_runs_the_plugin_virtualenv(project: Path, tmp_path: Path) -> None:
    root = plugin_copy(tmp_path)
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/session-manager").symlink_to(Path(sys.executable).parent / "session-manager")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"]}
    result = launch(root, "--version", env=env, cwd=project)
    assert result.returncode == 0 and result.stdout.startswith("session-manager ")


def test_launcher_prefers_session_manager_bin(project: Path, tmp_path: Path) -> None:
    root = plugin_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"],
           "SESSION_MANAGER_BIN": str(Path(sys.executable).parent / "session-manager")}
    assert launch(root, "--version", env=env, cwd=project).returncode == 0


def test_launcher_without_an_install_or_python_keeps_hooks_harmless(project: Path, tmp_path: Path) -> None:
    root = plugin_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "SESSION_MANAGER_PYTHON": "/nonexistent/python3",
           "CLAUDE_PLUGIN_DATA": str(tmp_path / "data")}
    hook = launch(root, "hook", "stop", env=env, cwd=project, stdin="{}")
    message = json.loads(hook.stdout)["systemMessage"]
    assert hook.returncode == 0 and "not installed" in message and "python3" in message
    serve = launch(root, "serve", env=env, cwd=project)
    assert serve.returncode == 1 and "not installed" in serve.stderr and "python3" in serve.stderr


# -- Claude Code itself ------------------------------------------------------------------------------
@needs_claude
@pytest.mark.parametrize("manifest", [".", ".claude-plugin/plugin.json"])
def test_claude_plugin_validate_passes(manifest: str) -> None:
    result = subprocess.run([CLAUDE, "plugin", "validate", "--strict", str(REPO / manifest)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "DISABLE_AUTOUPDATER": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation passed" in result.stdout


@needs_claude
def test_claude_code_runs_the_slash_command_and_calls_every_tool(project: Path) -> None:
    """Claude Code, offline against a scripted fake model: the plugin's server connects, the
    command reaches the model with its arguments in place, and every tool works."""
    from fake_anthropic import NOT_READY, FakeAnthropic, tool_results

    sid = "{session_id}"
    script = [
        ("session_start", {"level": "prod", "number": 5, "topic": "CRISPR"}),
        ("session_status", {}),
        ("stage_start", {"session_id": sid}),
        ("stage_complete", {"session_id": sid, "stage": "01_deep_research", "quality": {"overall": 0.9},
                            "cost_usd": 0.25}),
        ("stage_start", {"session_id": sid}),
        ("record_failure", {"session_id": sid, "stage": "02_questions", "error": "quota", "retryable": False}),
        ("session_resume", {"session_id": sid}),
        ("session_update", {"session_id": sid, "add_tasks": ["check sources"], "learnings": ["retry later"]}),
        ("session_report", {"period": "week"}),
        ("backup_history", {"session_id": sid}),
        ("session_end", {"session_id": sid, "summary": "episode 5 researched", "close_open_stages": True}),
    ]
    with FakeAnthropic([(TOOL_PREFIX + name, arguments) for name, arguments in script]) as fake:
        result = run_claude(project, fake.url, "/session-manager:session-manager start prod 5 CRISPR")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"done after {len(script)} tool calls"
    first = next(r["body"] for r in fake.requests if r["body"].get("tools"))
    prompt = json.dumps(first["messages"])
    assert "<command-args>start prod 5 CRISPR</command-args>" in prompt
    assert "Carry out the session-manager command `start prod 5 CRISPR`" in prompt
    assert "The verb is `start`" in prompt
    # Claude Code connects MCP servers in the background: on a loaded machine the first request
    # may go out before the server is up, so look at every request, not just the first
    offered = {t["name"] for r in fake.requests for t in r["body"].get("tools") or []}
    assert {TOOL_PREFIX + name for name, _ in script} <= offered
    final = [r["body"] for r in fake.requests if r["body"].get("tools")][-1]
    results = [r for r in tool_results(final) if not any(s in json.dumps(r) for s in NOT_READY)]
    assert len(results) == len(script)
    assert not [r for r in results if r.get("is_error")], results
    (folder,) = (project / ".claude/level-2-production/sessions").iterdir()
    state = json.loads((folder / "pipeline_status.json").read_text())
    assert state["status"] == "completed" and state["summary"] == "episode 5 researched"
    assert state["recovery_count"] == 1
    assert len(state["claude_sessions"]) == 1  # the conversation that started it (CLAUDE_CODE_SESSION_ID)
    assert git(project, "rev-parse", "--verify", "session-backups").strip()


@needs_claude
def test_claude_code_session_start_hook_gives_the_model_the_active_session(project: Path) -> None:
    from fake_anthropic import FakeAnthropic, tool_results

    from session_manager.service import Service

    service = Service(project, actor="test")
    session_id = service.start(level="prod", number=7, topic="tides").state.session_id
    service.update(session_id=session_id, add_tasks=["find a tide table"])
    service.stage_start(session_id=session_id)
    with FakeAnthropic([(TOOL_PREFIX + "session_status", {})]) as fake:
        result = run_claude(project, fake.url, "/session-manager:session-manager status")
    assert result.returncode == 0, result.stderr
    first = next(r["body"] for r in fake.requests if r["body"].get("tools"))
    context = json.dumps(first["messages"])
    assert "SessionStart hook additional context" in context
    assert f"{session_id} (production, in_progress)" in context and "#1 find a tide table" in context
    final = [r["body"] for r in fake.requests if r["body"].get("tools")][-1]
    assert session_id in json.dumps(tool_results(final))
    state = service.show(session_id=session_id).state
    assert len(state.claude_sessions) == 1  # recorded by the SessionStart hook


def run_claude(project: Path, url: str, prompt: str, *, claude: str | None = None, plugin: Path = REPO,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`claude -p PROMPT` with this repository as a plugin, offline against the fake at `url`.
    No --allowedTools: the command's `allowed-tools` lets its tools run without a prompt."""
    base = env if env is not None else {**os.environ,
                                        "SESSION_MANAGER_BIN": str(Path(sys.executable).parent / "session-manager")}
    full = {**base, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-test-dummy",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
            # newer 2.1 versions defer MCP tools behind ToolSearch; the tests check the tools offered
            "ENABLE_TOOL_SEARCH": "false"}
    full.pop("CLAUDE_PROJECT_DIR", None)
    return subprocess.run([claude or CLAUDE or "claude", "-p", prompt, "--plugin-dir", str(plugin)], cwd=project,
                          env=full, capture_output=True, text=True, timeout=300)


# -- as people install and type it ---------------------------------------------------------------------
PINNED = "2.1.197"  # the version the issue was found on: Stop hooks in the background were killed at exit


@pytest.fixture(scope="session")
def pinned_claude() -> str:
    """Claude Code 2.1.197 in .ci/node-2.1.197 (installed with npm when missing; skipped when it cannot be)."""
    prefix = REPO / f".ci/node-{PINNED}"
    binary = prefix / "node_modules/.bin/claude"
    if not binary.exists() and shutil.which("npm"):
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"@anthropic-ai/claude-code@{PINNED}"], capture_output=True, timeout=600, check=False)
    if not binary.exists():
        pytest.skip(f"Claude Code {PINNED} is not installed in {prefix} and npm could not fetch it")
    return str(binary)


def wait_for_branch_file(project: Path, path: str, text: str, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shown = subprocess.run(["git", "show", f"session-backups:{path}"], cwd=project, capture_output=True,
                               text=True)
        if shown.returncode == 0 and text in shown.stdout:
            return True
        time.sleep(0.2)
    return False


@needs_claude
def test_the_short_command_runs_after_setup_with_no_permission_flags(project: Path) -> None:
    """Done when 1: `session-manager setup`, then the literal `/session-manager start prod 5`."""
    from conftest import run_cli
    from fake_anthropic import FakeAnthropic, tool_results

    assert run_cli(project, "setup").code == 0
    with FakeAnthropic([(TOOL_PREFIX + "session_start", {"level": "prod", "number": 5})]) as fake:
        result = run_claude(project, fake.url, "/session-manager start prod 5")
    assert result.returncode == 0, result.stderr
    assert "Unknown command" not in result.stdout
    prompt = json.dumps([r["body"].get("messages") for r in fake.requests])
    assert "Carry out the session-manager command `start prod 5`" in prompt
    final = [r["body"] for r in fake.requests if r["body"].get("tools")][-1]
    results = tool_results(final)
    assert results and not [r for r in results if r.get("is_error")], results
    (folder,) = (project / ".claude/level-2-production/sessions").iterdir()
    assert folder.name.startswith("ep_005_")


@needs_claude
@pytest.mark.parametrize("client", ["latest", PINNED])
def test_a_print_mode_change_reaches_the_backup_branch_after_claude_exits(project: Path, client: str,
                                                                           request: pytest.FixtureRequest) -> None:
    """Done when 2: a task added in `claude -p` is on session-backups within 20 s."""
    from fake_anthropic import FakeAnthropic

    from session_manager.service import Service

    binary = CLAUDE if client == "latest" else request.getfixturevalue("pinned_claude")
    session_id = Service(project, actor="test").start(level="dev", topic="autosave").state.session_id
    task = f"landed from print mode on {client}"
    script = [(TOOL_PREFIX + "session_update", {"session_id": session_id, "add_tasks": [task]})]
    with FakeAnthropic(script) as fake:
        result = run_claude(project, fake.url, f"/session-manager:session-manager task add {task}", claude=binary)
    assert result.returncode == 0, result.stderr
    path = f".claude/level-1-dev/sessions/{session_id}/pipeline_status.json"
    assert task in (project / path).read_text()  # the tool ran
    assert wait_for_branch_file(project, path, task, 20), "the autosave did not land within 20 s"


@needs_claude
def test_a_marketplace_copy_serves_its_tools_through_the_bootstrap(project: Path, tmp_path: Path) -> None:
    """Done when 3: no .venv, no program on PATH: the launcher builds its environment under
    CLAUDE_PLUGIN_DATA (from the dependencies of the python3 on PATH: offline) and the server comes up."""
    from fake_anthropic import NOT_READY, FakeAnthropic, tool_results

    copy = tmp_path / "marketplace/session-manager"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", ".ci", "*.whl", "__pycache__",
                                                              "*.egg-info", "tests", "bench"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # this venv's python
    (tmp_path / "bin/python3").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": os.environ["HOME"],
           "XDG_DATA_HOME": str(tmp_path / "xdg"), "MCP_TIMEOUT": "120000",
           **{k: v for k, v in os.environ.items() if k.startswith(("GIT_", "LANG", "TMP"))}}
    assert shutil.which("session-manager", path=env["PATH"]) is None
    with FakeAnthropic([(TOOL_PREFIX + "session_status", {})]) as fake:
        result = run_claude(project, fake.url, "/session-manager:session-manager status", plugin=copy, env=env)
    assert result.returncode == 0, result.stderr
    offered = {t["name"] for r in fake.requests for t in r["body"].get("tools") or []}
    assert TOOL_PREFIX + "session_status" in offered
    final = [r["body"] for r in fake.requests if r["body"].get("tools")][-1]
    results = [r for r in tool_results(final) if not any(s in json.dumps(r) for s in NOT_READY)]
    assert results and not [r for r in results if r.get("is_error")], results
    built = list(tmp_path.rglob("venv/.plugin-version"))
    assert built, "the launcher did not build its environment"
