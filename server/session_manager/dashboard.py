"""The dashboard (seed 002's "Session Dashboard"): sessions in progress with their stage and
progress, finished count, failures, minutes and dollars per episode, average quality; in the
terminal, or as one self-contained HTML page whose charts are inline SVG (no script, no network).
"""

from __future__ import annotations

from collections.abc import Sequence

import html
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from pathlib import Path

from pydantic import BaseModel, Field

from session_manager.formatting import money, when
from session_manager.model import Timestamp
from session_manager import reports
from session_manager.analytics import analyse_beside
from session_manager.config import Config
from session_manager.reports import Loaded, Summary, _recurring, in_window, stage_positions, trend

ACTIVE = ("initialized", "in_progress", "failed")
BARS = "▁▂▃▄▅▆▇█"
PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4d7c0f", "#be185d"]


class InProgress(BaseModel):
    session_id: str
    level: str
    status: str
    topic: str | None = None
    stage: str | None = None
    stage_status: str | None = None
    progress_percent: float
    cost_usd: float
    budget_usd: float | None = None
    started_at: Timestamp
    alerts: int = 0


class DayCost(BaseModel):
    day: str
    cost_usd: float
    budget_usd: float


class MetricPoint(BaseModel):
    day: str
    value: float


class StageFigure(BaseModel):
    stage: str
    mean_seconds: float | None = None
    gate_failures: int = 0
    errors: int = 0


class Dashboard(BaseModel):
    """Where things stand: what runs now, and the last `days` days in figures and charts."""

    generated_at: Timestamp
    days: int
    level: str | None = None
    in_progress: list[InProgress] = Field(default_factory=list)
    finished: int = Field(0, description="sessions completed in the window")
    failed: int = Field(0, description="sessions failed (escalated) now, among those in the window")
    errors: int = Field(0, description="failures recorded in the window")
    minutes_per_episode: float | None = Field(None, description="mean start-to-completion time of finished sessions")
    dollars_per_episode: float | None = Field(None, description="mean cost of finished sessions")
    average_quality: float | None = Field(None, description="mean overall quality of the sessions in the window")
    cost_per_day: list[DayCost] = Field(default_factory=list)
    quality_per_day: dict[str, list[MetricPoint]] = Field(default_factory=dict)
    stages: list[StageFigure] = Field(default_factory=list)
    quality_threshold: float = 0.85
    unreadable: list[str] = Field(default_factory=list)
    # seed 004's session score and seed 003's lines (analytics.py)
    score_per_day: list[MetricPoint] = Field(default_factory=list, description="mean session score (0-100) by start day")
    cost_per_episode: list[MetricPoint] = Field(default_factory=list,
                                                description="finished production sessions, by completion")
    findings: list[str] = Field(default_factory=list, description="pattern detection over the window")
    forecast: str | None = None


def build(loaded: Loaded, days: int, level: str | None, now: datetime, quality_threshold: float,
          config: Config | None = None) -> Dashboard:
    summaries = loaded.summaries
    local = now.astimezone()
    since = (local - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    low, high = since.timestamp(), now.timestamp()
    chosen = in_window(summaries, low, high)

    def inside(epoch: float | None) -> bool:
        return bool(epoch is not None and low <= epoch < high)

    running = sorted((s for s in summaries if s["status"] in ACTIVE), key=lambda s: -s["updated"])
    in_progress = [InProgress(
        session_id=s["id"], level=s["level"], status=s["status"], topic=s["topic"], stage=s["current"],
        stage_status=s["current_status"], progress_percent=s["progress"], cost_usd=s["cost"], budget_usd=s["budget"],
        started_at=datetime.fromtimestamp(s["started"], UTC), alerts=len(s["alerts"])) for s in running[:50]]
    order = stage_positions(chosen)
    analysed = analyse_beside(summaries, chosen, since, now, level, now, lambda: _recurring(chosen, inside)[0], order,
                              config, loaded.outside)  # on the other core while the figures below are gathered
    finished = [s for s in chosen if reports.finished(s) and inside(s["completed"])]
    overall = [s["overall"] for s in chosen if s["overall"] is not None]
    points = trend(chosen, since, now, inside)

    per_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in chosen:
        day = datetime.fromtimestamp(s["started"], UTC).astimezone().strftime("%Y-%m-%d")
        for metric, value in s["quality"].items():
            per_metric[metric][day].append(value)
        if s["overall"] is not None:
            per_metric["overall"][day].append(s["overall"])
    quality = {metric: [MetricPoint(day=day, value=round(statistics.fmean(v), 4)) for day, v in sorted(by_day.items())]
               for metric, by_day in sorted(per_metric.items())}

    seconds: dict[str, list[float]] = defaultdict(list)
    gates: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    error_total = 0
    for s in chosen:
        for stage, value in s["durations"].items():
            seconds[stage].append(value)
        for stage, count in s["gates"].items():
            gates[stage] += count
        for stage, _message, at, _pattern in s["errors"]:
            if inside(at):
                error_total += 1
                errors[stage or "-"] += 1
    names = sorted(set(seconds) | set(gates) | set(errors), key=lambda n: (order.get(n, 10_000), n))
    stages = [StageFigure(stage=n, mean_seconds=round(statistics.fmean(seconds[n]), 1) if seconds.get(n) else None,
                          gate_failures=gates.get(n, 0), errors=errors.get(n, 0)) for n in names]

    scores: dict[str, list[float]] = defaultdict(list)
    for s in chosen:
        if s.get("score") is not None:
            scores[datetime.fromtimestamp(s["started"], UTC).astimezone().strftime("%Y-%m-%d")].append(s["score"])
    found = analysed()
    f = found.forecast
    return Dashboard(
        score_per_day=[MetricPoint(day=d, value=round(statistics.fmean(v), 1)) for d, v in sorted(scores.items())],
        cost_per_episode=[MetricPoint(day=f"ep {e.episode}" if e.episode else e.session_id, value=e.usd)
                          for e in found.cost_per_episode],
        findings=[x.message for x in found.findings],
        forecast=(f"{_money(f.month_to_date_usd)} spent in {f.month}; {_money(f.month_end_usd)} at month end at this"
                  f" rate; the {f.active_sessions} active session(s) need about {_money(f.cost_to_finish_usd)} more"
                  + (f"; the budget left buys {f.episodes_affordable} episode(s)" if f.episodes_affordable is not None
                     else "")) if f else None,
        generated_at=now, days=days, level=level, in_progress=in_progress, finished=len(finished),
        failed=sum(1 for s in chosen if s["status"] == "failed"), errors=error_total,
        minutes_per_episode=round(statistics.fmean((s["completed"] - s["started"]) / 60 for s in finished), 1)
        if finished else None,
        dollars_per_episode=round(statistics.fmean(s["cost"] for s in finished), 4) if finished else None,
        average_quality=round(statistics.fmean(overall), 4) if overall else None,
        cost_per_day=[DayCost(day=p.day, cost_usd=p.cost_usd, budget_usd=p.budget_usd) for p in points],
        quality_per_day=quality, stages=stages, quality_threshold=quality_threshold, unreadable=loaded.unreadable,
    )


# -- terminal --------------------------------------------------------------------------------
def sparkline(values: Sequence[float | None]) -> str:
    """`▁▃█▅` for a series; a gap (None) is a space. Scaled from 0 (or the minimum if negative)."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(0.0, min(known)), max(known)
    span = high - low
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        else:
            out.append(BARS[min(len(BARS) - 1, int((value - low) / span * (len(BARS) - 1) + 0.5))] if span else BARS[0])
    return "".join(out)


def _money(value: float | None) -> str:
    return money(value)


def text(board: Dashboard) -> str:
    from session_manager.views import table

    scope = board.level or "all levels"
    lines = [f"Dashboard · {scope} · last {board.days} days · {board.generated_at.astimezone():%Y-%m-%d %H:%M}", ""]
    figures = [
        ("in progress", str(sum(1 for s in board.in_progress if s.status != "failed"))),
        ("finished", str(board.finished)),
        ("failed", str(board.failed)),
        ("errors", str(board.errors)),
        ("minutes / episode", "-" if board.minutes_per_episode is None else f"{board.minutes_per_episode:.0f}"),
        ("dollars / episode", _money(board.dollars_per_episode)),
        ("average quality", "-" if board.average_quality is None else f"{board.average_quality:.2f}"),
    ]
    lines.append("   ".join(f"{name}: {value}" for name, value in figures))
    costs = [p.cost_usd for p in board.cost_per_day]
    if board.cost_per_day:
        lines.append(f"cost per day     {sparkline(costs)}  {board.cost_per_day[0].day} .. {board.cost_per_day[-1].day}"
                     f"  (total {_money(sum(costs))}, budget {_money(sum(p.budget_usd for p in board.cost_per_day))})")
    overall = {p.day: p.value for p in board.quality_per_day.get("overall", [])}
    if overall:
        lines.append(f"quality per day  {sparkline([overall.get(p.day) for p in board.cost_per_day])}")
    lines.append("")
    if board.in_progress:
        rows = [(s.session_id, s.status, s.stage or "-", s.stage_status or "-", f"{s.progress_percent:.0f}%",
                 _bar(s.progress_percent), _money(s.cost_usd) + (f" / {_money(s.budget_usd)}" if s.budget_usd else ""),
                 "!" * s.alerts, (s.topic or "")[:30]) for s in board.in_progress]
        lines.append(table(("SESSION", "STATUS", "STAGE", "STAGE STATUS", "DONE", "", "COST", "ALERTS", "TOPIC"), rows))
    else:
        lines.append("no session in progress")
    if board.stages:
        lines += ["", table(("STAGE", "MEAN TIME", "GATE FAILURES", "ERRORS"),
                            [(s.stage, _minutes(s.mean_seconds), s.gate_failures or "", s.errors or "")
                             for s in board.stages])]
    if board.score_per_day:
        lines.insert(3, f"score per day    {sparkline([{p.day: p.value for p in board.score_per_day}.get(p.day) for p in board.cost_per_day])}")
    if board.findings:
        lines += ["", "Findings"] + [f"  - {x}" for x in board.findings]
    if board.forecast:
        lines += ["", f"Forecast: {board.forecast}"]
    if board.unreadable:
        lines += ["", f"unreadable: {', '.join(board.unreadable)} (restore with session-manager backup restore ID)"]
    return "\n".join(lines)


def _bar(percent: float, width: int = 10) -> str:
    filled = int(round(percent / 100 * width))
    return "█" * filled + "░" * (width - filled)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = seconds / 60
    return f"{minutes:.1f}m" if minutes < 60 else f"{int(minutes // 60)}h{int(minutes % 60):02d}m"


# -- HTML with inline SVG --------------------------------------------------------------------------
W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.1
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _frame(chart_id: str, title: str, body: list[str], height: int = H) -> str:
    return (f'<svg id="{chart_id}" class="chart" role="img" aria-labelledby="{chart_id}-title" '
            f'viewBox="0 0 {W} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<title id="{chart_id}-title">{_e(title)}</title>' + "".join(body) + "</svg>")


def _empty(chart_id: str, title: str) -> str:
    return _frame(chart_id, title, [f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle">'
                                    "no data in this period</text>"])


def _y_axis(top_value: float, fmt: str, plot_h: float) -> list[str]:
    parts = []
    for i in range(5):
        value = top_value * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(fmt.format(value))}</text>')
    return parts


def _x_labels(days: list[str], step_x: float) -> list[str]:
    parts = []
    every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        if i % every == 0 or i == len(days) - 1:
            x = LEFT + step_x * (i + 0.5)
            parts.append(f'<text class="tick" x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_e(day[5:])}</text>')
    return parts


def cost_chart(points: list[DayCost]) -> str:
    title = "Cost per day against budget"
    if not any(p.cost_usd or p.budget_usd for p in points):
        return _empty("chart-cost", title)
    plot_h, plot_w = H - TOP - BOTTOM, W - LEFT - RIGHT
    top = _nice_max(max(max(p.cost_usd, p.budget_usd) for p in points))
    step = plot_w / len(points)
    body = _y_axis(top, "${:,.2f}", plot_h)
    for i, p in enumerate(points):
        height = plot_h * p.cost_usd / top
        x = LEFT + step * i + step * 0.15
        over = " over" if p.budget_usd and p.cost_usd >= p.budget_usd else ""
        body.append(f'<rect class="bar cost{over}" data-day="{_e(p.day)}" data-usd="{p.cost_usd}" x="{x:.1f}" '
                    f'y="{TOP + plot_h - height:.1f}" width="{step * 0.7:.1f}" height="{height:.1f}">'
                    f'<title>{_e(p.day)}: {_money(p.cost_usd)} spent, budget {_money(p.budget_usd)}</title></rect>')
    for i, p in enumerate(points):
        if p.budget_usd:
            y = TOP + plot_h - plot_h * p.budget_usd / top
            x = LEFT + step * i + step * 0.05
            body.append(f'<line class="budget" data-day="{_e(p.day)}" x1="{x:.1f}" x2="{x + step * 0.9:.1f}" '
                        f'y1="{y:.1f}" y2="{y:.1f}"><title>{_e(p.day)}: budget {_money(p.budget_usd)} (the sessions'
                        f' started that day)</title></line>')
    body += _x_labels([p.day for p in points], step)
    body.append(_legend([("cost", "#2563eb", "rect"), ("over budget", "#dc2626", "rect"), ("budget", "#111827", "line")]))
    return _frame("chart-cost", title, body)


def quality_chart(series: dict[str, list[MetricPoint]], days: list[str], threshold: float) -> str:
    title = "Quality per metric over time"
    if not series or not days:
        return _empty("chart-quality", title)
    plot_h, plot_w = H - TOP - BOTTOM, W - LEFT - RIGHT
    step = plot_w / len(days)
    where = {day: i for i, day in enumerate(days)}
    body = _y_axis(1.0, "{:.2f}", plot_h)
    y_threshold = TOP + plot_h * (1 - threshold)
    body.append(f'<line class="threshold" x1="{LEFT}" x2="{W - RIGHT}" y1="{y_threshold:.1f}" y2="{y_threshold:.1f}">'
                f'<title>quality alert threshold {threshold:.2f}</title></line>')
    legend = []
    for n, (metric, points) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        coords = [(LEFT + step * (where[p.day] + 0.5), TOP + plot_h * (1 - max(0.0, min(1.0, p.value))), p)
                  for p in points if p.day in where]
        if not coords:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
        body.append(f'<polyline class="series" data-metric="{_e(metric)}" stroke="{color}" points="{path}"/>')
        for x, y, p in coords:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{_e(metric)} {_e(p.day)}:'
                        f' {p.value:.2f}</title></circle>')
        legend.append((metric, color, "line"))
    body += _x_labels(days, step)
    body.append(_legend(legend))
    return _frame("chart-quality", title, body)


def _hbars(chart_id: str, title: str, rows: Sequence[tuple[str, Sequence[tuple[float, str, str]]]], fmt: str,
           legend: list[tuple[str, str, str]] | None = None) -> str:
    """Horizontal bars, one row per stage; each row a stack of (value, class, tooltip)."""
    if not rows or not any(v for _, parts in rows for v, _, _ in parts):
        return _empty(chart_id, title)
    row_h = 24
    height = TOP + BOTTOM + row_h * len(rows)
    label_w = 170
    plot_w = W - label_w - RIGHT - 60
    top = _nice_max(max(sum(v for v, _, _ in parts) for _, parts in rows))
    body = []
    for i, (label, parts) in enumerate(rows):
        y = TOP + i * row_h
        body.append(f'<text class="label" x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_e(label)}</text>')
        x = float(label_w)
        for value, css, tip in parts:
            width = plot_w * value / top
            if width > 0:
                body.append(f'<rect class="bar {css}" data-stage="{_e(label)}" data-value="{value}" x="{x:.1f}" '
                            f'y="{y + 4}" width="{width:.1f}" height="{row_h - 8}"><title>{_e(tip)}</title></rect>')
            x += width
        total = sum(v for v, _, _ in parts)
        body.append(f'<text class="tick" x="{x + 6:.1f}" y="{y + 16}">{_e(fmt.format(total))}</text>')
    if legend:
        body.append(_legend(legend, height))
    return _frame(chart_id, title, body, height)


def duration_unit(seconds: list[float]) -> tuple[str, float, str]:
    """The unit a set of durations reads best in: (name, seconds per unit, label format)."""
    longest = max(seconds, default=0.0)
    if longest < 120:
        return "seconds", 1.0, "{:.0f} s"
    if longest < 2 * 3600:
        return "minutes", 60.0, "{:.1f} min"
    if longest < 3 * 86_400:
        return "hours", 3600.0, "{:.1f} h"
    return "days", 86_400.0, "{:.1f} d"


def stage_chart(stages: list[StageFigure]) -> str:
    unit, size, fmt = duration_unit([s.mean_seconds for s in stages if s.mean_seconds is not None])
    rows = [(s.stage, [((s.mean_seconds or 0) / size, "duration", f"{s.stage}: mean {_minutes(s.mean_seconds)}")])
            for s in stages if s.mean_seconds is not None]
    return _hbars("chart-stages", f"Mean stage duration ({unit})", rows, fmt)


def score_chart(points: list[MetricPoint], days: list[str]) -> str:
    """The mean session score (0-100) per start day, as a line."""
    title = "Session score per day (0-100)"
    if not points or not days:
        return _empty("chart-score", title)
    plot_h, plot_w = H - TOP - BOTTOM, W - LEFT - RIGHT
    step = plot_w / len(days)
    where = {day: i for i, day in enumerate(days)}
    coords = [(LEFT + step * (where[p.day] + 0.5), TOP + plot_h * (1 - max(0.0, min(100.0, p.value)) / 100), p)
              for p in points if p.day in where]
    if not coords:
        return _empty("chart-score", title)
    body = _y_axis(100.0, "{:.0f}", plot_h)
    body.append(f'<polyline class="trend score" stroke="{PALETTE[1]}" '
                f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)}"/>')
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{PALETTE[1]}" data-day="{_e(p.day)}" '
             f'data-score="{p.value}"><title>{_e(p.day)}: score {p.value:.0f}</title></circle>' for x, y, p in coords]
    body += _x_labels(days, step)
    return _frame("chart-score", title, body)


def episode_chart(points: list[MetricPoint]) -> str:
    """What each finished episode cost, in the order they finished."""
    title = "Cost per episode"
    if not points:
        return _empty("chart-episodes", title)
    plot_h, plot_w = H - TOP - BOTTOM, W - LEFT - RIGHT
    top = _nice_max(max(p.value for p in points))
    step = plot_w / len(points)
    body = _y_axis(top, "${:,.2f}", plot_h)
    for i, p in enumerate(points):
        height = plot_h * p.value / top
        body.append(f'<rect class="bar episode" data-episode="{_e(p.day)}" data-usd="{p.value}" '
                    f'x="{LEFT + step * i + step * 0.15:.1f}" y="{TOP + plot_h - height:.1f}" '
                    f'width="{step * 0.7:.1f}" height="{height:.1f}"><title>{_e(p.day)}: {_money(p.value)}</title></rect>')
    every = max(1, len(points) // 10)
    body += [f'<text class="tick" x="{LEFT + step * (i + 0.5):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
             f'{_e(p.day)}</text>' for i, p in enumerate(points) if i % every == 0 or i == len(points) - 1]
    return _frame("chart-episodes", title, body)


def failures_chart(stages: list[StageFigure]) -> str:
    rows = [(s.stage, [(s.gate_failures, "gate", f"{s.stage}: {s.gate_failures} quality gate failures"),
                       (s.errors, "error", f"{s.stage}: {s.errors} recorded failures")])
            for s in stages if s.gate_failures or s.errors]
    return _hbars("chart-failures", "Failures by stage (gate failures, then errors)", rows, "{:.0f}",
                  [("quality gate failures", "#d97706", "rect"), ("recorded failures", "#dc2626", "rect")])


def _legend(items: list[tuple[str, str, str]], height: int = H) -> str:
    parts = []
    x = LEFT
    for name, color, shape in items:
        y = height - 10
        if shape == "rect":
            parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        else:
            parts.append(f'<line x1="{x}" x2="{x + 12}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text class="legend" x="{x + 16}" y="{y}">{_e(name)}</text>')
        x += 24 + 8 * len(name)
    return '<g class="legend">' + "".join(parts) + "</g>"


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1520px;
color:#111827;background:#f9fafb;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}.muted{color:#6b7280}
.figures{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.figure{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:130px}
.figure b{display:block;font-size:22px}.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(740px,1fr));gap:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px;overflow-x:auto}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #f3f4f6}
th{font-weight:600;color:#374151}.progress{background:#e5e7eb;border-radius:4px;height:8px;width:120px}
.progress span{display:block;height:8px;border-radius:4px;background:#2563eb}
svg .grid{stroke:#e5e7eb}svg .tick,svg .label,svg .legend,svg .empty{font-size:11px;fill:#4b5563}
svg .empty{font-size:14px}svg .bar.cost{fill:#2563eb}svg .bar.cost.over{fill:#dc2626}
svg .budget{stroke:#111827;stroke-width:3}
svg .threshold{stroke:#dc2626;stroke-dasharray:4 4}svg .series{fill:none;stroke-width:2}
svg .bar.duration{fill:#0891b2}svg .bar.gate{fill:#d97706}svg .bar.error{fill:#dc2626}
svg.chart{display:block;width:100%;height:auto}svg .trend{fill:none;stroke-width:2}svg .bar.episode{fill:#16a34a}
.findings li{margin:2px 0}
.status-failed{color:#dc2626;font-weight:600}
"""


PAGES = Path(__file__).resolve().parent / "pages"


def html_page(board: Dashboard) -> str:
    """The self-contained page (`dashboard --html`): `pages/dashboard.html.j2`, autoescaped; the
    charts are inline SVG built here (their text is escaped where it is made)."""
    from jinja2 import Environment, FileSystemLoader
    from markupsafe import Markup

    days = [p.day for p in board.cost_per_day]
    figures = [
        ("in progress", sum(1 for s in board.in_progress if s.status != "failed")),
        ("finished", board.finished), ("failed", board.failed), ("errors", board.errors),
        ("minutes / episode", "-" if board.minutes_per_episode is None else f"{board.minutes_per_episode:.0f}"),
        ("dollars / episode", _money(board.dollars_per_episode)),
        ("average quality", "-" if board.average_quality is None else f"{board.average_quality:.2f}"),
    ]
    charts = [("Cost per day against budget", cost_chart(board.cost_per_day)),
              ("Quality per metric over time", quality_chart(board.quality_per_day, days, board.quality_threshold)),
              ("Mean stage duration", stage_chart(board.stages)),
              ("Failures by stage", failures_chart(board.stages)),
              ("Session score", score_chart(board.score_per_day, days)),
              ("Cost per episode", episode_chart(board.cost_per_episode))]
    env = Environment(loader=FileSystemLoader(str(PAGES)), autoescape=True, keep_trailing_newline=True)
    page = env.get_template("dashboard.html.j2")
    return page.render(board=board, figures=figures, charts=[(title, Markup(svg)) for title, svg in charts],
                       style=Markup(STYLE), scope=board.level or "all levels", money=_money,
                       generated=when(board.generated_at))


def write_html(target: Path, text: str) -> Path:
    """Write the page to `target` (`dashboard --html FILE`): only over a regular file or at a
    new path. A device node, a FIFO, a folder or a symbolic link there is refused, never written
    through: the page replaces the path itself, atomically."""
    import os
    import stat as stat_

    from session_manager.errors import InvalidInput
    from session_manager.store import atomic_write

    target = target.expanduser()
    if not target.parent.is_dir():
        raise InvalidInput(f"cannot write {target}: folder {target.parent} does not exist")
    target = target.parent.resolve() / target.name
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat_.S_ISREG(mode):
        kind = "a symbolic link" if stat_.S_ISLNK(mode) else "not a regular file (a device, FIFO or folder)"
        raise InvalidInput(f"cannot write {target}: it is {kind}; give a new path or a regular file")
    atomic_write(target, text)
    return target
