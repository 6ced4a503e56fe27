"""Issue 12, storage: attacks a hostile (or unlucky) user can make on the files under `.claude/`.
Real links, real FIFOs, real processes with a file-size limit standing in for a full disk."""

from __future__ import annotations

import re

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CLIResult, Clock, run_cli, tree_snapshot
from session_manager import render
from session_manager.errors import (
    ConfigError,
    CorruptState,
    InvalidInput,
    InvalidTransition,
    NonFiniteNumber,
    TemplateError,
    UnsafePath,
)
from session_manager.errorlog import log_internal_error
from session_manager.levels import LEVELS
from session_manager.model import dump_json
from session_manager.service import Service
from session_manager.store import find_root, read_jsonl, safe_open
from session_manager.textsafe import markdown_text, terminal_safe

COUNTS: dict[str, int] = {}


def _count(kind: str) -> None:
    """Record that the running test tried an attack of this class; the summary adds them up over
    every xdist worker (see conftest.pytest_terminal_summary)."""
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    if RUNNING:
        RUNNING[0].user_properties.append(("trust", kind))


RUNNING: list[pytest.Item] = []


@pytest.fixture(autouse=True)
def _running(request: pytest.FixtureRequest) -> Iterator[None]:
    RUNNING[:] = [request.node]
    yield
    RUNNING.clear()


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the project that a link points to: it must never change or leak."""
    path = tmp_path / "victim.txt"
    path.write_text("SECRET-TOKEN=abc123\n")
    return path


def _folder(service: Service, session_id: str) -> Path:
    return service.store.session_dir(session_id)


# -- confinement --------------------------------------------------------------------------
def test_journal_refuses_symlinked_events_file(project: Path, service: Service, victim: Path) -> None:
    sid = service.start(level="dev").state.session_id
    events = _folder(service, sid) / "events.jsonl"
    events.unlink()
    events.symlink_to(victim)
    state_before = (_folder(service, sid) / "pipeline_status.json").read_bytes()
    with pytest.raises(UnsafePath, match="events.jsonl is a symbolic link"):
        service.update(session_id=sid, add_tasks=["x"])
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    assert (_folder(service, sid) / "pipeline_status.json").read_bytes() == state_before
    result = run_cli(project, "task", "add", sid, "y")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "backup restore" in result.err
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    _count("confinement")


def test_show_refuses_symlinked_state_file(project: Path, service: Service, tmp_path: Path) -> None:
    sid = service.start(level="dev").state.session_id
    state = _folder(service, sid) / "pipeline_status.json"
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes(state.read_bytes())
    state.unlink()
    state.symlink_to(copy)
    with pytest.raises(UnsafePath, match=f"{sid}: .*pipeline_status.json is a symbolic link"):
        service.show(session_id=sid)
    _count("confinement")


def test_usage_entries_file_is_not_truncated_through_a_link(project: Path, service: Service, victim: Path) -> None:
    from session_manager import usage
    from session_manager.usage import transcripts

    folder = service.store.private_dir()
    (folder / usage.ENTRIES_FILE).symlink_to(victim)
    with pytest.raises(UnsafePath, match="usage-entries.jsonl is a symbolic link"):
        transcripts._save(folder, usage.Ledger(), [["k", 1, "m", "p", "s", 1, 1, 0, 0]])
    with pytest.raises(UnsafePath):
        safe_open(folder / usage.ENTRIES_FILE, "rb")
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    _count("confinement")


def test_linked_session_folder_is_damage_and_never_followed(project: Path, service: Service, tmp_path: Path) -> None:
    good = service.start(level="dev").state.session_id
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    link = service.store.level_dir(LEVELS["dev"]) / "dev_20261121_linked"
    link.symlink_to(outside)
    listing = service.list_sessions()
    assert [s.session_id for s in listing.sessions] == [good]
    assert any("dev_20261121_linked" in d and "symbolic link" in d for d in listing.damaged)
    with pytest.raises(UnsafePath):
        service.update(session_id="dev_20261121_linked", add_tasks=["x"])
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    report = service.report(period="week")
    assert "dev_20261121_linked" in report.model_dump_json()
    _count("confinement")


def test_linked_level_folder_is_refused(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-level"
    outside.mkdir()
    (project / ".claude").mkdir()
    (project / ".claude" / "level-1-dev").symlink_to(outside)
    with pytest.raises(UnsafePath, match="level-1-dev is a symbolic link"):
        Service(project, actor="test").start(level="dev")
    assert list(outside.iterdir()) == []
    _count("confinement")


def test_linked_memory_file_is_refused_and_not_copied(project: Path, service: Service, victim: Path) -> None:
    memory = project / ".claude" / "memory"
    memory.mkdir(parents=True)
    (memory / "errors.md").symlink_to(victim)
    with pytest.raises(UnsafePath, match="memory/errors.md is a symbolic link"):
        service.start(level="dev")
    (memory / "errors.md").unlink()
    (memory / "patterns.md").symlink_to(victim)
    sid = service.start(level="dev").state.session_id
    service.update(session_id=sid, learnings=["a lesson"])
    service.end(session_id=sid)  # saved; the template problem is a warning
    assert re.search("patterns.md is a symbolic link.*was saved", "\n".join(service.warnings)), service.warnings
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    leaked = [p for p in (project / ".claude").rglob("*") if p.is_file() and not p.is_symlink()
              and b"SECRET-TOKEN" in p.read_bytes()]
    assert leaked == []
    _count("confinement")


def test_linked_template_override_is_refused_and_not_copied(project: Path, service: Service, victim: Path) -> None:
    templates = project / ".claude" / "templates"
    templates.mkdir(parents=True)
    (templates / "plan.md.j2").symlink_to(victim)
    service.start(level="dev")  # saved; the template problem is a warning
    assert re.search("plan.md.j2 is a symbolic link", "\n".join(service.warnings)), service.warnings
    leaked = [p for p in (project / ".claude").rglob("*") if p.is_file() and not p.is_symlink()
              and b"SECRET-TOKEN" in p.read_bytes()]
    assert leaked == []
    _count("confinement")


def test_lock_file_link_is_refused_not_truncated(project: Path, service: Service, victim: Path) -> None:
    sid = service.start(level="dev").state.session_id
    lock = service.store.claude_dir / ".session-manager" / "locks" / f"{sid}.lock"
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(UnsafePath):
        service.update(session_id=sid, add_tasks=["x"])
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    _count("confinement")


# -- damage isolation ------------------------------------------------------------------------
def _damaged_pair(project: Path, service: Service, damage: str) -> tuple[str, str]:
    good = service.start(level="dev", tag="good").state.session_id
    if damage == "stray-file":  # a FILE named like a session id, in a sessions folder
        bad = "dev_20261121_stray"
        (service.store.level_dir(LEVELS["dev"]) / bad).write_text("x")
        return good, bad
    bad = service.start(level="coded", tag="bad").state.session_id
    state = _folder(service, bad) / "pipeline_status.json"
    if damage == "non-utf8":
        state.write_bytes(state.read_bytes().replace(b'"level"', b'"lev\xff\xfeel"', 1))
    elif damage == "deep":
        state.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "shape":
        data = json.loads(state.read_text())
        data["stages"] = [1, 2]
        state.write_text(json.dumps(data))
    return good, bad


@pytest.mark.parametrize("damage", ["non-utf8", "deep", "shape", "stray-file"])
def test_one_damaged_entry_never_hides_the_others(project: Path, service: Service, damage: str) -> None:
    good, bad = _damaged_pair(project, service, damage)
    listing = service.list_sessions()
    assert [s.session_id for s in listing.sessions] == [good]
    assert len(listing.damaged) == 1 and listing.damaged[0].startswith(bad)
    assert f"session-manager backup restore {bad}" in listing.damaged[0]
    status = run_cli(project, "status")
    assert status.code == 0 and good in status.out and bad in status.out
    report = service.report(period="week")
    assert report.sessions.run == 1 and bad in report.model_dump_json()
    board = service.dashboard()
    assert bad in board.model_dump_json()
    out = run_cli(project, "hook", "session-start", stdin=json.dumps({"cwd": str(project), "session_id": "c1"}),
                  env={"CLAUDE_PROJECT_DIR": str(project)})
    assert out.code == 0 and good in out.out and "failed" not in out.out
    _count("isolation")


@pytest.mark.parametrize("cache", ['{"dev/planning": 5}', "[1, 2]", '{"dev/x": ["a", null, 1e999]}', "{"])
def test_wrong_shape_durations_cache_is_rebuilt(project: Path, service: Service, cache: str) -> None:
    sid = service.start(level="dev").state.session_id
    private = service.store.private_dir()
    (private / "durations.json").write_text(cache)
    service.stage_start(session_id=sid)
    service.stage_complete(session_id=sid, stage="initialization")
    service.update(session_id=sid, add_tasks=["still works"])
    data = json.loads((private / "durations.json").read_text())
    assert isinstance(data["dev/initialization"], list)
    _count("isolation")


@pytest.mark.parametrize("cache", ['{"version": 3, "sessions": {"x": 5}}', '{"version": 3, "sessions": []}',
                                   '{"version": 3, "sessions": {"dev_20261120_1200": [[1, 2, 3], {"id": 1}]}}'])
def test_wrong_shape_report_cache_is_rebuilt(project: Path, service: Service, cache: str) -> None:
    service.start(level="dev")
    (service.store.private_dir() / "report-cache.sqlite").write_text(cache)  # not even a database
    assert service.report(period="week").sessions.run == 1
    assert service.dashboard().in_progress
    _count("isolation")


def test_journal_skips_and_counts_non_object_lines(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    with (_folder(service, sid) / "events.jsonl").open("a") as handle:
        handle.write('[1,2]\n"text"\n')
    journal = service.journal(session_id=sid)
    records, skipped = journal.events, journal.skipped
    assert skipped == 2 and all(isinstance(r, dict) for r in records)
    result = run_cli(project, "log", sid)
    assert result.code == 0 and "session_started" in result.out
    _count("isolation")


def test_unknown_current_stage_is_damage_not_a_crash(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    service.stage_start(session_id=sid)
    state = _folder(service, sid) / "pipeline_status.json"
    data = json.loads(state.read_text())
    data["current_stage"] = "no_such_stage"
    state.write_text(json.dumps(data))
    with pytest.raises(CorruptState, match="current_stage 'no_such_stage' is not one of its stages.*backup restore"):
        service.resume(session_id=sid)
    result = run_cli(project, "resume", sid)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    _count("isolation")


# -- numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("toml", [
    "[budgets]\ndev = inf\n", "[budgets]\ndev = nan\n", "[prices.models.m]\ninput = 1e300\noutput = 1\n",
    "[[pipelines.dev]]\nname = \"a\"\nexpected_minutes = inf\n", "[alerts]\ntime_ratio = inf\n",
    "[prices.calls]\nx = nan\n",
])
def test_config_refuses_non_finite_and_huge_numbers(project: Path, toml: str) -> None:
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude" / "session-manager.toml").write_text(toml)
    with pytest.raises(ConfigError):
        Service(project, actor="test").start(level="dev")
    _count("numbers")


@pytest.mark.parametrize(("op", "kwargs"), [
    ("start", {"level": "dev", "budget_usd": float("inf")}),
    ("start", {"level": "dev", "budget_usd": float("nan")}),
    ("record_cost", {"usd": float("nan")}),
    ("stage_complete", {"stage": "initialization", "quality": {"overall": float("nan")}}),
])
def test_requests_refuse_non_finite_numbers(project: Path, service: Service, op: str, kwargs: dict) -> None:
    if op != "start":
        kwargs = {"session_id": service.start(level="dev").state.session_id, **kwargs}
    before = tree_snapshot(project / ".claude")
    with pytest.raises(InvalidInput):
        getattr(service, op)(**kwargs)
    assert tree_snapshot(project / ".claude") == before
    _count("numbers")


def test_a_non_finite_number_is_never_written(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    before = tree_snapshot(_folder(service, sid))
    with pytest.raises(NonFiniteNumber, match="cost_tracking.total_cost"):
        with service.store.transaction(sid, "test") as tx:
            tx.state.cost_tracking.total_cost = float("inf")
            tx.event("cost_recorded", usd=1.0)
    assert tree_snapshot(_folder(service, sid)) == before
    state = service.show(session_id=sid).state
    state.budget.usd = float("nan")
    with pytest.raises(NonFiniteNumber):
        dump_json(state)
    _count("numbers")


def test_state_with_an_infinity_is_damage_on_load(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    path = _folder(service, sid) / "pipeline_status.json"
    path.write_text(path.read_text().replace('"total_cost": 0.0', '"total_cost": Infinity'))
    with pytest.raises(CorruptState, match="total_cost.*backup restore"):
        service.show(session_id=sid)
    assert service.report(period="week").unreadable == [sid]
    _count("numbers")


# -- one commit point ----------------------------------------------------------------------------
def _limited_cli(cwd: Path, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    def shrink() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "session_manager", *args], cwd=cwd, capture_output=True,
                          text=True, preexec_fn=shrink, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.parametrize("where", ["journal", "state"])
def test_full_disk_leaves_old_state_and_old_journal(project: Path, service: Service, where: str) -> None:
    sid = service.start(level="dev").state.session_id
    service.config  # noqa: B018
    folder = _folder(service, sid)
    journal, state = (folder / "events.jsonl").stat().st_size, (folder / "pipeline_status.json").stat().st_size
    # journal: the append itself hits the limit; state: the journal line fits, the state file does not
    limit = journal + 20 if where == "journal" else journal + 1200
    assert where == "journal" or limit < state
    before = tree_snapshot(folder)
    result = CLIResult(_limited_cli(project, limit, "task", "add", sid, "a task long enough to matter " * 4))
    assert result.code == 2, result
    assert result.err.startswith("error: nothing was saved") and len(result.err.strip().splitlines()) == 1
    assert tree_snapshot(folder) == before  # old state, old journal, byte for byte
    assert run_cli(project, "task", "add", sid, "after the disk was freed").code == 0
    _count("commit point")


def test_journal_line_whose_state_never_landed_is_recognised(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    service.update(session_id=sid, add_tasks=["applied"])
    revision = service.show(session_id=sid).state.revision
    with (_folder(service, sid) / "events.jsonl").open("a") as handle:  # a crash between journal and state
        handle.write(json.dumps({"session_id": sid, "event": "task_added", "title": "lost", "rev": revision + 1}) + "\n")
    journal = service.store.read_journal(sid)
    assert journal.unapplied == 1 and [r["title"] for r in journal.records if r["event"] == "task_added"] == ["applied"]
    all_lines, _ = read_jsonl(_folder(service, sid) / "events.jsonl")
    assert all(r.get("rev", 0) <= revision + 1 for r in all_lines)
    _count("commit point")


# -- root discovery ---------------------------------------------------------------------------------
def test_home_claude_alone_is_never_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["HOME"])
    (home / ".claude").mkdir()
    sub = home / "notes" / "today"
    sub.mkdir(parents=True)
    assert find_root(sub) == sub.resolve()
    with pytest.raises(InvalidInput, match="home folder is not a project"):
        find_root(home)
    (home / "notes" / ".claude").mkdir()
    assert find_root(sub) == (home / "notes").resolve()
    out = run_cli(home, "hook", "session-start", stdin=json.dumps({"cwd": str(home)}))
    assert out.code == 0 and out.out == "" and not (home / ".claude" / "level-1-dev").exists()
    _count("root")


def test_missing_claude_project_dir_is_refused(project: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    result = run_cli(project, "start", "dev", env={"CLAUDE_PROJECT_DIR": str(missing)})
    assert result.code == 2 and "CLAUDE_PROJECT_DIR" in result.err and len(result.err.strip().splitlines()) == 1
    assert not missing.exists()
    _count("root")


# -- ending ---------------------------------------------------------------------------------------
def test_end_refuses_open_stages_then_closes_them_when_asked(project: Path, utc: None) -> None:
    service = Service(project, actor="test", clock=Clock())
    sid = service.start(level="dev").state.session_id
    service.stage_start(session_id=sid)
    before = tree_snapshot(_folder(service, sid))
    with pytest.raises(InvalidTransition, match="initialization \\(in_progress\\).*--close-open-stages"):
        service.end(session_id=sid)
    assert tree_snapshot(_folder(service, sid)) == before
    state = service.end(session_id=sid, close_open_stages=True).state
    assert state.stages["initialization"].status == "pending" and state.status == "completed"
    closed = [e for e in service.events(sid) if e["event"] == "stage_closed"]
    assert closed and closed[0]["reason"] == "closed at session end"
    report = service.report(period="week")
    assert report.sessions.finished == 0 and report.sessions.completed == 1
    assert service.dashboard().finished == 0
    _count("ending")


# -- text safety -------------------------------------------------------------------------------------
def test_multiline_task_cannot_inject_headings_or_ticked_tasks(project: Path, service: Service) -> None:
    sid = service.start(level="dev").state.session_id
    service.update(session_id=sid, add_tasks=["real\n## Injected heading\n- [x] fake done task"],
                   blockers=["# also a heading"])
    for name in ("tasks.md", "plan.md"):
        lines = (_folder(service, sid) / name).read_text().splitlines()
        assert not any(line.startswith(("## Injected", "- [x] fake", "# also")) for line in lines), name
    assert markdown_text("# h") == "\\# h" and markdown_text("a\nb") == "a b"
    _count("text")


def test_template_with_nested_loops_is_stopped(project: Path, service: Service,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "RENDER_SECONDS", 0.3)
    sid = service.start(level="dev").state.session_id
    templates = project / ".claude" / "templates"
    templates.mkdir()
    (templates / "tasks.md.j2").write_text(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}done\n")
    service.update(session_id=sid, add_tasks=["x"])  # saved; the template problem is a warning
    assert re.search("took longer than 0.3 s.*was saved", "\n".join(service.warnings)), service.warnings
    assert service.show(session_id=sid).state.progress.tasks_pending[0].title == "x"
    (templates / "tasks.md.j2").write_text("{{ 'x' * 100000000 }}\n")
    service.update(session_id=sid, add_tasks=["y"])  # saved; the template problem is a warning
    assert re.search("larger than", "\n".join(service.warnings)), service.warnings
    (templates / "tasks.md.j2").write_text("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}\n")
    service.update(session_id=sid, add_tasks=["z"])  # saved; the template problem is a warning
    assert re.search("larger than", "\n".join(service.warnings)), service.warnings
    _count("text")


def test_terminal_safe_escapes_controls_and_bidi_in_hook_output(project: Path, service: Service) -> None:
    assert terminal_safe("a\x1b[31mb\u202ec\x07") == "a\\x1b[31mb\\u202ec\\x07"
    assert terminal_safe("line\nnext\t") == "line\nnext\t"
    service.start(level="dev", topic="evil \x1b]0;pwned\x07 \u202etxt.exe")
    out = run_cli(project, "hook", "session-start", stdin=json.dumps({"cwd": str(project)}),
                  env={"CLAUDE_PROJECT_DIR": str(project)})
    context = json.loads(out.out)["hookSpecificOutput"]["additionalContext"]
    assert "\x1b" not in context and "\u202e" not in context and "\\x1b]0;pwned" in context
    _count("text")


# -- the internal error log ---------------------------------------------------------------------------
def test_error_log_is_private_per_user_and_names_only_the_command(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        path = log_internal_error("task add")
    assert path == tmp_path / "state" / "session-manager" / "errors.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("--- ") and "session-manager task add\n" in text and "RuntimeError: boom" in text
    _count("error log")


def test_error_log_refuses_a_planted_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             victim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    folder = tmp_path / "state" / "session-manager"
    folder.mkdir(parents=True)
    (folder / "errors.log").symlink_to(victim)
    with pytest.raises(OSError):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log_internal_error("status")
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    assert "RuntimeError: boom" in capsys.readouterr().err
    _count("error log")


def test_dashboard_html_refuses_a_fifo_and_a_link(tmp_path: Path, victim: Path) -> None:
    from session_manager.dashboard import write_html

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="not a regular file"):
        write_html(fifo, "<html>")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    with pytest.raises(InvalidInput, match="symbolic link"):
        write_html(link, "<html>")
    assert victim.read_text() == "SECRET-TOKEN=abc123\n"
    assert write_html(tmp_path / "new.html", "<html>").read_text() == "<html>"
    _count("confinement")


def test_a_change_after_a_lost_one_is_never_confused_with_it(project: Path, service: Service) -> None:
    """A process died between its journal line and its state: the next change reuses that revision.
    The dead change's line must not count as applied afterwards."""
    sid = service.start(level="dev").state.session_id
    folder = _folder(service, sid)
    revision = service.store.read_state(sid).revision
    with (folder / "events.jsonl").open("a") as handle:  # the line of a change whose state never landed
        handle.write(json.dumps({"session_id": sid, "at": "2026-11-21T09:30:00Z", "actor": "test",
                                 "event": "task_added", "task_id": 99, "title": "lost", "rev": revision + 1})
                     + "\n")
    service.update(session_id=sid, add_tasks=["kept"])
    journal = service.store.read_journal(sid)
    titles = [r["title"] for r in journal.records if r["event"] == "task_added"]
    assert titles == ["kept"] and journal.unapplied == 0
    assert "lost" not in (folder / "events.jsonl").read_text()
    _count("commit point")
