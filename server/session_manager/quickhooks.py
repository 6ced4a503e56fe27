"""The hot paths of the Claude Code integration, in the standard library only.

Claude Code runs the Stop hook after every reply, PreToolUse before every tool call,
UserPromptSubmit at every prompt and the statusline every few hundred milliseconds: these must
not pay for pydantic or our model (about 130 ms of imports). Everything here reads the files
on disk directly, as JSON, and only the rare slow cases (a backup to take, tasks to mirror, the
SessionStart context) go to the `Service`:

* the project root, found the way `store.find_root` finds it (without refusing: no project, no hook);
* the autosave fingerprint: the modification times of what the backup covers. When it equals
  the one stamped after the last backup, nothing changed and the Stop hook is done; otherwise
  the backup is handed to a detached process (`autosave.py`) in its own session, which outlives
  Claude Code, and the hook returns at once;
* the session bound to a conversation (`.claude/usage/bindings.jsonl`, else the recently changed
  sessions that recorded it), its cost against its budget: the budget guard and the 80% warning;
* the config keys these need (`[alerts] enforce_budget`, `cost_ratio`), read with tomllib.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PRIVATE = ".session-manager"
STAMP = "autosave.json"
FAILURE = "autosave-failed.txt"
ACTIVE = ("initialized", "in_progress", "failed")
RECENT_SESSIONS = 40  # sessions looked at, newest first, when a conversation has no binding
SESSION_TOOLS = ("mcp__plugin_session-manager_sessions__", "mcp__sessions__")
# tools the budget guard leaves allowed: they read, and the session's own tools (to end it or look at it)
READ_TOOLS = frozenset({"Read", "Glob", "Grep", "LS", "NotebookRead", "TaskList", "TaskGet"})


# -- input ----------------------------------------------------------------------------------------
def payload_of(raw: str) -> dict[str, Any]:
    """The hook's JSON; {} when empty. ValueError (with a message for the user) when not an object."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"stdin is not the JSON Claude Code sends ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise ValueError("stdin is not a JSON object")
    return data


def project_root(payload: dict[str, Any]) -> Path | None:
    """The project holding `.claude/`: CLAUDE_PROJECT_DIR, else upwards from the payload's cwd
    (or the workspace folder of a statusline payload). None when there is none."""
    env = os.environ.get("CLAUDE_PROJECT_DIR")
    if env:
        root = Path(env).expanduser()
        return root.resolve() if (root / ".claude").is_dir() else None
    start = None
    workspace = payload.get("workspace")
    for candidate in (payload.get("cwd"), workspace.get("project_dir") if isinstance(workspace, dict) else None,
                      workspace.get("current_dir") if isinstance(workspace, dict) else None):
        if isinstance(candidate, str) and candidate and os.path.isdir(candidate):
            start = Path(candidate).resolve()
            break
    if start is None:
        try:
            start = Path.cwd().resolve()
        except OSError:
            return None
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        home = None
    for folder in (start, *start.parents):
        if folder == home:
            return folder if (folder / ".git").exists() and (folder / ".claude").is_dir() else None
        if (folder / ".claude").is_dir():
            return folder
        if (folder / ".git").exists():
            return None  # a repository without sessions: nothing to do
    return None


# -- the autosave fingerprint --------------------------------------------------------------------
def fingerprint(root: Path) -> str:
    """What the backup covers, as modification times: every session folder (a state write is an
    atomic rename inside it), the level folders, and the shared files (config, memory, templates,
    usage ledger). Stats only, no reads: about 1 us per session."""
    claude = root / ".claude"
    newest = 0
    count = 0
    try:
        levels = [entry for entry in os.scandir(claude) if entry.name.startswith("level-") and entry.is_dir()]
    except OSError:
        return ""
    extra = [claude / "session-manager.toml", claude / "memory", claude / "templates", claude / "usage"]
    for level in levels:
        sessions = Path(level.path) / "sessions"
        extra.append(sessions)
        try:
            with os.scandir(sessions) as entries:
                for entry in entries:
                    try:
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                    except OSError:
                        continue
                    count += 1
        except OSError:
            continue
    for path in extra:
        try:
            newest = max(newest, path.stat().st_mtime_ns)
            if path.is_dir() and path.name in ("usage", "memory", "templates"):
                for entry in os.scandir(path):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
        except OSError:
            continue
    return f"{count}:{newest}" if count else ""


def stamp_path(root: Path) -> Path:
    return root / ".claude" / PRIVATE / STAMP


def unchanged_since_backup(root: Path, mark: str) -> bool:
    try:
        return bool(mark) and json.loads(stamp_path(root).read_text()).get("fingerprint") == mark
    except (OSError, ValueError, AttributeError):
        return False


def write_stamp(root: Path, mark: str) -> None:
    path = stamp_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{STAMP}.{os.getpid()}")
    temporary.write_text(json.dumps({"fingerprint": mark, "at": time.time()}))
    os.replace(temporary, path)


def spawn_autosave(root: Path, reason: str, mark: str) -> None:
    """Hand the backup to a detached process (see `spawn_detached`)."""
    spawn_detached(root, "backup", reason, mark)


def spawn_detached(root: Path, job: str, *args: str) -> None:
    """Hand a job of `session_manager.autosave` (a backup, a binding) to a detached process in its
    own session (it outlives Claude Code, which kills its hooks' process group when it exits) and
    return at once."""
    import subprocess

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}
    env.pop("CLAUDE_PROJECT_DIR", None)  # the worker is given the root explicitly
    subprocess.Popen([sys.executable, "-m", "session_manager.autosave", job, str(root), *args],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     cwd=str(root), env=env, start_new_session=True, close_fds=True)


def take_failure(root: Path) -> str | None:
    """The last detached autosave's failure (one line), said once."""
    path = root / ".claude" / PRIVATE / FAILURE
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        path.unlink()
    except OSError:
        return None
    return text.splitlines()[0][:300] if text else None


def autosave(root: Path, reason: str) -> str | None:
    """The Stop/PreCompact/SessionEnd hook: nothing when nothing changed since the last backup,
    else a detached backup. Returns a message for the user when the previous autosave failed."""
    mark = fingerprint(root)
    if mark and not unchanged_since_backup(root, mark):
        spawn_autosave(root, reason, mark)
    return take_failure(root)


# -- the session bound to a conversation ---------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def session_folder(root: Path, session_id: str) -> Path | None:
    if not session_id or "/" in session_id or session_id.startswith("."):
        return None
    for level in (root / ".claude").glob("level-*"):
        folder = level / "sessions" / session_id
        if folder.is_dir():
            return folder
    return None


def state_of(root: Path, session_id: str) -> dict[str, Any] | None:
    folder = session_folder(root, session_id)
    return read_json(folder / "pipeline_status.json") if folder else None


def recent_sessions(root: Path, limit: int = RECENT_SESSIONS) -> list[Path]:
    """Session folders, the most recently changed first (at most `limit`)."""
    found: list[tuple[int, Path]] = []
    for level in (root / ".claude").glob("level-*/sessions"):
        try:
            with os.scandir(level) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        found.append((entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path)))
        except OSError:
            continue
    found.sort(reverse=True)
    return [path for _, path in found[:limit]]


def bound_session(root: Path, conversation: object) -> tuple[str, dict[str, Any]] | None:
    """The session the conversation is bound to now, with its state: the newest binding in the
    bookings' bindings file, else an active session (most recently changed first) that recorded
    the conversation when it was started. None when unbound."""
    return bound_by_file(root, conversation) or recorded_by_recent(root, conversation)


def bound_by_file(root: Path, conversation: object) -> tuple[str, dict[str, Any]] | None:
    """The newest binding of the conversation in force now (`.claude/usage/bindings.jsonl`),
    with the session's state; None when there is none or the session cannot be read."""
    if not isinstance(conversation, str) or not conversation:
        return None
    bound: tuple[str, str] | None = None
    try:
        lines = (root / ".claude" / "usage" / "bindings.jsonl").read_bytes().splitlines()
    except OSError:
        lines = []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("conversation") == conversation:
            since = str(record.get("from", ""))
            if since <= now and (bound is None or since >= bound[0]):
                bound = (since, str(record.get("session", "")))
    if bound is not None:
        state = state_of(root, bound[1])
        if state is not None:
            return bound[1], state
    return None


def recorded_by_recent(root: Path, conversation: object) -> tuple[str, dict[str, Any]] | None:
    """An active session among the recently changed ones (most recent first) that recorded the
    conversation (`claude_sessions`). Stats every session folder: callers that know, from the
    index, that no active session recorded it skip this (see quickstart)."""
    if not isinstance(conversation, str) or not conversation:
        return None
    for folder in recent_sessions(root):
        state = read_json(folder / "pipeline_status.json")
        if state and state.get("status") in ACTIVE and conversation in (state.get("claude_sessions") or []):
            return folder.name, state
    return None


def active_sessions(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Active sessions among the recently changed ones, most recent first."""
    out = []
    for folder in recent_sessions(root):
        state = read_json(folder / "pipeline_status.json")
        if state and state.get("status") in ACTIVE:
            out.append((folder.name, state))
    return out


# -- config and budget ---------------------------------------------------------------------------
def alerts_config(root: Path) -> dict[str, Any]:
    """`[alerts]` of `.claude/session-manager.toml` ({} when absent or unreadable: the full
    config check happens on every other command)."""
    path = root / ".claude" / "session-manager.toml"
    if not path.is_file():
        return {}
    import tomllib

    try:
        alerts = tomllib.loads(path.read_text(encoding="utf-8")).get("alerts", {})
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return alerts if isinstance(alerts, dict) else {}


def spending(state: dict[str, Any]) -> tuple[float, float | None]:
    """(cost so far, budget or None)."""
    cost = state.get("cost_tracking", {}).get("total_cost", 0.0) if isinstance(state.get("cost_tracking"), dict) else 0
    budget = state.get("budget", {}).get("usd") if isinstance(state.get("budget"), dict) else None
    cost = float(cost) if isinstance(cost, (int, float)) else 0.0
    return cost, float(budget) if isinstance(budget, (int, float)) and budget > 0 else None


def pre_tool_use(root: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Deny a tool call when `[alerts] enforce_budget = true` and the conversation's session has
    spent its budget; reading tools and session-manager's own tools stay allowed. None: no
    opinion (Claude Code's own permission rules decide; we never answer "allow")."""
    tool = str(payload.get("tool_name") or "")
    if tool in READ_TOOLS or tool.startswith(SESSION_TOOLS):
        return None
    alerts = alerts_config(root)
    if alerts.get("enforce_budget") is not True:
        return None
    found = bound_session(root, payload.get("session_id"))
    if found is None or found[1].get("status") not in ACTIVE:
        return None
    session_id, state = found
    cost, budget = spending(state)
    if budget is None or cost < budget:
        return None
    reason = (f"session-manager budget guard: {session_id} has spent ${cost:.2f} of its ${budget:.2f} budget;"
              f" {tool or 'this tool'} is blocked (reading stays allowed). End the session, or start one with a"
              " larger --budget, or set enforce_budget = false in .claude/session-manager.toml")
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                   "permissionDecisionReason": reason}}


def budget_warning(root: Path, payload: dict[str, Any]) -> str | None:
    """One line for the context when the conversation's session is at 80% (alerts.cost_ratio) of its budget."""
    found = bound_session(root, payload.get("session_id"))
    if found is None or found[1].get("status") not in ACTIVE:
        return None
    session_id, state = found
    cost, budget = spending(state)
    if budget is None:
        return None
    alerts = alerts_config(root)
    ratio = alerts.get("cost_ratio", 0.8)
    ratio = float(ratio) if isinstance(ratio, (int, float)) and 0 < ratio <= 1 else 0.8
    if cost < ratio * budget:
        return None
    enforced = alerts.get("enforce_budget") is True
    if cost >= budget:
        then = "tools other than reading are now blocked" if enforced else "work on; nothing is blocked"
        return f"session-manager: {session_id} has spent ${cost:.2f}, its whole ${budget:.2f} budget; {then}."
    then = "; at 100% tools other than reading will be blocked" if enforced else ""
    return (f"session-manager: {session_id} has spent ${cost:.2f} of its ${budget:.2f} budget"
            f" ({cost / budget:.0%}){then}. Keep the rest of the work lean.")
