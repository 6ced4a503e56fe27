"""Terminal views of costs, usage, reports and the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from session_manager.errors import InvalidInput

def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _tokens(value: int) -> str:
    return f"{value:,}"


def _duration(seconds: float | None) -> str:
    from session_manager.views import human_duration

    return human_duration(seconds)


def cost_view(result: Any) -> str:
    where = result.session_id + (f" stage {result.stage}" if result.stage else "")
    how = "computed" if result.computed else "given"
    entry = f" as entry {result.entry}" if getattr(result, "entry", None) else ""
    lines = [f"booked {_money(result.usd, 4)} ({how}) to {where}{entry}"]
    parts = [f"{_tokens(getattr(result.tokens, kind))} {label}" for kind, label in
             (("input", "in"), ("output", "out"), ("cache_write", "cache write"), ("cache_read", "cache read"))
             if getattr(result.tokens, kind)]
    if parts:
        lines.append(f"  {result.model or 'no model'}" + (f" (priced as {result.priced_as})" if result.priced_as
                                                          and result.priced_as != result.model else "")
                     + ": " + ", ".join(parts))
    if result.calls:
        lines.append("  calls: " + ", ".join(f"{name} x{count}" for name, count in result.calls.items()))
    total = f"  session total {_money(result.total_cost)}"
    if result.budget_usd:
        total += f" of {_money(result.budget_usd)} budget ({_pct(result.budget_used)})"
    lines.append(total)
    lines += [f"  warning: {w}" for w in result.warnings]
    lines += [f"  {'!!' if a.severity == 'critical' else '! '} {a.kind}: {a.message}" for a in result.alerts]
    return "\n".join(lines)


def usage_view(report: Any) -> str:
    from session_manager.dashboard import sparkline
    from session_manager.views import table

    if not report.sources:
        return ("no Claude Code transcripts found: set CLAUDE_CONFIG_DIR, or use Claude Code so it writes"
                " ~/.claude/projects/")
    session = report.period == "session"
    headers: tuple[str, ...] = (("CLAUDE SESSION", "PROJECT", "SESSION") if session
                                else ({"daily": "DAY", "weekly": "WEEK OF", "monthly": "MONTH", "branch": "GIT BRANCH"}
                                      .get(report.period, report.period.upper()),))
    headers = headers + ("INPUT", "OUTPUT", "CACHE WRITE", "CACHE READ", "TOTAL", "COST", "MODELS")
    rows = []
    for row in [*report.rows, report.totals]:
        label: tuple[str, ...] = (row.period[:8] if session and row is not report.totals else row.period,)
        if session:
            label += ((row.project or "")[-30:], row.session_id or "")
        models = ", ".join(m.model for m in row.models[:3]) + (" ..." if len(row.models) > 3 else "")
        rows.append((*label, _tokens(row.input_tokens), _tokens(row.output_tokens), _tokens(row.cache_write_tokens),
                     _tokens(row.cache_read_tokens), _tokens(row.total_tokens), _money(row.cost_usd), models))
    lines = [table(headers, rows)]
    if len(report.rows) > 1 and not session:
        lines.append(f"\ncost trend  {sparkline([r.cost_usd for r in report.rows])}")
    stats = report.imported
    lines.append(f"\nread {stats.files_read} of {stats.files_seen} transcript files, {stats.bytes_read / 1e6:,.1f} MB,"
                 f" {stats.responses_new} new responses, in {stats.seconds:.2f} s")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def attach_view(result: Any) -> str:
    how = "Claude Code conversations " + (", ".join(s[:8] for s in result.claude_sessions) or "(none bound)")
    lines = [f"{result.session_id}: {result.responses} responses from {how}",
             f"  {_tokens(result.tokens.total)} tokens, {_money(result.usd, 4)}"
             f" ({'+' if result.added_usd >= 0 else ''}{_money(result.added_usd, 4)} since the last attach)",
             f"  session total {_money(result.total_cost)}" + (f" of {_money(result.budget_usd)} budget"
                                                              if result.budget_usd else "")]
    lines += [f"  {m.model}: {_tokens(m.total_tokens)} tokens, {_money(m.cost_usd, 4)}" for m in result.models]
    lines += [f"  warning: {w}" for w in result.warnings]
    lines += [f"  {'!!' if a.severity == 'critical' else '! '} {a.kind}: {a.message}" for a in result.alerts]
    return "\n".join(lines)


def report_view(report: Any) -> str:
    from session_manager.dashboard import sparkline
    from session_manager.views import table

    s, c = report.sessions, report.cost
    span = f"{report.since.astimezone():%Y-%m-%d %H:%M} → {report.until.astimezone():%Y-%m-%d %H:%M}"
    lines = [f"Report · {report.period} · {span} · {report.level or 'all levels'}", ""]
    lines.append(f"Sessions  run {s.run} · started {s.started} · finished {s.finished} · not started {s.initialized}"
                 f" · in progress {s.in_progress} · failed {s.failed} · abandoned {s.abandoned}")
    lines.append(f"          completion rate {_pct(s.completion_rate)} · error recovery rate"
                 f" {_pct(s.error_recovery_rate)} ({s.recovered} of {s.with_errors} that met an error)")
    if report.trend:
        days = f"{report.trend[0].day} .. {report.trend[-1].day}"
        lines.append(f"Trend     sessions {sparkline([p.sessions for p in report.trend])}"
                     f"   cost {sparkline([p.cost_usd for p in report.trend])}"
                     f"   quality {sparkline([p.quality for p in report.trend])}   (per day, {days})")
    lines += ["", "Quality"]
    if report.quality:
        lines.append(table(("METRIC", "N", "MEAN", "STDEV", "MIN", "MAX"),
                           [(m, q.n, _num(q.mean), _num(q.stdev, 3), _num(q.min), _num(q.max))
                            for m, q in report.quality.items()], "  "))
    else:
        lines.append("  no quality scores in this period")
    per = c.per_session
    lines += ["", "Cost", f"  total {_money(c.total_usd)} · per session mean {_money(per.mean)}, median"
              f" {_money(per.median)}, min {_money(per.min)}, max {_money(per.max)}"
              + (f" · target {_money(c.target_usd)} ({_pct(c.vs_target)} of target)" if c.target_usd else "")
              + f" · over budget {c.over_budget} · near budget {c.near_budget}"]
    if c.by_stage:
        rows = [(b.stage, _money(b.total_usd), _money(b.mean_usd), b.sessions, _pct(b.share), _money(b.target_usd))
                for b in c.by_stage]
        if c.unassigned_usd:
            rows.append(("(no stage)", _money(c.unassigned_usd), "", "", _pct(c.unassigned_usd / c.total_usd), ""))
        lines.append(table(("STAGE", "TOTAL", "MEAN", "SESSIONS", "SHARE", "TARGET"), rows, "  "))
    t = report.time_to_completion_seconds
    lines += ["", "Time", f"  to completion ({t.n} finished): mean {_duration(t.mean)}, median {_duration(t.median)},"
              f" min {_duration(t.min)}, max {_duration(t.max)}"]
    if report.stage_seconds:
        lines.append(table(("STAGE", "N", "MEAN", "MEDIAN", "MAX"),
                           [(name, st.n, _duration(st.mean), _duration(st.median), _duration(st.max))
                            for name, st in report.stage_seconds.items()], "  "))
    lines += ["", "Gate failures by stage"]
    lines.append(table(("STAGE", "FAILURES", "SESSIONS"), [(g.stage, g.failures, g.sessions)
                                                          for g in report.gate_failures], "  ")
                 if report.gate_failures else "  none")
    lines += ["", f"Recurring errors ({report.errors} failures recorded)"]
    lines.append(table(("COUNT", "SESSIONS", "STAGES", "PATTERN"),
                       [(e.count, e.sessions, ", ".join(e.stages), e.pattern[:80]) for e in report.recurring_errors],
                       "  ") if report.recurring_errors else "  none")
    lines += ["", f"Bypasses ({report.bypass_count})"]
    lines += [f"  {b.session_id} {b.stage}: {b.reason}" for b in report.bypasses] or ["  none"]
    lines += ["", "Alerts" + (" (" + ", ".join(f"{k} {v}" for k, v in report.alert_counts.items()) + ")"
                              if report.alert_counts else "")]
    lines += [f"  {'!!' if a.severity == 'critical' else '! '} {a.session_id} {a.kind}: {a.message}"
              for a in report.alerts] or ["  none"]
    if report.unreadable:
        lines += ["", f"unreadable: {', '.join(report.unreadable)} (restore with session-manager backup restore ID)"]
    return "\n".join(lines)


def report_context(report: Any) -> dict[str, Any]:
    """What templates/report.md.j2 sees: the report as plain data, plus the sparklines."""
    from session_manager.dashboard import sparkline

    data = report.model_dump(mode="json")
    data["sparklines"] = {
        "sessions": sparkline([p.sessions for p in report.trend]),
        "cost": sparkline([p.cost_usd for p in report.trend]),
        "quality": sparkline([p.quality for p in report.trend]),
    }
    return {"report": data}


def report_output(report: Any, request: Any, options: dict[str, Any]) -> str:
    """`report`: the terminal table, JSON (--json) or the report.md template (--format md)."""
    if options.get("json") and options.get("format"):
        raise InvalidInput("give --json or --format, not both")
    if options.get("json"):
        return str(report.model_dump_json(indent=2))
    if options.get("format") == "md":
        from session_manager import render

        return render.render_text(options["service"].root, "report", report_context(report), report.level).rstrip("\n")
    return report_view(report)


def dashboard_output(board: Any, request: Any, options: dict[str, Any]) -> str:
    """`dashboard`: the terminal view or JSON; with --html FILE also a self-contained page. The page
    is written only to a regular file or a new path (never over a device, a FIFO or a link)."""
    from session_manager import dashboard

    html = options.get("html")
    if html:
        target = dashboard.write_html(Path(html), dashboard.html_page(board))
        if not options.get("json"):
            return (f"wrote {target} ({len(board.in_progress)} in progress, {board.finished} finished,"
                    f" last {board.days} days)")
    if options.get("json"):
        return str(board.model_dump_json(indent=2))
    return str(dashboard.text(board))


def removal_view(result: Any) -> str:
    lines = [f"took back entry {result.entry} ({_money(result.usd, 4)}) from {result.session_id}: {result.reason}",
             f"  session total {_money(result.total_cost)}" + (f" of {_money(result.budget_usd)} budget"
                                                              if result.budget_usd else "")]
    lines += [f"  {'!!' if a.severity == 'critical' else '! '} {a.kind}: {a.message}" for a in result.alerts]
    return "\n".join(lines)


def bind_view(result: Any) -> str:
    if not result.recorded:
        return f"{result.claude_session} was already bound to {result.session_id} from {result.since}"
    moved = f" (before: {result.previous_session})" if result.previous_session else ""
    return f"bound conversation {result.claude_session} to {result.session_id} from {result.since}{moved}"
