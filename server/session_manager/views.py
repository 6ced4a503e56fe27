"""Terminal views: turn result models into clean, aligned text. No business rules here.

A view is `view(result)`, `view(result, request)` or `view(result, request, options)`; the CLI
passes what it takes (`options` holds the CLI-only presentation options and the service)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from session_manager.formatting import alert_marked, duration, money, pct, when
from session_manager.model import DONE_STAGE, Alert, format_duration
from session_manager.results import Journal, SessionDetail, SessionList, SessionSummary, StageResult, Status

def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(indent + line for line in lines)


def alerts_block(alerts: Sequence[Alert]) -> list[str]:
    return ["  " + alert_marked(a) for a in alerts]


# kept for the other views' imports: one formatting module decides how these read
human_duration = duration


def session_list(result: SessionList, empty: str = "no sessions") -> str:
    damaged = "".join(f"\n  !! {message}" for message in result.damaged)
    if damaged:
        damaged = "\nDamaged sessions:" + damaged
    if not result.sessions:
        return empty + damaged
    rows = [
        (s.session_id, s.level, s.status, s.current_stage or "-", f"{s.progress_percent:.0f}%",
         money(s.total_cost), s.tasks_pending, "!" * len(s.alerts), (s.topic or "")[:40])
        for s in result.sessions
    ]
    return table(("ID", "LEVEL", "STATUS", "STAGE", "DONE", "COST", "TASKS", "ALERTS", "TOPIC"), rows) + damaged


def session_detail(detail: SessionDetail) -> str:
    state, meta = detail.state, detail.metadata
    done = sum(1 for s in state.stages.values() if s.status in DONE_STAGE)
    title = f"{state.session_id}  {state.level}  {state.status}"
    if meta.topic:
        title += f"  · {meta.topic}"
    lines = [title]
    line = f"started {when(state.started_at)} · updated {when(state.last_updated)}"
    line += f" · progress {state.progress.percent:.0f}% ({done}/{len(state.stages)} stages)"
    if detail.estimate_remaining_seconds is not None and state.active:
        line += f" · ~{duration(detail.estimate_remaining_seconds)} left"
    lines.append(line)
    budget = state.budget.usd
    spent = state.cost_tracking.total_cost
    cost = f"cost {money(spent)}"
    if budget:
        cost += f" of {money(budget)} budget ({spent / budget:.0%})"
    cost += f" · {plural(state.error_count, 'error')} · {plural(state.recovery_count, 'recovery')}".replace("recoverys", "recoveries")
    if state.quality_overall is not None:
        cost += f" · quality {state.quality_overall:.2f}"
    lines.append(cost)
    if state.ended_at:
        lines.append(f"ended {when(state.ended_at)}" + (f": {state.summary}" if state.summary else ""))
    if detail.metrics is not None and (detail.metrics.score is not None or detail.metrics.tasks_planned):
        lines.append(metrics_line(detail.metrics))
    lines.append("")
    rows = []
    for index, (name, stage) in enumerate(state.stages.items(), 1):
        marker = ">" if name == state.current_stage and state.active else " "
        note = stage.override_reason or stage.feedback or stage.last_error or ""
        rows.append((f"{marker}{index}", name, stage.status, stage.attempts or "",
                     format_duration(stage.execution_seconds) if stage.execution_seconds is not None else "",
                     f"{stage.overall_score:.2f}" if stage.overall_score is not None else "",
                     money(state.cost_tracking.cost_by_stage[name]) if name in state.cost_tracking.cost_by_stage else "",
                     note[:50]))
    lines.append(table(("#", "STAGE", "STATUS", "TRIES", "TIME", "QUALITY", "COST", "NOTE"), rows))
    if detail.phases and any(p.status != "pending" for p in detail.phases):
        lines.append("phases: " + " · ".join(f"{p.phase} {p.done}/{len(p.stages)}" + (f" {money(p.cost_usd)}"
                                                                                  if p.cost_usd else "")
                                             for p in detail.phases))
    progress = state.progress
    if progress.tasks_pending or progress.tasks_completed or progress.tasks_failed:
        failed = f", {len(progress.tasks_failed)} failed" if progress.tasks_failed else ""
        lines += ["", f"Tasks ({len(progress.tasks_pending)} open, {len(progress.tasks_completed)} done{failed})"]
        lines += [task_line(t) for t in progress.tasks_pending]
        lines += [task_line(t) for t in progress.tasks_failed[-5:]]
        lines += [task_line(t) for t in progress.tasks_completed[-5:]]
    if progress.blockers:
        lines += ["", "Blockers"] + [f"  ! #{b.id} {b.text}" for b in progress.blockers]
    for title, notes in (("Learnings", progress.learnings), ("Decisions", progress.decisions)):
        if notes:
            more = f" (last 5 of {len(notes)})" if len(notes) > 5 else ""
            lines += ["", title + more] + [f"  - {n.text}" for n in notes[-5:]]
    if state.alerts:
        lines += ["", "Alerts"] + alerts_block(state.alerts)
    if meta.objectives:
        lines += ["", "Objectives"] + [f"  - {o}" for o in meta.objectives]
    return "\n".join(lines)


UPDATE_VERBS = {"add_tasks": "added task", "complete_tasks": "completed task", "blockers": "added blocker",
                "clear_blockers": "cleared blocker", "learnings": "recorded learning", "decisions": "recorded decision"}


def update_summary(detail: SessionDetail, request: Any) -> str:
    """One line for a task/blocker/learning/decision change, instead of the whole session view."""
    progress = detail.state.progress
    changes = []
    for field, done in UPDATE_VERBS.items():
        items: Sequence[str] = getattr(request, field) or []
        if items:
            changes.append(f"{done} {items[0]!r}" if len(items) == 1
                           else f"{done}s " + ", ".join(repr(i) for i in items))
    what = "; ".join(changes)
    return (f"{detail.state.session_id}: {what} · tasks {len(progress.tasks_pending)} pending,"
            f" {len(progress.tasks_completed)} done · blockers {len(progress.blockers)}"
            f" · learnings {len(progress.learnings)} · decisions {len(progress.decisions)}")


def ended(detail: SessionDetail) -> str:
    state = detail.state
    lines = [f"ended {state.session_id} ({state.status})"]
    if detail.metrics is not None:
        lines.append("  " + metrics_line(detail.metrics))
    pending, blockers = len(state.progress.tasks_pending), len(state.progress.blockers)
    if state.status == "completed" and (pending or blockers):
        lines.append(f"  {plural(pending, 'pending task')} and {plural(blockers, 'open blocker')} carry over to"
                     f" the next {state.level} session")
    return "\n".join(lines) + "\n\n" + session_detail(detail)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def override_result(result: StageResult, request: Any) -> str:
    return stage_result(result, "bypassed" if request.action == "bypass" else "skipped")


def stage_result(result: StageResult, verb: str | None = None) -> str:
    if verb and result.decision in ("advanced", "completed"):  # a bypass or a skip moved the pipeline on
        rest = "all stages done, session completed" if result.decision == "completed" else f"next: {result.next_stage}"
        result = result.model_copy(update={"decision": f"{verb}: {rest}"})
    head = {
        "started": f"started {result.stage} (attempt {result.attempts}, {result.attempts_left} left after this)",
        "advanced": f"{result.stage} complete; next: {result.next_stage}",
        "completed": f"{result.stage} complete; all stages done, session completed",
        "retry": f"{result.stage}: retry ({result.attempts_left} attempt(s) left)",
        "routed_back": f"{result.stage}: quality gate failed; routed back to {result.routed_to}",
        "escalated": f"{result.stage}: escalated, session failed: needs a person (resume when fixed)",
        "resumed": f"resumed at {result.stage}",
    }.get(result.decision, f"{result.stage} {result.decision}")
    lines = [f"{result.session_id}: {head}"]
    if result.overall_score is not None:
        lines.append(f"  quality {result.overall_score:.2f}")
    lines += [f"  feedback: {f}" for f in result.feedback]
    lines.append(f"  session {result.session_status} · {result.progress_percent:.0f}% · cost {money(result.total_cost)}")
    lines += alerts_block(result.alerts)
    return "\n".join(lines)


def started(detail: SessionDetail) -> str:
    return f"started {detail.state.session_id}\n  {detail.folder}\n\n" + session_detail(detail)


def status(result: Status) -> str:
    if result.one:
        return session_detail(result.sessions[0])
    listed = SessionList(sessions=[SessionSummary.of(d.state, d.metadata) for d in result.sessions],
                         damaged=result.damaged)
    return session_list(listed, "no active sessions (start one: session-manager start dev)")


def journal(result: Journal) -> str:
    lines = []
    for record in result.events:
        extra = {k: v for k, v in record.items() if k not in ("session_id", "at", "actor", "event")}
        detail = " ".join(f"{k}={v}" for k, v in extra.items() if v not in (None, [], ""))
        lines.append(f"{record.get('at', '?')}  {record.get('actor', '?'):<6} {record.get('event', '?'):<18} {detail}")
    return "\n".join(lines) if lines else f"no events in {result.session_id}"


def rendered(result: Any) -> str:
    text = f"rendered {', '.join(result.files) or 'nothing'} in {result.folder}"
    added = ", ".join(f"{n} line{'s' if n > 1 else ''} to {name}" for name, n in result.memory.items())
    return text + (f"\nmemory: added {added}" if added else "")


def templates(result: Any) -> str:
    rows = [(t.name, t.level, t.source, t.path) for t in result.templates]
    note = (f"\n\nTo change one: session-manager templates copy NAME [--level LEVEL] puts the shipped file"
            f" in {result.project_folder}/ for you to edit; it then wins over the shipped one.")
    return table(("TEMPLATE", "LEVEL", "SOURCE", "FILE"), rows) + note


def text(result: str) -> str:
    return result.rstrip("\n")


def template_copied(result: Any) -> str:
    return f"copied {result.source} to {result.path}: edit it there; it now wins over the shipped one"


# -- batches and templates that learn (issue 17) -------------------------------------------------
def batch_status(result: Any) -> str:
    """A batch and its members; `batch start` and `batch end` answer with it too."""
    from session_manager.batch import BatchNext, BatchReport

    if isinstance(result, BatchReport):
        return batch_report(result)
    if isinstance(result, BatchNext):
        return batch_next(result)
    lines = [f"{result.batch_id}  {result.status}  episodes {_episodes(result.episodes)}  ·  {result.folder}",
             f"in progress {len(result.in_progress)} of {result.max_concurrent} allowed · waiting"
             f" {len(result.waiting)} · done {len(result.done)}" + (f" · failed/abandoned {len(result.ended)}"
                                                                     if result.ended else "")
             + f" · cost {money(result.total_cost)}" + (f" of {money(result.budget_usd)}" if result.budget_usd else ""),
             ""]
    rows = [(m.session_id, m.state, m.current_stage or "-", m.stage_status or "-", f"{m.progress_percent:.0f}%",
             money(m.cost_usd), f"{m.quality:.2f}" if m.quality is not None else "", (m.topic or "")[:30])
            for m in result.members]
    lines.append(table(("MEMBER", "STATE", "STAGE", "STAGE STATUS", "DONE", "COST", "QUALITY", "TOPIC"), rows))
    lines += [f"  !! {message}" for message in result.damaged]
    return "\n".join(lines)


def _episodes(numbers: Sequence[int]) -> str:
    if numbers and list(numbers) == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
    return ",".join(str(n) for n in numbers)


def batch_next(result: Any) -> str:
    head = f"{result.batch_id}: next {result.session_id}" if result.session_id else f"{result.batch_id}: nothing to start"
    lines = [head + (f" ({result.stage})" if result.stage else ""), f"  {result.reason}"]
    if result.command:
        lines.append(f"  run: {result.command}")
    return "\n".join(lines)


def batch_report(result: Any) -> str:
    rows = [(m.session_id, m.status, money(m.cost_usd), money(m.budget_usd), human_duration(_secs(m.minutes)),
             human_duration(m.stage_minutes * 60), f"{m.quality:.2f}" if m.quality is not None else "",
             m.gate_failures or "")
            for m in result.members]
    lines = [f"{result.batch_id}  {result.status}", "",
             table(("MEMBER", "STATUS", "COST", "BUDGET", "TIME", "STAGE TIME", "QUALITY", "GATE FAILS"), rows), ""]
    lines.append(f"total cost {money(result.total_cost)}" + (f" of {money(result.budget_usd)} budget"
                                                            if result.budget_usd else ""))
    wall = human_duration(_secs(result.wall_minutes))
    lines.append(f"wall time {wall} against {human_duration(result.member_minutes * 60)} of member time"
                 + (f" ({result.parallel_gain:.1f}x)" if result.parallel_gain else ""))
    q = result.quality
    if q.members:
        lines.append(f"quality over {q.members} member(s): mean {q.mean:.2f}, {q.min:.2f}..{q.max:.2f}"
                     f" (spread {q.spread:.2f}, stdev {q.stdev:.2f})")
    if result.cost_by_phase:
        lines.append("cost by phase: " + ", ".join(f"{k} {money(v)}" for k, v in result.cost_by_phase.items()))
    if result.gate_failures_by_stage:
        lines.append("gate failures: " + ", ".join(f"{k} {v}" for k, v in result.gate_failures_by_stage.items()))
    lines += [f"  !! {message}" for message in result.damaged]
    return "\n".join(lines)


def _secs(minutes: float | None) -> float | None:
    return None if minutes is None else minutes * 60


def evolution(result: Any, options: dict[str, Any]) -> str:
    """The proposals as a diff, then their evidence; `--json` prints `{"proposals": [...], ...}`."""
    if options.get("json"):
        return str(result.model_dump_json(indent=2))
    if not result.proposals:
        used = sum(len(v) for v in result.successful.values())
        return (f"no proposals: {used} successful session(s) of {result.sessions_read} read"
                " (a figure needs 3 successful runs; a lesson, a learning in 2 sessions)")
    lines = [result.diff.rstrip("\n"), "", "Evidence"]
    for p in result.proposals:
        if p.kind == "lessons":
            lines.append(f"  {p.key}: {len(p.proposed)} lesson(s), from learnings recorded in several sessions")
            continue
        detail = ", ".join(f"{k}={v}" for k, v in p.evidence.items() if k not in ("sessions", "minutes", "costs_usd"))
        lines.append(f"  {p.key}: {p.current} -> {p.proposed} ({detail})")
    if result.applied:
        lines += ["", f"applied: wrote {', '.join(result.written)}"]
        if result.undo:
            lines.append(f"undo: {result.undo}")
    else:
        lines += ["", "nothing written; `session-manager templates evolve --apply` writes this"]
    return "\n".join(lines)


# -- tasks and metrics (seed 004) -------------------------------------------------------------------
TASK_MARKS = {"pending": "[ ]", "in_progress": "[>]", "done": "[x]", "failed": "[-]", "blocked": "[!]"}


def task_line(task: Any) -> str:
    """`  [>] task-2 fix the bug  (backend, 30m est, 12m)`"""
    facts = [task.agent] if task.agent else []
    if task.estimated_minutes is not None:
        facts.append(f"{task.estimated_minutes:g}m est")
    if task.actual_minutes is not None:
        facts.append(f"{task.actual_minutes:g}m")
    if task.status == "blocked" and task.blockers:
        facts.append(f"blocked: {task.blockers[-1][:40]}")
    if task.carried_from:
        facts.append(f"from {task.carried_from}")
    return f"  {TASK_MARKS.get(str(task.status), '[?]')} #{task.id} {task.title}" + (
        f"  ({', '.join(facts)})" if facts else "")


_pct = pct


def metrics_line(m: Any) -> str:
    """`score 82/100 · completion 80% (8/10 tasks) · quality 1.00 (tests) · time 1.17x estimate`"""
    parts = [f"score {m.score}/100" if m.score is not None else "score -"]
    done = f" ({m.tasks_done}/{m.tasks_planned} tasks)" if m.tasks_planned else ""
    parts.append(f"completion {_pct(m.completion_rate)}{done}")
    if m.quality_score is not None:
        parts.append(f"quality {m.quality_score:.2f} ({m.quality_source})")
    if m.time_efficiency is not None:
        parts.append(f"time {m.time_efficiency:.2f}x estimate ({m.minutes_actual:g}/{m.minutes_estimated:g} min)")
    if m.bug_rate is not None:
        parts.append(f"bug rate {m.bug_rate:.2f}")
    if m.docs_coverage is not None:
        parts.append(f"docs {_pct(m.docs_coverage)}")
    return " · ".join(parts)


def task_result(result: Any) -> str:
    verbs = {"add": "added", "start": "started", "done": "done", "fail": "failed", "block": "blocked",
             "unblock": "unblocked", "edit": "edited", "remove": "removed"}
    m = result.metrics
    lines = [f"{result.session_id}: {verbs[result.action]} " + ", ".join(f"{t['id']} {t['title']!r}"
                                                                          for t in result.tasks)]
    lines.append(f"  tasks {m.totalTasks}: {m.completed} done, {m.failed} failed, {m.blocked} blocked"
                 f" · {m.timeSpent:g} of {m.timeEstimated:g} estimated min")
    return "\n".join(lines)
