"""The MCP server: every tool through an in-memory client, the server over stdio from a real
client process, bad inputs as tool errors carrying the CLI's message, resources, prompts, and the
backup loop in the lifespan."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from conftest import git, tree_snapshot
from session_manager import operations
from session_manager.mcp_server import BACKUP_THREAD, build_server
from session_manager.service import Service

pytestmark = pytest.mark.anyio
TOOLS_LIST_BUDGET = 16 * 1024
TOOLS = set(operations.BY_TOOL)  # the registry is the contract


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(project: Path):
    return build_server(project, backups=False)


async def call(server: Any, name: str, **arguments: Any) -> Any:
    """Call one tool; return its structured content, failing the test on a tool error."""
    async with Client(server) as client:
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def call_error(server: Any, name: str, **arguments: Any) -> str:
    async with Client(server) as client:
        result = await client.call_tool(name, arguments)
    assert result.is_error, result
    assert result.structured_content is None
    return result.content[0].text


def started(service: Service, *args: str, **kw: Any) -> str:
    return service.start(level="prod", number=5, **kw).state.session_id


# -- the tool list ----------------------------------------------------------------------------
async def test_tools_list_has_the_registry_tools_with_one_line_descriptions(server) -> None:
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    assert {"stage_override", "record_cost", "usage_attach", "session_dashboard"} <= TOOLS
    for tool in tools:
        assert tool.description and "\n" not in tool.description and len(tool.description) <= 100


async def test_tool_annotations_are_truthful(server) -> None:
    async with Client(server) as client:
        notes = {t.name: t.annotations for t in (await client.list_tools()).tools}
    assert notes["backup_history"].read_only_hint is True and notes["backup_history"].destructive_hint is False
    assert notes["backup_restore"].destructive_hint is True and notes["backup_restore"].read_only_hint is False
    for name, op in operations.BY_TOOL.items():
        assert notes[name].read_only_hint is (op.effect == "read"), name
        assert notes[name].destructive_hint is (op.effect == "destroy"), name
        assert notes[name].open_world_hint is False, name


async def test_every_input_schema_is_strict_and_carries_the_constraints(server) -> None:
    async with Client(server) as client:
        schemas = {t.name: t.input_schema for t in (await client.list_tools()).tools}
    for name, op in operations.BY_TOOL.items():
        assert schemas[name]["additionalProperties"] is False, name
        assert list(schemas[name]["properties"]) == op.exposed_fields(), name
    assert schemas["session_start"]["required"] == ["level"]
    assert "claude_session" not in schemas["session_start"]["properties"]  # the server sets it
    assert schemas["stage_complete"]["required"] == ["stage"]
    (score,) = schemas["stage_complete"]["properties"]["quality"]["patternProperties"].values()
    assert score["minimum"] == 0 and score["maximum"] == 1
    assert schemas["stage_complete"]["properties"]["stage"]["pattern"]
    assert schemas["session_end"]["properties"]["session_id"]["pattern"]
    assert schemas["stage_override"]["properties"]["action"]["enum"] == ["bypass", "skip"]
    assert "required" not in schemas["session_status"]


def test_tools_list_over_stdio_is_under_16_kb(project: Path) -> None:
    """Measured on the wire: the bytes of the tools/list answer, as Claude Code receives them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "session_manager", "serve", "--no-backups"], cwd=project,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        def send(message: dict[str, Any]) -> None:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
        assert json.loads(proc.stdout.readline())["id"] == 1
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        line = proc.stdout.readline()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    answer = json.loads(line)
    assert {t["name"] for t in answer["result"]["tools"]} == TOOLS
    print(f"tools/list: {len(line)} bytes")
    assert len(line) < TOOLS_LIST_BUDGET


# -- every tool ---------------------------------------------------------------------------------
async def test_session_start_creates_the_session_on_disk(server, project: Path) -> None:
    view = await call(server, "session_start", level="prod", number=5, topic="CRISPR", complexity=3,
                      budget_usd=4.5, objectives=["script", "audio"])
    session_id = view["session_id"]
    assert session_id.startswith("ep_005_") and view["topic"] == "CRISPR" and view["budget_usd"] == 4.5
    assert view["current_stage"] == "01_deep_research" and len(view["stages"]) == 9
    state = json.loads((project / f".claude/level-2-production/sessions/{session_id}/pipeline_status.json").read_text())
    assert state["episode_number"] == 5
    metadata = json.loads((project / f".claude/level-2-production/sessions/{session_id}/metadata.json").read_text())
    assert metadata["created_by"]["actor"] == "mcp" and metadata["objectives"] == ["script", "audio"]


async def test_session_start_in_claude_code_records_the_conversation(
    server, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = "5f1c2e0a-8a7b-4d1e-9c3f-2b6a7d8e9f01"
    monkeypatch.setenv("CLAUDE_CODE_SESSION_ID", conversation)  # set by Claude Code for its MCP servers
    session_id = (await call(server, "session_start", level="dev"))["session_id"]
    detail = service.show(session_id=session_id)
    assert detail.state.claude_sessions == [conversation]
    assert detail.metadata.created_by.claude_session == conversation


async def test_session_start_with_tag_sets_the_id(server) -> None:
    view = await call(server, "session_start", level="dev", tag="spike")
    assert view["session_id"].endswith("_spike") and view["session_id"].startswith("dev_")


async def test_session_status_without_id_lists_every_active_session(server, service: Service) -> None:
    first = started(service)
    second = service.start(level="dev").state.session_id
    ended = service.start(level="coded").state.session_id
    service.end(session_id=ended)
    view = await call(server, "session_status")
    assert {s["session_id"] for s in view["sessions"]} == {first, second}


async def test_session_status_with_id_shows_that_session(server, service: Service) -> None:
    session_id = started(service)
    service.update(session_id=session_id, add_tasks=["write intro"], blockers=["no API key"])
    (view,) = (await call(server, "session_status", session_id=session_id))["sessions"]
    assert view["session_id"] == session_id
    assert view["tasks_pending"] == ["#1 write intro"] and view["blockers"] == ["#1 no API key"]


async def test_stage_start_then_complete_advances(server, service: Service) -> None:
    session_id = started(service)
    begun = await call(server, "stage_start", session_id=session_id)
    assert begun["decision"] == "started" and begun["stage"] == "01_deep_research"
    done = await call(server, "stage_complete", session_id=session_id, stage="01_deep_research",
                      outputs={"research_file": "research.md"}, quality={"overall": 0.9}, cost_usd=0.4,
                      tokens=1200, model="claude-sonnet-4", notes="solid sources")
    assert done["decision"] == "advanced" and done["next_stage"] == "02_questions"
    assert done["total_cost"] == pytest.approx(0.4)
    assert service.show(session_id=session_id).state.stages["01_deep_research"].status == "completed"


async def test_record_failure_retries_then_a_fatal_one_escalates(server, service: Service) -> None:
    session_id = started(service)
    service.stage_start(session_id=session_id)
    retry = await call(server, "record_failure", session_id=session_id, stage="01_deep_research", error="timeout")
    assert retry["decision"] == "retry" and retry["attempts_left"] >= 1
    service.stage_start(session_id=session_id)
    fatal = await call(server, "record_failure", session_id=session_id, stage="01_deep_research",
                       error="API key revoked", retryable=False)
    assert fatal["decision"] == "escalated" and fatal["session_status"] == "failed"


async def test_session_resume_restarts_an_escalated_session(server, service: Service) -> None:
    session_id = started(service)
    service.stage_start(session_id=session_id)
    service.record_failure(session_id=session_id, stage="01_deep_research", error="boom", retryable=False)
    resumed = await call(server, "session_resume", session_id=session_id)
    assert resumed["decision"] == "resumed" and resumed["session_status"] == "in_progress"
    assert service.show(session_id=session_id).state.recovery_count == 1


async def test_session_update_records_tasks_blockers_learnings_decisions(server, service: Service) -> None:
    session_id = started(service)
    view = await call(server, "session_update", session_id=session_id, add_tasks=["outline", "draft"],
                      blockers=["waiting for data"], learnings=["small batches"], decisions=["use filelock"])
    assert view["tasks_pending"] == ["#1 outline", "#2 draft"]
    view = await call(server, "session_update", session_id=session_id, complete_tasks=["#1"],
                      clear_blockers=["waiting for data"])
    assert view["tasks_pending"] == ["#2 draft"] and view["tasks_done"] == 1
    assert view["blockers"] == []
    progress = service.show(session_id=session_id).state.progress
    assert [n.text for n in progress.learnings] == ["small batches"]
    assert [n.text for n in progress.decisions] == ["use filelock"]


async def test_session_end_completes_or_abandons(server, service: Service) -> None:
    first = started(service)
    view = await call(server, "session_end", session_id=first, summary="episode shipped")
    assert view["status"] == "completed" and view["summary"] == "episode shipped"
    second = service.start(level="dev").state.session_id
    assert (await call(server, "session_end", session_id=second, abandoned=True))["status"] == "abandoned"


async def test_session_report_counts_the_period(server, project: Path) -> None:
    from datetime import timedelta

    from session_manager.model import utcnow

    earlier = Service(project, actor="test", clock=lambda: utcnow() - timedelta(minutes=5))
    earlier.end(session_id=started(earlier), summary="done")
    earlier.start(level="dev")
    report = await call(server, "session_report", period="week")
    # ended with its stages left undone: counted as run, not as finished (a whole pipeline finishes)
    assert report["period"] == "week" and report["sessions"] == 2 and report["finished"] == 0
    only_dev = await call(server, "session_report", level="dev")
    assert only_dev["level"] == "dev" and only_dev["sessions"] == 1


async def test_backup_now_history_and_restore(server, service: Service) -> None:
    session_id = started(service)
    service.update(session_id=session_id, add_tasks=["first"])
    made = await call(server, "backup_now")
    assert made["committed"] and made["sessions"] == [session_id] and made["revision"]
    service.update(session_id=session_id, add_tasks=["second"])
    history = await call(server, "backup_history", session_id=session_id)
    assert history["session_id"] == session_id and len(history["backups"]) >= 2
    assert history["backups"][0].split()[0] == made["revision"]  # newest first
    back = await call(server, "backup_restore", session_id=session_id, at=made["revision"])
    assert "pipeline_status.json" in back["restored"] and back["undo"]
    assert [t.title for t in service.show(session_id=session_id).state.progress.tasks_pending] == ["first"]


async def test_stage_override_bypasses_or_skips_with_a_reason(server, service: Service) -> None:
    session_id = started(service)
    skipped = await call(server, "stage_override", session_id=session_id, action="skip",
                         stage="01_deep_research", reason="research done elsewhere")
    assert skipped["decision"] == "advanced" and skipped["next_stage"] == "02_questions"
    service.stage_start(session_id=session_id)
    service.record_failure(session_id=session_id, stage="02_questions", error="x", retryable=False)
    bypassed = await call(server, "stage_override", session_id=session_id, action="bypass", stage="02_questions",
                          reason="checked by hand")
    assert bypassed["stage"] == "02_questions"
    stages = service.show(session_id=session_id).state.stages
    assert stages["01_deep_research"].status == "skipped" and stages["02_questions"].status == "bypassed"
    assert stages["02_questions"].override_reason == "checked by hand"


async def test_record_cost_and_dashboard_over_mcp(server, service: Service) -> None:
    session_id = started(service)
    booked = await call(server, "record_cost", session_id=session_id, usd=1.25, stage="01_deep_research")
    assert booked["usd"] == 1.25 and booked["total_cost"] == 1.25 and booked["computed"] is False
    board = await call(server, "session_dashboard")
    assert board["in_progress"][0].startswith(session_id) and board["days"] == 30


# -- bad input: a tool error with the CLI's message, nothing written ----------------------------
BAD = [
    ("session_start", {"level": "bogus"}, ("start", "bogus")),
    ("session_start", {"level": "prod"}, ("start", "prod")),
    ("session_start", {"level": "dev", "number": 3}, None),  # the CLI cannot give dev a number
    ("session_status", {"session_id": "../../etc/passwd"}, ("status", "../../etc/passwd")),
    ("session_end", {"session_id": "ep_999_20261121_0000"}, ("end", "ep_999_20261121_0000")),
    ("stage_complete", {"session_id": "{id}", "stage": "01_deep_research", "quality": {"overall": 1.5}},
     ("stage", "complete", "{id}", "01_deep_research", "--quality", "overall=1.5")),
    ("record_failure", {"session_id": "{id}", "stage": "99_nope", "error": "x"},
     ("stage", "fail", "{id}", "99_nope", "--error", "x")),
    ("session_resume", {"session_id": "{id}", "from_stage": "09_audio_synthesis"},
     ("resume", "{id}", "--from", "09_audio_synthesis")),
    ("session_report", {"since": "yesterday"}, ("report", "--since", "yesterday")),
    ("session_report", {"level": "bogus"}, ("report", "--level", "bogus")),
    ("backup_restore", {"session_id": "{id}", "at": "--upload-pack=touch x"},
     ("backup", "restore", "{id}", "--at=--upload-pack=touch x")),
    ("backup_restore", {"session_id": "{id}", "at": "deadbeef"},
     ("backup", "restore", "{id}", "--at", "deadbeef")),
    ("stage_override", {"session_id": "{id}", "action": "bypass", "stage": "01_deep_research", "reason": " "},
     ("bypass", "{id}", "01_deep_research", "--reason", " ")),
    ("record_cost", {"session_id": "{id}", "usd": -1}, ("cost", "add", "{id}", "--usd", "-1")),
    ("record_cost", {"session_id": "{id}", "input_tokens": 100}, ("cost", "add", "{id}", "--input", "100")),
]


@pytest.mark.parametrize(("tool", "arguments", "cli_args"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
async def test_bad_input_is_a_tool_error_with_the_cli_message_and_writes_nothing(
    server, service: Service, project: Path, cli, tool, arguments, cli_args
) -> None:
    session_id = started(service)
    service.update(session_id=session_id, add_tasks=["x"])  # the session's lock file exists already
    arguments = {k: v.replace("{id}", session_id) if isinstance(v, str) else v for k, v in arguments.items()}
    before = tree_snapshot(project / ".claude")
    message = await call_error(server, tool, **arguments)
    assert "\n" not in message and "Traceback" not in message
    assert tree_snapshot(project / ".claude") == before
    if cli_args is None:
        assert message == "only production sessions take an episode number; dev does not"
        return
    result = cli(*[a.replace("{id}", session_id) for a in cli_args])
    assert result.code == 2 and result.err.strip() == f"error: {message}"
    assert tree_snapshot(project / ".claude") == before


async def test_wrong_argument_type_is_a_tool_error_naming_the_argument(server, project: Path) -> None:
    message = await call_error(server, "session_start", level="prod", number="five")
    assert message.startswith("number: ") and "integer" in message
    assert not (project / ".claude/level-2-production").exists()


async def test_server_keeps_answering_after_errors(server) -> None:
    async with Client(server) as client:
        assert (await client.call_tool("session_end", {"session_id": "nope"})).is_error
        assert (await client.call_tool("session_start", {"level": 7})).is_error
        ok = await client.call_tool("session_start", {"level": "dev"})
    assert not ok.is_error and ok.structured_content["level"] == "dev"


# -- resources and prompts ------------------------------------------------------------------------
async def test_resource_session_state(server, service: Service) -> None:
    session_id = started(service, topic="CRISPR")
    async with Client(server) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        result = await client.read_resource(f"session://{session_id}")
    assert templates == {"session://{session_id}", "session://{session_id}/{+file}"}
    detail = json.loads(result.contents[0].text)
    assert detail["state"]["session_id"] == session_id and detail["metadata"]["topic"] == "CRISPR"


async def test_resource_session_file(server, service: Service) -> None:
    session_id = started(service)
    async with Client(server) as client:
        result = await client.read_resource(f"session://{session_id}/events.jsonl")
    assert json.loads(result.contents[0].text.splitlines()[0])["event"] == "session_started"


@pytest.mark.parametrize("name", ["../metadata.json", "..%2F..%2F.git%2Fconfig", "%2Fetc%2Fpasswd", "nope.md"])
async def test_resource_refuses_names_outside_the_session(server, service: Service, name: str) -> None:
    from mcp.shared.exceptions import MCPError

    session_id = started(service)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.read_resource(f"session://{session_id}/{name}")


async def test_prompts_mirror_the_slash_command_verbs(server) -> None:
    async with Client(server) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        start = await client.get_prompt("start", {"arguments": "prod 5 CRISPR"})
    assert {"start", "status", "end", "report", "resume", "stage", "task", "backup"} <= names
    text = start.messages[0].content.text
    assert "session_start" in text and "prod 5 CRISPR" in text


# -- the backup loop in the lifespan ------------------------------------------------------------
async def test_lifespan_runs_the_backup_loop_and_stops_it(project: Path, service: Service) -> None:
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude/session-manager.toml").write_text("[backup]\ninterval_seconds = 0.2\n")
    session_id = service.start(level="dev").state.session_id
    tip = git(project, "rev-parse", "session-backups").strip()
    async with Client(build_server(project)) as client:
        assert any(t.name == BACKUP_THREAD for t in threading.enumerate())
        await client.call_tool("session_update", {"session_id": session_id, "add_tasks": ["saved by the loop"]})
        for _ in range(300):  # the loop commits the change within a few rounds
            if git(project, "rev-parse", "session-backups").strip() != tip:
                break
            await _sleep(0.1)
    assert git(project, "rev-parse", "session-backups").strip() != tip
    assert "interval" in git(project, "log", "-1", "--format=%s", "session-backups")
    assert not any(t.name == BACKUP_THREAD for t in threading.enumerate())
    assert git(project, "diff", "--cached", "--name-only") == ""  # the user's index is untouched


async def test_trigger_backups_run_in_the_loop_thread_not_the_tool_call(project: Path) -> None:
    """A stage completion asks for a backup at once; the server hands it to its backup thread,
    so the tool answers without waiting for git, and the commit follows within moments (one
    commit may hold several triggers' changes when they come faster than git)."""
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude/session-manager.toml").write_text("[backup]\ninterval_seconds = 3600\ncoalesce_seconds = 0\n")

    def backed_up(path: str) -> bool:
        found = subprocess.run(["git", "cat-file", "-e", f"session-backups:{path}"], cwd=project, capture_output=True)
        return found.returncode == 0

    async with Client(build_server(project)) as client:
        started = await client.call_tool("session_start", {"level": "coded"})
        session_id = started.structured_content["session_id"]
        await client.call_tool("stage_start", {"session_id": session_id})
        await client.call_tool("stage_complete", {"session_id": session_id, "stage": "implement"})
        record = f".claude/level-4-coded/sessions/{session_id}/implement_complete.json"
        for _ in range(600):
            if backed_up(record):
                break
            await _sleep(0.05)
    assert backed_up(record)
    subjects = git(project, "log", "--format=%s", "session-backups")
    assert "session start" in subjects


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


# -- over stdio, from a real client process ------------------------------------------------------
async def test_server_over_stdio_from_a_client(project: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "session_manager", "serve", "--no-backups"],
                                   cwd=str(project))
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        created = await client.call_tool("session_start", {"level": "prod", "number": 5})
        bad = await client.call_tool("stage_start", {"session_id": "../etc"})
        status = await client.call_tool("session_status", {})
    session_id = created.structured_content["session_id"]
    assert (project / ".claude/level-2-production/sessions" / session_id / "pipeline_status.json").is_file()
    assert bad.is_error and bad.content[0].text.startswith("invalid session id '../etc'")
    assert [s["session_id"] for s in status.structured_content["sessions"]] == [session_id]


async def test_a_problem_after_the_answer_reaches_the_next_result(project: Path, service: Service) -> None:
    """The markdown is written after the answer: a template that fails then is not lost; the next
    call's result carries it, and the change itself stands."""
    session_id = started(service)
    templates = project / ".claude" / "templates"
    templates.mkdir(parents=True)
    (templates / "plan.md.j2").write_text("{{ no_such_thing }}\n")
    server = build_server(project, backups=False)
    async with Client(server) as client:
        first = await client.call_tool("stage_start", {"session_id": session_id})
        assert not first.is_error and first.structured_content["decision"] == "started"
        server.derived.drain()
        second = await client.call_tool("session_status", {"session_id": session_id})
    # in the next result (the usual case), or in the call's own when its work ran before it answered
    warnings = [*(first.structured_content.get("warnings") or []), *(second.structured_content.get("warnings") or [])]
    assert any("plan.md.j2" in w and "was saved" in w for w in warnings), warnings
    assert service.show(session_id=session_id).state.stages["01_deep_research"].status == "in_progress"
