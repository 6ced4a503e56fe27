"""Markdown from Jinja templates: sandboxed, strict, overridable, written atomically.

A template `NAME.md.j2` is looked up in this order (the first file found wins):
`.claude/templates/<level>/`, `.claude/templates/`, the shipped `templates/<level>/`, the shipped
`templates/`. Includes and imports (`_macros.md.j2`) follow the same order, so a project can
override a shared piece too. Jinja is imported only here, and only when something is rendered.

Limits: a template renders within `RENDER_SECONDS` and `RENDER_CHARS` of output (checked on
every call, attribute access, `range` step and output chunk), else one TemplateError; it renders
outside the session lock (the lock is taken only to write the files, and only if the state did
not change meanwhile). User text (tasks, blockers, notes, titles) is escaped by
`textsafe.markdown_text` before it reaches a template, so it cannot open a heading, a checkbox
or a table row. A template override that is a symbolic link is refused, never followed.
"""

from __future__ import annotations

import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from session_manager import formatting
from session_manager.errors import InvalidInput, NotFound, SessionError, TemplateError, UnsafePath
from session_manager.levels import LEVELS
from session_manager.store import atomic_write, guard, read_bytes, shown

if TYPE_CHECKING:
    from session_manager.config import Config
    from session_manager.store import Store

SHIPPED = Path(__file__).resolve().parent / "templates"
SUFFIX = ".md.j2"
SESSION_TEMPLATES = ("context", "plan", "tasks", "tests", "review", "completed")
AT_START = ("context", "plan", "tasks", "tests")
AT_END = ("plan", "completed", "review")
# Levels whose shipped plan.md lists tasks or blockers, so a task or blocker change refreshes it.
PLAN_SHOWS_TASKS = frozenset({"dev", "platform", "coded"})
NAME_PATTERN = re.compile(r"^_?[a-z][a-z0-9_-]{0,63}$")
RENDER_SECONDS = 5.0  # per template: a loop that runs longer is a mistake, and we hold a session's work
RENDER_CHARS = 2_000_000  # per template: far above any real session file
_LIMITS = threading.local()
UNLOCKED_ATTEMPTS = 3  # renders outside the lock before one under it (a session that keeps changing)


# -- names and lookup -----------------------------------------------------------------
def template_name(text: str) -> str:
    """`plan`, `plan.md` or `plan.md.j2` -> `plan`; anything else (paths, `..`) is refused."""
    if not isinstance(text, str):
        raise InvalidInput(f"template name must be text, not {type(text).__name__}")
    base = text.strip()
    for suffix in (SUFFIX, ".md", ".j2"):
        base = base.removesuffix(suffix)
    if not NAME_PATTERN.match(base):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidInput(f"invalid template name {shown!r}: use a plain name such as plan, review.md or"
                           " context.md.j2 (no folders; pick the level with --level)")
    return base


def session_template(name: str) -> str:
    """A template that renders into a session folder: not a shared piece, not the report."""
    base = template_name(name)
    if base.startswith("_"):
        raise InvalidInput(f"{base}{SUFFIX} is a shared piece imported by other templates; it renders nothing itself")
    if base == "report":
        raise InvalidInput("report.md.j2 is rendered by `session-manager report`, not into a session")
    return base


def _check_level(level: str | None) -> str | None:
    if level is not None and level not in LEVELS:
        raise InvalidInput(f"unknown level {level!r}; use one of: {', '.join(LEVELS)}")
    return level


def search_path(root: Path, level: str | None = None) -> list[tuple[Path, str]]:
    """(folder, source) in lookup order; source is `project` or `shipped`."""
    project = root / ".claude" / "templates"
    folders = []
    if level:
        folders.append((project / level, "project"))
    folders.append((project, "project"))
    if level:
        folders.append((SHIPPED / level, "shipped"))
    folders.append((SHIPPED, "shipped"))
    return folders


def locate(root: Path, name: str, level: str | None = None) -> tuple[Path, str] | None:
    """The file used for template `name` at `level`, and whether it is the project's or shipped."""
    for folder, source in search_path(root, _check_level(level)):
        path = folder / (template_name(name) + SUFFIX)
        if path.is_file():
            return path, source
    return None


def _display(root: Path, path: Path | str | None) -> str:
    if path is None:
        return "?"
    path = Path(path)
    for base, label in ((SHIPPED.resolve(), "shipped"), (root.resolve(), "")):
        try:
            relative = path.resolve().relative_to(base)
        except ValueError:
            continue
        return f"{relative} (shipped)" if label else str(relative)
    return str(path)


# -- formatting helpers available to templates ---------------------------------------------
money, pct = formatting.money, formatting.pct  # the templates read figures as the terminal does


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def minutes(value: float | None) -> str:
    if value is None:
        return "-"
    whole = int(round(value))
    return f"{whole} min" if whole < 60 else f"{whole // 60}h{whole % 60:02d}m"


def table(headers: list[str], rows: list[list[Any]], align: str = "") -> str:
    """A markdown table padded so it also reads well raw. `align`: one letter per column,
    `l` (default) or `r`. None becomes `-`; `|` and line breaks in cells are escaped."""

    def cell(value: Any) -> str:
        text = "-" if value is None else str(value)
        return " ".join(text.replace("|", "\\|").split())

    grid = [[cell(h) for h in headers], *[[cell(v) for v in row] for row in rows]]
    widths = [max(3, *(len(row[i]) for row in grid if i < len(row))) for i in range(len(headers))]
    right = [i < len(align) and align[i] == "r" for i in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = [row[i] if i < len(row) else "" for i in range(len(widths))]
        padded = [c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if right[i] else "-" * w for i, w in enumerate(widths)) + " |"
    return "\n".join([line(grid[0]), rule, *(line(row) for row in grid[1:])])


def tidy(text: str) -> str:
    """Clean markdown whatever the template's whitespace: no trailing spaces, no runs of blank
    lines, no blank lines at the start, exactly one newline at the end."""
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


# -- rendering -----------------------------------------------------------------------
_ENVIRONMENTS: dict[tuple[Any, ...], Any] = {}


def _project_signature(folders: list[tuple[Path, str]]) -> tuple[tuple[str, int], ...]:
    """The project's template files and their mtimes: a new, changed or removed override
    gives a new signature, hence a fresh environment (shipped files do not change at run time)."""
    found: list[tuple[str, int]] = []
    for folder, source in folders:
        if source != "project":
            continue
        try:
            with os.scandir(folder) as entries:
                found.extend((entry.path, entry.stat().st_mtime_ns) for entry in entries if entry.name.endswith(SUFFIX))
        except OSError:
            continue
    return tuple(sorted(found))


def environment(root: Path, level: str | None = None) -> Any:
    """A sandboxed, strict Jinja environment for `root` and `level`. Environments (and the
    templates they compiled) are kept for the life of the process: a long-running MCP server
    compiles each template once, and still sees a project override as soon as it changes."""
    folders = search_path(root, _check_level(level))
    key = (str(root), level, _project_signature(folders))
    env = _ENVIRONMENTS.get(key)
    if env is None:
        if len(_ENVIRONMENTS) >= 32:
            _ENVIRONMENTS.clear()
        env = _ENVIRONMENTS[key] = _new_environment(folders)
    return env


class RenderLimit(Exception):
    """A template went past RENDER_SECONDS or RENDER_CHARS."""


def _check_deadline() -> None:
    deadline = getattr(_LIMITS, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimit(f"took longer than {RENDER_SECONDS:g} s (a loop too large?); rendering stopped")


def _check_size(size: int) -> None:
    if size > RENDER_CHARS:
        raise RenderLimit(f"output is larger than {RENDER_CHARS:,} characters; rendering stopped")


class _Range:
    """`range` for templates: the sandbox's bound on its length, plus the time limit checked as
    it is walked (nested loops multiply; each step checks the clock)."""

    def __init__(self, *args: int) -> None:
        from jinja2.sandbox import safe_range

        self._range = safe_range(*args)

    def __iter__(self) -> Any:
        for index, value in enumerate(self._range):
            if not index & 255:
                _check_deadline()
            yield value

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, item: Any) -> Any:
        return self._range[item]


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _bounded_sandbox() -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import SandboxedEnvironment

    class BoundedSandbox(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_deadline()
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large in a template")
            if operator == "*" and (_sized(left) or _sized(right)):
                count = right if _sized(left) else left
                if isinstance(count, int):
                    _check_size(max(_sized(left), _sized(right)) * count)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _check_deadline()
            return super().call(__context, __obj, *args, **kwargs)

        def getattr(self, obj: Any, attribute: str) -> Any:
            _check_deadline()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _check_deadline()
            return super().getitem(obj, argument)

    return BoundedSandbox


def _confined_loader(paths: list[str]) -> Any:
    from jinja2 import FileSystemLoader

    class ConfinedLoader(FileSystemLoader):
        """Project overrides under `.claude/templates/` must be regular files, not links: a
        link would copy what it points to (a credentials file) into session files and backups."""

        def get_source(self, environment: Any, template: str) -> Any:
            source, filename, uptodate = super().get_source(environment, template)
            try:
                guard(Path(filename))
            except UnsafePath:
                raise TemplateError(
                    f"template override {shown(Path(filename))} is a symbolic link; session-manager does"
                    " not follow links under .claude/ (replace it with a regular file)"
                ) from None
            return source, filename, uptodate

    return ConfinedLoader(paths)


def _new_environment(folders: list[tuple[Path, str]]) -> Any:
    from jinja2 import StrictUndefined

    loader = _confined_loader([str(folder) for folder, _ in folders])
    env = _bounded_sandbox()(loader=loader, undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, auto_reload=False)
    env.filters.update(money=money, pct=pct, score=score, minutes=minutes)
    env.globals.update(table=table, range=_Range)
    return env


def _template_line(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost template frame of a rendering error (Jinja rewrites tracebacks so
    template frames carry the template file and line)."""
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(SUFFIX):
            found = (frame.filename, frame.lineno)
    return found


def describe(root: Path, file: str, exc: Exception) -> TemplateError:
    """One line naming the template, the line and what was wrong."""
    from jinja2 import TemplateNotFound, TemplateSyntaxError, UndefinedError
    from jinja2.exceptions import SecurityError

    if isinstance(exc, TemplateNotFound):
        if exc.name == file:
            return TemplateError(f"no template {file}: looked in .claude/templates/ and the shipped templates")
        return TemplateError(f"template {file} includes {exc.name}, which does not exist")
    if isinstance(exc, TemplateSyntaxError):
        where = _display(root, exc.filename) if exc.filename else file
        return TemplateError(f"template {where}, line {exc.lineno}: syntax error: {exc.message}")
    filename, line = _template_line(exc)
    where = f"template {_display(root, filename) if filename else file}"
    if filename and Path(filename).name != file:
        where += f" (included from {file})"
    where += f", line {line}" if line else ""
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, SecurityError):
        return TemplateError(f"{where}: refused by the sandbox: {message} (templates cannot reach Python internals)")
    if isinstance(exc, UndefinedError):
        return TemplateError(f"{where}: undefined variable: {message} (see docs/templates.md for the variables)")
    if isinstance(exc, RenderLimit):
        return TemplateError(f"{where}: {message}")
    return TemplateError(f"{where}: {type(exc).__name__}: {message}")


def render_with(env: Any, root: Path, name: str, context: dict[str, Any]) -> str:
    """Render with the limits (time, output size); user text in `context` is escaped first."""
    from session_manager.textsafe import markdown_variables

    file = template_name(name) + SUFFIX
    _LIMITS.deadline = time.monotonic() + RENDER_SECONDS
    try:
        chunks: list[str] = []
        size = 0
        for chunk in env.get_template(file).generate(markdown_variables(context)):
            size += len(chunk)
            _check_size(size)
            _check_deadline()
            chunks.append(chunk)
        text = "".join(chunks)
    except (SessionError, KeyboardInterrupt):
        raise
    except Exception as exc:  # anything a template can raise becomes one clear line
        raise describe(root, file, exc) from None
    finally:
        _LIMITS.deadline = None
    return tidy(text)


def render_text(root: Path, name: str, context: dict[str, Any], level: str | None = None) -> str:
    """Render template `name` (e.g. `report`) with `context`; the project's override wins.
    Raises TemplateError naming the template, the line and the problem."""
    return render_with(environment(root, level), root, name, context)


def render_session(store: Store, config: Config, clock: Callable[[], datetime], session_id: str,
                   names: tuple[str, ...] | None = None,
                   trigger: str | None = None) -> tuple[list[str], list[TemplateError]]:
    """Render a session's markdown into its folder. Templates render OUTSIDE the session lock
    (a slow template never blocks the session's writers); the lock is taken only to write, and
    only if the state is still the one rendered (same `revision`): otherwise it renders again
    from the newer state (after UNLOCKED_ATTEMPTS, once under the lock, which the time limit
    bounds), so the last writer always leaves the newest state's markdown.
    Each file is written atomically: a failing template leaves its old file untouched.
    `names=None` picks by `trigger`. Returns (files written, template errors)."""
    from session_manager.context import read_start_context, template_variables

    folder = store.session_dir(session_id)

    def render_all() -> tuple[Any, dict[str, str], list[TemplateError]]:
        state = store.read_state(session_id)
        chosen = names if names is not None else templates_for(trigger or "", state.level, finished=not state.active)
        variables = template_variables(state, store.read_metadata(session_id), config,
                                       read_start_context(folder), folder, clock())
        env = environment(store.root, state.level)
        texts: dict[str, str] = {}
        failures: list[TemplateError] = []
        for name in chosen:
            try:
                texts[name] = render_with(env, store.root, name, variables)
            except TemplateError as exc:
                failures.append(exc)
        return state, texts, failures

    for _attempt in range(UNLOCKED_ATTEMPTS):
        state, texts, failures = render_all()
        with store.lock(session_id):
            now = store.read_state(session_id)
            if (now.revision, now.last_updated) == (state.revision, state.last_updated):
                for name, text in texts.items():
                    _write_if_changed(folder / f"{name}.md", text)
                return [f"{name}.md" for name in texts], failures
    # the session keeps changing (many writers): render once under the lock, bounded by the limits
    with store.lock(session_id):
        state, texts, failures = render_all()
        for name, text in texts.items():
            _write_if_changed(folder / f"{name}.md", text)
    return [f"{name}.md" for name in texts], failures


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic write, skipped when the file already holds exactly this text (no fsync, no
    new mtime, nothing for the backup to commit)."""
    try:
        if read_bytes(path).decode("utf-8") == text:
            return
    except (OSError, UnicodeDecodeError, UnsafePath):
        pass  # a link is refused by atomic_write, with its message
    # atomic, but not fsynced: rendered markdown is derived from the state and re-rendered from it
    atomic_write(path, text, durable=False)


def templates_for(trigger: str, level: str, finished: bool = False) -> tuple[str, ...]:
    """Only what a change can have touched: start writes the opening files, task changes
    refresh tasks.md, stage changes plan.md, and a finished session its review."""
    if trigger == "session start":
        names: tuple[str, ...] = AT_START
    elif trigger == "update":
        names = ("tasks", "plan") if level in PLAN_SHOWS_TASKS else ("tasks",)
    else:  # stage start/complete/bypassed/skipped, before recovery, resume, session end
        names = ("plan",)
    if finished or trigger == "session end":
        names = tuple(dict.fromkeys([*names, *AT_END]))
    return names


def rerender_names(name: str | None, finished: bool) -> tuple[str, ...]:
    """What `session-manager render` writes: the named template, else every file that
    applies (review.md and completed.md only once the session is finished)."""
    if name:
        return (session_template(name),)
    return SESSION_TEMPLATES if finished else AT_START


def refresh(store: Store, config: Config, clock: Callable[[], datetime], session_id: str,
            trigger: str) -> TemplateError | None:
    """After a committed change: append a finished session's memory, re-render what the
    change touched. A template problem is returned (not raised) so the caller can finish
    its other duties first; its message says the session was saved."""
    from session_manager import memory

    failures: list[SessionError] = []
    try:
        state = store.read_state(session_id)
        if not state.active:
            memory.record(store, state, config.lock_timeout_seconds)
    except SessionError as exc:  # e.g. the memory lock is busy: the markdown still gets written
        failures.append(exc)
    try:
        failures.extend(render_session(store, config, clock, session_id, trigger=trigger)[1])
    except SessionError as exc:
        failures.append(exc)
    if not failures:
        return None
    more = f" ({len(failures) - 1} more problem{'s' if len(failures) > 2 else ''})" if len(failures) > 1 else ""
    fix = "fix the template, then" if isinstance(failures[0], TemplateError) else "then"
    return TemplateError(
        f"{failures[0]}{more}. The session {session_id} was saved; {fix} re-render with"
        f" `session-manager render {session_id}`"
    )


# -- service results and requests -------------------------------------------------------
class RenderResult(BaseModel):
    """The markdown files (re)written in the session folder, and memory lines added."""

    session_id: str
    folder: str
    files: list[str]
    memory: dict[str, int] = Field(default_factory=dict)


class TemplateInfo(BaseModel):
    name: str
    level: str  # a level name, or "all" when every level uses the same file
    source: str  # "project" or "shipped"
    path: str


class TemplateList(BaseModel):
    templates: list[TemplateInfo]
    project_folder: str


def known_names(root: Path) -> list[str]:
    names: set[str] = set()
    for level in (None, *LEVELS):
        for folder, _ in search_path(root, level):
            if folder.is_dir():
                names.update(p.name.removesuffix(SUFFIX) for p in folder.glob("*" + SUFFIX))
    valid = {n for n in names if NAME_PATTERN.match(n)}
    order = {name: i for i, name in enumerate((*SESSION_TEMPLATES, "report"))}
    return sorted(valid, key=lambda n: (n.startswith("_"), order.get(n, len(order)), n))


def list_templates(root: Path) -> TemplateList:
    rows: list[TemplateInfo] = []
    for name in known_names(root):
        used = {level: locate(root, name, level) for level in LEVELS}
        files = {found[0] for found in used.values() if found}
        if len(files) == 1 and all(used.values()):
            path, source = next(iter(used.values()))  # type: ignore[misc]
            rows.append(TemplateInfo(name=name + SUFFIX, level="all", source=source, path=_display(root, path)))
            continue
        for level, found in used.items():
            if found:
                rows.append(TemplateInfo(name=name + SUFFIX, level=level, source=found[1],
                                         path=_display(root, found[0])))
    return TemplateList(templates=rows, project_folder=".claude/templates")


def show_template(root: Path, name: str, level: str | None = None) -> str:
    found = locate(root, name, level)
    if found is None:
        known = ", ".join(known_names(root)) or "none"
        where = f" for level {level}" if level else ""
        raise NotFound(f"no template {template_name(name)}{SUFFIX}{where}; templates: {known}")
    return read_bytes(found[0]).decode("utf-8") if found[1] == "project" else found[0].read_text(encoding="utf-8")


class TemplateCopy(BaseModel):
    name: str
    source: str
    path: str


def copy_template(root: Path, name: str, level: str | None = None) -> TemplateCopy:
    """Copy the shipped template used for `name` (at `level`) into `.claude/templates/` so the
    project can edit it: a level's own variant goes to `.claude/templates/<level>/`, so it
    overrides that level only. An existing project file is never overwritten."""
    shipped = None
    for folder, source in search_path(root, _check_level(level)):
        candidate = folder / (template_name(name) + SUFFIX)
        if source == "shipped" and candidate.is_file():
            shipped = candidate
            break
    if shipped is None:
        known = ", ".join(known_names(root)) or "none"
        raise NotFound(f"no shipped template {template_name(name)}{SUFFIX}; templates: {known}")
    variant = shipped.parent.name if shipped.parent.name in LEVELS else None
    target = root / ".claude" / "templates" / (variant or "") / shipped.name
    if target.exists():
        raise InvalidInput(f"{_display(root, target)} exists already; edit it, or delete it to start again")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, shipped.read_text(encoding="utf-8"))
    return TemplateCopy(name=shipped.name, source=_display(root, shipped), path=_display(root, target))
