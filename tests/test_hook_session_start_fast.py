"""The SessionStart hook's stdlib path (`quickstart.context`) says exactly what the full path
(`hooks.session_start`, through the `Service`) says, or steps aside (None) so the full path
answers: never a different answer, only sometimes a slower one."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Clock, run_cli
from session_manager import hooks, index, model, quickstart
from session_manager.errors import SessionError
from session_manager.service import Service

CONVERSATION = "5f1c2e0a-8a7b-4d1e-9c3f-2b6a7d8e9f01"


def payload(root: Path, conversation: str | None = CONVERSATION) -> dict[str, Any]:
    data: dict[str, Any] = {"hook_event_name": "SessionStart", "source": "startup", "cwd": str(root)}
    if conversation is not None:
        data["session_id"] = conversation
    return data


def fast_and_full(root: Path, data: dict[str, Any]) -> tuple[str | None, str]:
    """The fast path's answer, then the full path's (which may bind, settle or rebuild after)."""
    return quickstart.context(root, data), hooks.session_start(root, data)


def same(root: Path, data: dict[str, Any]) -> str:
    """The fast path answers, and exactly as the full path does."""
    fast, full = fast_and_full(root, data)
    assert fast is not None, "the fast path stepped aside"
    assert fast == full
    return fast


def hook_output(root: Path, data: dict[str, Any]) -> str:
    out = io.StringIO()
    hooks.run("session-start", json.dumps(data), out)
    return out.getvalue()


def full_output(root: Path, data: dict[str, Any]) -> str:
    """What the hook printed before the fast path existed: the full path, emitted."""
    out = io.StringIO()
    try:
        context = hooks.session_start(root, data)
    except SessionError as exc:  # the hook's own wording
        hooks._emit(out, {"systemMessage": f"session-manager session-start hook: {exc}"})
        return out.getvalue()
    if context:
        hooks._emit(out, {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}})
    return out.getvalue()


def state_file(service: Service, session_id: str, name: str = "pipeline_status.json") -> Path:
    return service.store.session_dir(session_id) / name


def edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def busy_project(svc: Service, clock: Clock) -> list[str]:
    """Several active sessions with blockers, alerts, open tasks, long topics; one ended."""
    ids = []
    a = svc.start(level="prod", number=5, topic="CRISPR " + "x" * 300, budget_usd=1.0).state.session_id
    svc.update(session_id=a, add_tasks=[f"task {n}" for n in range(13)], blockers=["no API key", "y" * 200])
    svc.stage_start(session_id=a)
    svc.record_cost(session_id=a, usd=2.5)  # over budget: a cost alert
    ids.append(a)
    clock.advance(5)
    b = svc.start(level="dev", topic="gantt charts").state.session_id
    svc.update(session_id=b, blockers=[f"blocker {n}" for n in range(12)])
    ids.append(b)
    c = svc.start(level="coded", tag="same-second").state.session_id  # same times as b: ties keep index order
    ids.append(c)
    clock.advance(5)
    ended = svc.start(level="platform", topic="done").state.session_id
    svc.end(session_id=ended, close_open_stages=True)
    return ids


# -- the same answer -----------------------------------------------------------------------------
def test_no_sessions_at_all_says_nothing_either_way(project: Path, svc: Service) -> None:
    (project / ".claude").mkdir()
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and full == ""  # no index yet: the full path builds it
    assert same(project, payload(project)) == ""
    assert hook_output(project, payload(project)) == ""


def test_only_ended_sessions_say_nothing(project: Path, svc: Service) -> None:
    svc.end(session_id=svc.start(level="dev").state.session_id)
    svc.status()
    assert same(project, payload(project)) == ""


def test_several_active_sessions_with_blockers_alerts_tasks_and_long_topics(
        project: Path, svc: Service, clock: Clock) -> None:
    ids = busy_project(svc, clock)
    for conversation in (CONVERSATION, None, "bad id!", 42):
        text = same(project, payload(project, conversation))  # type: ignore[arg-type]
    assert all(session_id in text for session_id in ids)
    assert "+3 more" in text and "+2 more" in text and "alerts: critical cost" in text
    assert hook_output(project, payload(project)) == full_output(project, payload(project))


def test_the_conversations_own_session_comes_first(project: Path, svc: Service, clock: Clock) -> None:
    ids = busy_project(svc, clock)
    svc.usage_bind(session_id=ids[2], claude_session=CONVERSATION)
    text = same(project, payload(project))
    assert f"This conversation works on {ids[2]}." in text
    assert text.index(ids[2]) < text.index(ids[1]) < text.index(ids[0])


def test_a_conversation_recorded_at_start_comes_first(project: Path, svc: Service, clock: Clock) -> None:
    ids = busy_project(svc, clock)
    recorded = svc.start(level="dev", tag="recorded", claude_session=CONVERSATION).state.session_id
    text = same(project, payload(project))
    assert f"This conversation works on {recorded}." in text and ids[0] in text
    assert same(project, payload(project, "someone-else")).count("This conversation works on") == 0


def test_terminal_escapes_and_bidi_marks_in_topics_are_cleaned_alike(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"t{n}").state.session_id for n in range(2)]
    edit(state_file(svc, ids[0], "metadata.json"),
         lambda m: m.update(topic="red \x1b[31mALERT\x1b[0m \u202eevil\u202c \x07bell \x00nul \u00e9t\u00e9 \U0001f600"))
    edit(state_file(svc, ids[1], "pipeline_status.json"),
         lambda s: s["progress"]["blockers"].append({"id": 1, "text": "\x1b]0;title\x07 osc", "created_at":
                                                     "2026-11-20T12:00:00Z"}))
    svc.status()
    text = same(project, payload(project))
    assert "\x1b" in text  # the context itself is raw; the emitted line is cleaned
    emitted = hook_output(project, payload(project))
    assert emitted == full_output(project, payload(project)) and "\\u001b" not in emitted


def test_a_context_over_max_context_is_cut_at_the_same_line(project: Path, svc: Service, clock: Clock) -> None:
    for n in range(40):
        session_id = svc.start(level="dev", tag=f"s{n}", topic=f"topic {n} " + "z" * 150).state.session_id
        svc.update(session_id=session_id, add_tasks=[f"task {k} " + "w" * 100 for k in range(4)])
        clock.advance(1)
    text = same(project, payload(project))
    assert len(text) <= quickstart.MAX_CONTEXT and "... cut here (" in text.splitlines()[-1]


def test_one_active_session_binds_through_the_service_then_answers_fast(project: Path, svc: Service) -> None:
    session_id = svc.start(level="dev").state.session_id
    svc.status()
    assert quickstart.context(project, payload(project, None)) is not None  # no conversation: nothing to bind
    fast, full = fast_and_full(project, payload(project))
    assert fast is None  # a binding to write: the service writes it
    assert svc.show(session_id=session_id).state.claude_sessions == [CONVERSATION]
    assert same(project, payload(project)) == full and f"This conversation works on {session_id}." in full
    attached = [e for e in svc.events(session_id) if e["event"] == "claude_session_attached"]
    assert len(attached) == 1
    other = "another-conversation"
    assert quickstart.context(project, payload(project, other)) is None  # not bound yet
    # a conversation id the hook's pattern accepts but the service refuses: the service's message
    assert quickstart.context(project, payload(project, CONVERSATION + "\n")) is None


def test_a_new_conversation_is_answered_fast_and_bound_by_a_detached_process(project: Path, svc: Service) -> None:
    session_id = svc.start(level="dev").state.session_id
    svc.status()
    binds: list[tuple[str, str]] = []
    fast = quickstart.context(project, payload(project), binds)
    assert binds == [(session_id, CONVERSATION)] and f"This conversation works on {session_id}." in (fast or "")
    binds.clear()
    before = int(time.time())
    printed = hook_output(project, payload(project))  # answers at once; the binding is written by a child
    deadline = time.monotonic() + 30
    while svc.show(session_id=session_id).state.claude_sessions != [CONVERSATION]:
        assert time.monotonic() < deadline, "the detached binding never landed"
        time.sleep(0.1)
    assert printed == full_output(project, payload(project))  # what the full path prints once bound
    attached = [e for e in svc.events(session_id) if e["event"] == "claude_session_attached"]
    assert len(attached) == 1 and attached[0]["via"] == "hook"
    since = datetime.strptime(attached[0]["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert before <= since <= time.time()  # bound from the hook's moment, not the child's
    assert quickstart.context(project, payload(project), binds) is not None and binds == []  # bound: nothing to hand over


# -- stepping aside ----------------------------------------------------------------------------------
def test_a_corrupt_state_file_falls_back(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"c{n}").state.session_id for n in range(2)]
    state_file(svc, ids[0]).write_text("{not json")
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and ids[0] not in full and ids[1] in full
    assert hook_output(project, payload(project)) == full_output(project, payload(project))


@pytest.mark.parametrize("change", [
    lambda s: s["progress"].update(percent="50"),  # pydantic would take it; we do not guess
    lambda s: s["progress"].update(percent=float("nan")),
    lambda s: s.update(schema_version=3),
    lambda s: s.update(schema_version=1),
    lambda s: s.update(schema_version=2.0),
    lambda s: s.update(surprise=True),
    lambda s: s.update(last_updated="2026-11-20 12:00:00"),
    lambda s: s.update(started_at="2026-02-30T12:00:00Z"),
    lambda s: s.update(current_stage="nope"),
    lambda s: s["stages"].update({"bad name\n": {}}),
    lambda s: s["cost_tracking"].update(total_cost=True),
    lambda s: s.update(revision=-1),
    lambda s: s.update(level="galaxy"),
    lambda s: s.update(summary="\udc80"),
    lambda s: s["progress"]["blockers"].append({"id": 1.0, "text": "x", "created_at": "2026-11-20T12:00:00Z"}),
])
def test_a_field_of_the_wrong_type_or_an_unknown_version_falls_back(project: Path, svc: Service, change: Any) -> None:
    ids = [svc.start(level="dev", tag=f"w{n}").state.session_id for n in range(2)]
    edit(state_file(svc, ids[0]), change)
    assert quickstart.context(project, payload(project)) is None
    output = hook_output(project, payload(project))
    try:
        assert output == full_output(project, payload(project))
    except Exception as exc:  # noqa: BLE001 - the full path fails on it: the hook says so, as before
        assert f"hook failed ({type(exc).__name__}" in output


def test_damaged_metadata_falls_back(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"m{n}").state.session_id for n in range(2)]
    edit(state_file(svc, ids[0], "metadata.json"), lambda m: m.update(topic=7))
    assert quickstart.context(project, payload(project)) is None
    assert hook_output(project, payload(project)) == full_output(project, payload(project))


def test_a_symlinked_state_file_falls_back(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"l{n}").state.session_id for n in range(2)]
    target = state_file(svc, ids[0])
    copy = project / "elsewhere.json"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(copy)
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and ids[0] not in full and ids[1] in full  # the store refuses the link too
    assert hook_output(project, payload(project)) == full_output(project, payload(project))


def test_a_stale_index_falls_back_once(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"s{n}").state.session_id for n in range(2)]
    svc.status()
    folder = svc.store.session_dir(ids[0])
    copy = folder.parent / "dev_20261120_byhand"
    copy.mkdir()
    for name in ("pipeline_status.json", "metadata.json"):
        (copy / name).write_text((folder / name).read_text().replace(ids[0], copy.name))
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and copy.name in full  # the full path rebuilt the index
    assert copy.name in same(project, payload(project))


def test_a_missing_index_falls_back_once(project: Path, svc: Service) -> None:
    svc.start(level="dev", tag="a")
    svc.start(level="dev", tag="b")
    svc.store.index.discard()
    assert quickstart.context(project, payload(project)) is None
    hooks.session_start(project, payload(project))
    same(project, payload(project))


def test_a_pending_row_is_never_trusted(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"p{n}").state.session_id for n in range(2)]
    svc.end(session_id=ids[0])
    database = project / ".claude" / ".session-manager" / "index.sqlite"
    with sqlite3.connect(database) as conn:  # a crash between the mark and the settle
        conn.execute("UPDATE sessions SET pending = 'abc', status = '?', active = 1 WHERE id = ?", (ids[0],))
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and ids[0] not in full  # the full path read the state and settled the row
    assert same(project, payload(project)) == full


def test_a_row_the_state_contradicts_falls_back(project: Path, svc: Service) -> None:
    ids = [svc.start(level="dev", tag=f"r{n}").state.session_id for n in range(2)]
    edit(state_file(svc, ids[0]), lambda s: s.update(status="abandoned"))  # by hand: the index still says active
    fast, full = fast_and_full(project, payload(project))
    assert fast is None and ids[0] not in full
    assert same(project, payload(project)) == full


def test_a_config_is_trusted_only_in_the_bytes_the_full_path_validated(project: Path, svc: Service) -> None:
    svc.start(level="dev", tag="a")
    svc.start(level="dev", tag="b")
    config = project / ".claude" / "session-manager.toml"
    config.write_text("[alerts]\ncost_ratio = 0.5\n")
    assert quickstart.context(project, payload(project)) is None
    hooks.session_start(project, payload(project))  # validates and stamps
    same(project, payload(project))
    config.write_text("[alerts\n")  # malformed: the user must hear it, as before
    assert quickstart.context(project, payload(project)) is None
    output = hook_output(project, payload(project))
    assert output == full_output(project, payload(project)) and "not valid TOML" in output


def test_a_symlinked_config_falls_back(project: Path, svc: Service) -> None:
    svc.start(level="dev", tag="a")
    svc.start(level="dev", tag="b")
    real = project / "real.toml"
    real.write_text("")
    (project / ".claude" / "session-manager.toml").symlink_to(real)
    assert quickstart.context(project, payload(project)) is None
    assert hook_output(project, payload(project)) == full_output(project, payload(project))


# -- the real process, and what it imports ---------------------------------------------------------------
def child_env(root: Path) -> dict[str, str]:
    return {**os.environ, "CLAUDE_PROJECT_DIR": str(root)}


def test_the_hook_as_a_process_prints_what_the_full_path_prints(project: Path, svc: Service, clock: Clock) -> None:
    busy_project(svc, clock)
    data = payload(project)
    expected = full_output(project, data)
    result = run_cli(project, "hook", "session-start", stdin=json.dumps(data), env={"CLAUDE_PROJECT_DIR": str(project)})
    assert result.code == 0 and result.out == expected and result.err == ""


def test_the_fast_path_does_not_import_pydantic(project: Path, svc: Service, clock: Clock) -> None:
    busy_project(svc, clock)
    svc.status()
    probe = ("import sys; sys.argv = ['session-manager', 'hook', 'session-start'];"
             " from session_manager.entry import main; main();"
             " sys.stderr.write(' '.join(m for m in ('pydantic', 'session_manager.service', 'session_manager.model')"
             " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], cwd=project, env=child_env(project),
                            input=json.dumps(payload(project)), capture_output=True, text=True, check=True)
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")]
    assert "sqlite3" in imported and "session_manager.quickstart" in imported
    assert not [name for name in imported if name.startswith("pydantic")]
    assert result.stderr.splitlines()[-1].startswith("import time")  # the probe found none of them loaded
    assert json.loads(result.stdout)["hookSpecificOutput"]["additionalContext"]


def test_a_fallback_process_does_import_the_service(project: Path, svc: Service) -> None:
    svc.start(level="dev", tag="a")
    (project / ".claude" / ".session-manager" / "index.sqlite").unlink()  # no index: the full path rebuilds it
    probe = ("import sys; sys.argv = ['session-manager', 'hook', 'session-start'];"
             " from session_manager.entry import main; main(); print('pydantic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=project, env=child_env(project),
                            input=json.dumps(payload(project)), capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "True"


# -- the mirror stays a mirror ---------------------------------------------------------------------------
def test_the_versions_this_reader_knows_are_the_current_ones() -> None:
    assert quickstart.INDEX_FORMAT == index.FORMAT
    assert quickstart.SCHEMA_VERSION == model.SCHEMA_VERSION


@pytest.mark.parametrize(("shape", "cls"), [
    (quickstart.STATE, model.SessionState), (quickstart.METADATA, model.Metadata), (quickstart.STAGE, model.StageState),
    (quickstart.TASK, model.Task), (quickstart.BLOCKER, model.Blocker), (quickstart.NOTE, model.Note),
    (quickstart.PROGRESS, model.Progress), (quickstart.TOKENS, model.Tokens), (quickstart.COST, model.CostTracking),
    (quickstart.OUTCOME, model.Outcome), (quickstart.BUDGET, model.Budget), (quickstart.ALERT, model.Alert),
    (quickstart.ERROR, model.ErrorRecord),
])
def test_each_shape_has_the_fields_of_its_model(shape: quickstart.Shape, cls: type[model.Model]) -> None:
    assert set(shape.fields) == set(cls.model_fields)
    assert set(shape.required) == {name for name, field in cls.model_fields.items() if field.is_required()}
