"""Seed 004's success metrics for one session, and the composite score.

* **completion rate** = tasks done / tasks planned (every task of the session, removed ones aside);
  with no tasks, completed stages / stages (a pipeline session's work is its stages);
* **quality score** = tests passed / tests run, when the session recorded tests (`end --tests-passed
  --tests-total`, else the tests of its finished tasks: a done task's tests passed, a failed task's
  did not); otherwise the stage quality (`quality_overall`, the mean of the completed stages' scores);
* **time efficiency** = actual minutes / estimated minutes (1.0 on estimate, above 1 over it), over
  the done tasks that have both; otherwise over the completed stages that have an expected duration;
* **bug rate** = bugs introduced / features added (tasks done), when `--bugs-introduced` was given;
* **documentation coverage** = documented changes / changes: `end --docs-changed N` over the tasks
  done, else the done tasks with files that touched documentation (`*.md`, `*.rst`, `*.txt`, `docs/`)
  over the done tasks with files;
* **score** (0-100) = 100 x the weighted mean of the components that are known (weights renormalised):
  completion 0.35, quality 0.30, time 0.15 (min(1, estimated / actual)), bugs 0.10 (max(0, 1 - bug rate)),
  documentation 0.10. None when no component is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePosixPath

from pydantic import BaseModel, Field

from session_manager.model import DONE_STAGE, SessionState, StageStatus, Task, TaskStatus

WEIGHTS: dict[str, float] = {"completion": 0.35, "quality": 0.30, "time": 0.15, "bugs": 0.10, "docs": 0.10}
DOC_SUFFIXES = (".md", ".rst", ".txt", ".adoc")


class SessionMetrics(BaseModel):
    """Seed 004's success indicators for one session (None: not known for it)."""

    tasks_planned: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_blocked: int = 0
    completion_rate: float | None = Field(default=None, description="tasks done / tasks planned (stages when no tasks)")
    tests_passed: int | None = None
    tests_total: int | None = None
    quality_score: float | None = Field(default=None, description="tests passed / total, else the stage quality")
    quality_source: str | None = Field(default=None, description="tests or stages")
    minutes_actual: float | None = None
    minutes_estimated: float | None = None
    time_efficiency: float | None = Field(default=None, description="actual / estimated minutes (above 1: over estimate)")
    bugs_fixed: int | None = None
    bugs_introduced: int | None = None
    bug_rate: float | None = Field(default=None, description="bugs introduced / tasks done")
    docs_coverage: float | None = Field(default=None, description="documented changes / changes")
    score: int | None = Field(default=None, description="0-100, see docs/tasks-and-metrics.md")


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def is_doc(path: str) -> bool:
    pure = PurePosixPath(path.replace("\\", "/"))
    return pure.suffix.lower() in DOC_SUFFIXES or "docs" in pure.parts or "doc" in pure.parts


def task_minutes(tasks: list[Task]) -> tuple[float, float]:
    """(actual, estimated) minutes over the done tasks that have both."""
    pairs = [(t.actual_minutes, t.estimated_minutes) for t in tasks
             if t.status == TaskStatus.done and t.actual_minutes is not None and t.estimated_minutes]
    return math.fsum(a for a, _ in pairs if a is not None), math.fsum(e for _, e in pairs if e is not None)


def score(components: Mapping[str, float | None]) -> int | None:
    """100 x the weighted mean of the known components (each 0..1)."""
    known = {k: min(1.0, max(0.0, v)) for k, v in components.items() if v is not None and k in WEIGHTS}
    if not known:
        return None
    weight = math.fsum(WEIGHTS[k] for k in known)
    return int(round(100 * math.fsum(WEIGHTS[k] * v for k, v in known.items()) / weight))


def compute(state: SessionState, expected_minutes: Mapping[str, float | None] | None = None) -> SessionMetrics:
    """The metrics of one session; `expected_minutes` per stage (from the config) for time efficiency
    when no task has an estimate."""
    tasks = state.progress.all_tasks()
    outcome = state.outcome
    done = [t for t in tasks if t.status == TaskStatus.done]
    failed = [t for t in tasks if t.status == TaskStatus.failed]
    m = SessionMetrics(tasks_planned=len(tasks), tasks_done=len(done), tasks_failed=len(failed),
                       tasks_blocked=sum(1 for t in tasks if t.status == TaskStatus.blocked))
    if tasks:
        m.completion_rate = _ratio(len(done), len(tasks))
    elif state.stages:
        m.completion_rate = _ratio(sum(1 for s in state.stages.values() if s.status in DONE_STAGE), len(state.stages))

    if outcome.tests_total:
        m.tests_passed, m.tests_total = min(outcome.tests_passed or 0, outcome.tests_total), outcome.tests_total
    else:
        passed = sum(len(t.tests) for t in done)
        run = passed + sum(len(t.tests) for t in failed)
        if run:
            m.tests_passed, m.tests_total = passed, run
    if m.tests_total:
        m.quality_score, m.quality_source = _ratio(m.tests_passed or 0, m.tests_total), "tests"
    elif state.quality_overall is not None:
        m.quality_score, m.quality_source = round(state.quality_overall, 4), "stages"

    actual, estimated = task_minutes(tasks)
    if not estimated and expected_minutes:
        stages = [(s.execution_seconds / 60, expected_minutes.get(name)) for name, s in state.stages.items()
                  if s.status == StageStatus.completed and s.execution_seconds is not None]
        actual = math.fsum(a for a, e in stages if e)
        estimated = math.fsum(e for _, e in stages if e)
    if estimated:
        m.minutes_actual, m.minutes_estimated = round(actual, 1), round(estimated, 1)
        m.time_efficiency = _ratio(actual, estimated)

    m.bugs_fixed, m.bugs_introduced = outcome.bugs_fixed, outcome.bugs_introduced
    if outcome.bugs_introduced is not None and done:
        m.bug_rate = _ratio(outcome.bugs_introduced, len(done))

    if outcome.docs_changed is not None and done:
        m.docs_coverage = min(1.0, round(outcome.docs_changed / len(done), 4))
    else:
        with_files = [t for t in done if t.files]
        if with_files:
            m.docs_coverage = _ratio(sum(1 for t in with_files if any(is_doc(f) for f in t.files)), len(with_files))

    time_part = None
    if m.time_efficiency is not None:
        time_part = 1.0 if m.time_efficiency <= 0 else min(1.0, 1 / m.time_efficiency)
    m.score = score({"completion": m.completion_rate, "quality": m.quality_score, "time": time_part,
                     "bugs": None if m.bug_rate is None else max(0.0, 1 - m.bug_rate), "docs": m.docs_coverage})
    return m
