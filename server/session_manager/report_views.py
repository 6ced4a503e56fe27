"""Terminal views of costs, usage, reports and the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from session_manager.errors import InvalidInput
from session_manager.formatting import duration, money, number, pct, tokens, when

# one formatting module decides how figures read (formatting.py)
_money, _pct, _num, _tokens, _duration = money, pct, number, tokens, duration


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
    span = f"{when(report.since)} → {when(report.until)}"
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
    if report.analytics is not None:
        lines += analytics_lines(report.analytics, report.period)
    if report.unreadable:
        lines += ["", f"unreadable: {', '.join(report.unreadable)} (restore with session-manager backup restore ID)"]
    return "\n".join(lines)


# -- seed 003's lines, seed 000's analytics, findings, forecast (analytics.py) --------------------------
def _minutes(value: float | None) -> str:
    return "-" if value is None else _duration(value * 60)


def analytics_lines(a: Any, period: str) -> list[str]:
    """The report's analytics in the terminal: the period's own lines first (today: the day's summary
    and key learnings; week: trends, velocity, opportunities; month: production, cost per episode,
    quality against the previous window, maturity), then quality by stage, models, findings, forecast."""
    from session_manager.dashboard import sparkline
    from session_manager.views import table

    lines = ["", "Summary", f"  episodes produced {a.episodes_produced} · quality average {_num(a.quality_average)}"
             f" · consistency (stdev) {_num(a.quality_consistency, 3)}"
             f" · session score mean {_num(a.sessions.mean_score, 0)} ({a.sessions.scored} scored)"
             f" · completion {_pct(a.sessions.mean_completion_rate)} · time {_num(a.sessions.mean_time_efficiency)}x"
             f" estimate"]
    lines += ["", "Key learnings"] + ([f"  - {n.text}  ({n.session_id}, {n.at:%Y-%m-%d})" for n in a.key_learnings]
                                      or ["  none recorded"])
    if period != "today":
        change = f" ({_num(a.cost_change)}x later half vs earlier)" if a.cost_change is not None else ""
        q_change = f" ({a.quality_change:+.3f})" if a.quality_change is not None else ""
        lines += ["", "Trends", f"  cost    {sparkline([p.value for p in a.cost_trend])}{change}",
                  f"  quality {sparkline([p.value for p in a.quality_trend])}{q_change}"]
        if a.velocity is not None:
            v = a.velocity
            lines += ["", f"Velocity  {v.tasks_per_day:g} tasks/day ({v.tasks_done}) · {v.stages_per_day:g} stages/day"
                          f" ({v.stages_done}) over {v.days:g} days"]
            if v.minutes_per_stage:
                lines.append(table(("STAGE", "N", "MEDIAN", "EXPECTED", "RATIO"),
                                   [(t.stage, t.sessions, _minutes(t.median_minutes), _minutes(t.expected_minutes),
                                     _num(t.ratio)) for t in v.minutes_per_stage], "  "))
    if period not in ("today", "week"):
        qi = a.quality_improvement
        lines += ["", f"Production  {a.total_production} episodes · quality {_num(qi.current)} vs {_num(qi.previous)}"
                      f" the window before" + (f" ({qi.change:+.3f})" if qi.change is not None else "")]
        if a.cost_per_episode:
            lines.append(f"  cost per episode {sparkline([e.usd for e in a.cost_per_episode])}"
                         f"  ({_money(a.cost_per_episode[0].usd)} .. {_money(a.cost_per_episode[-1].usd)})")
        m = a.maturity
        lines.append(f"  maturity: recovery {_pct(m.recovery_rate)} · gate first pass {_pct(m.gate_first_pass_rate)}"
                     f" · estimate accuracy {_pct(m.estimate_accuracy)}"
                     f"  (weekly accuracy {sparkline([p.estimate_accuracy for p in m.series])})")
    if a.quality_by_stage:
        lines += ["", "Quality by stage", table(("STAGE", "N", "MEAN", "STDEV", "MIN", "MAX"),
                                                [(q.stage, q.n, _num(q.mean), _num(q.stdev, 3), _num(q.min), _num(q.max))
                                                 for q in a.quality_by_stage], "  ")]
    if a.gate_analysis:
        lines += ["", "Gates", table(("STAGE", "EVALUATED", "FIRST PASS", "FAILURES", "RATE"),
                                     [(g.stage, g.evaluated, g.first_pass, g.failures, _pct(g.first_pass_rate))
                                      for g in a.gate_analysis], "  ")]
    if a.models:
        lines += ["", "Models", table(("MODEL", "STAGE RUNS", "COST", "MEAN", "QUALITY"),
                                      [(m.model, m.stages, _money(m.cost_usd), _money(m.mean_cost_usd),
                                        _num(m.mean_quality)) for m in a.models], "  ")]
    cv, te = a.cost_variance, a.token_efficiency
    if cv.sessions:
        lines += ["", f"Cost vs target  mean {_money(cv.mean_actual_usd)} against {_money(cv.mean_target_usd)}"
                      f" ({'+' if (cv.mean_variance_usd or 0) >= 0 else ''}{_money(cv.mean_variance_usd)}) · over"
                      f" {cv.over} · within {cv.under}"]
    if te.tokens:
        lines.append(f"Tokens  {te.tokens:,} · {_money(te.usd_per_million)} per million · "
                     f"{te.tokens_per_finished_session or '-'} per finished session")
    lines += ["", f"Findings ({len(a.findings)})"]
    lines += [f"  [{f.category}] {f.message}" for f in a.findings] or ["  nothing crossed a threshold"]
    if a.forecast is not None:
        f = a.forecast
        lines += ["", f"Forecast {f.month}  {_money(f.month_to_date_usd)} so far ({f.days_elapsed:g} of"
                      f" {f.days_in_month} days) → {_money(f.month_end_usd)} at month end · {f.active_sessions}"
                      f" active sessions need ~{_money(f.cost_to_finish_usd)} more"]
        if f.monthly_budget_usd is not None:
            lines.append(f"  budget {_money(f.monthly_budget_usd)}: {_money(f.remaining_budget_usd)} left buys"
                         f" {f.episodes_affordable if f.episodes_affordable is not None else '-'} episodes at"
                         f" {_money(f.cost_per_episode_usd)}")
        elif f.note:
            lines.append(f"  {f.note}")
    return lines


def report_context(report: Any) -> dict[str, Any]:
    """What templates/report.md.j2 sees: the report as plain data, plus the sparklines."""
    from session_manager.dashboard import sparkline

    data = report.model_dump(mode="json")
    data["sparklines"] = {
        "sessions": sparkline([p.sessions for p in report.trend]),
        "cost": sparkline([p.cost_usd for p in report.trend]),
        "quality": sparkline([p.quality for p in report.trend]),
    }
    if report.analytics is not None:
        a = report.analytics
        data["sparklines"].update({
            "cost_per_episode": sparkline([e.usd for e in a.cost_per_episode]),
            "estimate_accuracy": sparkline([p.estimate_accuracy for p in a.maturity.series]),
            "first_pass": sparkline([p.gate_first_pass_rate for p in a.maturity.series]),
        })
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
