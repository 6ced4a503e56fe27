"""What a report says beyond counts: seed 003's daily, weekly and monthly lines, seed 000's
analytics, the findings of pattern detection and the forecast. Deterministic rules over the
per-session summaries (`reports.summarize` plus `summary_fields` here); no model calls.

Comparisons split the window's sessions in two halves by start time (the earlier half and the
later half, by count), so a change is the later mean against the earlier one. Every finding
carries its evidence numbers and the thresholds it passed; the thresholds are the config's
`[patterns]` (docs/tasks-and-metrics.md lists them).
"""

from __future__ import annotations

import calendar
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal

from pydantic import BaseModel, Field

from session_manager.config import Config, Patterns
from session_manager.metrics import is_doc, score

Summary = dict[str, Any]
TEXT_LIMIT = 300
LEARNINGS_KEPT = 20
LEARNINGS_SHOWN = 10
FINDINGS_LIMIT = 30
SERIES_LIMIT = 200  # episodes listed per series (the latest): a month of 5,000 episodes stays readable


# -- what each session's summary adds -------------------------------------------------------------
def _epoch(value: Any) -> float | None:
    """A time as text (the model's JSON dump) or as a `datetime` (the fast reader's) as the summary keeps it."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
    elif isinstance(value, datetime):
        moment = value
    else:
        return None
    if moment.microsecond:  # the model writes whole seconds
        moment = moment.replace(microsecond=0)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def summary_fields(data: dict[str, Any]) -> Summary:
    """The per-session facts the analytics need, from the JSON of `pipeline_status.json` (read as
    JSON, like the rest of the summary; a schema-1 file reaches here migrated)."""
    progress = data.get("progress") or {}
    stages: dict[str, dict[str, Any]] = data["stages"]
    done = list(progress.get("tasks_completed") or [])
    failed = list(progress.get("tasks_failed") or [])
    tasks = [*done, *(progress.get("tasks_pending") or []), *failed]
    actual = estimated = 0.0
    if done:
        timed = [(t["actual_minutes"], t["estimated_minutes"]) for t in done
                 if t.get("actual_minutes") is not None and t.get("estimated_minutes")]
        actual, estimated = math.fsum(a for a, _ in timed), math.fsum(e for _, e in timed)
    stage_scores: dict[str, float] = {}
    stage_models: dict[str, Any] = {}
    retries: dict[str, Any] = {}
    stages_done = finished_stages = 0
    for name, s in stages.items():  # one pass over the stages
        status = s.get("status")
        if status == "completed":
            stages_done += 1
            if s.get("overall_score") is not None:
                stage_scores[name] = float(s["overall_score"])
        if status in ("completed", "bypassed", "skipped"):
            finished_stages += 1
        if s.get("model"):
            stage_models[name] = s["model"]
        if s.get("total_attempts", 0) > 1:
            retries[name] = s["total_attempts"] - 1
    outcome = data.get("outcome") or {}
    if outcome.get("tests_total"):
        quality = min(outcome.get("tests_passed") or 0, outcome["tests_total"]) / outcome["tests_total"]
    else:
        passed = sum(len(t.get("tests") or []) for t in done)
        run = passed + sum(len(t.get("tests") or []) for t in failed)
        quality = passed / run if run else data.get("quality_overall")
    if tasks:
        completion: float | None = len(done) / len(tasks)
    else:
        completion = finished_stages / len(stages) if stages else None
    efficiency = actual / estimated if estimated else None
    bug_rate = (outcome["bugs_introduced"] / len(done)) if outcome.get("bugs_introduced") is not None and done else None
    with_files = [t for t in done if t.get("files")]
    docs = (min(1.0, outcome["docs_changed"] / len(done)) if outcome.get("docs_changed") is not None and done
            else sum(1 for t in with_files if any(is_doc(f) for f in t["files"])) / len(with_files) if with_files
            else None)
    session_score = score({"completion": completion, "quality": quality,
                           "time": None if efficiency is None else (1.0 if efficiency <= 0 else min(1.0, 1 / efficiency)),
                           "bugs": None if bug_rate is None else max(0.0, 1 - bug_rate), "docs": docs})
    blockers = [b["text"][:TEXT_LIMIT] for b in [*(progress.get("blockers") or []),
                                                   *(progress.get("blockers_cleared") or [])]]
    blockers += [reason[:TEXT_LIMIT] for t in tasks for reason in t.get("blockers") or []]
    learnings = [[n["text"][:TEXT_LIMIT], _epoch(n["at"]), bool(n.get("todo"))]
                 for n in (progress.get("learnings") or [])[-LEARNINGS_KEPT:]]
    return {
        "tasks": [len(tasks), len(done), len(failed), round(estimated, 1), round(actual, 1)],
        "score": session_score, "time_efficiency": None if efficiency is None else round(efficiency, 4),
        "completion_rate": None if completion is None else round(completion, 4),
        "bugs": [outcome.get("bugs_fixed"), outcome.get("bugs_introduced")],
        "learnings": learnings, "blockers": blockers,
        "stage_scores": stage_scores, "stage_models": stage_models, "retries": retries, "stages_done": stages_done,
    }


# -- the model ----------------------------------------------------------------------------------------
class Finding(BaseModel):
    """One thing pattern detection found, with the numbers that show it and the thresholds it passed."""

    kind: Literal["cost_share_growth", "cheaper_model", "retry_cost", "quality_improvement", "quality_regression",
                  "retries", "time_over_estimate", "recurring_blocker", "recurring_error"]
    category: Literal["cost", "quality", "workflow", "errors"]
    subject: str
    message: str
    evidence: dict[str, float | int | str | None]
    thresholds: dict[str, float | int] = Field(default_factory=dict)


class Learning(BaseModel):
    session_id: str
    text: str
    at: datetime
    todo: bool = False


class Point(BaseModel):
    label: str
    value: float | None


class StageTime(BaseModel):
    stage: str
    sessions: int
    median_minutes: float
    expected_minutes: float | None = None
    ratio: float | None = Field(default=None, description="median / expected")


class Velocity(BaseModel):
    days: float
    tasks_done: int
    tasks_per_day: float
    stages_done: int
    stages_per_day: float
    minutes_per_stage: list[StageTime] = Field(default_factory=list)


class EpisodeCost(BaseModel):
    episode: int | None
    session_id: str
    usd: float
    quality: float | None
    day: str


class QualityChange(BaseModel):
    current: float | None = None
    previous: float | None = Field(default=None, description="the window of the same length just before")
    change: float | None = None
    sessions: int = 0
    previous_sessions: int = 0


class MaturityPoint(BaseModel):
    week: str
    sessions: int
    recovery_rate: float | None = None
    gate_first_pass_rate: float | None = None
    estimate_accuracy: float | None = None


class Maturity(BaseModel):
    recovery_rate: float | None = None
    gate_first_pass_rate: float | None = Field(default=None, description="scored stages that passed at the first attempt")
    estimate_accuracy: float | None = Field(default=None, description="mean min(actual, estimate) / max(actual, estimate)")
    series: list[MaturityPoint] = Field(default_factory=list)


class StageQuality(BaseModel):
    stage: str
    n: int
    mean: float
    stdev: float
    min: float
    max: float


class GateAnalysis(BaseModel):
    stage: str
    evaluated: int = Field(description="sessions whose gate was evaluated")
    first_pass: int
    failures: int
    first_pass_rate: float | None


class CostVariance(BaseModel):
    sessions: int = 0
    mean_target_usd: float | None = None
    mean_actual_usd: float | None = None
    mean_variance_usd: float | None = Field(default=None, description="mean of actual - target")
    over: int = 0
    under: int = 0


class ModelImpact(BaseModel):
    model: str
    stages: int = Field(description="stage runs that used it")
    cost_usd: float
    mean_cost_usd: float
    mean_quality: float | None


class TokenEfficiency(BaseModel):
    tokens: int = 0
    tokens_per_usd: float | None = None
    usd_per_million: float | None = None
    tokens_per_finished_session: float | None = None
    tokens_per_quality_point: float | None = Field(default=None, description="tokens per 0.01 of mean quality")


class ForecastView(BaseModel):
    month: str
    month_to_date_usd: float
    days_elapsed: float
    days_in_month: int
    month_end_usd: float | None = Field(default=None, description="month-to-date spend at the current daily rate")
    active_sessions: int
    cost_to_finish_usd: float = Field(description="the active sessions' remaining stages at this project's mean cost")
    cost_per_episode_usd: float | None = None
    monthly_budget_usd: float | None = None
    remaining_budget_usd: float | None = None
    episodes_affordable: int | None = None
    note: str | None = None


class SessionScores(BaseModel):
    scored: int = 0
    mean_score: float | None = None
    mean_completion_rate: float | None = None
    mean_time_efficiency: float | None = None
    bugs_fixed: int = 0
    bugs_introduced: int = 0


class Analytics(BaseModel):
    """Seed 003's report lines, seed 000's analytics, findings and the forecast."""

    # daily
    episodes_produced: int = Field(default=0, description="production sessions finished in the window")
    quality_average: float | None = None
    key_learnings: list[Learning] = Field(default_factory=list)
    # weekly
    cost_trend: list[Point] = Field(default_factory=list)
    cost_change: float | None = Field(default=None, description="later half's mean session cost / earlier half's")
    quality_trend: list[Point] = Field(default_factory=list)
    quality_change: float | None = Field(default=None, description="later half's mean quality - earlier half's")
    velocity: Velocity | None = None
    optimisation: list[Finding] = Field(default_factory=list, description="the cost findings")
    # monthly
    total_production: int = 0
    cost_per_episode: list[EpisodeCost] = Field(default_factory=list, description="the latest 200 finished episodes")
    quality_improvement: QualityChange = QualityChange()
    maturity: Maturity = Maturity()
    # seed 000
    quality_by_stage: list[StageQuality] = Field(default_factory=list)
    quality_by_episode: list[EpisodeCost] = Field(default_factory=list, description="the 200 highest episode numbers")
    quality_consistency: float | None = Field(default=None, description="standard deviation of session quality")
    gate_analysis: list[GateAnalysis] = Field(default_factory=list)
    cost_variance: CostVariance = CostVariance()
    models: list[ModelImpact] = Field(default_factory=list)
    token_efficiency: TokenEfficiency = TokenEfficiency()
    sessions: SessionScores = SessionScores()
    # patterns and the future
    findings: list[Finding] = Field(default_factory=list)
    forecast: ForecastView | None = None


# -- helpers --------------------------------------------------------------------------------------------
def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return math.fsum(items) / len(items) if items else None


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def halves(sessions: list[Summary]) -> tuple[list[Summary], list[Summary]]:
    ordered = sorted(sessions, key=itemgetter("started", "id"))
    middle = len(ordered) // 2
    return ordered[:middle], ordered[middle:]


def _finished(s: Summary) -> bool:
    return bool(s["status"] == "completed" and s.get("pipeline_done"))


# -- findings ---------------------------------------------------------------------------------------------
# The per-session figures the findings need are gathered by `analyse`'s one pass over the window
# (`_Pass`); these turn them into findings.
def _cost_findings(totals: tuple[float, float], spent_before: Mapping[str, list[float]],
                   spent_after: Mapping[str, list[float]], rules: Patterns) -> list[Finding]:
    """`totals`: the cost of each half; `spent_*`: each stage's spend per session in that half."""
    found: list[Finding] = []
    if not all(totals):
        return found
    for stage in sorted(spent_before.keys() | spent_after.keys()):
        before, after = spent_before.get(stage, []), spent_after.get(stage, [])
        if len(before) < rules.min_samples or len(after) < rules.min_samples:
            continue
        share_before, share_after = math.fsum(before) / totals[0], math.fsum(after) / totals[1]
        mean_before, mean_after = math.fsum(before) / len(before), math.fsum(after) / len(after)
        if (share_after - share_before >= rules.cost_share_growth and mean_before > 0
                and mean_after >= mean_before * rules.cost_growth_ratio):
            found.append(Finding(
                kind="cost_share_growth", category="cost", subject=stage,
                message=(f"{stage} grew from {share_before:.0%} to {share_after:.0%} of the cost; its mean went"
                         f" from ${mean_before:.2f} to ${mean_after:.2f} per session ({mean_after / mean_before:.2f}x)"),
                evidence={"share_before": round(share_before, 4), "share_after": round(share_after, 4),
                          "mean_usd_before": round(mean_before, 4), "mean_usd_after": round(mean_after, 4),
                          "growth": round(mean_after / mean_before, 4), "sessions_before": len(before),
                          "sessions_after": len(after)},
                thresholds={"cost_share_growth": rules.cost_share_growth,
                            "cost_growth_ratio": rules.cost_growth_ratio, "min_samples": rules.min_samples}))
    return found


Runs = dict[str, dict[str, list[tuple[float, float | None]]]]  # stage -> model -> (cost, score) per run


def _model_findings(runs: Runs, rules: Patterns) -> list[Finding]:
    found = []
    for stage in sorted(runs):
        models = []
        for model, values in runs[stage].items():
            scores = [q for _, q in values if q is not None]
            if len(values) >= rules.min_samples and len(scores) >= rules.min_samples:
                models.append((math.fsum(c for c, _ in values) / len(values), math.fsum(scores) / len(scores),
                               model, len(values)))
        models.sort()
        for cheap in models:
            better = [m for m in models if m[0] > 0 and cheap[0] <= m[0] * (1 - rules.cheaper_model_saving)
                      and cheap[1] >= m[1] - rules.quality_tolerance]
            if not better:
                continue
            costly = max(better)
            saving = (costly[0] - cheap[0]) * costly[3]
            found.append(Finding(
                kind="cheaper_model", category="cost", subject=stage,
                message=(f"{stage}: {cheap[2]} scored {cheap[1]:.2f} at ${cheap[0]:.2f} per run, {costly[2]}"
                         f" {costly[1]:.2f} at ${costly[0]:.2f}: using {cheap[2]} would have saved ${saving:.2f}"),
                evidence={"cheap_model": cheap[2], "cheap_mean_usd": round(cheap[0], 4),
                          "cheap_quality": round(cheap[1], 4), "cheap_runs": cheap[3], "costly_model": costly[2],
                          "costly_mean_usd": round(costly[0], 4), "costly_quality": round(costly[1], 4),
                          "costly_runs": costly[3], "saving_usd": round(saving, 4)},
                thresholds={"cheaper_model_saving": rules.cheaper_model_saving,
                            "quality_tolerance": rules.quality_tolerance, "min_samples": rules.min_samples}))
            break
    return found


def _retry_findings(ran: Mapping[str, int], retry_count: Mapping[str, int],
                    retried_costs: Mapping[str, list[float]], clean_costs: Mapping[str, list[float]],
                    rules: Patterns) -> list[Finding]:
    """Per stage: the sessions that ran it, their retries, the cost of the retried and clean runs."""
    found = []
    for stage in sorted(ran):
        sessions, retries = ran[stage], retry_count.get(stage, 0)
        retried, clean = retried_costs.get(stage, []), clean_costs.get(stage, [])
        rate = retries / sessions
        if sessions >= rules.min_samples and rate >= rules.retry_rate:
            found.append(Finding(
                kind="retries", category="workflow", subject=stage,
                message=f"{stage} needed {retries} retries in {sessions} sessions ({rate:.2f} per session)",
                evidence={"retries": retries, "sessions": sessions, "retries_per_session": round(rate, 4),
                          "sessions_retried": len(retried)},
                thresholds={"retry_rate": rules.retry_rate, "min_samples": rules.min_samples}))
        if len(retried) >= 2 and len(clean) >= rules.min_samples:
            base = math.fsum(clean) / len(clean)
            extra = math.fsum(retried) / len(retried) - base
            if base > 0 and extra >= base:
                found.append(Finding(
                    kind="retry_cost", category="cost", subject=stage,
                    message=(f"retries of {stage} cost ${extra:.2f} extra per retried session, more than the stage"
                             f" itself (${base:.2f}); ${extra * len(retried):.2f} in {len(retried)} sessions"),
                    evidence={"extra_usd_per_retried_session": round(extra, 4), "stage_mean_usd": round(base, 4),
                              "retried_sessions": len(retried), "extra_usd_total": round(extra * len(retried), 4)},
                    thresholds={"min_samples": rules.min_samples}))
    return found


def _quality_findings(overall: tuple[list[float], list[float]],
                      stage_scores: Mapping[str, tuple[list[float], list[float]]], rules: Patterns) -> list[Finding]:
    """`overall` and each stage's `stage_scores`: the scores of the earlier half and of the later one."""
    series = {"overall": overall, **{stage: stage_scores[stage] for stage in sorted(stage_scores)}}
    found = []
    for subject, (before, after) in series.items():
        if len(before) < rules.min_samples or len(after) < rules.min_samples:
            continue
        mean_before, mean_after = math.fsum(before) / len(before), math.fsum(after) / len(after)
        change = mean_after - mean_before
        if abs(change) < rules.quality_change:
            continue
        up = change > 0
        what = "session quality" if subject == "overall" else f"{subject}'s score"
        found.append(Finding(
            kind="quality_improvement" if up else "quality_regression", category="quality", subject=subject,
            message=f"{what} {'rose' if up else 'fell'} from {mean_before:.3f} to {mean_after:.3f} ({change:+.3f})",
            evidence={"mean_before": round(mean_before, 4), "mean_after": round(mean_after, 4),
                      "change": round(change, 4), "sessions_before": len(before), "sessions_after": len(after)},
            thresholds={"quality_change": rules.quality_change, "min_samples": rules.min_samples}))
    return found


def _time_findings(times: list[StageTime], rules: Patterns) -> list[Finding]:
    return [Finding(
        kind="time_over_estimate", category="workflow", subject=t.stage,
        message=(f"{t.stage} takes {t.median_minutes:g} min (median of {t.sessions}) against {t.expected_minutes:g}"
                 f" expected ({t.ratio:.2f}x)"),
        evidence={"median_minutes": t.median_minutes, "expected_minutes": t.expected_minutes, "ratio": t.ratio,
                  "sessions": t.sessions},
        thresholds={"time_over_estimate": rules.time_over_estimate, "min_samples": rules.min_samples})
        for t in times if t.ratio is not None and t.ratio >= rules.time_over_estimate
        and t.sessions >= rules.min_samples]


def _blocker_findings(chosen: list[Summary], rules: Patterns) -> list[Finding]:
    from session_manager.reports import error_pattern

    groups: dict[str, dict[str, Any]] = {}
    # only the sessions with blockers, in the same (stable) order by start
    for s in sorted((s for s in chosen if s.get("blockers")), key=itemgetter("started")):
        for text in set(s["blockers"]):
            group = groups.setdefault(error_pattern(text), {"sessions": [], "example": text})
            group["sessions"].append(s["id"])
            group["example"] = text
    found = []
    for pattern, group in groups.items():
        count = len(group["sessions"])
        if count >= rules.blocker_sessions:
            found.append(Finding(
                kind="recurring_blocker", category="workflow", subject=pattern,
                message=f"blocker seen in {count} sessions: {group['example']}",
                evidence={"sessions": count, "example": group["example"], "first": group["sessions"][0],
                          "last": group["sessions"][-1]},
                thresholds={"blocker_sessions": rules.blocker_sessions}))
    return sorted(found, key=lambda f: (-int(f.evidence["sessions"] or 0), f.subject))


def _error_findings(recurring: list[Any], rules: Patterns) -> list[Finding]:
    return [Finding(kind="recurring_error", category="errors", subject=e.pattern,
                    message=f"error seen {e.count} times in {e.sessions} sessions ({', '.join(e.stages) or 'no stage'}):"
                            f" {e.example}",
                    evidence={"count": e.count, "sessions": e.sessions, "example": e.example},
                    thresholds={"blocker_sessions": rules.blocker_sessions})
            for e in recurring if e.sessions >= rules.blocker_sessions][:5]


# -- sections -----------------------------------------------------------------------------------------
def _stage_times(minutes: Mapping[tuple[str, str], list[float]], expected: Mapping[str, Mapping[str, float]],
                 positions: Mapping[str, int]) -> list[StageTime]:
    """`minutes`: per (level, stage), the minutes each completed run took."""
    rows = []
    for (level, stage), values in minutes.items():
        planned = expected.get(level, {}).get(stage)
        median = round(statistics.median(values), 1)
        rows.append(StageTime(stage=stage if len({lv for lv, st in minutes if st == stage}) == 1 else f"{level}/{stage}",
                              sessions=len(values), median_minutes=median, expected_minutes=planned,
                              ratio=round(median / planned, 4) if planned else None))
    return sorted(rows, key=lambda t: (positions.get(t.stage, 10_000), t.stage))


def _maturity_parts(s: Summary, expected: Mapping[str, Mapping[str, float]], gated: set[str]) -> list[float]:
    """One session's share of the maturity figures: [met an error, recovered, gates evaluated, passed
    first time, sum of estimate accuracies, how many]."""
    troubled = bool(s["error_count"] or s["gates"])
    recovered = troubled and (_finished(s) or (s["status"] == "in_progress" and not s["open_failures"]))
    gates = s["gates"]
    evaluated = first = 0
    for stage in (s.get("stage_scores", {}).keys() & gated) | gates.keys():  # gated stages that were evaluated
        evaluated += 1
        first += 0 if gates.get(stage) else 1
    total, count = 0.0, 0
    planned, actual = s.get("tasks", [0, 0, 0, 0.0, 0.0])[3:5]
    if planned and actual and planned > 0 and actual > 0:
        total, count = min(actual, planned) / max(actual, planned), 1
    minutes = expected.get(s["level"], {})
    for stage, seconds in s["durations"].items():
        planned = minutes.get(stage)
        if planned and seconds > 0:
            actual = seconds / 60
            total += min(actual, planned) / max(actual, planned)
            count += 1
    return [float(troubled), float(recovered), evaluated, first, total, count]


def _maturity(parts: list[list[float]], sessions: int) -> MaturityPoint:
    met, recovered, evaluated, first, total, count = (math.fsum(column) for column in zip(*parts)) if parts else (
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return MaturityPoint(week="", sessions=sessions, recovery_rate=_r(recovered / met) if met else None,
                         gate_first_pass_rate=_r(first / evaluated) if evaluated else None,
                         estimate_accuracy=_r(total / count) if count else None)


def forecast(summaries: list[Summary], now: datetime, level: str | None, monthly_budget: float | None,
             cost_per_episode: float | None) -> ForecastView:
    """Month-end cost at the current rate (sessions by start day), what the active sessions' remaining
    stages will cost at this project's mean per stage, and the episodes the rest of the budget buys."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    elapsed = max((now - start).total_seconds() / 86_400, 1.0)  # a first-hour rate is no rate
    month_start = start.timestamp()
    this_month: list[float] = []
    stage_cost: dict[tuple[str, str], list[float]] = defaultdict(list)
    active: list[Summary] = []
    for s in summaries:  # one pass over every session
        if level is not None and s["level"] != level:
            continue
        if s["started"] >= month_start:
            this_month.append(s["cost"])
        if s["status"] == "completed" and s.get("pipeline_done"):  # `_finished`
            for stage, usd in s["by_stage"].items():
                stage_cost[(s["level"], stage)].append(usd)
        elif s["status"] in ("initialized", "in_progress", "failed"):
            active.append(s)
    to_date = math.fsum(this_month)
    mean_cost = {key: math.fsum(values) / len(values) for key, values in stage_cost.items()}
    to_finish = 0.0
    cost_of: dict[tuple[str, tuple[str, ...]], float] = {}  # (level, stages left) -> their cost: they repeat
    for s in active:
        scored, timed = s.get("stage_scores", {}), s["durations"]
        left = (s["level"], tuple(st for st in s["stages"] if st not in scored and st not in timed))
        cost = cost_of.get(left)
        if cost is None:
            cost = cost_of[left] = math.fsum(mean_cost.get((left[0], st), 0.0) for st in left[1])
        to_finish += cost
    month_end = to_date / elapsed * days if to_date else 0.0
    view = ForecastView(month=start.strftime("%Y-%m"), month_to_date_usd=round(to_date, 4),
                        days_elapsed=round(elapsed, 2), days_in_month=days, month_end_usd=round(month_end, 4),
                        active_sessions=len(active), cost_to_finish_usd=round(to_finish, 4),
                        cost_per_episode_usd=_r(cost_per_episode), monthly_budget_usd=monthly_budget)
    if monthly_budget is None:
        view.note = "set [forecast] monthly_budget_usd in .claude/session-manager.toml for episodes affordable"
    else:
        view.remaining_budget_usd = round(monthly_budget - to_date - to_finish, 4)
        if cost_per_episode:
            view.episodes_affordable = max(0, math.floor(view.remaining_budget_usd / cost_per_episode))
    return view


class _Pass:
    """What `analyse` needs from each session of the window, gathered in one pass over them (a
    report over 25,000 sessions spent most of its arithmetic on thirty separate passes). Lists
    keep the window's order; every mean is an exact `math.fsum`, so the figures do not depend on
    the order in which they were gathered."""

    def __init__(self, chosen: list[Summary], low: float, high: float, early: list[Summary],
                 expected: Mapping[str, Mapping[str, float]], gated: set[str], day_of: Callable[[float], str]) -> None:
        self.finished: list[Summary] = []  # finished inside the window
        self.overall: list[float] = []
        self.learnings: list[tuple[str, str, float, bool]] = []  # (session, text, at, todo) inside the window
        self.cost_by_day: dict[str, float] = defaultdict(float)
        self.quality_by_day: dict[str, list[float]] = defaultdict(list)
        self.costs: tuple[list[float], list[float]] = ([], [])  # per half: the earlier, the later
        self.quality: tuple[list[float], list[float]] = ([], [])
        self.tasks_done = self.stages_done = 0
        self.minutes: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.parts: list[list[float]] = []
        self.weeks: dict[int, list[list[float]]] = defaultdict(list)
        self.stage_scores: dict[str, list[float]] = defaultdict(list)
        self.produced: list[Summary] = []
        self.gates: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.budgeted: list[tuple[float, float]] = []  # (cost, budget)
        self.models: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        self.runs: Runs = defaultdict(lambda: defaultdict(list))
        self.tokens = 0
        self.scores: list[float] = []
        self.completion_rates: list[float] = []
        self.efficiencies: list[float] = []
        self.bugs_fixed = self.bugs_introduced = 0
        self.spent: tuple[dict[str, list[float]], dict[str, list[float]]] = (defaultdict(list), defaultdict(list))
        self.ran: dict[str, int] = defaultdict(int)
        self.retry_count: dict[str, int] = defaultdict(int)
        self.retried_costs: dict[str, list[float]] = defaultdict(list)
        self.clean_costs: dict[str, list[float]] = defaultdict(list)
        self.scores_by_half: dict[str, tuple[list[float], list[float]]] = {}
        in_early = {id(s) for s in early}
        week = 7 * 86_400
        # locals, not attributes, in the loop: it runs once per session of the window
        finished, overall_all, learnings, parts = self.finished, self.overall, self.learnings, self.parts
        cost_by_day, quality_by_day, costs, quality = self.cost_by_day, self.quality_by_day, self.costs, self.quality
        minutes_of, weeks, scores_of, produced = self.minutes, self.weeks, self.stage_scores, self.produced
        gate_rows, budgeted, models, runs, spent_by = self.gates, self.budgeted, self.models, self.runs, self.spent
        scores, completion_rates, efficiencies = self.scores, self.completion_rates, self.efficiencies
        ran, retry_count, retried_costs, clean_costs = self.ran, self.retry_count, self.retried_costs, self.clean_costs
        scores_by_half = self.scores_by_half
        tasks_done = stages_done = bugs_fixed = bugs_introduced = tokens = 0
        no_plan: Mapping[str, float] = {}
        for s in chosen:
            half = 1 - (id(s) in in_early)
            started, cost, overall, level, status = s["started"], s["cost"], s["overall"], s["level"], s["status"]
            by_stage, durations, gates = s["by_stage"], s["durations"], s["gates"]
            stage_scores = s.get("stage_scores", {})
            completed = s["completed"]
            ended_well = status == "completed" and s.get("pipeline_done")  # `_finished`
            if ended_well and completed is not None and low <= completed < high:
                finished.append(s)
            if overall is not None:
                overall_all.append(overall)
                quality[half].append(overall)
            for text, at, todo in s.get("learnings", ()):
                if at is not None and low <= at < high:
                    learnings.append((s["id"], text, at, todo))
            if low <= started < high:
                day = day_of(started)
                cost_by_day[day] += cost
                if overall is not None:
                    quality_by_day[day].append(overall)
            costs[half].append(cost)
            tasks = s.get("tasks", [0, 0, 0, 0.0, 0.0])
            tasks_done += tasks[1]
            stages_done += s.get("stages_done", len(durations))
            # the maturity figures (`_maturity_parts`) and the minutes per stage, from one walk of the durations
            troubled = bool(s["error_count"] or gates)
            recovered = troubled and bool(ended_well or (status == "in_progress" and not s["open_failures"]))
            evaluated = first = 0
            for stage in (stage_scores.keys() & gated) | gates.keys():  # gated stages that were evaluated
                evaluated += 1
                first += 0 if gates.get(stage) else 1
            total, count = 0.0, 0
            planned, actual = tasks[3:5] if len(tasks) >= 5 else (0, 0)
            if planned and actual and planned > 0 and actual > 0:
                total, count = min(actual, planned) / max(actual, planned), 1
            plan = expected.get(level, no_plan)
            for stage, seconds in durations.items():
                taken = seconds / 60
                minutes_of[(level, stage)].append(taken)
                planned = plan.get(stage)
                if planned and seconds > 0:
                    total += taken / planned if taken < planned else planned / taken  # min / max
                    count += 1
            part = [float(troubled), float(recovered), evaluated, first, total, count]
            parts.append(part)
            weeks[max(0, int((started - low) // week))].append(part)
            for stage, value in stage_scores.items():
                scores_of[stage].append(value)
                scores_by_half.setdefault(stage, ([], []))[half].append(value)
            if level == "production" and overall is not None:
                produced.append(s)
            for stage in set(stage_scores) | set(gates):
                row = gate_rows[stage]
                row[0] += 1
                row[1] += 0 if gates.get(stage) else 1
                row[2] += gates.get(stage, 0)
            if s["budget"]:
                budgeted.append((cost, s["budget"]))
            for stage, model in s.get("stage_models", {}).items():
                models[model].append((by_stage.get(stage, 0.0), stage_scores.get(stage)))
                if stage in by_stage:
                    runs[stage][model].append((by_stage[stage], stage_scores.get(stage)))
            tokens += s["tokens"]
            if s.get("score") is not None:
                scores.append(s["score"])
            if s.get("completion_rate") is not None:
                completion_rates.append(s["completion_rate"])
            if s.get("time_efficiency") is not None:
                efficiencies.append(s["time_efficiency"])
            bugs = s.get("bugs", [None, None])
            bugs_fixed += bugs[0] or 0
            bugs_introduced += bugs[1] or 0
            spent = spent_by[half]
            for stage, usd in by_stage.items():
                spent[stage].append(usd)
            retries_of = s.get("retries", {})
            for stage in s["stages"]:
                again = retries_of.get(stage, 0) if retries_of else 0
                if again:
                    ran[stage] += 1
                    retry_count[stage] += again
                    retried_costs[stage].append(by_stage.get(stage, 0.0))
                elif stage in by_stage:
                    ran[stage] += 1
                    clean_costs[stage].append(by_stage[stage])
        self.tasks_done, self.stages_done, self.tokens = tasks_done, stages_done, tokens
        self.bugs_fixed, self.bugs_introduced = bugs_fixed, bugs_introduced


def episode_forecast(summaries: list[Summary], chosen: list[Summary], since: datetime, until: datetime,
                     level: str | None, now: datetime, config: Config | None) -> ForecastView:
    """`forecast` at the mean cost of the production episodes finished in the window (of every
    finished one when none finished in it)."""
    low, high = since.timestamp(), until.timestamp()
    costs = [s["cost"] for s in chosen if s["level"] == "production" and _finished(s)
             and s["completed"] is not None and low <= s["completed"] < high]
    costs = costs or [s["cost"] for s in summaries if _finished(s) and s["level"] == "production"]
    return forecast(summaries, now, level, (config or Config()).forecast.monthly_budget_usd,
                    statistics.fmean(costs) if costs else None)


def analyse(summaries: list[Summary], chosen: list[Summary], since: datetime, until: datetime, level: str | None,
            now: datetime, recurring: list[Any], positions: Mapping[str, int], config: Config | None,
            outside: Iterable[tuple[float, float, float | None]], day_of: Callable[[float], str]) -> Analytics:
    """Everything in `Analytics` but the forecast (`episode_forecast`) for the sessions `chosen`
    (those in the window); `summaries` (the window's and the active ones) and `outside` (started,
    last touched and overall quality of the other sessions read, of `level`) for the previous
    window. `analyse_beside` runs it on the other core and adds the forecast."""
    config = config or Config()
    rules = config.patterns
    expected = {lv: {st.name: st.expected_minutes for st in config.pipeline(lv)}
                for lv in ("dev", "production", "platform", "coded")}
    low, high = since.timestamp(), until.timestamp()
    gated = _gated(config)
    early, late = halves(chosen)
    p = _Pass(chosen, low, high, early, expected, gated, day_of)

    a = Analytics()

    finished = p.finished
    episodes = sorted((s for s in finished if s["level"] == "production"), key=lambda s: s["completed"])
    a.episodes_produced = a.total_production = len(episodes)
    overall = p.overall
    a.quality_average = _r(_mean(overall))
    a.quality_consistency = _r(statistics.pstdev(overall)) if len(overall) > 1 else None
    notes = [Learning(session_id=sid, text=text, at=datetime.fromtimestamp(at, UTC), todo=todo)
             for sid, text, at, todo in p.learnings]
    a.key_learnings = sorted(notes, key=lambda n: (n.at, n.session_id), reverse=True)[:LEARNINGS_SHOWN]

    # weekly: trends by start day, velocity
    a.cost_trend = [Point(label=d, value=round(v, 4)) for d, v in sorted(p.cost_by_day.items())]
    a.quality_trend = [Point(label=d, value=_r(_mean(v))) for d, v in sorted(p.quality_by_day.items())]
    before, after = _mean(p.costs[0]), _mean(p.costs[1])
    a.cost_change = _r(after / before) if before and after is not None else None
    q_before, q_after = _mean(p.quality[0]), _mean(p.quality[1])
    a.quality_change = _r(q_after - q_before) if q_before is not None and q_after is not None else None
    days = max((high - low) / 86_400, 1 / 24)
    tasks_done, stages_done = p.tasks_done, p.stages_done
    times = _stage_times(p.minutes, expected, positions)
    a.velocity = Velocity(days=round(days, 2), tasks_done=tasks_done, tasks_per_day=round(tasks_done / days, 3),
                          stages_done=stages_done, stages_per_day=round(stages_done / days, 3), minutes_per_stage=times)

    # monthly
    a.cost_per_episode = [EpisodeCost(episode=s["episode"], session_id=s["id"], usd=round(s["cost"], 4),
                                      quality=s["overall"], day=day_of(s["completed"]))
                          for s in episodes[-SERIES_LIMIT:]]
    span = high - low
    # the window before this one, as long: its sessions are among the summaries (those that reach into
    # this window, the active ones) or outside them
    prev_quality = [s["overall"] for s in summaries if s["started"] < low and s["overall"] is not None
                    and (s["ended"] or s["completed"] or s["updated"]) >= low - span
                    and (level is None or s["level"] == level)]
    prev_quality += [overall for started, touched, overall in outside
                     if started < low and touched >= low - span and overall is not None]
    a.quality_improvement = QualityChange(current=a.quality_average, previous=_r(_mean(prev_quality)),
                                          sessions=len(overall), previous_sessions=len(prev_quality))
    if a.quality_improvement.current is not None and a.quality_improvement.previous is not None:
        a.quality_improvement.change = round(a.quality_improvement.current - a.quality_improvement.previous, 4)
    whole = _maturity(p.parts, len(chosen))
    a.maturity = Maturity(recovery_rate=whole.recovery_rate, gate_first_pass_rate=whole.gate_first_pass_rate,
                          estimate_accuracy=whole.estimate_accuracy)
    for index in sorted(p.weeks):
        point = _maturity(p.weeks[index], len(p.weeks[index]))
        point.week = day_of(low + index * 7 * 86_400)
        a.maturity.series.append(point)

    # seed 000
    a.quality_by_stage = [StageQuality(stage=st, n=len(v), mean=round(statistics.fmean(v), 4),
                                       stdev=round(statistics.pstdev(v), 4), min=round(min(v), 4), max=round(max(v), 4))
                          for st, v in sorted(p.stage_scores.items(), key=lambda i: (positions.get(i[0], 10_000), i[0]))]
    produced = sorted(p.produced, key=lambda s: (s["episode"] or 0, s["started"]))
    a.quality_by_episode = [EpisodeCost(episode=s["episode"], session_id=s["id"], usd=round(s["cost"], 4),
                                        quality=s["overall"], day=day_of(s["started"]))
                            for s in produced[-SERIES_LIMIT:]]
    a.gate_analysis = sorted((GateAnalysis(stage=st, evaluated=v[0], first_pass=v[1], failures=v[2],
                                           first_pass_rate=round(v[1] / v[0], 4) if v[0] else None)
                              for st, v in p.gates.items() if v[2] or st in gated),
                             key=lambda g: (g.first_pass_rate if g.first_pass_rate is not None else 1.0, g.stage))
    if p.budgeted:
        diffs = [cost - budget for cost, budget in p.budgeted]
        a.cost_variance = CostVariance(
            sessions=len(p.budgeted), mean_target_usd=round(statistics.fmean(b for _, b in p.budgeted), 4),
            mean_actual_usd=round(statistics.fmean(c for c, _ in p.budgeted), 4),
            mean_variance_usd=round(statistics.fmean(diffs), 4), over=sum(1 for d in diffs if d > 0),
            under=sum(1 for d in diffs if d <= 0))
    a.models = sorted((ModelImpact(model=m, stages=len(v), cost_usd=round(math.fsum(c for c, _ in v), 4),
                                   mean_cost_usd=round(math.fsum(c for c, _ in v) / len(v), 4),
                                   mean_quality=_r(_mean(q for _, q in v if q is not None)))
                       for m, v in p.models.items()), key=lambda m: (-m.cost_usd, m.model))
    tokens = p.tokens
    spent = math.fsum([*p.costs[0], *p.costs[1]])
    a.token_efficiency = TokenEfficiency(
        tokens=tokens, tokens_per_usd=round(tokens / spent, 2) if spent and tokens else None,
        usd_per_million=round(spent / tokens * 1e6, 4) if tokens else None,
        tokens_per_finished_session=round(tokens / len(finished), 1) if finished and tokens else None,
        tokens_per_quality_point=(round(tokens / len(overall) / (a.quality_average * 100), 2)
                                  if tokens and overall and a.quality_average else None))
    a.sessions = SessionScores(
        scored=len(p.scores), mean_score=_r(_mean(p.scores), 2), mean_completion_rate=_r(_mean(p.completion_rates)),
        mean_time_efficiency=_r(_mean(p.efficiencies)), bugs_fixed=p.bugs_fixed, bugs_introduced=p.bugs_introduced)

    # patterns
    totals = (math.fsum(p.costs[0]), math.fsum(p.costs[1]))
    findings = [*_cost_findings(totals, p.spent[0], p.spent[1], rules), *_model_findings(p.runs, rules),
                *_retry_findings(p.ran, p.retry_count, p.retried_costs, p.clean_costs, rules),
                *_quality_findings(p.quality, p.scores_by_half, rules), *_time_findings(times, rules),
                *_blocker_findings(chosen, rules), *_error_findings(recurring, rules)]
    a.findings = findings[:FINDINGS_LIMIT]
    a.optimisation = [f for f in findings if f.category == "cost"]
    return a


BESIDE_FROM = 2000  # sessions in the window before analysing them in a forked child is worth its fork


def analyse_beside(summaries: list[Summary], chosen: list[Summary], since: datetime, until: datetime,
                   level: str | None, now: datetime, recurring: Callable[[], list[Any]], positions: Mapping[str, int],
                   config: Config | None, outside: Iterable[tuple[float, float, float | None]],
                   day_of: Callable[[float], str] = _day) -> Callable[[], Analytics]:
    """`analyse` of these arguments, started in a forked child (`forked.Forked`) when the window is
    large and this process can fork, so the caller builds the rest of its report meanwhile on the
    other core; call the result for the analytics (the forecast is made here while the child
    works, so both finish at about the same time). They come back as the model's JSON (exact for
    every figure); when the child cannot run or fails, they are computed here, the same way.
    `recurring` gives the recurring errors: the child works them out itself, so it starts sooner."""
    from session_manager import forked

    def here() -> Analytics:
        return analyse(summaries, chosen, since, until, level, now, recurring(), positions, config, outside, day_of)

    child = forked.Forked.start(lambda channel: channel.answer(here().model_dump_json().encode())) \
        if len(chosen) >= BESIDE_FROM else None

    def result() -> Analytics:
        ahead = episode_forecast(summaries, chosen, since, until, level, now, config)
        answer = child.answer() if child is not None else None
        if child is not None:
            child.wait()
        a = Analytics.model_validate_json(answer) if answer is not None else here()
        a.forecast = ahead
        return a

    return result


def _gated(config: Config) -> set[str]:
    return {st.name for lv in ("dev", "production", "platform", "coded") for st in config.pipeline(lv) if st.quality_gate}


__all__ = ["Analytics", "Finding", "analyse", "analyse_beside", "episode_forecast", "forecast", "summary_fields"]
