"""`session-manager statusline`: one line for Claude Code's status line (stdlib only, never fails).

Claude Code pipes its statusline JSON on stdin (workspace, session_id, cost, context window)
every few hundred milliseconds. The line shows the session this conversation works on (else
the active session changed last): id, stage and progress, cost against budget, the time left
by this project's own stage durations, the worst alert; then the conversation's context use.
Outside a project, or when anything goes wrong, a short placeholder.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from session_manager import quickhooks

PLACEHOLDER = "sessions: -"
DEFAULT_STAGE_MINUTES = 15.0


def line(payload: dict[str, Any]) -> str:
    root = quickhooks.project_root(payload)
    if root is None:
        return PLACEHOLDER
    found = quickhooks.bound_session(root, payload.get("session_id"))
    if found is None or found[1].get("status") not in quickhooks.ACTIVE:
        active = quickhooks.active_sessions(root)
        found = active[0] if active else None
        others = len(active) - 1 if active else 0
    else:
        others = 0
    parts: list[str] = []
    if found is None:
        parts.append("no active session")
    else:
        parts += describe(root, *found)
        if others > 0:
            parts.append(f"+{others} active")
    context = context_use(payload)
    if context:
        parts.append(context)
    return " | ".join(parts)


def describe(root: Path, session_id: str, state: dict[str, Any]) -> list[str]:
    stages = state.get("stages")
    stages = stages if isinstance(stages, dict) else {}
    remaining = [s for s in state.get("stages_remaining") or [] if isinstance(s, str)]
    total = len(stages) or 1
    stage = state.get("current_stage")
    head = session_id
    if isinstance(stage, str):
        head += f" {stage}"
    head += f" {(total - len(remaining)) * 100 // total}%"
    parts = [head]
    cost, budget = quickhooks.spending(state)
    parts.append(f"${cost:.2f}" + (f"/${budget:.2f}" if budget else ""))
    left = minutes_left(root, str(state.get("level", "")), remaining)
    if left is not None and remaining:
        parts.append(f"~{left // 60}h{left % 60:02d}m left" if left >= 60 else f"~{left}m left")
    alerts = [a for a in state.get("alerts") or [] if isinstance(a, dict)]
    if alerts:
        worst = max(alerts, key=lambda a: a.get("severity") == "critical")
        mark = "!!" if worst.get("severity") == "critical" else "!"
        parts.append(f"{mark} {worst.get('kind', 'alert')}")
    return parts


def minutes_left(root: Path, level: str, remaining: list[str]) -> int | None:
    """Minutes for the stages left: the median of this project's own durations per stage
    (the duration history the service keeps), else 15 minutes a stage."""
    history = quickhooks.read_json(root / ".claude" / quickhooks.PRIVATE / "durations.json") or {}
    seconds = 0.0
    for stage in remaining:
        samples = history.get(f"{level}/{stage}")
        numbers = [v for v in samples if isinstance(v, (int, float))] if isinstance(samples, list) else []
        seconds += statistics.median(numbers) if numbers else DEFAULT_STAGE_MINUTES * 60
    return round(seconds / 60)


def context_use(payload: dict[str, Any]) -> str | None:
    window = payload.get("context_window")
    if isinstance(window, dict):
        used = window.get("used_percentage")
        if isinstance(used, (int, float)):
            return f"ctx {used:.0f}%"
    return None


def main() -> int:
    """Print the line; exit 0 whatever happens."""
    try:
        raw = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        payload = quickhooks.payload_of(raw)
        text = line(payload)
    except Exception:  # a status line must never fail or print a traceback
        text = PLACEHOLDER
    from session_manager.textsafe import terminal_safe

    sys.stdout.write(terminal_safe(" ".join(text.split())) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
