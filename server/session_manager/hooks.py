"""Claude Code hooks: `session-manager hook EVENT`, with the JSON Claude Code sends on stdin.

| event | what it does | time |
|---|---|---|
| session-start | the active sessions as context (the conversation's own session first, under 10,000 characters); binds the conversation when exactly one session is active | stdlib only (`quickstart`: the index and raw JSON); the `Service` when unsure or when a binding must be written |
| user-prompt-submit | one line of context when the conversation's session is at 80% of its budget | stdlib only |
| pre-tool-use | with `[alerts] enforce_budget = true`: denies a tool call once the session has spent its budget (reading tools and session-manager's own stay allowed) | stdlib only |
| stop, pre-compact, session-end | autosave: nothing when nothing changed since the last backup, else the backup in a detached process; returns at once | stdlib only |
| task-created, task-completed | mirror Claude Code's task list into the bound session's tasks | the `Service` |

A hook must never break a conversation: whatever goes wrong, it exits 0 and says so in one
line (`systemMessage`, shown to the user). In a folder with no `.claude/` it does nothing. The
fast events import only the standard library (`quickhooks`); pydantic and our model load only
for the events that need the `Service`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from session_manager import quickhooks, quickstart
from session_manager.errors import InvalidInput, SessionError
from session_manager.quickstart import CLAUDE_SESSION_PATTERN, MAX_CONTEXT, MAX_ITEMS  # noqa: F401 - shared


AUTOSAVE = {"stop": "stop", "precompact": "pre-compact", "sessionend": "session end"}
EVENTS = ("session-start, user-prompt-submit, pre-tool-use, stop, pre-compact, session-end, task-created,"
          " task-completed")


def run(event: str, raw: str, out: TextIO = sys.stdout) -> int:
    """Handle one hook call; always returns 0."""
    name = re.sub(r"[-_\s]", "", event).lower()
    try:
        try:
            payload = quickhooks.payload_of(raw)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if name not in AUTOSAVE and name not in ("sessionstart", "pretooluse", "userpromptsubmit", "taskcreated",
                                                  "taskcompleted"):
            raise InvalidInput(f"unknown hook event {event!r}; use one of: {EVENTS}")
        root = quickhooks.project_root(payload)
        if root is None:
            return 0
        if name in AUTOSAVE:
            failed = quickhooks.autosave(root, AUTOSAVE[name])
            if failed:
                _emit(out, {"systemMessage": failed})
        elif name == "pretooluse":
            decision = quickhooks.pre_tool_use(root, payload)
            if decision:
                _emit(out, decision)
        elif name == "userpromptsubmit":
            warning = quickhooks.budget_warning(root, payload)
            if warning:
                _emit(out, {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": warning}})
        elif name == "sessionstart":
            binds: list[tuple[str, str]] = []
            try:
                context = quickstart.context(root, payload, binds)
            except Exception:  # noqa: BLE001 - whatever surprised it, the full path answers (and says why)
                context = None
            if context is None:  # not sure: the full path (never a different answer, only slower)
                context = session_start(root, payload)
            else:  # the binding the full path would write, by a detached process from this moment on
                for session_id, conversation in binds:
                    quickhooks.spawn_detached(root, "bind", session_id, conversation, str(int(time.time())))
            message = quickhooks.take_failure(root)
            answer: dict[str, Any] = {}
            if context:
                answer["hookSpecificOutput"] = {"hookEventName": "SessionStart", "additionalContext": context}
            if message:
                answer["systemMessage"] = message
            if answer:
                _emit(out, answer)
        else:
            mirror_task(root, payload, completed=name == "taskcompleted")
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


# -- SessionStart ----------------------------------------------------------------------------------
def session_start(root: Path, payload: dict[str, Any]) -> str:
    """The context, through the `Service` (the full path; `quickstart.context` gives the same
    text without it when it can): the conversation's own session first, then the others most
    recently changed first; per session its stage and progress, blockers, alerts, then open
    tasks; cut at MAX_CONTEXT characters at a line, saying how much was left out."""
    from session_manager.service import Service

    service = Service(root, actor="hook")
    details = service.status(session_id=None).sessions
    quickstart.config_validated(service.store.claude_dir)  # the next hook may trust these config bytes
    if not details:
        return ""
    claude_session = payload.get("session_id")
    valid = isinstance(claude_session, str) and bool(CLAUDE_SESSION_PATTERN.match(claude_session))
    # a conversation is bound by the hook only when it cannot be mistaken: exactly one active session
    if valid and len(details) == 1:
        service.attach_claude_session(details[0].state.session_id, str(claude_session))
    bound = quickhooks.bound_session(root, claude_session) if valid else None
    return quickstart.compose([brief(detail) for detail in details], bound[0] if bound else None)


def brief(detail: Any) -> quickstart.Brief:
    """What the context says about one session (`detail` is a `SessionDetail`)."""
    state, meta = detail.state, detail.metadata
    stage = state.stages.get(state.current_stage) if state.current_stage else None
    return quickstart.Brief(
        session_id=state.session_id, level=str(state.level), status=str(state.status), topic=meta.topic,
        stage=state.current_stage, stage_status=str(stage.status) if stage is not None else None,
        percent=state.progress.percent, done=len(state.stages) - len(state.stages_remaining),
        total=len(state.stages), cost=state.cost_tracking.total_cost, budget=state.budget.usd,
        blockers=[f"#{b.id} {b.text}" for b in state.progress.blockers],
        alerts=[f"{a.severity} {a.kind}: {a.message}" for a in state.alerts],
        tasks=[f"#{t.id} {t.title}" for t in state.progress.tasks_pending],
        updated=state.last_updated.timestamp())


def describe(detail: Any) -> list[str]:
    """A few compact lines about one session (`detail` is a `SessionDetail`), the most important first."""
    return quickstart.describe(brief(detail))


# -- TaskCreated / TaskCompleted ---------------------------------------------------------------------
def mirror_task(root: Path, payload: dict[str, Any], completed: bool) -> None:
    """Claude Code's own task list, mirrored into the tasks of the session bound to the
    conversation (by the task's subject): a created task is added once; a completed one is
    completed (added first when it was created before the binding). Unbound: nothing."""
    subject = payload.get("task_subject")
    if not isinstance(subject, str) or not subject.strip():
        return
    title = " ".join(subject.split())[:500]
    found = quickhooks.bound_session(root, payload.get("session_id"))
    if found is None or found[1].get("status") not in quickhooks.ACTIVE:
        return
    session_id, state = found
    progress = state.get("progress") or {}
    pending = {str(t.get("title")) for t in progress.get("tasks_pending", []) if isinstance(t, dict)}
    done = {str(t.get("title")) for t in progress.get("tasks_completed", []) if isinstance(t, dict)}
    from session_manager.service import Service

    service = Service(root, actor="hook")
    if title not in pending and (not completed or title not in done):
        service.update(session_id=session_id, add_tasks=[title])
    if completed and (title in pending or title not in done):
        service.update(session_id=session_id, complete_tasks=[title])


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
