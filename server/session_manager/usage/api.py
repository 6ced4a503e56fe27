"""What the service calls: import, attribution and booking into a session, figures for reports."""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from session_manager.events import Event
from session_manager.model import Alert, Tokens
from session_manager.usage.attribution import Attribution, stage_at
from session_manager.usage.bookings import (
    LOCK_FILE as BOOKINGS_LOCK,
)
from session_manager.usage.bookings import (
    Binding,
    Booking,
    Bookings,
    iso,
    load_bindings,
    record_binding,
)
from session_manager.usage.summary import (
    PERIODS,
    ModelUsage,
    TokenTotals,
    UsageReport,
    UsageRow,
    summarize,
)
from session_manager.usage.transcripts import (
    ENTRIES_FILE,
    INDEX_FILE,
    LOCK_FILE,
    Entry,
    ImportStats,
    Ledger,
    buckets_of,
    claude_dirs,
    import_transcripts,
    load_entries,
    project_key,
)

ATTACHED_FILE = "claude_usage.json"
NO_TRANSCRIPTS = ("no Claude Code transcripts found: looked in CLAUDE_CONFIG_DIR, else ~/.claude and"
                  " ~/.config/claude, for a projects/ folder")


def update(store: Any, lock_timeout: float) -> tuple[Ledger, ImportStats, list[Path], Path]:
    """Import what is new, under the project's usage lock (two imports never interleave)."""
    from filelock import FileLock, Timeout

    from session_manager.errors import LockTimeout

    folder = store.private_dir()
    dirs = claude_dirs()
    try:
        with FileLock(str(folder / LOCK_FILE), timeout=lock_timeout):
            ledger, stats = import_transcripts(folder, dirs)
    except Timeout:
        raise LockTimeout(f"another usage import held its lock for {lock_timeout:g} s; try again") from None
    return ledger, stats, dirs, folder


def bookings_lock(store: Any, lock_timeout: float) -> Any:
    """The lock every change to the bookings ledger holds (taken before a session's lock)."""
    from filelock import FileLock

    return FileLock(str(store.private_dir() / BOOKINGS_LOCK), timeout=lock_timeout)


def load_rule(store: Any) -> Attribution:
    from session_manager import reports

    return Attribution(load_bindings(store.claude_dir), reports.load_summaries(store).summaries)


def unattributed(entries: dict[str, Entry], bookings: Bookings, rule: Attribution) -> list[Entry]:
    """The responses no session owns: not booked, and outside every binding."""
    by_key = bookings.by_key
    return [e for e in entries.values() if e[0] not in by_key and rule.owner(e[3], e[1]) is None]


# -- booking into a session -------------------------------------------------------------------------
class UsageAttachResult(BaseModel):
    """Claude Code usage attributed to one session and booked into its cost tracking."""

    session_id: str
    method: str = Field(default="claude_sessions", description="always the bindings of conversations")
    claude_sessions: list[str] = Field(default_factory=list, description="the conversations bound to the session")
    responses: int = Field(description="responses booked to the session, in all")
    added_responses: int = 0
    tokens: Tokens
    usd: float
    added_usd: float = Field(description="what this run added (0 when nothing is new since the last attach)")
    by_stage: dict[str, float] = Field(default_factory=dict, description="usage cost per stage ('' = no stage)")
    models: list[ModelUsage] = Field(default_factory=list)
    kept_elsewhere: int = Field(default=0, description="responses this session's bindings cover, owned by another")
    total_cost: float
    budget_usd: float | None = None
    warnings: list[str] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)
    imported: ImportStats


def _tokens(values: list[int]) -> Tokens:
    return Tokens(input=values[0], output=values[1], cache_write=values[2], cache_read=values[3])


def _book_lines(tx: Any, table: Any, lines: list[dict[str, Any]], batch: str, warnings: list[str]) -> float:
    """Book ledger lines into the session's cost tracking, one entry per stage and model."""
    from session_manager import costs

    groups: dict[tuple[str | None, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for line in lines:
        group = groups[(line.get("stage"), line["model"])]
        for i, value in enumerate(line["tokens"]):
            group[i] += value
        group[5] += 1
    added = 0.0
    for (stage, model), values in sorted(groups.items(), key=lambda g: (g[0][0] or "", g[0][1])):
        booked = costs.book(tx, table, stage=stage, model=model, tokens=_tokens(values), cache_write_1h=values[4],
                            source="claude_code", extra={"batch": batch, "responses": values[5]})
        added += booked.usd
        warnings += [w for w in booked.warnings if w not in warnings]
    return added


def attach(tx: Any, entries: dict[str, Entry], bookings: Bookings, rule: Attribution, table: Any,
           stats: ImportStats) -> UsageAttachResult:
    """Book the responses the rule gives to the session of `tx` and that no one has booked,
    each to the stage in progress at its time. Re-running books only what is new (or a
    response's growth), so nothing is counted twice and nothing negative is ever booked.
    The caller holds the bookings lock."""
    state, session = tx.state, tx.state.session_id
    warnings: list[str] = []
    events, _skipped = tx.store.read_events(session)
    journalled = {e.get("batch") for e in events if e.get("event") == Event.cost_recorded and e.get("batch")}
    added = 0.0
    for batch, old_lines in bookings.batches.get(session, {}).items():
        if batch not in journalled:  # the ledger has it, the session does not (a crash between the two)
            added += _book_lines(tx, table, old_lines, batch, warnings)
    conversations = set(rule.conversations_of(session))
    batch, now, lines, kept_elsewhere = secrets.token_hex(6), iso(tx.now.timestamp()), [], 0
    for entry in entries.values():
        if entry[3] not in conversations or rule.owner(entry[3], entry[1]) != session:
            continue
        booked = bookings.by_key.get(entry[0])
        if booked is not None and booked.session != session:
            kept_elsewhere += 1
            continue
        before = booked.tokens if booked is not None else [0, 0, 0, 0, 0]
        delta = [max(0, now_ - was) for now_, was in zip(entry[5:10], before, strict=True)]
        if not any(delta):
            continue
        usd, _key, _warning = table.model_usd(entry[4], _tokens(delta), cache_write_1h=delta[4])
        lines.append({"key": entry[0], "session": session,
                      "stage": booked.stage if booked is not None else stage_at(state, entry[1]),
                      "t": entry[1], "model": entry[4], "tokens": delta, "usd": round(usd, 9),
                      "branch": entry[10], "conversation": entry[3], "project": entry[2], "batch": batch,
                      "at": now})
    if lines:
        bookings.append(lines)  # the ledger first: a crash before the state commits is recovered from it
        added += _book_lines(tx, table, lines, batch, warnings)
    if not conversations:
        warnings.append(f"no Claude Code conversation is bound to {session}: bind one with"
                        f" `session-manager usage bind {session} CONVERSATION_ID` (the SessionStart hook binds a"
                        " new conversation by itself when exactly one session is active)")
    if kept_elsewhere:
        warnings.append(f"{kept_elsewhere} response(s) of this session's conversations were already booked to"
                        " another session and stay there")
    result = _result(state, bookings.of_session(session), sorted(conversations), table, stats, warnings)
    result.added_responses, result.added_usd, result.kept_elsewhere = len(lines), round(added, 6), kept_elsewhere
    tx.write(ATTACHED_FILE, json.dumps({
        "attached_at": now, "claude_sessions": result.claude_sessions, "responses": result.responses,
        "usd": result.usd, "by_stage": result.by_stage,
        "models": {m.model: {"input": m.input_tokens, "output": m.output_tokens, "cache_write": m.cache_write_tokens,
                             "cache_read": m.cache_read_tokens, "usd": m.cost_usd} for m in result.models}},
        indent=2) + "\n")
    if added or lines:
        tx.event(Event.usage_attached, claude_sessions=result.claude_sessions, responses=result.responses,
                 added_responses=len(lines), usd=result.usd, added_usd=result.added_usd, batch=batch)
    return result


def _result(state: Any, booked: list[Booking], conversations: list[str], table: Any, stats: ImportStats,
            warnings: list[str]) -> UsageAttachResult:
    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    by_stage: dict[str, float] = defaultdict(float)
    usd_by_model: dict[str, float] = defaultdict(float)
    for booking in booked:
        row = by_model[booking.model]
        for i, value in enumerate(booking.tokens):
            row[i] += value
        row[5] += 1
        usd_by_model[booking.model] += booking.usd
        by_stage[booking.stage or ""] += booking.usd
    models, total = [], [0, 0, 0, 0]
    for model, v in by_model.items():
        tokens = _tokens(v)
        models.append(ModelUsage(model=model, input_tokens=v[0], output_tokens=v[1], cache_write_tokens=v[2],
                                 cache_read_tokens=v[3], total_tokens=tokens.total, responses=v[5],
                                 cost_usd=round(usd_by_model[model], 6)))
        total = [a + b for a, b in zip(total, v[:4], strict=True)]
    return UsageAttachResult(
        session_id=state.session_id, claude_sessions=conversations, responses=len(booked), tokens=_tokens(total),
        usd=round(sum(usd_by_model.values()), 6), added_usd=0.0,
        by_stage={stage: round(usd, 6) for stage, usd in sorted(by_stage.items())},
        models=sorted(models, key=lambda m: -m.cost_usd), total_cost=state.cost_tracking.total_cost,
        budget_usd=state.budget.usd, warnings=warnings, imported=stats)


# -- figures for reports ------------------------------------------------------------------------------
def booked_figures(claude_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Per session: the usage cost booked to it per git branch (`branch`) and per stage
    (`stage`, '' = no stage), from the ledger alone, so it needs no transcript."""
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for booking in Bookings.load(claude_dir).by_key.values():
        cell = figures.setdefault(booking.session, {"branch": defaultdict(float), "stage": defaultdict(float)})
        cell["branch"][booking.branch] += booking.usd
        cell["stage"][booking.stage or ""] += booking.usd
    return {session: {kind: dict(values) for kind, values in cell.items()} for session, cell in figures.items()}


class BindResult(BaseModel):
    """A conversation bound to a session from a point in time."""

    session_id: str
    claude_session: str
    since: str
    recorded: bool = Field(description="false when the conversation was already bound to this session from then")
    previous_session: str | None = Field(default=None, description="the session it was bound to before, if any")


__all__ = [
    "ATTACHED_FILE", "Attribution", "BindResult", "Binding", "Bookings", "ENTRIES_FILE", "INDEX_FILE",
    "ImportStats", "Ledger", "ModelUsage", "NO_TRANSCRIPTS", "PERIODS", "TokenTotals", "UsageAttachResult",
    "UsageReport", "UsageRow", "attach", "booked_figures", "bookings_lock", "buckets_of", "claude_dirs",
    "import_transcripts", "load_bindings", "load_entries", "load_rule", "project_key", "record_binding",
    "summarize", "unattributed", "update"
]
