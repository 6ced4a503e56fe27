"""Every test gets its own project folder (a real git repository), its own HOME and a git
author, so no test touches real state and commits work on any machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from session_manager.service import Service

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.delenv("CLAUDE_PROJECT_DIR", raising=False)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("SESSION_MANAGER_ACTOR", raising=False)
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def service(project: Path) -> Service:
    return Service(project, actor="test")


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess[str] | None = None, *, code: int = 0, out: str = "",
                 err: str = "") -> None:
        self.code = proc.returncode if proc is not None else code
        self.out = proc.stdout if proc is not None else out
        self.err = proc.stderr if proc is not None else err

    def json(self) -> object:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout: {self.out}\nstderr: {self.err}>"


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> CLIResult:
    proc = subprocess.run(
        [sys.executable, "-m", "session_manager", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, input=stdin, timeout=120,
    )
    return CLIResult(proc)


def run_cli_in_process(cwd: Path, *args: str, env: dict[str, str] | None = None,
                       stdin: str | None = None) -> CLIResult:
    """`session-manager ARGS` run by `cli.main` in this process: the same parsing, output and exit
    code as the real command, without a process start. Use `run_cli` where the process itself is the
    point (exit on a signal, concurrency, a crash, the console script)."""
    import contextlib
    import io

    from session_manager.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_stdin = dict(os.environ), Path.cwd(), sys.stdin
    os.environ.update(env or {})
    os.chdir(cwd)
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return CLIResult(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture
def cli(project: Path):
    """The CLI, in process (see `run_cli_in_process`)."""

    def call(*args: str, **kw: object) -> CLIResult:
        return run_cli_in_process(project, *args, **kw)  # type: ignore[arg-type]

    return call


@pytest.fixture
def cli_process(project: Path):
    """The CLI as a real process: for exit codes on signals, crashes and concurrency."""

    def call(*args: str, **kw: object) -> CLIResult:
        return run_cli(project, *args, **kw)  # type: ignore[arg-type]

    return call


def tree_snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with a hash of its bytes: equal snapshots mean
    the tree is byte-for-byte unchanged. The session index (`.session-manager/index.sqlite*`)
    is left out: it is derived, and sqlite checkpoints its write-ahead log when a reader closes."""
    if not folder.exists():
        return {}
    snapshot = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.name.startswith("index.sqlite") and path.parent.name == ".session-manager":
            continue
        snapshot[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


class Clock:
    """A controllable clock, so durations and times are exact. Noon UTC by default, so the
    local date in session ids is the same in every time zone."""

    def __init__(self, start: datetime = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


@pytest.fixture
def clock() -> Clock:
    """The clock of `svc` (a test module may override it, e.g. to start on another day)."""
    return Clock()


@pytest.fixture
def svc(project: Path, clock: Clock) -> Service:
    """A service on the controllable clock."""
    return Service(project, actor="test", clock=clock)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """Print what the reliability tests counted (they record it with `record_property("counts", ...)`);
    user properties travel from xdist workers, so this works with `-n 2` too."""
    passed = terminalreporter.stats.get("passed", [])
    lines = [value for report in passed for name, value in getattr(report, "user_properties", []) if name == "counts"]
    trust: dict[str, int] = {}
    for report in passed:
        for name, value in getattr(report, "user_properties", []):
            if name == "trust":
                trust[value] = trust.get(value, 0) + 1
    if trust:
        lines.append("trust (storage): " + ", ".join(f"{k} {v}" for k, v in trust.items())
                     + f"; {sum(trust.values())} attacks refused or contained")
    if lines:
        terminalreporter.section("reliability counts")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """Session ids and report days use local time: fix the zone so expectations hold everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
