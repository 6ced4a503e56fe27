"""Cost accounting: the bundled price table, USD from tokens and API calls, the one code
path that books a cost into a session's `cost_tracking` (used by `stage complete --cost`,
`cost add` and `usage attach`), and the one that takes a manual entry back (`cost remove`).

Prices are USD per million tokens (Claude) and USD per call (other providers). A project
overrides or extends them in `.claude/session-manager.toml`:

    [prices.models."claude-sonnet-4-5"]
    input = 3.0
    output = 15.0
    cache_write = 3.75   # optional: 5-minute cache writes, 1.25 x input when left out
    cache_read = 0.30    # optional: 0.1 x input when left out
    # 1-hour cache writes always cost 2 x input

    [prices.calls]
    perplexity = 0.005

Claude models newer than the table (`claude-opus-4-7`, `claude-sonnet-5`) are priced as the
newest known model of their family (opus, sonnet, haiku), with a warning saying so; a model the
table does not know at all is priced at $0 **with a warning** that says how to add it.

Every booking gets an entry id (`cost_tracking.entries` after it, so ids run 1, 2, 3, ...;
older journals without ids are numbered by the position of their `cost_recorded` events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from session_manager.config import ModelPrice, Prices
from session_manager.errors import InvalidInput, NotFound
from session_manager.events import Event
from session_manager.model import Alert, SessionState, Tokens
from session_manager.store import Transaction

PRICES_AS_OF = "2026-11"  # when the bundled table below was last checked against the vendors' pages
CACHE_WRITE_FACTOR = 1.25  # 5-minute cache writes cost 1.25x the input price
CACHE_WRITE_1H_FACTOR = 2.0  # 1-hour cache writes cost 2x the input price
CACHE_READ_FACTOR = 0.10  # cache hits cost a tenth of the input price


def _price(input: float, output: float) -> ModelPrice:
    return ModelPrice(input=input, output=output, cache_write=round(input * CACHE_WRITE_FACTOR, 6),
                      cache_read=round(input * CACHE_READ_FACTOR, 6))


# Keys are model names without the date suffix; `resolve_model` strips dates, provider
# prefixes (Bedrock, Vertex) and context suffixes before looking a name up.
BUNDLED_MODELS: dict[str, ModelPrice] = {
    "claude-opus-4-6": _price(5.0, 25.0),
    "claude-opus-4-5": _price(5.0, 25.0),
    "claude-opus-4-1": _price(15.0, 75.0),
    "claude-opus-4": _price(15.0, 75.0),
    "claude-sonnet-4-6": _price(3.0, 15.0),
    "claude-sonnet-4-5": _price(3.0, 15.0),
    "claude-sonnet-4": _price(3.0, 15.0),
    "claude-3-7-sonnet": _price(3.0, 15.0),
    "claude-3-5-sonnet": _price(3.0, 15.0),
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-3-5-haiku": _price(0.8, 4.0),
    "claude-3-haiku": ModelPrice(input=0.25, output=1.25, cache_write=0.30, cache_read=0.03),
    "claude-3-opus": _price(15.0, 75.0),
}
# Claude Code's short model names.
ALIASES = {"opus": "claude-opus-4-6", "sonnet": "claude-sonnet-4-6", "haiku": "claude-haiku-4-5"}
# Rough per-call prices (USD) for the seed's other providers; set your own in [prices.calls].
BUNDLED_CALLS: dict[str, float] = {
    "perplexity": 0.005,  # Sonar request fee, low search context ($5 per 1,000 requests)
    "web_search": 0.01,  # Anthropic web search tool ($10 per 1,000 searches)
    "elevenlabs": 0.10,  # one short text-to-speech request; ElevenLabs bills by character
}
NO_COST_MODELS = frozenset({"<synthetic>"})  # Claude Code's placeholder for local messages

_DATE = re.compile(r"(-\d{8}|@\d{8}|-v\d+(:\d+)?|-latest|\[\w+\])+$")
_PREFIX = re.compile(r"^(?:(?:us|eu|apac|global)\.)?(?:anthropic[./])?")
_FAMILY = re.compile(r"^claude-(opus|sonnet|haiku)-(\d{1,2})(?:-(\d{1,2}))?$")


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, ModelPrice]
    calls: dict[str, float]

    def resolve_model(self, name: str) -> tuple[str, ModelPrice] | None:
        """The table entry for a model name, trying the name as given, then without provider
        prefixes and date/version suffixes (`claude-sonnet-4-5-20250929`,
        `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, `claude-sonnet-4-5@20250929`)."""
        return _resolve(self, name)

    def model_usd(self, name: str, tokens: Tokens,
                  cache_write_1h: int = 0) -> tuple[float, str | None, str | None]:
        """(usd, price key used, warning). `cache_write_1h` is the part of `tokens.cache_write`
        written to the 1-hour cache (2x input); the rest is priced as 5-minute writes."""
        if name in NO_COST_MODELS:
            return 0.0, name, None
        warning = None
        found = self.resolve_model(name)
        if found is None:
            found = _newest_of_family(self, name)
            if found is None:
                warning = (f"unknown model {name!r}: its tokens are counted but priced at $0; add its price"
                           f" per million tokens under [prices.models.\"{name}\"] in .claude/session-manager.toml")
                return 0.0, None, warning
            warning = (f"model {name!r} is not in the price table (as of {PRICES_AS_OF}): priced as {found[0]};"
                       f" set its price under [prices.models.\"{name}\"] in .claude/session-manager.toml")
        key, price = found
        hour = min(max(cache_write_1h, 0), tokens.cache_write)
        usd = (tokens.input * price.input + tokens.output * price.output
               + (tokens.cache_write - hour) * _cache_write(price) + hour * price.input * CACHE_WRITE_1H_FACTOR
               + tokens.cache_read * _cache_read(price)) / 1_000_000
        return usd, key, warning

    def calls_usd(self, calls: dict[str, int]) -> tuple[float, list[str]]:
        usd, warnings = 0.0, []
        for provider, count in calls.items():
            price = self.calls.get(provider)
            if price is None:
                warnings.append(f"unknown provider {provider!r}: its {count} call(s) are counted but priced at $0;"
                                f" add `{provider} = USD_PER_CALL` under [prices.calls] in .claude/session-manager.toml")
                continue
            usd += price * count
        return usd, warnings


def _cache_write(price: ModelPrice) -> float:
    return price.cache_write if price.cache_write is not None else price.input * CACHE_WRITE_FACTOR


def _cache_read(price: ModelPrice) -> float:
    return price.cache_read if price.cache_read is not None else price.input * CACHE_READ_FACTOR


def _resolve(table: PriceTable, name: str) -> tuple[str, ModelPrice] | None:
    candidates = [name]
    bare = _DATE.sub("", _PREFIX.sub("", name.strip()))
    candidates += [bare, ALIASES.get(bare.lower(), bare)]
    for candidate in candidates:
        for key in (candidate, candidate.lower()):
            if key in table.models:
                return key, table.models[key]
    return None


def _version(name: str) -> tuple[str, tuple[int, int]] | None:
    match = _FAMILY.match(name)
    if match is None:
        return None
    return match[1], (int(match[2]), int(match[3] or 0))


def _newest_of_family(table: PriceTable, name: str) -> tuple[str, ModelPrice] | None:
    """A Claude model the table lacks, priced as the closest known version of its family at or
    below it (`claude-opus-4-7` as `claude-opus-4-6`, `claude-sonnet-5` as the newest sonnet).
    None for a name that is not `claude-<family>-<major>[-<minor>]` or older than every row."""
    wanted = _version(_DATE.sub("", _PREFIX.sub("", name.strip())).lower())
    if wanted is None:
        return None
    family, version = wanted
    best: tuple[tuple[int, int], str] | None = None
    for key in table.models:
        known = _version(key.lower())
        if known is None or known[0] != family or known[1] > version:
            continue
        if best is None or known[1] > best[0]:
            best = (known[1], key)
    return (best[1], table.models[best[1]]) if best else None


def price_table(prices: Prices) -> PriceTable:
    """The bundled table with the project's `[prices]` laid over it (the project wins)."""
    return PriceTable(models={**BUNDLED_MODELS, **prices.models}, calls={**BUNDLED_CALLS, **prices.calls})


# -- booking a cost into a session -------------------------------------------------------------
@dataclass
class Booked:
    """What one booking added, for the result the caller returns."""

    usd: float
    computed: bool
    priced_as: str | None = None
    warnings: list[str] = field(default_factory=list)
    entry: int | None = None


def book(
    tx: Transaction,
    table: PriceTable,
    *,
    stage: str | None,
    model: str | None = None,
    tokens: Tokens | None = None,
    tokens_total: int | None = None,
    calls: dict[str, int] | None = None,
    usd: float | None = None,
    source: str = "manual",
    cache_write_1h: int = 0,
    extra: dict[str, Any] | None = None,
) -> Booked:
    """Add one cost entry to `tx.state.cost_tracking` and journal it (`cost_recorded`).

    `usd` given wins; otherwise USD is computed from `tokens` (per kind, with `model`) and
    `calls`. `tokens_total` is a bare token count without a split (seed 000's `tokens_used`):
    it is counted but cannot be priced."""
    costs = tx.state.cost_tracking
    tokens = tokens or Tokens()
    calls = {k: v for k, v in (calls or {}).items() if v}
    warnings: list[str] = []
    priced_as = None
    computed = usd is None
    if usd is None:
        usd = 0.0
        if tokens.total:
            if model is None:
                warnings.append("tokens without a model cannot be priced: give --model (they are counted at $0)")
            else:
                usd, priced_as, warning = table.model_usd(model, tokens, cache_write_1h)
                warnings += [warning] if warning else []
        calls_usd, call_warnings = table.calls_usd(calls)
        usd += calls_usd
        warnings += call_warnings
    usd = round(usd, 6)
    total_tokens = tokens.total + (tokens_total or 0)

    if usd:
        costs.total_cost = round(costs.total_cost + usd, 6)
        if stage is not None:
            costs.cost_by_stage[stage] = round(costs.cost_by_stage.get(stage, 0.0) + usd, 6)
        if model:
            costs.cost_by_model[model] = round(costs.cost_by_model.get(model, 0.0) + usd, 6)
    costs.tokens.input += tokens.input
    costs.tokens.output += tokens.output
    costs.tokens.cache_write += tokens.cache_write
    costs.tokens.cache_read += tokens.cache_read
    costs.tokens_used += total_tokens
    for provider, count in calls.items():
        costs.api_calls[provider] = costs.api_calls.get(provider, 0) + count
    costs.entries += 1
    event: dict[str, Any] = {"entry": costs.entries, "stage": stage, "usd": usd, "tokens": total_tokens or None,
                             "model": model, "source": source}
    if tokens.total:
        event["token_kinds"] = tokens.model_dump()
    if calls:
        event["calls"] = calls
    if not computed:
        event["usd_given"] = True
    if cache_write_1h:
        event["cache_write_1h"] = cache_write_1h
    if warnings:
        event["warnings"] = warnings
    event.update(extra or {})
    tx.event(Event.cost_recorded, **event)
    return Booked(usd=usd, computed=computed, priced_as=priced_as, warnings=warnings, entry=costs.entries)


class CostResult(BaseModel):
    """One cost entry as booked, and where the session's spending now stands."""

    session_id: str
    entry: int | None = Field(default=None, description="the entry's id, for `cost remove`")
    stage: str | None = None
    model: str | None = None
    priced_as: str | None = None
    usd: float
    computed: bool = Field(description="true when USD came from the price table, false when given")
    tokens: Tokens
    calls: dict[str, int] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    total_cost: float
    budget_usd: float | None = None
    budget_used: float | None = Field(default=None, description="total cost / budget (1.0 = all of it)")
    cost_by_stage: dict[str, float] = Field(default_factory=dict)
    alerts: list[Alert] = Field(default_factory=list)


def result(state: SessionState, booked: Booked, stage: str | None, model: str | None, tokens: Tokens,
           calls: dict[str, int] | None) -> CostResult:
    costs, budget = state.cost_tracking, state.budget.usd
    return CostResult(
        session_id=state.session_id, entry=booked.entry, stage=stage, model=model, priced_as=booked.priced_as,
        usd=booked.usd,
        computed=booked.computed, tokens=tokens, calls={k: v for k, v in (calls or {}).items() if v},
        warnings=booked.warnings, total_cost=costs.total_cost, budget_usd=budget,
        budget_used=round(costs.total_cost / budget, 4) if budget else None,
        cost_by_stage=dict(costs.cost_by_stage), alerts=list(state.alerts),
    )


# -- taking a manual entry back ------------------------------------------------------------------
REMOVABLE_SOURCES = frozenset({"manual"})


def cost_entries(events: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """Every `cost_recorded` event by its entry id (events written before ids existed are
    numbered by their position), and the ids already taken back (`cost_removed`)."""
    found: dict[int, dict[str, Any]] = {}
    removed: set[int] = set()
    ordinal = 0
    for record in events:
        if record.get("event") == Event.cost_recorded:
            ordinal += 1
            entry = record.get("entry")
            found[entry if type(entry) is int else ordinal] = record
        elif record.get("event") == Event.cost_removed and type(record.get("entry")) is int:
            removed.add(record["entry"])
    return found, removed


class CostRemoval(BaseModel):
    """A manual cost entry taken back, and where the session's spending now stands."""

    session_id: str
    entry: int
    usd: float = Field(description="the amount taken back (the entry's USD)")
    stage: str | None = None
    model: str | None = None
    reason: str
    total_cost: float
    budget_usd: float | None = None
    cost_by_stage: dict[str, float] = Field(default_factory=dict)
    alerts: list[Alert] = Field(default_factory=list)


def remove(tx: Transaction, entry: int, reason: str) -> CostRemoval:
    """Take manual entry `entry` back out of `cost_tracking` and journal it (`cost_removed`,
    with the amount and the reason). Entries booked from Claude Code usage belong to the
    bookings ledger, and a stage's own cost to its completion record: they are refused."""
    events, _skipped = tx.store.read_events(tx.session_id)
    entries, removed = cost_entries(events)
    record = entries.get(entry)
    if record is None:
        known = ", ".join(str(n) for n in sorted(entries)[-10:]) or "none"
        raise NotFound(f"session {tx.session_id} has no cost entry {entry}; its latest entries: {known}")
    if entry in removed:
        raise InvalidInput(f"cost entry {entry} of session {tx.session_id} was already removed")
    source = record.get("source")
    if source not in REMOVABLE_SOURCES:
        owner = "; Claude Code usage is owned by the bookings ledger" if source == "claude_code" else ""
        raise InvalidInput(f"cost entry {entry} was booked by {source}, not by hand: only `cost add` entries can be"
                           f" removed{owner}")
    costs = tx.state.cost_tracking
    usd = float(record.get("usd") or 0.0)
    stage, model = record.get("stage"), record.get("model")
    costs.total_cost = max(0.0, round(costs.total_cost - usd, 6))
    for table, key in ((costs.cost_by_stage, stage), (costs.cost_by_model, model)):
        if key is not None and key in table:
            left = round(table[key] - usd, 6)
            if left > 0:
                table[key] = left
            else:
                del table[key]
    kinds = record.get("token_kinds") or {}
    for kind in ("input", "output", "cache_write", "cache_read"):
        setattr(costs.tokens, kind, max(0, getattr(costs.tokens, kind) - int(kinds.get(kind, 0))))
    costs.tokens_used = max(0, costs.tokens_used - int(record.get("tokens") or 0))
    for provider, count in (record.get("calls") or {}).items():
        left = costs.api_calls.get(provider, 0) - int(count)
        if left > 0:
            costs.api_calls[provider] = left
        else:
            costs.api_calls.pop(provider, None)
    tx.event(Event.cost_removed, entry=entry, usd=round(usd, 6), stage=stage, model=model, reason=reason)
    state = tx.state
    return CostRemoval(session_id=state.session_id, entry=entry, usd=round(usd, 6), stage=stage, model=model,
                       reason=reason, total_cost=costs.total_cost, budget_usd=state.budget.usd,
                       cost_by_stage=dict(costs.cost_by_stage), alerts=list(state.alerts))
