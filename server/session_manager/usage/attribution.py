"""The attribution rule: which session (and stage) owns a response.

A conversation (a Claude Code session id) is bound to a session from a point in time:
* started in it: `start --claude-session ID` records it in `claude_sessions` (from the
  session's start);
* resumed into it by an explicit call (`usage bind`), from the time given (default: now);
* by the SessionStart hook, only when exactly one session is active, from the hook's time.

A response belongs to the session its conversation was bound to at the response's time (the
latest binding at or before it), provided the response lies inside that session's start..end;
otherwise it is unattributed. Within the session it goes to the stage that was in progress at
its time (none: the session's "(no stage)"). A response already booked keeps its owner.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from typing import Any

from session_manager.model import SessionState, StageStatus
from session_manager.usage.bookings import Binding

OPEN_STAGE = (StageStatus.in_progress, StageStatus.retrying)


class Attribution:
    """Bindings of every conversation, in time order, with the sessions' windows."""

    def __init__(self, bindings: list[Binding], summaries: list[dict[str, Any]]) -> None:
        self.windows: dict[str, tuple[float, float | None]] = {
            s["id"]: (s["started"], s.get("ended") or s.get("completed")) for s in summaries}
        explicit = {(b.conversation, b.session) for b in bindings}
        chains: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for binding in bindings:
            if binding.session in self.windows:
                chains[binding.conversation].append((binding.since, binding.session))
        for s in summaries:  # recorded at start (or before bindings were kept): from the session's start
            for conversation in s.get("claude_sessions", []):
                if (conversation, s["id"]) not in explicit:
                    chains[conversation].append((s["started"], s["id"]))
        self.chains = {conversation: sorted(set(chain)) for conversation, chain in chains.items()}
        self.sinces = {conversation: [since for since, _s in chain] for conversation, chain in self.chains.items()}

    def owner(self, conversation: str, epoch: float) -> str | None:
        """The session a response of `conversation` at `epoch` belongs to, or None."""
        chain = self.chains.get(conversation)
        if not chain:
            return None
        index = bisect_right(self.sinces[conversation], epoch) - 1
        if index < 0:
            return None
        session = chain[index][1]
        start, end = self.windows[session]
        return session if start <= epoch and (end is None or epoch <= end) else None

    def conversations_of(self, session: str) -> list[str]:
        return sorted(c for c, chain in self.chains.items() if any(s == session for _t, s in chain))

    def sessions_of(self, conversation: str) -> list[str]:
        return sorted({s for _t, s in self.chains.get(conversation, [])})


def stage_at(state: SessionState, epoch: float) -> str | None:
    """The stage that was in progress at `epoch` (the latest started, if attempts overlap)."""
    best: tuple[float, str] | None = None
    for name, stage in state.stages.items():
        if stage.started_at is None:
            continue
        start = stage.started_at.timestamp()
        end = None if stage.status in OPEN_STAGE else (stage.completed_at.timestamp() if stage.completed_at else None)
        if stage.status == StageStatus.pending:
            continue
        if start <= epoch and (end is None or epoch < end) and (best is None or start > best[0]):
            best = (start, name)
    return best[1] if best else None
