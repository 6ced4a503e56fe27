"""Templates that learn (seed 001 "template evolution: update templates based on successful
episodes"): `templates evolve` reads this project's successful sessions and proposes, each with
its evidence,

* `expected_minutes` per stage: the median of the successful runs (at least MIN_RUNS of them);
* a budget target per level: the highest cost of a successful session plus BUDGET_HEADROOM;
* gate thresholds never missed (raised to the lowest score seen) or always missed (lowered to the
  highest score seen), from every evaluation in `quality_reports/`;
* a "lessons" section for the level's plan template, from learnings recorded in two or more
  sessions.

A successful session: status completed, every stage completed or skipped (none bypassed), no stage
escalated, and a cost within its budget. The proposal is shown as a unified diff of
`.claude/session-manager.toml` and of the template override; `apply` writes both, after a backup
of the present files and with a line in `.claude/memory/evolution.jsonl`.

The TOML is written with `tomli-w` (the stdlib reads TOML but cannot write it): the whole file is
read, the proposed keys are merged in and it is written back. Comments in the file are not kept;
the diff shows the whole new file and the backup taken first holds the old one.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import statistics
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from session_manager.config import CONFIG_NAME, Config, StageDef
from session_manager.errors import ConfigError, CorruptState, NotFound
from session_manager.model import SessionState, SessionStatus, StageStatus
from session_manager.store import Store, read_bytes, read_jsonl

MIN_RUNS = 3  # successful runs of a stage before its expected minutes are proposed
MIN_EVALUATIONS = 3  # gate evaluations before a threshold is judged
MIN_CHANGE = 0.10  # a new expected_minutes differing from the current by less than this share is not proposed
BUDGET_HEADROOM = 1.2
LESSON_SESSIONS = 2  # a learning recorded in this many sessions becomes a lesson
LESSONS_START = "{#- lessons: written by `session-manager templates evolve`; it replaces this block #}"
LESSONS_END = "{#- end of lessons #}"
JOURNAL = "memory/evolution.jsonl"
LEVEL_NAMES = ("dev", "production", "platform", "coded")


class Proposal(BaseModel):
    kind: Literal["expected_minutes", "budget", "gate", "lessons"]
    level: str
    key: str = Field(description="what changes: the TOML key or the template file")
    current: Any = None
    proposed: Any
    evidence: dict[str, Any]


class Evolution(BaseModel):
    """What `templates evolve` proposes (and, with apply, wrote)."""

    sessions_read: int
    successful: dict[str, list[str]] = Field(description="per level, the successful sessions used as evidence")
    proposals: list[Proposal]
    diff: str = Field(description="unified diff of .claude/session-manager.toml and the template overrides")
    applied: bool = False
    written: list[str] = Field(default_factory=list)
    backup_before: str | None = Field(None, description="the backup revision holding the files before apply")
    undo: str | None = None
    damaged: list[str] = Field(default_factory=list)


# -- reading the history ----------------------------------------------------------------------------
def successful(state: SessionState) -> bool:
    if state.status != SessionStatus.completed:
        return False
    if any(s.status not in (StageStatus.completed, StageStatus.skipped) for s in state.stages.values()):
        return False
    budget = state.budget.usd
    return budget is None or state.cost_tracking.total_cost <= budget + 1e-9


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _clean_lesson(text: str) -> str:
    """One line of plain text: no markdown structure at its start (headings, lists, tick boxes)."""
    line = " ".join(text.split())
    return re.sub(r"^[\s#>*+\-\[\]\d.)|`]+", "", line)[:300]


def propose(store: Store, config: Config, levels: list[str], root: Path) -> Evolution:
    states: dict[str, list[SessionState]] = {level: [] for level in levels}
    everything: dict[str, list[SessionState]] = {level: [] for level in levels}
    damaged: list[str] = []
    read = 0
    from session_manager.levels import LEVELS

    for session_id in store.iter_ids([LEVELS[level] for level in levels]):
        try:
            state = store.read_state(session_id)
        except (CorruptState, NotFound) as exc:
            damaged.append(str(exc))
            continue
        read += 1
        everything[state.level].append(state)
        if successful(state):
            states[state.level].append(state)
    proposals: list[Proposal] = []
    for level in levels:
        good = sorted(states[level], key=lambda s: s.session_id)
        proposals += _minutes(config, level, good)
        proposals += _budget(config, level, good)
        proposals += _gates(store, config, level, everything[level])
        proposals += _lessons(level, good)
    new_toml, old_toml = render_config(store.claude_dir, config, proposals)
    diff = _diff(f".claude/{CONFIG_NAME}", old_toml, new_toml) if new_toml != old_toml else ""
    for path, old, new in template_changes(root, proposals):
        diff += _diff(str(path.relative_to(root)), old, new)
    return Evolution(sessions_read=read, successful={lv: sorted(s.session_id for s in v) for lv, v in states.items() if v},
                     proposals=proposals, diff=diff, damaged=damaged)


def _minutes(config: Config, level: str, good: list[SessionState]) -> list[Proposal]:
    out = []
    for stage in config.pipeline(level):
        runs = [(s.session_id, s.stages[stage.name].execution_seconds) for s in good
                if stage.name in s.stages and s.stages[stage.name].status == StageStatus.completed
                and s.stages[stage.name].execution_seconds is not None]
        if len(runs) < MIN_RUNS:
            continue
        minutes = [round((seconds or 0.0) / 60, 2) for _, seconds in runs]
        median = max(0.1, round(statistics.median(minutes), 1))
        if abs(median - stage.expected_minutes) < MIN_CHANGE * stage.expected_minutes:
            continue
        out.append(Proposal(
            kind="expected_minutes", level=level, key=f"pipelines.{level}.{stage.name}.expected_minutes",
            current=stage.expected_minutes, proposed=median,
            evidence={"runs": len(runs), "median_minutes": median, "minutes": minutes,
                      "sessions": [sid for sid, _ in runs]}))
    return out


def _budget(config: Config, level: str, good: list[SessionState]) -> list[Proposal]:
    costs = [(s.session_id, s.cost_tracking.total_cost) for s in good if s.cost_tracking.total_cost > 0]
    if len(costs) < MIN_RUNS:
        return []
    values = [c for _, c in costs]
    target = math.ceil(max(values) * BUDGET_HEADROOM * 100) / 100
    current = getattr(config.budgets, level)
    if current is not None and abs(target - current) < MIN_CHANGE * current:
        return []
    return [Proposal(
        kind="budget", level=level, key=f"budgets.{level}", current=current, proposed=target,
        evidence={"sessions": [sid for sid, _ in costs], "costs_usd": values, "median_usd": statistics.median(values),
                  "max_usd": max(values), "rule": f"the highest successful cost x {BUDGET_HEADROOM}"})]


def _floor(value: float) -> float:
    return math.floor(value * 20 + 1e-9) / 20  # down to a step of 0.05


def _gates(store: Store, config: Config, level: str, sessions: list[SessionState]) -> list[Proposal]:
    """Per gated stage and threshold (overall, each metric): every evaluation in quality_reports/."""
    out = []
    for stage in config.pipeline(level):
        gate = stage.quality_gate
        if gate is None:
            continue
        scores: dict[str, list[float]] = {}
        for state in sessions:
            folder = store.level_dir(_level(level)) / state.session_id / "quality_reports"
            try:
                names = sorted(p.name for p in folder.iterdir() if p.name.startswith(f"{stage.name}_attempt"))
            except OSError:
                continue
            for name in names:
                try:
                    report = json.loads(read_bytes(folder / name))
                except (OSError, ValueError, CorruptState):
                    continue
                if not isinstance(report, dict):
                    continue
                overall = report.get("overall_score")
                if isinstance(overall, (int, float)):
                    scores.setdefault("overall", []).append(float(overall))
                values = report.get("scores") if isinstance(report.get("scores"), dict) else {}
                for metric in gate.metrics:
                    value = values.get(metric) if isinstance(values, dict) else None
                    if isinstance(value, (int, float)):
                        scores.setdefault(metric, []).append(float(value))
        thresholds = {"overall": gate.overall, **gate.metrics}
        for metric, threshold in thresholds.items():
            seen = scores.get(metric, [])
            if len(seen) < MIN_EVALUATIONS:
                continue
            missed = sum(1 for v in seen if v < threshold)
            key = (f"pipelines.{level}.{stage.name}.quality_gate."
                   + ("overall" if metric == "overall" else f"metrics.{metric}"))
            if missed == 0:
                proposed, verdict = _floor(min(seen)), "never missed"
                if proposed <= threshold:
                    continue
            elif missed == len(seen):
                proposed, verdict = _floor(max(seen)), "always missed"
                if proposed >= threshold or proposed < gate.critical:
                    continue
            else:
                continue
            out.append(Proposal(
                kind="gate", level=level, key=key, current=threshold, proposed=proposed,
                evidence={"verdict": verdict, "evaluations": len(seen), "missed": missed,
                          "lowest": min(seen), "highest": max(seen),
                          "rule": "raise to the lowest score seen" if missed == 0
                          else "lower to the highest score seen (review before applying)"}))
    return out


def _lessons(level: str, good: list[SessionState]) -> list[Proposal]:
    seen: dict[str, tuple[str, set[str]]] = {}
    for state in good:
        for note in state.progress.learnings:
            key = _norm(note.text)
            if not key:
                continue
            text, ids = seen.setdefault(key, (_clean_lesson(note.text), set()))
            ids.add(state.session_id)
    lessons = [(text, sorted(ids)) for text, ids in seen.values() if len(ids) >= LESSON_SESSIONS and text]
    if not lessons:
        return []
    lessons.sort(key=lambda item: (-len(item[1]), item[0]))
    return [Proposal(
        kind="lessons", level=level, key=f".claude/templates/{level}/plan.md.j2", proposed=[t for t, _ in lessons],
        evidence={"learnings": [{"text": t, "sessions": ids} for t, ids in lessons]})]


def _level(name: str) -> Any:
    from session_manager.levels import LEVELS

    return LEVELS[name]


# -- the TOML -----------------------------------------------------------------------------------------
def _stage_table(stage: StageDef) -> dict[str, Any]:
    """A stage as it is written in `[[pipelines.<level>]]`: its name and the keys that differ from the defaults."""
    data: dict[str, Any] = stage.model_dump(exclude_defaults=True)
    data["name"] = stage.name
    data["expected_minutes"] = stage.expected_minutes
    if stage.quality_gate is not None:
        data["quality_gate"] = stage.quality_gate.model_dump()
        if not data["quality_gate"]["metrics"]:
            del data["quality_gate"]["metrics"]
    return {"name": data.pop("name"), **data}


def render_config(claude_dir: Path, config: Config, proposals: list[Proposal]) -> tuple[str, str]:
    """(the new file's text, the present file's text) with the TOML proposals merged in."""
    import tomli_w

    path = claude_dir / CONFIG_NAME
    try:
        old = read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        old = ""
    toml = [p for p in proposals if p.kind != "lessons"]
    if not toml:
        return old, old
    data: dict[str, Any] = tomllib.loads(old) if old else {}
    pipelines: dict[str, list[StageDef]] = {}
    for proposal in toml:
        level = proposal.level
        if proposal.kind == "budget":
            data.setdefault("budgets", {})[level] = proposal.proposed
            continue
        stages = pipelines.setdefault(level, [s.model_copy(deep=True) for s in config.pipeline(level)])
        _, _, stage_name, *rest = proposal.key.split(".")
        index = next(i for i, s in enumerate(stages) if s.name == stage_name)
        stage = stages[index]
        if proposal.kind == "expected_minutes":
            stages[index] = stage.model_copy(update={"expected_minutes": proposal.proposed})
        elif stage.quality_gate is not None:
            gate = stage.quality_gate
            if rest[1] == "overall":
                gate = gate.model_copy(update={"overall": proposal.proposed})
            else:
                gate = gate.model_copy(update={"metrics": {**gate.metrics, rest[2]: proposal.proposed}})
            stages[index] = stage.model_copy(update={"quality_gate": gate})
    for level, stages in pipelines.items():
        data.setdefault("pipelines", {})[level] = [_stage_table(s) for s in stages]
    new = tomli_w.dumps(data)
    try:
        Config.model_validate(tomllib.loads(new))  # what is written must load
    except Exception as exc:  # noqa: BLE001 - any refusal means we must not write it
        raise ConfigError(f".claude/{CONFIG_NAME}: the proposed file would not load ({exc}); nothing was written")
    return new, old


# -- the template override ----------------------------------------------------------------------------
def _literal(text: str) -> str:
    """A Jinja expression printing `text` as is: user text never becomes template syntax."""
    return "{{ " + json.dumps(text) + " }}"


def lessons_block(lessons: list[str]) -> str:
    lines = [LESSONS_START, "", "## Lessons from earlier sessions", ""]
    lines += [f"- {_literal(text)}" for text in lessons]
    return "\n".join([*lines, "", LESSONS_END]) + "\n"


def template_changes(root: Path, proposals: list[Proposal]) -> list[tuple[Path, str, str]]:
    """(override path, its present text, its new text) for each lessons proposal. A new override
    starts from the template used today (the project's, else the shipped one)."""
    from session_manager import render

    out = []
    for proposal in proposals:
        if proposal.kind != "lessons":
            continue
        target = root / ".claude" / "templates" / proposal.level / "plan.md.j2"
        try:
            present = read_bytes(target).decode("utf-8")
        except FileNotFoundError:
            present = ""
        base = present
        if not base:
            found = render.locate(root, "plan", proposal.level)
            base = found[0].read_text(encoding="utf-8") if found else ""
        if LESSONS_START in base and LESSONS_END in base:
            head, _, rest = base.partition(LESSONS_START)
            _, _, tail = rest.partition(LESSONS_END)
            base = head.rstrip("\n") + "\n" + tail.lstrip("\n")
        new = base.rstrip("\n") + "\n\n" + lessons_block(list(proposal.proposed))
        if new != present:
            out.append((target, present, new))
    return out


def _diff(name: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"a/{name}" if old else "/dev/null", tofile=f"b/{name}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def levels_of(level: str | None) -> list[str]:
    return [level] if level else list(LEVEL_NAMES)


def journal_path(store: Store) -> Path:
    return store.claude_dir / JOURNAL


def history(store: Store) -> list[dict[str, Any]]:
    return read_jsonl(journal_path(store))[0]
