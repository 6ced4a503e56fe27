"""Report summaries: the fast reader (a state file's bytes, checked strictly against the model's own
schema) gives exactly the summary the model's path gives, or steps aside; a cold cache gives the
report a warm one gives; a damaged state is named, never fatal."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli_in_process
from fixtures.report_sessions import NOW, built  # noqa: F401 (a fixture)
from session_manager import analytics, forked, reports
from session_manager.errors import CorruptState
from session_manager.levels import LEVELS
from session_manager.service import Service
from session_manager.store import STATE_FILE

pytestmark = pytest.mark.usefixtures("utc")  # report days are local days: expectations are in UTC

WIDE = ("--since", "2026-10-01T00:00:00Z", "--until", "2026-11-22T00:00:00Z")  # every session
NARROW = ("--since", "2026-11-18T00:00:00Z", "--until", "2026-11-21T12:00:00Z")


def _edit(data: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copy = json.loads(json.dumps(data))
    change(copy)
    return copy


def _stage(data: dict[str, Any]) -> dict[str, Any]:
    return next(iter(data["stages"].values()))


# name -> (how to change a healthy state, or raw bytes to write instead)
ODD: dict[str, Callable[[dict[str, Any]], Any]] = {
    # valid for the model, but not as this tool writes them: the fast reader must agree or step aside
    "no_optional_lists": lambda d: _edit(d, lambda x: [x.pop(k) for k in
                                                      ("errors", "alerts", "claude_sessions", "quality_metrics")]),
    "no_progress_outcome_budget": lambda d: _edit(d, lambda x: [x.pop(k) for k in ("progress", "outcome", "budget")]),
    "episode_as_text": lambda d: _edit(d, lambda x: x.update(episode_number="7")),
    "cost_as_int": lambda d: _edit(d, lambda x: x["cost_tracking"].update(total_cost=3)),
    "quality_as_int": lambda d: _edit(d, lambda x: x.update(quality_overall=1, quality_metrics={"clarity": 1})),
    "fractional_seconds": lambda d: _edit(d, lambda x: x.update(started_at="2026-11-19T14:00:00.750Z",
                                                                last_updated="2026-11-19T15:00:00.250Z")),
    "offset_times": lambda d: _edit(d, lambda x: x.update(started_at="2026-11-19T16:00:00+02:00")),
    "naive_times": lambda d: _edit(d, lambda x: x.update(started_at="2026-11-19T14:00:00")),
    "epoch_number_time": lambda d: _edit(d, lambda x: x.update(last_updated=1_795_000_000)),
    "stage_without_status": lambda d: _edit(d, lambda x: _stage(x).pop("status")),
    "stage_seconds_as_int": lambda d: _edit(d, lambda x: _stage(x).update(execution_seconds=60)),
    "schema_v1": lambda d: _edit(d, lambda x: (x.update(schema_version=1),
                                               [t.pop("status", None) for t in x["progress"]["tasks_completed"]],
                                               x["progress"].pop("tasks_failed"))),
    "no_schema_version": lambda d: _edit(d, lambda x: x.pop("schema_version")),
    # damage: the model refuses these, and so must the report (named in `unreadable`)
    "not_json": lambda d: b'{"session_id": "x", ',
    "nan": lambda d: json.dumps(_edit(d, lambda x: x.update(quality_overall=float("nan")))).encode(),
    "nested_infinity": lambda d: json.dumps(_edit(d, lambda x: x["cost_tracking"]["cost_by_stage"].update(
        research=float("inf")))).encode(),
    "huge_number": lambda d: json.dumps(d).replace('"total_cost": ', '"total_cost": 1e999, "x_": ', 1).encode(),
    "missing_started": lambda d: _edit(d, lambda x: x.pop("started_at")),
    "unknown_field": lambda d: _edit(d, lambda x: x.update(colour="blue")),
    "unknown_stage_field": lambda d: _edit(d, lambda x: _stage(x).update(colour="blue")),
    "negative_revision": lambda d: _edit(d, lambda x: x.update(revision=-1)),
    "negative_task_minutes": lambda d: _edit(d, lambda x: x["progress"]["tasks_completed"][0].update(
        actual_minutes=-5)),
    "unknown_current_stage": lambda d: _edit(d, lambda x: x.update(current_stage="nowhere")),
    "bad_status": lambda d: _edit(d, lambda x: x.update(status="paused")),
    "future_schema": lambda d: _edit(d, lambda x: x.update(schema_version=99)),
    "a_list": lambda d: b"[1, 2, 3]",
    "not_utf8": lambda d: b'{"session_id": "\xff"}',
}
DAMAGED = {"not_json", "nan", "nested_infinity", "huge_number", "missing_started", "unknown_field", "unknown_stage_field",
           "negative_revision", "negative_task_minutes", "unknown_current_stage", "bad_status", "future_schema",
           "a_list", "not_utf8"}


@pytest.fixture
def history(built, tmp_path: Path) -> tuple[Path, dict[str, str]]:  # noqa: F811 (the fixture)
    """The report fixture's six sessions, plus a dev session with tasks, learnings and blockers,
    plus one copy of that dev session per odd state in ODD (a session folder each)."""
    source, ids = built
    root = tmp_path / "history"
    shutil.copytree(source, root, symlinks=True)
    service = Service(root, actor="test", clock=lambda: NOW)
    dev = service.start(level="dev", tag="tasks", topic="odd states").state.session_id
    service.task(session_id=dev, action="add", items=["write it", "test it"], estimate=30, files=["docs/a.md"])
    service.task(session_id=dev, action="start", items=["#1"])
    service.task(session_id=dev, action="done", items=["#1"], tests=["tests/test_a.py"])
    service.update(session_id=dev, learnings=["a fixture per concern"], blockers=["waiting for review"])
    service.end(session_id=dev, close_open_stages=True, summary="done", bugs_fixed=1, tests_passed=3, tests_total=4)
    ids["dev"] = dev
    folder = service.store.session_dir(dev)
    healthy = json.loads((folder / STATE_FILE).read_text())
    assert healthy["progress"]["tasks_completed"], "the dev session needs a completed task"
    for n, (name, change) in enumerate(ODD.items()):
        session_id = f"dev_20261119_odd-{n}"
        target = folder.parent / session_id
        shutil.copytree(folder, target)
        state = _edit(healthy, lambda x, sid=session_id: x.update(session_id=sid))  # type: ignore[misc]
        changed = change(state)
        (target / STATE_FILE).write_bytes(changed if isinstance(changed, bytes) else json.dumps(changed).encode())
        ids[name] = session_id
    return root, ids


def _all_sessions(root: Path) -> list[tuple[str, Path]]:
    store = Service(root).store
    found = []
    for level in LEVELS.values():
        folder = store.level_dir(level)
        if folder.is_dir():
            found += [(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir()]
    return found


def test_the_fast_summary_equals_the_models_or_steps_aside(history) -> None:
    root, ids = history
    store = Service(root).store
    vouched, stepped_aside, damaged = [], [], []
    for session_id, folder in _all_sessions(root):
        topic = reports._topic(str(folder))
        fast = reports.fast_summary((folder / STATE_FILE).read_bytes(), topic)
        try:
            full = reports.full_summary(store, session_id, topic)
        except CorruptState:
            assert fast is None, f"{session_id}: the fast reader vouched for a state the model refuses"
            damaged.append(session_id)
            continue
        if fast is None:
            stepped_aside.append(session_id)
        else:
            assert fast == full, session_id
            # equal as stored too (the cache keeps JSON): no 1 where the model's path has 1.0
            assert json.dumps(fast, sort_keys=True) == json.dumps(full, sort_keys=True), session_id
            vouched.append(session_id)
    assert sorted(damaged) == sorted(ids[name] for name in DAMAGED)
    # every state this tool writes is vouched for: the fast path is the one taken in practice
    assert {ids[k] for k in ("A", "B", "C", "D", "E", "F", "dev")} <= set(vouched)
    # what the strict reader cannot vouch for goes the model's way (coerced, migrated, defaulted)
    assert {ids[k] for k in ("episode_as_text", "schema_v1", "epoch_number_time", "nan")} <= set(stepped_aside) \
        | set(damaged)
    assert ids["no_schema_version"] in vouched  # the model reads a missing version as the current one, as it does


def test_a_cold_cache_gives_the_warm_report(history) -> None:
    root, _ids = history
    cache = root / ".claude" / ".session-manager" / reports.CACHE_FILE
    cold = run_cli_in_process(root, "report", "month", *WIDE)
    assert cold.code == 0 and cache.exists()
    warm = run_cli_in_process(root, "report", "month", *WIDE)
    assert warm.out == cold.out
    cold_json = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    warm_json = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    assert _without_clock(cold_json.out) == _without_clock(warm_json.out)


def test_the_window_before_counts_every_session_in_it_cold_and_warm(history) -> None:
    """The quality comparison with the previous window takes every session of that window: ended
    ones too, which a report does not summarise (it reads their quality from the cache's columns),
    not only the active ones it holds."""
    root, _ids = history
    cache = root / ".claude" / ".session-manager" / reports.CACHE_FILE
    since, until = (datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in NARROW[1::2])
    span = until - since
    every = reports.load_summaries(Service(root).store).summaries  # no window: every session, summarised
    before = [s["overall"] for s in every if s["started"] < since and reports._last_touch(s) >= since - span
              and s["overall"] is not None]
    assert len(before) >= 2 and any(s["status"] == "completed" for s in every if s["overall"] in before)
    figures = []
    for _ in ("cold", "warm", "warm again"):
        if not figures:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{cache}{suffix}").unlink(missing_ok=True)
        report = json.loads(run_cli_in_process(root, "report", "month", *NARROW, "--json").out)
        figures.append(report["analytics"]["quality_improvement"])
    assert figures[0] == figures[1] == figures[2]
    assert figures[0]["previous_sessions"] == len(before)
    assert figures[0]["previous"] == round(sum(before) / len(before), 4)


def test_sessions_outside_the_first_window_are_summarised_when_a_later_one_reaches_them(history) -> None:
    root, _ids = history
    cache = root / ".claude" / ".session-manager" / reports.CACHE_FILE
    first = run_cli_in_process(root, "report", "month", *NARROW, "--json")  # stubs for the older sessions
    assert first.code == 0
    stubs = _stub_count(cache)
    assert stubs > 0
    after_stubs = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    assert _stub_count(cache) == 0  # the wide window summarised them
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    cold = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    assert _without_clock(after_stubs.out) == _without_clock(cold.out)
    assert json.loads(cold.out)["sessions"]["run"] > json.loads(first.out)["sessions"]["run"]


def test_a_damaged_state_in_the_history_is_named_not_fatal(history) -> None:
    root, ids = history
    for attempt in ("cold", "warm"):
        result = run_cli_in_process(root, "report", "month", *WIDE, "--json")
        assert result.code == 0, attempt
        report = json.loads(result.out)
        assert sorted(report["unreadable"]) == sorted(ids[name] for name in DAMAGED), attempt
    text = run_cli_in_process(root, "report", "month", *WIDE)
    assert text.code == 0 and ids["nan"] in text.out


def test_a_state_changed_after_the_cache_was_filled_is_read_again(history) -> None:
    root, ids = history
    run_cli_in_process(root, "report", "month", *WIDE)
    path = Service(root).store.session_dir(ids["unknown_field"]) / STATE_FILE
    healthy = Service(root).store.session_dir(ids["dev"]) / STATE_FILE
    data = json.loads(healthy.read_text())
    data["session_id"] = ids["unknown_field"]
    path.write_text(json.dumps(data))  # repaired by hand
    report = json.loads(run_cli_in_process(root, "report", "month", *WIDE, "--json").out)
    assert ids["unknown_field"] not in report["unreadable"]


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="needs fork and two cores")
def test_the_forked_reader_gives_what_one_process_reads(history, monkeypatch: pytest.MonkeyPatch) -> None:
    root, ids = history
    store = Service(root).store
    jobs = []
    for session_id, folder in _all_sessions(root):
        path = folder / STATE_FILE
        jobs.append((session_id, "k", str(path), str(folder)))
    low = datetime(2026, 11, 18, tzinfo=UTC).timestamp()
    high = datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()
    alone = reports._read_jobs(store, jobs, low, high)
    monkeypatch.setattr(reports, "PARALLEL_FROM", 2)
    if threading.active_count() > 1:
        pytest.skip("this test process runs other threads: the reader never forks then")
    assert reports._read_many(store, jobs, low, high) == alone
    assert any(isinstance(value, tuple) for _sid, _key, value in alone)  # stubs travel back as stubs
    assert any(value is None for _sid, _key, value in alone)  # so do unreadable ones
    assert any(isinstance(value, dict) for _sid, _key, value in alone)


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="needs fork and two cores")
def test_a_forked_cold_read_fills_the_cache_as_one_process_does(history, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    root, ids = history
    store = Service(root).store
    sessions = store.session_dir(ids["dev"]).parent
    (sessions / "dev_20261119_gone").mkdir()  # no state file
    (sessions / "dev_20261119_folder" / STATE_FILE).mkdir(parents=True)  # a folder where the state file belongs
    cache = root / ".claude" / ".session-manager" / reports.CACHE_FILE
    low = datetime(2026, 11, 18, tzinfo=UTC).timestamp()
    high = datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()

    def cold() -> tuple[Any, Any, list[Any], list[Any]]:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{cache}{suffix}").unlink(missing_ok=True)
        summaries, unreadable, outside = reports.load_summaries(store, None, low, high)
        writing = bool(forked._BEHIND)  # the forked reader writes every row while the report is built
        forked.settle()
        assert writing == (reports.PARALLEL_FROM == 2)
        with sqlite3.connect(cache) as conn:
            rows = conn.execute("SELECT * FROM summaries ORDER BY id").fetchall()
        return summaries, unreadable, rows, sorted(outside, key=str)

    alone = cold()
    if not forked.available():
        pytest.skip("this test process cannot fork a second reader (threads, or one core)")
    monkeypatch.setattr(reports, "PARALLEL_FROM", 2)
    two = cold()
    assert two == alone  # the same summaries, unreadable ones in the same order, the same cache rows
    assert {"dev_20261119_gone", "dev_20261119_folder"} <= set(alone[1])
    assert len(alone[2]) == len(_all_sessions(root)) - len(alone[1])  # a row for every readable session
    assert any(row[6] == b"" for row in alone[2]) and any(row[6] for row in alone[2])  # stubs and summaries
    assert len(alone[3]) == len(alone[2]) - len(alone[0])  # the columns of every readable session not summarised
    warm = reports.load_summaries(store, None, low, high)
    assert warm[:2] == alone[:2] and sorted(warm.outside, key=str) == alone[3]  # and the warm read agrees


def test_the_voucher_is_the_models_schema_without_its_harmless_python_steps() -> None:
    state = json.dumps({"session_id": "dev_20261119_x", "level": "dev", "started_at": "2026-11-19T14:00:00Z",
                        "last_updated": "2026-11-19T14:00:00Z", "stages": {"build": {"status": "completed"}}})
    data = reports._voucher()(state.encode())
    # plain data, parsed once in Rust: typed dicts, enums as their text, times as datetimes (not the model's dump)
    assert type(data) is dict and type(data["stages"]["build"]) is dict
    assert type(data["status"]) is str and type(data["stages"]["build"]["status"]) is str
    assert data["started_at"] == datetime(2026, 11, 19, 14, tzinfo=UTC) and data["revision"] == 0  # defaults filled
    for damage in (', "colour": "blue"}', ', "status": "paused"}', ', "revision": -1}', ', "episode_number": "7"}'):
        with pytest.raises(ValueError):
            reports._voucher()(state[:-1].encode() + damage.encode())


def _stub_count(cache: Path) -> int:
    import sqlite3

    with sqlite3.connect(cache) as conn:
        return int(conn.execute("SELECT count(*) FROM summaries WHERE length(data) = 0").fetchone()[0])


def _without_clock(out: str) -> dict[str, Any]:
    data = json.loads(out)
    data.pop("generated_at", None)
    return data


def test_a_linked_session_folder_is_named_and_never_followed(history, tmp_path: Path) -> None:
    root, ids = history
    store = Service(root).store
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(store.session_dir(ids["dev"]), elsewhere)
    linked = store.session_dir(ids["dev"]).parent / "dev_20261119_linked"
    linked.symlink_to(elsewhere, target_is_directory=True)
    report = json.loads(run_cli_in_process(root, "report", "month", *WIDE, "--json").out)
    assert "dev_20261119_linked" in report["unreadable"]
    assert report["sessions"]["run"] == json.loads(
        run_cli_in_process(root, "report", "month", *WIDE, "--json").out)["sessions"]["run"]


def test_a_schema_part_the_voucher_does_not_know_makes_it_use_the_models_validator(
        history, monkeypatch: pytest.MonkeyPatch) -> None:
    from session_manager.model import SessionState

    root, ids = history
    monkeypatch.setattr(reports, "_HARMLESS", frozenset())  # as if the model grew a validator of its own
    monkeypatch.setattr(reports, "_VOUCHER", [])
    raw = (Service(root).store.session_dir(ids["dev"]) / STATE_FILE).read_bytes()
    assert reports._voucher()(raw) == SessionState.model_validate_json(raw).model_dump(mode="json")  # the model's
    store = Service(root).store
    folder = store.session_dir(ids["dev"])
    topic = reports._topic(str(folder))
    assert reports.fast_summary((folder / STATE_FILE).read_bytes(), topic) == \
        reports.full_summary(store, ids["dev"], topic)
    damaged = store.session_dir(ids["unknown_current_stage"])
    assert reports.fast_summary((damaged / STATE_FILE).read_bytes(), topic) is None


def test_analytics_from_a_forked_child_equal_those_built_here(history, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large window's analytics are built by a forked child while the report's other sections are
    built here; they come back as the model's JSON and must equal those built in this process."""
    root, _ids = history
    here = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    if not forked.available():
        pytest.skip("this process cannot fork a second worker (threads, or one core)")
    monkeypatch.setattr(analytics, "BESIDE_FROM", 1)
    started: list[object] = []
    real_start = forked.Forked.start
    monkeypatch.setattr(forked.Forked, "start", lambda job: started.append(real_start(job)) or started[-1])
    beside = run_cli_in_process(root, "report", "month", *WIDE, "--json")
    assert started and started[0] is not None  # a child did build them
    assert _without_clock(beside.out) == _without_clock(here.out)


CAPPED = """
import resource, sys
from session_manager import analytics, reports
from session_manager.cli import main
if sys.argv[2] == "forks":
    reports.PARALLEL_FROM = 2  # a second reader and writer even for a few sessions
    analytics.BESIDE_FROM = 1  # and the analytics beside
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no file may grow past this
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="needs fork and two cores")
@pytest.mark.parametrize("limit", [4096, 65536])
@pytest.mark.parametrize("mode", ["forks", "one process"])
def test_a_file_size_limit_leaves_the_report_whole_and_untraced(history, tmp_path: Path, limit: int,
                                                                 mode: str) -> None:
    """With files capped (at 4 KB nothing fits; at 64 KB the cache opens and then cannot grow) the
    cache writes fail and forked workers cannot hand back what they made: the report is still
    whole and the same, with no traceback, computed in the one process where need be."""
    import subprocess
    import sys

    root, _ids = history
    args = ["report", "month", *WIDE, "--json"]
    free = subprocess.run([sys.executable, "-c", CAPPED, "0", mode, *args], cwd=root, capture_output=True, text=True)
    cache = root / ".claude" / ".session-manager" / reports.CACHE_FILE
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    capped = subprocess.run([sys.executable, "-c", CAPPED, str(limit), mode, *args], cwd=root, capture_output=True,
                            text=True)
    assert free.returncode == 0 and capped.returncode == 0, capped.stderr
    assert "Traceback" not in capped.stderr
    assert _without_clock(capped.stdout) == _without_clock(free.stdout)
