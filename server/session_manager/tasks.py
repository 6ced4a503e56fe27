"""Seed 004's task lifecycle and the session's `tasks.json`.

A task is `pending` when added; `start` makes it `in_progress`, `done` or `fail` finish it
(`actual_minutes` is measured from its start), `block` parks it with a reason and `unblock`
returns it to where it was. Every change is one journal event (`task_added`, `task_started`,
`task_completed`, `task_failed`, `task_blocked`, `task_unblocked`, `task_edited`, `task_removed`).

`tasks.json` is written in the same transaction as the state, in seed 004's shape:
`{sessionId, tasks[{id, title, agent, status, estimatedMinutes, actualMinutes, files, tests,
blockers, output}], metrics{totalTasks, completed, failed, blocked, timeSpent, timeEstimated}}`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from session_manager.errors import InvalidTransition, NotFound
from session_manager.model import Progress, SessionState, Task, TaskStatus
from session_manager.store import Transaction
from session_manager.events import Event

TASKS_FILE = "tasks.json"

# action -> (the statuses it may start from, the status it leaves)
TRANSITIONS: dict[str, tuple[tuple[TaskStatus, ...], TaskStatus | None]] = {
    "start": ((TaskStatus.pending, TaskStatus.failed), TaskStatus.in_progress),
    "done": ((TaskStatus.pending, TaskStatus.in_progress), TaskStatus.done),
    "fail": ((TaskStatus.pending, TaskStatus.in_progress, TaskStatus.blocked), TaskStatus.failed),
    "block": ((TaskStatus.pending, TaskStatus.in_progress), TaskStatus.blocked),
    "unblock": ((TaskStatus.blocked,), None),  # back to in_progress when it had started, else pending
}
EVENTS = {"start": Event.task_started, "done": Event.task_completed, "fail": Event.task_failed,
          "block": Event.task_blocked, "unblock": Event.task_unblocked}


def find(progress: Progress, ref: str) -> Task:
    """A task by `3`, `#3`, `task-3` or its exact title."""
    tasks = progress.all_tasks()
    key = ref.strip().lstrip("#")
    if key.lower().startswith("task-"):
        key = key[5:]
    if key.isdigit():
        for task in tasks:
            if task.id == int(key):
                return task
    for task in tasks:
        if task.title == ref:
            return task
    known = "; ".join(f"task-{t.id} {t.title[:40]} ({t.status})" for t in tasks[:10]) or "none"
    raise NotFound(f"no task {ref[:60]!r} (by task-N, #N or exact title); tasks: {known}")


def _minutes(start: datetime | None, end: datetime) -> float | None:
    if start is None:
        return None
    return round(max(0.0, (end - start).total_seconds()) / 60, 1)


def move(tx: Transaction, task: Task, action: str, output: str | None = None, reason: str | None = None) -> None:
    """Apply a lifecycle action to `task`, or refuse it saying where the task is."""
    allowed, target = TRANSITIONS[action]
    if task.status not in allowed:
        can = ", ".join(a for a, (sources, _) in TRANSITIONS.items() if task.status in sources) or "edit or remove"
        raise InvalidTransition(f"task-{task.id} is {task.status}: it cannot {action}; from {task.status}: {can}")
    now = tx.now
    if action == "unblock":
        target = TaskStatus.in_progress if task.started_at else TaskStatus.pending
    assert target is not None
    if action == "start":
        task.started_at, task.done_at, task.actual_minutes = now, None, None
    if action in ("done", "fail"):
        task.done_at = now
        task.actual_minutes = _minutes(task.started_at, now)
    if action == "block":
        task.blockers.append(reason or "blocked")
    if output is not None:
        task.output = output
    elif action == "fail" and reason:
        task.output = reason
    task.status = target
    tx.state.progress.place(task)
    tx.event(EVENTS[action], task_id=task.id, title=task.title, status=str(task.status),
             actual_minutes=task.actual_minutes, output=output, reason=reason)


def add(tx: Transaction, title: str, agent: str | None = None, estimate: float | None = None,
        files: list[str] | None = None, tests: list[str] | None = None,
        carried_from: str | None = None) -> Task:
    progress = tx.state.progress
    task = Task(id=progress.next_task_id(), title=title, agent=agent, estimated_minutes=estimate,
                files=list(files or []), tests=list(tests or []), created_at=tx.now, carried_from=carried_from)
    progress.place(task)
    tx.event(Event.task_added, task_id=task.id, title=title, agent=agent, estimated_minutes=estimate,
             files=task.files or None, tests=task.tests or None)
    return task


def edit(tx: Transaction, task: Task, changes: dict[str, Any]) -> None:
    """Replace the given fields (files and tests are replaced as lists)."""
    changed = {key: value for key, value in changes.items() if value is not None}
    if not changed:
        raise_nothing()
    for key, value in changed.items():
        setattr(task, key, list(value) if isinstance(value, list) else value)
    tx.event(Event.task_edited, task_id=task.id, title=task.title, changes=changed)


def raise_nothing() -> None:
    from session_manager.errors import InvalidInput

    raise InvalidInput("nothing to change: give --title, --agent, --estimate, --file, --test or --output")


def remove(tx: Transaction, task: Task, reason: str | None) -> None:
    tx.state.progress.drop(task)
    tx.event(Event.task_removed, task_id=task.id, title=task.title, status=str(task.status), reason=reason)


# -- tasks.json ------------------------------------------------------------------------------------
class TaskMetrics(BaseModel):
    totalTasks: int = 0  # noqa: N815 (seed 004's names)
    completed: int = 0
    failed: int = 0
    blocked: int = 0
    timeSpent: float = Field(default=0.0, description="minutes, done and failed tasks")  # noqa: N815
    timeEstimated: float = Field(default=0.0, description="minutes, every task with an estimate")  # noqa: N815


def entry(task: Task) -> dict[str, Any]:
    """One task in seed 004's shape (plus when and where it came from)."""
    return {"id": task.ref, "title": task.title, "agent": task.agent, "status": str(task.status),
            "estimatedMinutes": task.estimated_minutes, "actualMinutes": task.actual_minutes,
            "files": list(task.files), "tests": list(task.tests), "blockers": list(task.blockers),
            "output": task.output, "carriedFrom": task.carried_from}


def task_metrics(progress: Progress) -> TaskMetrics:
    tasks = progress.all_tasks()
    return TaskMetrics(
        totalTasks=len(tasks), completed=sum(1 for t in tasks if t.status == TaskStatus.done),
        failed=sum(1 for t in tasks if t.status == TaskStatus.failed),
        blocked=sum(1 for t in tasks if t.status == TaskStatus.blocked),
        timeSpent=round(math.fsum(t.actual_minutes or 0.0 for t in tasks), 1),
        timeEstimated=round(math.fsum(t.estimated_minutes or 0.0 for t in tasks), 1))


def document(state: SessionState) -> dict[str, Any]:
    return {"sessionId": state.session_id, "tasks": [entry(t) for t in state.progress.all_tasks()],
            "metrics": task_metrics(state.progress).model_dump()}


def dump(state: SessionState) -> str:
    return json.dumps(document(state), indent=2, ensure_ascii=False) + "\n"


def write(tx: Transaction) -> None:
    """Write `tasks.json` with the state, in the same transaction."""
    tx.write(TASKS_FILE, dump(tx.state))


class TaskResult(BaseModel):
    """A task change: the tasks it touched (seed 004's shape) and the session's task metrics."""

    session_id: str
    action: str
    tasks: list[dict[str, Any]]
    metrics: TaskMetrics
