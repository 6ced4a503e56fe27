"""What a session knows about its surroundings, and the variables the markdown templates see.

At `start`: the git facts (branch, last commit, dirty files), the previous session of the same
level (its summary, its unfinished tasks and open blockers, which are carried over), the known
issues from `.claude/memory/errors.md`. They are kept in the session's `context.json`, so
`context.md` re-rendered later still shows the world as it was when the session began.

The previous session is the most recent other session of the same level by `started_at`,
leaving out abandoned ones (abandoning says "drop this work"). Its pending tasks and open
blockers are carried over only when it is completed: a session that is still active keeps
its own tasks (carrying them would put the same work in two live sessions).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from session_manager.config import Config
from session_manager.errors import SessionError
from session_manager.levels import LEVELS, check_session_id
from session_manager.model import (
    DONE_STAGE,
    Blocker,
    Metadata,
    Model,
    SessionState,
    SessionStatus,
    StageStatus,
    Task,
    TaskStatus,
    Timestamp,
    dump_json,
)
from session_manager.store import Store

CONTEXT_FILE = "context.json"
KNOWN_ISSUES_SHOWN = 10
GIT_TIMEOUT = 10.0
# Session-manager's own files are not the user's uncommitted work.
OWN_PATHS = (":(exclude).claude/level-*", ":(exclude).claude/memory", ":(exclude).claude/.session-manager")
_MEMORY_ENTRY = re.compile(r"^- (?P<date>\d{4}-\d\d-\d\d) · \[(?P<sid>[^\]]+)\]\([^)]*\) · (?P<text>.*)$")
_MARKER = re.compile(r"\s*<!--.*?-->\s*$")


class GitFacts(Model):
    branch: str | None = None
    commit: str | None = None
    subject: str | None = None
    dirty_files: int | None = None


class PreviousSession(Model):
    session_id: str
    status: str
    topic: str | None = None
    started_at: Timestamp
    ended_at: Timestamp | None = None
    summary: str | None = None
    tasks_done: list[str] = []
    tasks_pending: list[str] = []
    blockers: list[str] = []
    carried: bool = False
    learnings: list[str] = []
    decisions: list[str] = []
    tasks_failed: list[str] = []
    score: int | None = None


class StartContext(Model):
    """`context.json`: the facts gathered when the session started."""

    gathered_at: Timestamp
    git: GitFacts = GitFacts()
    previous: PreviousSession | None = None
    known_issues: list[str] = []


# -- gathering at start -------------------------------------------------------------
def _git(root: Path, *args: str) -> str | None:
    """stdout of a read-only git command on the user's repository (None when git cannot tell),
    through the one git runner: cleaned environment, no optional locks, no prompt."""
    from session_manager.git import Git

    runner = Git(root, env={"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}, timeout=GIT_TIMEOUT)
    try:
        proc = runner.run("--no-optional-locks", *args, check=False)
    except SessionError:  # git missing or too slow: the fact stays unknown
        return None
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def _branch(root: Path) -> str | None:
    """The checked-out branch, read by GitPython from the repository's files without starting a
    process (worktrees, unborn branches and packed refs handled); None when detached.
    GitPython's own git processes inherit the caller's environment (it can add variables, not
    remove a leaked GIT_INDEX_FILE), so it is used only for reads that start no process."""
    try:
        from git import Repo

        repo = Repo(root, search_parent_directories=True)
        try:
            return None if repo.head.is_detached else repo.head.reference.name
        finally:
            repo.close()
    except Exception:  # a repository GitPython cannot read: the fact stays unknown
        return None


def git_facts(root: Path) -> GitFacts:
    """Branch, last commit and dirty file count; None for what git cannot tell (no repository,
    no commit yet, detached HEAD, git missing). Never an error."""
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", ".", *OWN_PATHS)
    if status is None:
        return GitFacts()
    last = _git(root, "log", "-1", "--format=%h%x00%s")
    commit, subject = (last.rstrip("\n").split("\x00", 1) + [""])[:2] if last else (None, None)
    return GitFacts(
        branch=_branch(root), commit=commit or None, subject=subject or None,
        dirty_files=len([line for line in status.splitlines() if line.strip()]),
    )


def previous_session(store: Store, level: str) -> SessionState | None:
    """The most recent session of `level` by started_at, abandoned ones left out. Ids carry
    the date, so only the newest day that has a candidate is read; damaged sessions are skipped."""
    ids = store.iter_ids([LEVELS[level]])
    for _, same_day in groupby(ids, key=lambda sid: check_session_id(sid)["date"]):
        candidates = []
        for session_id in same_day:
            try:
                state = store.read_state(session_id)
            except SessionError:
                continue
            if state.status != SessionStatus.abandoned:
                candidates.append(state)
        if candidates:
            return max(candidates, key=lambda s: (s.started_at, s.session_id))
    return None


def known_issues(claude_dir: Path, limit: int = KNOWN_ISSUES_SHOWN) -> list[str]:
    """The last `limit` bullet lines of `.claude/memory/errors.md` (ours or hand-written)."""
    from session_manager.store import read_bytes

    try:  # confined: a linked errors.md is refused (UnsafePath), never copied into a session
        lines = read_bytes(claude_dir / "memory" / "errors.md").decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    issues = []
    for line in lines:
        if not line.startswith("- "):
            continue
        line = _MARKER.sub("", line).rstrip()
        match = _MEMORY_ENTRY.match(line)
        issues.append(f"{match['text']} ({match['sid']}, {match['date']})" if match else line[2:].strip())
    return [issue for issue in issues if issue][-limit:]


@dataclass
class Gathered:
    """Facts gathered before a session is created; `carry_into` applies the carry-over."""

    context: StartContext
    previous_state: SessionState | None

    def carry_into(self, state: SessionState) -> dict[str, Any] | None:
        """Add the previous session's pending tasks and open blockers to `state`, marked with
        `carried_from`; returns the `carried_over` event data, or None when nothing was carried."""
        previous = self.previous_state
        if previous is None or previous.status != SessionStatus.completed:
            return None
        progress, now = state.progress, state.started_at
        tasks, blockers = [], []
        for task in previous.progress.tasks_pending:
            # the task as planned (agent, estimate, files, tests); its clock restarts here
            status = TaskStatus.blocked if task.status == TaskStatus.blocked else TaskStatus.pending
            tasks.append(Task(id=progress.next_task_id(), title=task.title, status=status, agent=task.agent,
                              estimated_minutes=task.estimated_minutes, files=list(task.files),
                              tests=list(task.tests), blockers=list(task.blockers), created_at=now,
                              carried_from=previous.session_id))
            progress.place(tasks[-1])
        titles = {t.title for t in progress.all_tasks()}
        for note in previous.progress.learnings:  # seed 003: the next session's todo from learnings
            if note.todo and note.text[:500] not in titles:
                titles.add(note.text[:500])
                tasks.append(Task(id=progress.next_task_id(), title=note.text[:500], created_at=now,
                                  carried_from=previous.session_id))
                progress.place(tasks[-1])
        for blocker in previous.progress.blockers:
            blockers.append(Blocker(id=progress.next_blocker_id(), text=blocker.text, created_at=now,
                                    carried_from=previous.session_id))
            progress.blockers.append(blockers[-1])
        if not tasks and not blockers:
            return None
        return {"from": previous.session_id, "tasks": [t.title for t in tasks], "blockers": [b.text for b in blockers]}

    def dump(self) -> str:
        return dump_json(self.context)


def gather(store: Store, level: str, now: datetime) -> Gathered:
    """Everything `start` needs to know; never raises for missing git, sessions or memory."""
    from session_manager import metrics

    previous = previous_session(store, level)
    summary = None
    if previous is not None:
        try:
            topic = store.read_metadata(previous.session_id).topic
        except SessionError:
            topic = None
        progress = previous.progress
        summary = PreviousSession(
            session_id=previous.session_id, status=str(previous.status), topic=topic,
            started_at=previous.started_at, ended_at=previous.ended_at or previous.completed_at,
            summary=previous.summary, tasks_done=[t.title for t in progress.tasks_completed],
            tasks_pending=[t.title for t in progress.tasks_pending], blockers=[b.text for b in progress.blockers],
            carried=previous.status == SessionStatus.completed,
            learnings=[n.text + (" (todo)" if n.todo else "") for n in progress.learnings],
            decisions=[n.text for n in progress.decisions], tasks_failed=[t.title for t in progress.tasks_failed],
            score=metrics.compute(previous).score,
        )
    context = StartContext(gathered_at=now, git=git_facts(store.root), previous=summary,
                           known_issues=known_issues(store.claude_dir))
    return Gathered(context, previous)


def read_start_context(folder: Path) -> StartContext | None:
    """The session's `context.json`, or None when absent or unreadable (sessions created
    before this file existed still render, without the start facts)."""
    try:
        return StartContext.model_validate_json((folder / CONTEXT_FILE).read_bytes())
    except (OSError, ValueError):
        return None


# -- template variables ---------------------------------------------------------------
def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else None


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else round(part / whole, 4)


def _task(task: Task) -> dict[str, Any]:
    return {"id": task.id, "ref": task.ref, "title": task.title, "created": _when(task.created_at),
            "done": _when(task.done_at) if task.status == TaskStatus.done else None,
            "carried_from": task.carried_from, "status": str(task.status), "agent": task.agent,
            "estimated_minutes": task.estimated_minutes, "actual_minutes": task.actual_minutes,
            "files": list(task.files), "tests": list(task.tests), "blockers": list(task.blockers),
            "output": task.output, "started": _when(task.started_at),
            "finished": _when(task.done_at)}


def _blocker(blocker: Blocker) -> dict[str, Any]:
    return {"id": blocker.id, "text": blocker.text, "created": _when(blocker.created_at),
            "cleared": _when(blocker.cleared_at), "carried_from": blocker.carried_from}


def _previous(previous: PreviousSession) -> dict[str, Any]:
    return {**previous.model_dump(exclude={"started_at", "ended_at"}), "started": _when(previous.started_at),
            "ended": _when(previous.ended_at)}


def _by_model(by_model: dict[str, float], total: float) -> list[dict[str, Any]]:
    """Cost per model, plus what was recorded without a model, so the rows add up to the total."""
    rows = [{"model": k, "usd": v} for k, v in by_model.items()]
    rest = round(total - sum(by_model.values()), 6)
    if rows and rest >= 0.005:
        rows.append({"model": "not given", "usd": rest})
    return rows


def gate_failures(folder: Path) -> list[dict[str, Any]]:
    """Every failed quality evaluation kept in `quality_reports/`, oldest first."""
    failures = []
    for path in sorted((folder / "quality_reports").glob("*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and report.get("passed") is False:
            failures.append({"stage": report.get("stage"), "attempt": report.get("attempt"),
                             "score": report.get("overall_score"), "feedback": list(report.get("feedback") or []),
                             "at": report.get("evaluated_at")})
    failures.sort(key=lambda f: (str(f["at"]), str(f["stage"])))
    return failures


def _gate_text(stage_def: Any) -> str | None:
    gate = stage_def.quality_gate
    if gate is None:
        return None
    parts = [f"overall ≥ {gate.overall:.2f}"] + [f"{k} ≥ {v:.2f}" for k, v in gate.metrics.items()]
    return ", ".join(parts)


def template_variables(
    state: SessionState,
    metadata: Metadata,
    config: Config,
    start: StartContext | None,
    folder: Path,
    now: datetime,
) -> dict[str, Any]:
    """The variables every session template sees (documented in docs/templates.md)."""
    progress, costs = state.progress, state.cost_tracking
    stages: list[dict[str, Any]] = []
    for number, (name, stage) in enumerate(state.stages.items(), start=1):
        stage_def = config.stage(state.level, name)
        stages.append({
            "n": number, "name": name, "status": str(stage.status), "attempts": stage.attempts,
            "total_attempts": stage.total_attempts, "max_attempts": stage_def.max_attempts,
            "gate": _gate_text(stage_def), "on_fail": stage_def.on_quality_fail,
            "requires": list(stage_def.requires), "score": stage.overall_score,
            "expected_minutes": stage_def.expected_minutes, "minutes": _minutes(stage.execution_seconds),
            "started": _when(stage.started_at), "completed": _when(stage.completed_at),
            "feedback": stage.feedback, "error": stage.last_error, "reason": stage.override_reason,
            "gate_failures": stage.gate_failures, "cost": costs.cost_by_stage.get(name),
            "outputs": dict(stage.outputs), "done": stage.status in DONE_STAGE,
            "first_try": stage.status == StageStatus.completed and stage.total_attempts == 1
            and stage.gate_failures == 0,
        })
    done_tasks = [_task(t) for t in progress.tasks_completed]
    pending_tasks = [_task(t) for t in progress.tasks_pending]
    failed_tasks = [_task(t) for t in progress.tasks_failed]
    open_blockers = [_blocker(b) for b in progress.blockers]
    carried_tasks = [t for t in [*pending_tasks, *done_tasks, *failed_tasks] if t["carried_from"]]
    carried_blockers = [b for b in [*open_blockers, *(_blocker(b) for b in progress.blockers_cleared)]
                        if b["carried_from"]]
    scores = [s["score"] for s in stages if s["score"] is not None and s["status"] == "completed"]
    end = state.ended_at or state.completed_at or now
    wall_minutes = _minutes(max(0.0, (end - state.started_at).total_seconds()))
    from session_manager import metrics as success
    from session_manager.tasks import document

    figures = success.compute(state, {name: config.stage(state.level, name).expected_minutes for name in state.stages})
    budget_usd, spent = state.budget.usd, costs.total_cost
    return {
        "session": {
            "id": state.session_id, "level": state.level, "level_number": LEVELS[state.level].number,
            "episode": state.episode_number, "status": str(state.status), "topic": metadata.topic,
            "complexity": metadata.complexity, "tag": metadata.tag, "objectives": list(metadata.objectives),
            "started": _when(state.started_at), "updated": _when(state.last_updated),
            "ended": _when(state.ended_at or state.completed_at), "summary": state.summary,
            "current_stage": state.current_stage, "progress": state.progress.percent,
            "started_by": metadata.created_by.actor, "minutes": wall_minutes,
        },
        "git": (start.git if start else GitFacts()).model_dump(),
        "gathered": _when(start.gathered_at) if start else None,
        "previous": _previous(start.previous) if start and start.previous else None,
        "known_issues": list(start.known_issues) if start else [],
        "stages": stages,
        "tasks": {"pending": pending_tasks, "done": done_tasks, "failed": failed_tasks, "carried": carried_tasks,
                  "all": sorted([*pending_tasks, *done_tasks, *failed_tasks], key=lambda t: t["id"]),
                  "json": document(state)},
        "blockers": {"open": open_blockers, "cleared": [_blocker(b) for b in progress.blockers_cleared],
                     "carried": carried_blockers},
        "learnings": [{"text": n.text, "at": _when(n.at), "stage": n.stage, "todo": n.todo} for n in progress.learnings],
        "decisions": [{"text": n.text, "at": _when(n.at), "stage": n.stage} for n in progress.decisions],
        "errors": [{"stage": e.stage, "error": e.error, "at": _when(e.at), "attempt": e.attempt,
                    "decision": e.decision} for e in state.errors],
        "gate_failures": gate_failures(folder),
        "alerts": [{"kind": a.kind, "severity": a.severity, "message": a.message} for a in state.alerts],
        "budget": {"usd": budget_usd, "spent": spent,
                   "left": None if budget_usd is None else round(budget_usd - spent, 6),
                   "ratio": _ratio(spent, budget_usd)},
        "cost": {
            "total": spent, "tokens": costs.tokens_used, "entries": costs.entries,
            "by_stage": [{"stage": k, "usd": v} for k, v in costs.cost_by_stage.items()],
            "by_model": _by_model(costs.cost_by_model, spent),
            "api_calls": [{"provider": k, "calls": v} for k, v in costs.api_calls.items()],
        },
        "metrics": {
            **figures.model_dump(),  # seed 004's success metrics (metrics.py)
            # time efficiency's own actual/estimated minutes; `minutes_estimated` is the plan's time budget
            "efficiency_actual": figures.minutes_actual, "efficiency_estimated": figures.minutes_estimated,
            "minutes_actual": wall_minutes,
            "minutes_estimated": sum(s["expected_minutes"] for s in stages if s["status"] != "skipped"),
            "stages_total": len(stages), "stages_done": sum(1 for s in stages if s["done"]),
            "scored_stages": len(scores),
            "errors": state.error_count, "recoveries": state.recovery_count,
            "gate_failures": sum(s["gate_failures"] for s in stages),
            "first_try": [s["name"] for s in stages if s["first_try"]],
            "bypassed": [s for s in stages if s["status"] == "bypassed"],
            "skipped": [s for s in stages if s["status"] == "skipped"],
        },
        "now": _when(now),
    }
