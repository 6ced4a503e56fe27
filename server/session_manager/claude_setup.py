"""`session-manager setup`: make `/session-manager ...` work in Claude Code, idempotently.

Claude Code namespaces a plugin's commands (`/session-manager:session-manager`); the short
`/session-manager` needs a project (or user) command file. `setup` writes it, with
`allowed-tools` naming the session tools, so they run without a permission prompt:

* `setup`: `<project>/.claude/commands/session-manager.md`;
* `setup --user`: `~/.claude/commands/session-manager.md` (every project);
* `setup --standalone`: without the plugin, also the MCP server (`.mcp.json`, server `sessions`)
  and the hooks (`.claude/settings.json`); never a second server when the plugin is enabled;
* `setup --statusline`: the status line (`statusLine` in the settings; plugins cannot ship it).

Each file is rewritten only when its content would change; a settings file keeps every key it
had (only ours are set). It prints what it wrote and how to undo it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from session_manager.errors import InvalidInput

PLUGIN_ID = "session-manager@session-manager"
SERVER = "sessions"
HOOK_EVENTS = {  # Claude Code event -> (our hook name, matcher or None, timeout in seconds)
    "SessionStart": ("session-start", None, 15),
    "UserPromptSubmit": ("user-prompt-submit", None, 5),
    "PreToolUse": ("pre-tool-use", "*", 5),
    "Stop": ("stop", None, 10),
    "PreCompact": ("pre-compact", None, 10),
    "SessionEnd": ("session-end", None, 5),
    "TaskCreated": ("task-created", None, 15),
    "TaskCompleted": ("task-completed", None, 15),
}


@dataclass
class Outcome:
    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    undo: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {item}" for item in self.wrote] + [f"up to date: {item}" for item in self.kept]
        out += self.notes
        if self.undo:
            out += ["to undo:"] + [f"  {step}" for step in self.undo]
        return out


def claude_home() -> Path:
    configured = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".claude"


def program() -> str:
    """How Claude Code should run us: `session-manager` when it is on PATH, else this program's path."""
    found = shutil.which("session-manager")
    if found:
        return "session-manager"
    script = Path(sys.executable).parent / "session-manager"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m session_manager"


def write_text(path: Path, text: str, outcome: Outcome, shown: str) -> bool:
    """Write `text` unless the file already holds it; True when written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            outcome.kept.append(shown)
            return False
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {shown}: {exc}") from None
    from session_manager.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, durable=False)
    outcome.wrote.append(shown)
    return True


def read_settings(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{shown} is not valid JSON ({exc}); fix it, then run setup again") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{shown} is not a JSON object; fix it, then run setup again")
    return data


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def plugin_enabled(settings_files: list[Path]) -> bool:
    for path in settings_files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        plugins = data.get("enabledPlugins") if isinstance(data, dict) else None
        if isinstance(plugins, dict) and any(k.split("@")[0] == "session-manager" and v for k, v in plugins.items()):
            return True
    return False


def command_file(base: Path, outcome: Outcome, shown: str) -> None:
    from session_manager.reference import PLUGIN_SERVER, PROJECT_SERVER, slash_command

    path = base / "commands" / "session-manager.md"
    write_text(path, slash_command((PLUGIN_SERVER, PROJECT_SERVER)), outcome, shown)
    outcome.undo.append(f"rm {shlex.quote(str(path))}")


def standalone(root: Path, outcome: Outcome) -> None:
    """The MCP server in `.mcp.json` and the hooks in `.claude/settings.json`, for Claude Code
    without the plugin."""
    settings_path = root / ".claude" / "settings.json"
    local = root / ".claude" / "settings.local.json"
    if plugin_enabled([settings_path, local, claude_home() / "settings.json"]):
        outcome.notes.append("the session-manager plugin is enabled: it already runs the server and the hooks;"
                             " nothing else registered (disable the plugin first to go standalone)")
        return
    run = program()
    mcp_path = root / ".mcp.json"
    mcp = read_settings(mcp_path, ".mcp.json")
    servers = mcp.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InvalidInput(".mcp.json: mcpServers is not an object; fix it, then run setup again")
    words = shlex.split(run)
    servers[SERVER] = {"command": words[0], "args": [*words[1:], "serve"]}
    write_text(mcp_path, dump(mcp), outcome, ".mcp.json (MCP server `sessions`)")
    settings = read_settings(settings_path, ".claude/settings.json")
    enabled = settings.setdefault("enabledMcpjsonServers", [])
    if isinstance(enabled, list) and SERVER not in enabled:
        enabled.append(SERVER)
    permissions = settings.setdefault("permissions", {})
    allow = permissions.setdefault("allow", []) if isinstance(permissions, dict) else None
    if isinstance(allow, list) and "mcp__sessions" not in allow:
        allow.append("mcp__sessions")
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise InvalidInput(".claude/settings.json: hooks is not an object; fix it, then run setup again")
    for event, (name, matcher, timeout) in HOOK_EVENTS.items():
        command = f"{run} hook {name}"
        groups = [g for g in hooks.get(event, []) if isinstance(g, dict)
                  and not any(_ours(h) for h in g.get("hooks", []) if isinstance(h, dict))]
        group: dict[str, Any] = {"hooks": [{"type": "command", "command": command, "timeout": timeout}]}
        if matcher:
            group = {"matcher": matcher, **group}
        hooks[event] = [*groups, group]
    write_text(settings_path, dump(settings), outcome, ".claude/settings.json (hooks, server enabled and allowed)")
    outcome.undo.append("remove `sessions` from .mcp.json, and the `session-manager hook` entries, `sessions` in"
                        " enabledMcpjsonServers and `mcp__sessions` in permissions.allow from .claude/settings.json")


def _ours(hook: dict[str, Any]) -> bool:
    return " hook " in str(hook.get("command", "")) and "session-manager" in str(hook.get("command", "")) \
        or "session_manager hook" in str(hook.get("command", ""))


def statusline(settings_path: Path, shown: str, outcome: Outcome) -> None:
    settings = read_settings(settings_path, shown)
    command = f"{program()} statusline"
    current = settings.get("statusLine")
    theirs = str(current.get("command", "")) if isinstance(current, dict) else ""
    if theirs and not ("session-manager" in theirs or "session_manager" in theirs):
        outcome.notes.append(f"kept your own statusLine in {shown} ({theirs}); to use ours,"
                             f" set its command to `{command}`")
        return
    settings["statusLine"] = {"type": "command", "command": command, "padding": 0}
    write_text(settings_path, dump(settings), outcome, f"{shown} (statusLine)")
    outcome.undo.append(f"remove statusLine from {shown}")


def setup(root: Path | None, user: bool, with_standalone: bool, with_statusline: bool) -> Outcome:
    outcome = Outcome()
    if user:
        if with_standalone:
            raise InvalidInput("--standalone registers a project's server and hooks: run it in the project, without"
                               " --user")
        home = claude_home()
        command_file(home, outcome, f"{home}/commands/session-manager.md (the /session-manager command)")
        if with_statusline:
            statusline(home / "settings.json", f"{home}/settings.json", outcome)
        return outcome
    if root is None:
        from session_manager.store import find_root

        root = find_root()
    command_file(root / ".claude", outcome, ".claude/commands/session-manager.md (the /session-manager command)")
    if with_standalone:
        standalone(root, outcome)
    if with_statusline:
        statusline(root / ".claude" / "settings.json", ".claude/settings.json", outcome)
    return outcome
