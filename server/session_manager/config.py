"""`.claude/session-manager.toml`: optional, validated, with the design's defaults.

A bad key or value is one `ConfigError` naming the file and the dotted key, e.g.
``.claude/session-manager.toml: pipelines.production.3.max_attempts: must be >= 1``.
"""

from __future__ import annotations

import functools

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from session_manager.errors import ConfigError, describe_validation_error

CONFIG_NAME = "session-manager.toml"

Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
# bounds keep every derived number finite: tokens (<= 10**12) x price / 10**6 stays far below 1e308
Usd = Annotated[float, Field(ge=0, le=1_000_000)]
Price = Annotated[float, Field(ge=0, le=1_000_000)]  # USD per million tokens, or per API call
STAGE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class Strict(BaseModel):
    # allow_inf_nan=False: TOML has `inf` and `nan`; neither is a budget, a price or a duration
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class QualityGate(Strict):
    overall: Ratio = 0.85
    critical: Ratio = 0.6
    metrics: dict[str, Ratio] = Field(default_factory=dict)


class StageDef(Strict):
    name: Annotated[str, Field(pattern=STAGE_NAME_PATTERN)]
    requires: list[str] = Field(default_factory=list)
    quality_gate: QualityGate | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    on_quality_fail: str | None = None
    expected_minutes: Annotated[float, Field(gt=0, le=525_600)] = 15.0  # at most a year


def _stages(*names: str, gated: tuple[str, ...] = (), minutes: float = 15.0) -> list[StageDef]:
    return [
        StageDef(name=n, quality_gate=QualityGate() if n in gated else None, expected_minutes=minutes)
        for n in names
    ]


DEFAULT_PIPELINES: dict[str, list[StageDef]] = {
    "production": _stages(
        "01_deep_research",
        "02_questions",
        "03_synthesis",
        "04_quality_claude",
        "05_quality_gemini",
        "06_feedback_synthesis",
        "07_script_polish",
        "08_final_review",
        "09_audio_synthesis",
        gated=("04_quality_claude", "05_quality_gemini", "08_final_review"),
        minutes=10.0,
    ),
    "dev": [
        StageDef(name="initialization", expected_minutes=10),
        StageDef(name="planning", expected_minutes=20),
        StageDef(name="execution", expected_minutes=180),
        StageDef(name="validation", expected_minutes=30),
        StageDef(name="review", expected_minutes=15),
    ],
    "platform": _stages("requirements", "design", "migration_plan", "risk_assessment", "review", minutes=30),
    "coded": _stages("implement", "test", "review", "release", minutes=30),
}


class Pipelines(Strict):
    dev: list[StageDef] = Field(default_factory=lambda: DEFAULT_PIPELINES["dev"])
    production: list[StageDef] = Field(default_factory=lambda: DEFAULT_PIPELINES["production"])
    platform: list[StageDef] = Field(default_factory=lambda: DEFAULT_PIPELINES["platform"])
    coded: list[StageDef] = Field(default_factory=lambda: DEFAULT_PIPELINES["coded"])

    @model_validator(mode="after")
    def _check_references(self) -> Pipelines:
        for level in ("dev", "production", "platform", "coded"):
            stages: list[StageDef] = getattr(self, level)
            if not stages:
                raise ValueError(f"{level}: a pipeline needs at least one stage")
            names = [s.name for s in stages]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{level}: stage names repeat: {', '.join(duplicates)}")
            for index, stage in enumerate(stages):
                target = stage.on_quality_fail
                if target is not None and target not in names[:index]:
                    raise ValueError(
                        f"{level}.{stage.name}.on_quality_fail: {target!r} is not an earlier stage"
                        f" (earlier: {', '.join(names[:index]) or 'none'})"
                    )
        return self

    def for_level(self, level: str) -> list[StageDef]:
        stages: list[StageDef] = getattr(self, level)
        return stages


class Alerts(Strict):
    cost_ratio: Ratio = 0.8
    quality_min: Ratio = 0.85
    time_ratio: Annotated[float, Field(gt=0, le=1000)] = 1.2
    error_rate: Ratio = 0.10
    # opt-in: the PreToolUse hook denies tool calls (reading stays allowed) once the session bound
    # to the conversation has spent its budget
    enforce_budget: bool = False


class Budgets(Strict):
    """Default budget in USD per level when `start` names none (seed: episode target $4-5)."""

    dev: Usd | None = None
    production: Usd | None = 5.0
    platform: Usd | None = None
    coded: Usd | None = None


class Backup(Strict):
    enabled: bool = True
    branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")] = "session-backups"
    interval_seconds: Annotated[float, Field(gt=0, le=86_400 * 365)] = 300.0
    coalesce_seconds: Annotated[float, Field(ge=0, le=86_400)] = 2.0
    remote: str | None = None
    push: bool = False

    @field_validator("branch")
    @classmethod
    def _branch_is_safe(cls, value: str) -> str:
        if ".." in value or value.endswith((".lock", "/", ".")) or "//" in value:
            raise ValueError("not a valid git branch name")
        return value


class ModelPrice(Strict):
    """USD per million tokens."""

    input: Price
    output: Price
    cache_write: Price | None = None
    cache_read: Price | None = None


class Prices(Strict):
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    calls: dict[str, Price] = Field(default_factory=dict)


class Patterns(Strict):
    """Thresholds of the report's findings (analytics.py; docs/tasks-and-metrics.md)."""

    min_samples: Annotated[int, Field(ge=1, le=10_000)] = 5  # sessions on each side of a comparison
    cost_share_growth: Ratio = 0.10  # a stage's share of cost grew by at least this (absolute)
    cost_growth_ratio: Annotated[float, Field(ge=1.0, le=100)] = 1.25  # and its mean cost by this factor
    quality_change: Ratio = 0.03  # a mean score moved by at least this between the halves of the window
    cheaper_model_saving: Ratio = 0.20  # a cheaper model costs at least this much less on the stage
    quality_tolerance: Ratio = 0.02  # ... and scores no more than this below the expensive one
    retry_rate: Annotated[float, Field(ge=0, le=100)] = 0.20  # retries per session of a stage
    time_over_estimate: Annotated[float, Field(ge=1.0, le=100)] = 1.2  # median minutes / expected minutes
    blocker_sessions: Annotated[int, Field(ge=2, le=10_000)] = 3  # a blocker seen in this many sessions recurs


class Forecast(Strict):
    monthly_budget_usd: Usd | None = None  # what the project may spend per calendar month


class Config(Strict):
    patterns: Patterns = Field(default_factory=Patterns)
    forecast: Forecast = Field(default_factory=Forecast)
    pipelines: Pipelines = Field(default_factory=Pipelines)
    alerts: Alerts = Field(default_factory=Alerts)
    budgets: Budgets = Field(default_factory=Budgets)
    backup: Backup = Field(default_factory=Backup)
    prices: Prices = Field(default_factory=Prices)
    lock_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig())
    phases: PhaseMap = Field(default_factory=lambda: PhaseMap())

    def pipeline(self, level: str) -> list[StageDef]:
        return self.pipelines.for_level(level)

    def stage(self, level: str, name: str) -> StageDef:
        for stage in self.pipeline(level):
            if stage.name == name:
                return stage
        return StageDef(name=name)


def load_config(claude_dir: Path) -> Config:
    """Read `<claude_dir>/session-manager.toml` if present; defaults otherwise."""
    path = claude_dir / CONFIG_NAME
    source = f".claude/{CONFIG_NAME}"
    from session_manager.store import read_bytes

    try:
        raw = read_bytes(path)  # a linked config is refused (UnsafePath), never followed
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    return _parse(raw, source)


@functools.lru_cache(maxsize=8)
def _parse(raw: bytes, source: str) -> Config:
    """The config for these bytes. Cached: a long-running server reads the file at every call
    (a change is seen at once) but parses and validates it only when its bytes change. The Config
    is shared: treat it as read-only."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


# -- batches and phases (issue 17) -------------------------------------------------------------
class BatchConfig(Strict):
    """`[batch]`: how many members of a batch may be in progress at once (seed 001: 5)."""

    max_concurrent: Annotated[int, Field(ge=1, le=1000)] = 5


PhaseStages = dict[Annotated[str, Field(pattern=STAGE_NAME_PATTERN)], list[str]]
DEFAULT_PHASES: dict[str, dict[str, list[str]]] = {
    "production": {
        "research": ["01_deep_research", "02_questions", "03_synthesis"],
        "quality": ["04_quality_claude", "05_quality_gemini", "06_feedback_synthesis"],
        "polish": ["07_script_polish", "08_final_review"],
        "audio": ["09_audio_synthesis"],
    },
}


class PhaseMap(Strict):
    """`[phases.<level>]`: phase name -> its stages, e.g. `research = ["01_deep_research", ...]`.
    A level with no phases counts each stage as its own phase; a stage in no phase is "other"."""

    dev: PhaseStages = Field(default_factory=dict)
    production: PhaseStages = Field(default_factory=lambda: dict(DEFAULT_PHASES["production"]))
    platform: PhaseStages = Field(default_factory=dict)
    coded: PhaseStages = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_phase_per_stage(self) -> PhaseMap:
        for level in ("dev", "production", "platform", "coded"):
            seen: dict[str, str] = {}
            for phase, stages in getattr(self, level).items():
                for stage in stages:
                    if stage in seen and seen[stage] != phase:
                        raise ValueError(f"{level}: stage {stage!r} is in two phases ({seen[stage]}, {phase})")
                    seen[stage] = phase
        return self

    def for_level(self, level: str) -> dict[str, list[str]]:
        phases: dict[str, list[str]] = getattr(self, level)
        return phases
