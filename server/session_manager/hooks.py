"""Claude Code hooks: `session-manager hook EVENT`, with the JSON Claude Code sends on stdin.

* session-start: prints the active sessions' state (stage, progress, open tasks, blockers,
  alerts) as additional context for the assistant, and, when exactly one session is active,
  binds the Claude Code conversation to it from now (usage attributes its responses by that).
* stop, pre-compact, session-end: autosave (a backup commit when something changed).

A hook must never break a conversation: whatever goes wrong, it exits 0 and says so in one
line (`systemMessage`, shown to the user). In a folder with no `.claude/` it does nothing.
Only light modules are imported here (no mcp, no jinja), so a hook answers fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from session_manager.errors import InvalidInput, SessionError

MAX_SESSIONS = 5
MAX_ITEMS = 10
CLAUDE_SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
AUTOSAVE = {"stop": "stop", "precompact": "pre-compact", "sessionend": "session end"}
EVENTS = "session-start, stop, pre-compact, session-end"


def run(event: str, raw: str, out: TextIO = sys.stdout) -> int:
    """Handle one hook call; always returns 0."""
    name = re.sub(r"[-_\s]", "", event).lower()
    try:
        payload = _payload(raw)
        root = _project_root(payload)
        if root is None:
            return 0
        if name == "sessionstart":
            context = session_start(root, payload)
            if context:
                _emit(out, {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}})
        elif name in AUTOSAVE:
            autosave(root, AUTOSAVE[name])
        else:
            raise InvalidInput(f"unknown hook event {event!r}; use one of: {EVENTS}")
    except SessionError as exc:
        _emit(out, {"systemMessage": f"session-manager {event} hook: {exc}"})
    except Exception as exc:  # our fault: a short line for the user, the traceback in a log
        from session_manager.errorlog import log_internal_error

        try:
            where = f"; details in {log_internal_error(f'hook {name}')}"
        except OSError:
            where = ""
        _emit(out, {"systemMessage": f"session-manager {event} hook failed ({type(exc).__name__}: {exc}){where}"})
    return 0


def _emit(out: TextIO, message: dict[str, Any]) -> None:
    """One JSON line; every text in it is terminal-safe (Claude Code shows `systemMessage` in the
    terminal and the context to the model: no escape sequences or bidi marks reach either)."""
    from session_manager.textsafe import terminal_safe

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return terminal_safe(value)
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    out.write(json.dumps(clean(message)) + "\n")
    out.flush()


def _payload(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"stdin is not the JSON Claude Code sends ({exc.msg})") from None
    except ValueError as exc:
        raise InvalidInput(f"stdin is not the JSON Claude Code sends ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInput("stdin is not a JSON object")
    return data


def _project_root(payload: dict[str, Any]) -> Path | None:
    """The project holding `.claude/` (CLAUDE_PROJECT_DIR, else upwards from the hook's cwd);
    None when there is none: the hooks then have nothing to do."""
    from session_manager.store import find_root

    cwd = payload.get("cwd")
    start = Path(cwd) if isinstance(cwd, str) and cwd and Path(cwd).is_dir() else None
    if not os.environ.get("CLAUDE_PROJECT_DIR"):
        try:
            root = find_root(start)
        except InvalidInput:  # the home folder: its .claude/ is Claude Code's, not a project
            return None
    else:
        root = find_root(start)  # a CLAUDE_PROJECT_DIR that does not exist is said, in one line
    return root if (root / ".claude").is_dir() else None


def session_start(root: Path, payload: dict[str, Any]) -> str:
    from session_manager.service import Service

    service = Service(root, actor="hook")
    active = service.list_sessions(status="active").sessions
    if not active:
        return ""
    claude_session = payload.get("session_id")
    # a conversation is bound by the hook only when it cannot be mistaken: exactly one active session
    if isinstance(claude_session, str) and CLAUDE_SESSION_PATTERN.match(claude_session) and len(active) == 1:
        service.attach_claude_session(active[0].session_id, claude_session)
    lines = [f"session-manager: {len(active)} active session(s). Record progress with the sessions MCP tools"
             " (stage_start, stage_complete, record_failure, session_update, session_end)."]
    for summary in active[:MAX_SESSIONS]:
        lines += describe(service.show(session_id=summary.session_id))
    if len(active) > MAX_SESSIONS:
        lines.append(f"... and {len(active) - MAX_SESSIONS} more (session_status lists them all)")
    return "\n".join(lines)


def describe(detail: Any) -> list[str]:
    """A few compact lines about one session (`detail` is a `SessionDetail`)."""
    state, meta = detail.state, detail.metadata
    done = len(state.stages) - len(state.stages_remaining)  # completed, bypassed or skipped, as `status` counts
    head = f"- {state.session_id} ({state.level}, {state.status})"
    if meta.topic:
        head += f" \"{meta.topic}\""
    if state.current_stage:
        stage = state.stages.get(state.current_stage)
        head += f"; stage {state.current_stage}" + (f" ({stage.status})" if stage else "")
    head += f"; {state.progress.percent:.0f}% ({done}/{len(state.stages)} stages)"
    head += f"; cost ${state.cost_tracking.total_cost:.2f}"
    if state.budget.usd:
        head += f" of ${state.budget.usd:.2f}"
    lines = [head]
    for label, items in (("open tasks", [f"#{t.id} {t.title}" for t in state.progress.tasks_pending]),
                         ("blockers", [f"#{b.id} {b.text}" for b in state.progress.blockers]),
                         ("alerts", [f"{a.severity} {a.kind}: {a.message}" for a in state.alerts])):
        if items:
            more = f"; +{len(items) - MAX_ITEMS} more" if len(items) > MAX_ITEMS else ""
            lines.append(f"  {label}: " + "; ".join(item[:120] for item in items[:MAX_ITEMS]) + more)
    return lines


def autosave(root: Path, reason: str) -> None:
    """A backup commit of the session files when something changed since the last one."""
    if not any((root / ".claude").glob("level-*/sessions")):
        return  # no session was ever started here: nothing to save
    from session_manager.service import Service

    Service(root, actor="hook").backup_now(reason=reason)


def main(event: str | None) -> int:
    """Read stdin and run the hook; the event defaults to the payload's `hook_event_name`."""
    try:
        raw = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        _emit(sys.stdout, {"systemMessage": f"session-manager hook: cannot read stdin ({exc})"})
        return 0
    if not event:
        try:
            event = str(json.loads(raw).get("hook_event_name") or "")
        except (ValueError, AttributeError):
            event = ""
    return run(event or "(none)", raw, sys.stdout)
