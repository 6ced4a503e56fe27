"""Real usage from Claude Code's own transcripts, counted once and booked to one owner.

* `transcripts`: scanning and incremental import into the index of responses;
* `summary`: rows per day, week, month, Claude Code session or git branch, priced;
* `bookings`: the ledger of bookings (one owner per response) and the bindings of conversations;
* `attribution`: the rule that says which session and stage own a response;
* `api`: what the service calls.

The names below are loaded on first use, so a hook that only reads the bindings does not pay
for pydantic models and the transcript scanner.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from session_manager.usage.api import (  # noqa: F401
        ATTACHED_FILE,
        Attribution,
        BindResult,
        Binding,
        Bookings,
        ENTRIES_FILE,
        INDEX_FILE,
        ImportStats,
        Ledger,
        ModelUsage,
        NO_TRANSCRIPTS,
        PERIODS,
        TokenTotals,
        UsageAttachResult,
        UsageReport,
        UsageRow,
        attach,
        booked_figures,
        bookings_lock,
        buckets_of,
        claude_dirs,
        import_transcripts,
        load_bindings,
        load_entries,
        load_rule,
        project_key,
        record_binding,
        summarize,
        unattributed,
        update,
    )

# never the name of a submodule (`attribution`, `bookings`, ...): importing one sets that name
_NAMES = frozenset({
    "ATTACHED_FILE", "Attribution", "BindResult", "Binding", "Bookings", "ENTRIES_FILE", "INDEX_FILE",
    "ImportStats", "Ledger", "ModelUsage", "NO_TRANSCRIPTS", "PERIODS", "TokenTotals", "UsageAttachResult",
    "UsageReport", "UsageRow", "attach", "booked_figures", "bookings_lock", "buckets_of", "claude_dirs",
    "import_transcripts", "load_bindings", "load_entries", "load_rule", "project_key", "record_binding",
    "summarize", "unattributed", "update"
})


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module("session_manager.usage.api"), name)
    globals()[name] = value
    return value


__all__ = sorted(_NAMES)
