"""How figures read, in one place: times (always the local zone, named), money, ratios, durations,
token counts and alert lines. The terminal views, the MCP results and the markdown use these, so a
time or an amount reads the same wherever it appears. State files keep UTC (`model.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

MISSING = "-"


class AlertLike(Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def message(self) -> str: ...


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A moment in the local zone, with the zone's name: `2026-11-21 09:30 CET`."""
    if value is None:
        return MISSING
    local = value.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def day(value: datetime | None) -> str:
    return MISSING if value is None else value.astimezone().strftime("%Y-%m-%d")


def money(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"${value:,.{digits}f}"


def pct(value: float | None) -> str:
    """A ratio as a percentage: 0.8 -> 80%."""
    return MISSING if value is None else f"{value * 100:.0f}%"


def number(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def tokens(value: int) -> str:
    return f"{value:,}"


def duration(seconds: float | None) -> str:
    """A human duration: `45s`, `12m`, `1h05m`, `3d04h`."""
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{int(round(seconds))}s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    hours = minutes // 60
    return f"{hours // 24}d{hours % 24:02d}h"


MARKS = {"warning": "!", "critical": "!!"}


def alert_line(alert: AlertLike, session_id: str | None = None) -> str:
    """`critical cost: spent $5.20 of the $5.00 budget`, optionally after the session's id."""
    head = f"{session_id} " if session_id else ""
    return f"{head}{alert.severity} {alert.kind}: {alert.message}"


def alert_lines(alerts: Sequence[AlertLike]) -> list[str]:
    return [alert_line(a) for a in alerts]


def alert_marked(alert: AlertLike, session_id: str | None = None) -> str:
    """The terminal's form: `!! cost: ...` (critical) or `!  cost: ...` (warning)."""
    head = f"{session_id} " if session_id else ""
    return f"{MARKS.get(alert.severity, '!'):2} {head}{alert.kind}: {alert.message}"
