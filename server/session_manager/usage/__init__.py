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
        ATTACHED_FILE as ATTACHED_FILE,
        Attribution as Attribution,
        BindResult as BindResult,
        Binding as Binding,
        Bookings as Bookings,
        ENTRIES_FILE as ENTRIES_FILE,
        INDEX_FILE as INDEX_FILE,
        ImportStats as ImportStats,
        Ledger as Ledger,
        ModelUsage as ModelUsage,
        NO_TRANSCRIPTS as NO_TRANSCRIPTS,
        PERIODS as PERIODS,
        TokenTotals as TokenTotals,
        UsageAttachResult as UsageAttachResult,
        UsageReport as UsageReport,
        UsageRow as UsageRow,
        attach as attach,
        booked_figures as booked_figures,
        bookings_lock as bookings_lock,
        buckets_of as buckets_of,
        claude_dirs as claude_dirs,
        import_transcripts as import_transcripts,
        load_bindings as load_bindings,
        load_entries as load_entries,
        load_rule as load_rule,
        project_key as project_key,
        record_binding as record_binding,
        summarize as summarize,
        unattributed as unattributed,
        update as update,
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
