"""CLI: `cost add`, `usage`, `report` and `dashboard`. Parse, call the service, format."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from session_manager.errors import InvalidInput

PERIODS = ("daily", "weekly", "monthly", "session")


def _service() -> Any:
    from session_manager.cli import service

    return service()


def _emit(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    print(result.model_dump_json(indent=2) if getattr(args, "json", False) else human(result))


def _calls(items: list[str] | None) -> dict[str, int] | None:
    calls: dict[str, int] = {}
    for item in items or []:
        name, sep, count = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"--calls must be PROVIDER=COUNT, e.g. perplexity=3; got {item!r}")
        try:
            calls[name.strip()] = calls.get(name.strip(), 0) + int(count)
        except ValueError:
            raise InvalidInput(f"--calls {name}: {count!r} is not a whole number") from None
    return calls or None


# -- handlers -------------------------------------------------------------------------
def cmd_cost_add(args: argparse.Namespace) -> None:
    from session_manager.cli import _split_id

    session_id, rest = _split_id(args.words)
    if rest:
        raise InvalidInput(f"cost add takes [ID] and options; unexpected {' '.join(rest)!r}")
    result = _service().record_cost(
        session_id=session_id, stage=args.stage, model=args.model, input_tokens=args.input,
        output_tokens=args.output, cache_write_tokens=args.cache_write, cache_read_tokens=args.cache_read,
        calls=_calls(args.calls), usd=args.usd,
    )
    _emit(args, result, cost_view)


def cmd_usage(args: argparse.Namespace) -> None:
    words = list(args.words)
    if words and words[0] == "attach":
        if len(words) > 2:
            raise InvalidInput("usage attach takes [ID]")
        _emit(args, _service().usage_attach(session_id=words[1] if len(words) == 2 else None), attach_view)
        return
    if len(words) > 1 or (words and words[0] not in PERIODS):
        raise InvalidInput(f"usage takes one of {', '.join(PERIODS)} (or `attach [ID]`); got {' '.join(words)!r}")
    result = _service().usage(period=words[0] if words else "daily", since=args.since, until=args.until)
    _emit(args, result, usage_view)


def cmd_report(args: argparse.Namespace) -> None:
    if args.json and args.format:
        raise InvalidInput("give --json or --format, not both")
    svc = _service()
    result = svc.report(period=args.period, since=args.since, until=args.until, level=args.level)
    if args.format == "md":
        from session_manager import render

        print(render.render_text(svc.root, "report", report_context(result), result.level), end="")
    else:
        _emit(args, result, report_view)


def cmd_dashboard(args: argparse.Namespace) -> None:
    from session_manager import dashboard

    result = _service().dashboard(days=args.days, level=args.level)
    if args.html:
        from session_manager.store import atomic_write

        target = Path(args.html).expanduser()
        if not target.parent.is_dir():
            raise InvalidInput(f"cannot write {args.html}: folder {target.parent} does not exist")
        atomic_write(target.resolve(), dashboard.html_page(result))
        if not args.json:
            print(f"wrote {target} ({len(result.in_progress)} in progress, {result.finished} finished,"
                  f" last {result.days} days)")
            return
    _emit(args, result, dashboard.text)


# -- parser ---------------------------------------------------------------------------
def register(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    from session_manager.cli import ID_NOTE, Parser

    group = sub.add_parser("cost", help="record costs (add)")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
    text = ("Record a cost: tokens per kind with their model, API calls per provider, or USD:"
            " cost add [ID] --model claude-sonnet-4-5 --input 12000 --output 3000.")
    p = verbs.add_parser("add", help=text, description=text + " USD is computed from the price table (override"
                         " it under [prices] in .claude/session-manager.toml) unless --usd is given. " + ID_NOTE)
    p.set_defaults(handler=cmd_cost_add)
    p.add_argument("words", nargs="*", metavar="ID")
    p.add_argument("--stage", help="the stage the cost belongs to")
    p.add_argument("--model", help="the model that used the tokens, e.g. claude-sonnet-4-5")
    p.add_argument("--input", type=int, default=0, metavar="N", help="input tokens")
    p.add_argument("--output", type=int, default=0, metavar="N", help="output tokens")
    p.add_argument("--cache-write", type=int, default=0, metavar="N", help="cache write (creation) tokens")
    p.add_argument("--cache-read", type=int, default=0, metavar="N", help="cache read tokens")
    p.add_argument("--calls", action="append", metavar="PROVIDER=N", help="API calls, e.g. perplexity=3 (repeat)")
    p.add_argument("--usd", type=float, help="the amount in USD (skips the price table)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")

    p = command("usage", cmd_usage, "Claude Code token usage from its transcripts: usage [daily|weekly|monthly|"
                "session] [--since D] [--until D]; usage attach [ID] books it into a session.")
    p.add_argument("words", nargs="*", metavar="PERIOD|attach [ID]")
    p.add_argument("--since", help="from this date (YYYY-MM-DD) or time")
    p.add_argument("--until", help="through this date (YYYY-MM-DD, inclusive) or up to this time")

    p = command("report", cmd_report, "Report on sessions: report today|week|month, or --since/--until.")
    p.add_argument("period", nargs="?", default="week", choices=["today", "week", "month"],
                   help="today (since midnight), week (last 7 days, default), month (last 30 days)")
    p.add_argument("--since", help="from this date (YYYY-MM-DD) or time")
    p.add_argument("--until", help="through this date (YYYY-MM-DD, inclusive) or up to this time")
    p.add_argument("--level", help="only this level (any alias)")
    p.add_argument("--format", choices=["md", "table"], help="md: the report.md template; table: the terminal"
                   " view (default)")

    p = command("dashboard", cmd_dashboard, "Sessions in progress, finished, failures, minutes and dollars per"
                " episode, average quality; --html FILE writes a page with charts.")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page (inline SVG charts)")
    p.add_argument("--days", type=int, default=30, help="the window of the figures and charts (default 30)")
    p.add_argument("--level", help="only this level (any alias)")


# -- views ----------------------------------------------------------------------------
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
    lines = [f"booked {_money(result.usd, 4)} ({how}) to {where}"]
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
    headers = (("CLAUDE SESSION", "PROJECT", "SESSION") if session
               else ({"daily": "DAY", "weekly": "WEEK OF", "monthly": "MONTH"}[report.period],))
    headers = headers + ("INPUT", "OUTPUT", "CACHE WRITE", "CACHE READ", "TOTAL", "COST", "MODELS")
    rows = []
    for row in [*report.rows, report.totals]:
        label = (row.period[:8] if session and row is not report.totals else row.period,)
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
    how = ("Claude Code sessions " + ", ".join(s[:8] for s in result.claude_sessions)
           if result.method == "claude_sessions" else "this project's transcripts in the session's time window")
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
