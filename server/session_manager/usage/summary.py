"""Summaries of imported usage: day buckets grouped per day, week, month, Claude Code
session or git branch, each row priced per model."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from session_manager.model import Timestamp, Tokens
from session_manager.usage.transcripts import BucketKey, ImportStats

PERIODS = ("daily", "weekly", "monthly", "session", "branch")
NO_BRANCH_LABEL = "(no branch)"


class TokenTotals(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    total_tokens: int = 0
    responses: int = 0
    cost_usd: float = 0.0


class ModelUsage(TokenTotals):
    model: str


class UsageRow(TokenTotals):
    """One period (a day `2026-10-05`, a week by its Monday `2026-10-05`, a month `2026-10`),
    one Claude Code session, or one git branch."""

    period: str
    project: str | None = None
    session_id: str | None = Field(default=None, description="the session-manager session(s) this usage belongs to")
    first: Timestamp | None = None
    last: Timestamp | None = None
    models: list[ModelUsage] = Field(default_factory=list)


class UsageReport(BaseModel):
    """Claude Code usage from its transcripts, de-duplicated, per period and model."""

    period: str
    since: Timestamp | None = None
    until: Timestamp | None = None
    unattributed: bool = Field(default=False, description="only the responses no session owns")
    rows: list[UsageRow]
    totals: UsageRow
    warnings: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="the Claude Code config dirs read")
    imported: ImportStats


def _period_of(day: str, period: str) -> str:
    if period == "monthly":
        return day[:7]
    if period == "weekly":
        moment = date.fromisoformat(day)
        return (moment - timedelta(days=moment.weekday())).isoformat()
    return day


def _group_key(period: str, day: str, project: str, session: str, branch: str) -> tuple[str, str | None]:
    if period == "session":
        return session, project
    if period == "branch":
        return branch or NO_BRANCH_LABEL, project
    return _period_of(day, period), None


def _day_bounds(since: datetime | None, until: datetime | None) -> tuple[str, str]:
    low = since.strftime("%Y-%m-%d") if since else ""
    high = until.strftime("%Y-%m-%d") if until else "9999"
    if until is not None and (until.hour or until.minute or until.second):
        high = (until + timedelta(days=1)).strftime("%Y-%m-%d")
    return low, high


def summarize(
    buckets: dict[BucketKey, list[int]],
    period: str,
    since: datetime | None,
    until: datetime | None,
    table: Any,
    owners: dict[str, str] | None = None,
) -> tuple[list[UsageRow], UsageRow, list[str]]:
    """Group the day buckets into rows; `since`/`until` filter on the day (until exclusive)."""
    low, high = _day_bounds(since, until)
    groups: dict[tuple[str, str | None], dict[str, list[int]]] = defaultdict(dict)
    for (day, project, session, model, branch), values in buckets.items():
        if not low <= day < high:
            continue
        _merge_into(groups[_group_key(period, day, project, session, branch)], model, values)
    warnings: set[str] = set()
    rows = []
    for (label, where), models in groups.items():
        row = _row(label, models, table, warnings)
        if period in ("session", "branch"):
            row.project = where
        if period == "session":
            row.session_id = (owners or {}).get(label)
        rows.append(row)
    if period == "session":
        rows.sort(key=lambda r: (r.first, r.period))
    elif period == "branch":
        rows.sort(key=lambda r: (-r.cost_usd, r.period, r.project or ""))
    else:
        rows.sort(key=lambda r: r.period)
    everything: dict[str, list[int]] = {}
    for models in groups.values():
        for model, values in models.items():
            _merge_into(everything, model, values)
    return rows, _row("total", everything, table, warnings), sorted(warnings)


def _merge_into(models: dict[str, list[int]], model: str, values: list[int]) -> None:
    row = models.get(model)
    if row is None:
        models[model] = list(values)
        return
    for i in (0, 1, 2, 3, 4, 7):
        row[i] += values[i]
    row[5] = min(row[5], values[5])
    row[6] = max(row[6], values[6])


def _row(label: str, models: dict[str, list[int]], table: Any, warnings: set[str]) -> UsageRow:
    row = UsageRow(period=label)
    breakdown = []
    for model, v in models.items():
        tokens = Tokens(input=v[0], output=v[1], cache_write=v[2], cache_read=v[3])
        usd, _key, warning = table.model_usd(model, tokens, cache_write_1h=v[7])
        if warning:
            warnings.add(warning)
        usage = ModelUsage(model=model, input_tokens=v[0], output_tokens=v[1], cache_write_tokens=v[2],
                           cache_read_tokens=v[3], total_tokens=tokens.total, responses=v[4], cost_usd=round(usd, 6))
        breakdown.append(usage)
        row.input_tokens += v[0]
        row.output_tokens += v[1]
        row.cache_write_tokens += v[2]
        row.cache_read_tokens += v[3]
        row.responses += v[4]
        row.cost_usd += usd
        first, last = datetime.fromtimestamp(v[5], UTC), datetime.fromtimestamp(v[6], UTC)
        row.first = first if row.first is None else min(row.first, first)
        row.last = last if row.last is None else max(row.last, last)
    row.total_tokens = row.input_tokens + row.output_tokens + row.cache_write_tokens + row.cache_read_tokens
    row.cost_usd = round(row.cost_usd, 6)
    row.models = sorted(breakdown, key=lambda m: -m.cost_usd)
    return row
