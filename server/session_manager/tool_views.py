"""Compact MCP results: what each tool returns as structured content.

The full state is the resource `session://{session_id}`; a tool result carries what the assistant
needs to decide its next step, in short text lines. `warnings` holds problems met after a change
was saved (the change stands: the call is not an error).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from session_manager.formatting import alert_line, alert_lines, when
from session_manager.results import SessionDetail, StageDecision, StageResult, Status


class View(BaseModel):
    warnings: list[str] | None = None


class SessionView(View):
    """A session; stages as `name: status (attempts, score: note)`, tasks and blockers as `#id text`."""

    session_id: str
    level: str
    status: str
    topic: str | None = None
    current_stage: str | None = None
    progress_percent: float
    stages: list[str]
    total_cost: float
    budget_usd: float | None = None
    quality: float | None = None
    errors: int
    tasks_pending: list[str]
    tasks_done: int
    blockers: list[str]
    alerts: list[str]
    minutes_left: float | None = None
    summary: str | None = None
    metrics: str | None = None

    @classmethod
    def of(cls, detail: SessionDetail) -> SessionView:
        state, meta = detail.state, detail.metadata
        progress = state.progress
        return cls(
            session_id=state.session_id, level=state.level, status=str(state.status), topic=meta.topic,
            current_stage=state.current_stage, progress_percent=progress.percent,
            stages=[_stage_line(name, stage) for name, stage in state.stages.items()],
            total_cost=state.cost_tracking.total_cost, budget_usd=state.budget.usd,
            quality=state.quality_overall, errors=state.error_count,
            tasks_pending=[f"#{t.id} {t.title}" + ("" if t.status == "pending" else f" ({t.status})")
                           for t in progress.tasks_pending],
            tasks_done=len(progress.tasks_completed),
            blockers=[f"#{b.id} {b.text}" for b in progress.blockers],
            alerts=alert_lines(state.alerts),
            minutes_left=(round(detail.estimate_remaining_seconds / 60, 1)
                          if detail.estimate_remaining_seconds is not None else None),
            summary=state.summary,
            metrics=_metrics_text(detail),
        )


def _stage_line(name: str, stage: Any) -> str:
    details = []
    if stage.attempts:
        details.append(f"attempt {stage.attempts}")
    if stage.overall_score is not None:
        details.append(f"score {stage.overall_score:.2f}")
    line = f"{name}: {stage.status}" + (f" ({', '.join(details)})" if details else "")
    note = stage.override_reason or stage.feedback or stage.last_error
    return line + (f": {note[:200]}" if note else "")


class SessionsView(View):
    sessions: list[SessionView]
    damaged: list[str] = Field(default_factory=list)


class StageOutcome(StageDecision, View):
    """The pipeline's decision: started, advanced, completed, retry, routed_back, escalated or resumed."""

    alerts: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: StageResult) -> StageOutcome:
        return cls(**result.model_dump(exclude={"alerts"}),
                   alerts=alert_lines(result.alerts))


class ReportView(View):
    """A period's sessions in figures; rates are 0..1, money in USD, lines as short text."""

    period: str
    since: str
    until: str
    level: str | None = None
    sessions: int
    finished: int
    in_progress: int
    failed: int
    abandoned: int
    completion_rate: float | None = None
    error_recovery_rate: float | None = None
    quality_mean: float | None = None
    quality_stdev: float | None = None
    cost_usd: float
    cost_per_session_usd: float | None = None
    cost_vs_target: float | None = None
    minutes_to_complete: float | None = None
    cost_by_stage: list[str]
    gate_failures: list[str]
    recurring_errors: list[str]
    alerts: list[str]
    trend: list[str]
    analytics: AnalyticsView | None = None

    @classmethod
    def of(cls, report: Any) -> ReportView:
        counts, cost = report.sessions, report.cost
        quality = report.quality.get("overall")
        done = report.time_to_completion_seconds.median
        return cls(
            period=report.period, since=_day(report.since), until=_day(report.until), level=report.level,
            sessions=counts.run, finished=counts.finished, in_progress=counts.in_progress, failed=counts.failed,
            abandoned=counts.abandoned, completion_rate=counts.completion_rate,
            error_recovery_rate=counts.error_recovery_rate,
            quality_mean=quality.mean if quality else None, quality_stdev=quality.stdev if quality else None,
            cost_usd=round(cost.total_usd, 4), cost_per_session_usd=cost.per_session.mean,
            cost_vs_target=cost.vs_target, minutes_to_complete=round(done / 60, 1) if done is not None else None,
            cost_by_stage=[f"{c.stage}: ${c.total_usd:.2f} ({c.share:.0%})" for c in cost.by_stage],
            gate_failures=[f"{g.stage}: {g.failures} in {g.sessions} session(s)" for g in report.gate_failures],
            recurring_errors=[f"{e.pattern} x{e.count} in {e.sessions} session(s) ({', '.join(e.stages)})"
                              for e in report.recurring_errors],
            alerts=[alert_line(a, a.session_id) for a in report.alerts],
            trend=[f"{d.day}: {d.sessions} run, {d.finished} done, ${d.cost_usd:.2f}"
                   + (f", q {d.quality:.2f}" if d.quality is not None else "") for d in report.trend],
            analytics=analytics_of(report),
        )


def _day(value: Any) -> str:
    return when(value)


_alert_lines = alert_lines


class BackupView(View):
    """The commit made (revision), or why none (skipped)."""

    committed: bool
    revision: str | None = None
    sessions: list[str] = Field(default_factory=list)
    skipped: str | None = None


class BackupHistoryView(View):
    """A session's backups, newest first: `revision time reason`."""

    session_id: str
    backups: list[str]


class RestoreView(View):
    """Files written and deleted; paths the trail never tracked are moved aside to `moved_to`, not deleted."""

    session_id: str
    revision: str
    restored: list[str]
    deleted: list[str]
    moved: list[str] = Field(default_factory=list)
    moved_to: str | None = None
    undo: str | None = None


class SpendView(View):
    """Money booked to a session (`usd`) and where its spending now stands."""

    session_id: str
    usd: float
    total_cost: float
    budget_usd: float | None = None
    alerts: list[str] = Field(default_factory=list)


class CostView(SpendView):
    stage: str | None = None
    computed: bool


class UsageView(View):
    """Claude Code usage per period: `period: tokens, $cost, models`."""

    period: str
    rows: list[str]
    total_tokens: int
    cost_usd: float


class AttachView(SpendView):
    method: str
    responses: int
    added_usd: float


class DashboardView(View):
    """In progress: `id stage pct $cost`; figures of the last `days` days."""

    days: int
    in_progress: list[str]
    finished: int
    failed: int
    errors: int
    minutes_per_episode: float | None = None
    dollars_per_episode: float | None = None
    average_quality: float | None = None


def session(detail: SessionDetail) -> SessionView:
    return SessionView.of(detail)


def status(result: Status) -> SessionsView:
    return SessionsView(sessions=[SessionView.of(d) for d in result.sessions], damaged=result.damaged)


def stage(result: StageResult) -> StageOutcome:
    return StageOutcome.of(result)


def report(result: Any) -> ReportView:
    return ReportView.of(result)


def backup_now(result: Any) -> BackupView:
    return BackupView(committed=result.committed, revision=result.short, sessions=result.sessions,
                      skipped=result.skipped)


def backup_history(result: Any) -> BackupHistoryView:
    return BackupHistoryView(session_id=result.session_id, backups=[
        f"{e.short} {when(e.time, seconds=True)} {e.reason}" for e in result.entries])


def backup_restore(result: Any) -> RestoreView:
    return RestoreView(session_id=result.session_id, revision=result.short, restored=result.restored,
                       deleted=result.deleted, moved=result.moved, moved_to=result.moved_to, undo=result.undo)


def cost(result: Any) -> CostView:
    return CostView(session_id=result.session_id, stage=result.stage, usd=result.usd, computed=result.computed,
                    total_cost=result.total_cost, budget_usd=result.budget_usd, alerts=_alert_lines(result.alerts),
                    warnings=list(result.warnings) or None)


def usage(result: Any) -> UsageView:
    rows = [f"{r.period}: {r.total_tokens} tokens, ${r.cost_usd:.4f}, {', '.join(m.model for m in r.models[:3])}"
            for r in result.rows[-31:]]
    return UsageView(period=result.period, rows=rows, total_tokens=result.totals.total_tokens,
                     cost_usd=result.totals.cost_usd, warnings=list(result.warnings) or None)


def attach(result: Any) -> AttachView:
    return AttachView(session_id=result.session_id, method=result.method, responses=result.responses,
                      usd=result.usd, added_usd=result.added_usd, total_cost=result.total_cost,
                      budget_usd=result.budget_usd, alerts=_alert_lines(result.alerts), warnings=list(result.warnings) or None)


def dashboard(result: Any) -> DashboardView:
    return DashboardView(
        days=result.days, finished=result.finished, failed=result.failed, errors=result.errors,
        in_progress=[f"{s.session_id} {s.stage or '-'} {s.progress_percent:.0f}% ${s.cost_usd:.2f}"
                     for s in result.in_progress],
        minutes_per_episode=result.minutes_per_episode, dollars_per_episode=result.dollars_per_episode,
        average_quality=result.average_quality)


class RemovalView(SpendView):
    entry: int


class BindView(View):
    session_id: str
    claude_session: str
    since: str
    recorded: bool
    previous_session: str | None = None


def removal(result: Any) -> RemovalView:
    return RemovalView(session_id=result.session_id, entry=result.entry, usd=result.usd, total_cost=result.total_cost,
                       alerts=_alert_lines(result.alerts))


def bind(result: Any) -> BindView:
    return BindView(session_id=result.session_id, claude_session=result.claude_session, since=result.since,
                    recorded=result.recorded, previous_session=result.previous_session)


# -- batches (issue 17) ---------------------------------------------------------------------------
class BatchView(View):
    """A batch: members as `id state stage pct $cost`; for next, the member and why; for report, figures."""

    batch_id: str
    status: str | None = None
    max_concurrent: int | None = None
    in_progress: list[str] | None = None
    waiting: list[str] | None = None
    done: list[str] | None = None
    members: list[str] | None = None
    session_id: str | None = None
    stage: str | None = None
    reason: str | None = None
    total_cost: float | None = None
    wall_minutes: float | None = None
    member_minutes: float | None = None
    quality: str | None = None
    gate_failures: list[str] | None = None
    cost_by_phase: list[str] | None = None


def batch(result: Any) -> BatchView:
    from session_manager.batch import BatchNext, BatchReport

    if isinstance(result, BatchNext):
        return BatchView(batch_id=result.batch_id, session_id=result.session_id, stage=result.stage,
                         reason=result.reason)
    if isinstance(result, BatchReport):
        q = result.quality
        return BatchView(
            batch_id=result.batch_id, status=result.status, total_cost=result.total_cost,
            wall_minutes=result.wall_minutes, member_minutes=result.member_minutes,
            members=[f"{m.session_id} {m.status} ${m.cost_usd:.2f} {m.minutes or 0:.0f}m"
                     + (f" q {m.quality:.2f}" if m.quality is not None else "") for m in result.members],
            quality=(f"mean {q.mean:.2f} min {q.min:.2f} max {q.max:.2f}" if q.members else None),
            gate_failures=[f"{k}: {v}" for k, v in result.gate_failures_by_stage.items()],
            cost_by_phase=[f"{k}: ${v:.2f}" for k, v in result.cost_by_phase.items()])
    return BatchView(
        batch_id=result.batch_id, status=result.status, max_concurrent=result.max_concurrent,
        in_progress=result.in_progress, waiting=result.waiting, done=result.done, total_cost=result.total_cost,
        members=[f"{m.session_id} {m.state} {m.current_stage or '-'} {m.progress_percent:.0f}% ${m.cost_usd:.2f}"
                 for m in result.members])

# -- tasks and metrics (seed 004) -------------------------------------------------------------------
def _metrics_text(detail: SessionDetail) -> str | None:
    from session_manager.views import metrics_line

    m = detail.metrics
    return metrics_line(m) if m is not None and (m.score is not None or m.tasks_planned) else None


class TaskView(View):
    """Tasks changed (`task-N status: title`) and the session's task metrics (seed 004's names)."""

    session_id: str
    action: str
    tasks: list[str]
    metrics: dict[str, float]


def task(result: Any) -> TaskView:
    return TaskView(session_id=result.session_id, action=result.action,
                    tasks=[f"{t['id']} {t['status']}: {t['title']}" for t in result.tasks],
                    metrics=result.metrics.model_dump())


class AnalyticsView(View):
    """A report's analytics in short lines (the figures are in `session_report`'s full JSON via the CLI)."""

    learnings: list[str]
    findings: list[str]
    quality_by_stage: list[str]
    forecast: str | None = None
    score_mean: float | None = None


def analytics_of(report: Any) -> AnalyticsView | None:
    a = report.analytics
    if a is None:
        return None
    f = a.forecast
    return AnalyticsView(
        learnings=[n.text for n in a.key_learnings], findings=[x.message for x in a.findings],
        quality_by_stage=[f"{q.stage}: {q.mean:.2f} (n {q.n}, sd {q.stdev:.3f})" for q in a.quality_by_stage],
        forecast=(f"{f.month}: ${f.month_to_date_usd:.2f} so far, ${f.month_end_usd or 0:.2f} at month end;"
                  f" active sessions need ${f.cost_to_finish_usd:.2f}"
                  + (f"; {f.episodes_affordable} episodes affordable" if f.episodes_affordable is not None else ""))
        if f else None, score_mean=a.sessions.mean_score)
