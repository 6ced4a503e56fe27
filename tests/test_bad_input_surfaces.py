"""Property-based bad input through the real surfaces: the MCP tools over a live client session,
and the CLI as a process. Every refusal is one clear message, the server stays up, and the
`.claude/` tree is unchanged afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from conftest import run_cli, tree_snapshot
from session_manager import operations
from session_manager.mcp_server import build_server
from session_manager.service import Service

TOOL_ARGS = {op.tool: op.exposed_fields() for op in operations.OPERATIONS if op.tool}

EXAMPLES = int(os.environ.get("SM_BAD_INPUT_EXAMPLES", "60"))
CLI_EXAMPLES = int(os.environ.get("SM_BAD_CLI_EXAMPLES", "25"))

weird = st.one_of(
    st.sampled_from(["../", "../../etc/passwd", "/etc/passwd", "a\x00b", "x" * 3000, "", "-rf", "ep_001_20200101_0000",
                     "01_deep_research", "prod", "NaN", "{{ 7*7 }}", "ünï", "now", "history", "restore"]),
    st.text(max_size=30),
)
json_value = st.one_of(
    st.none(), weird, st.booleans(), st.integers(min_value=-10**15, max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(weird, max_size=4),
    st.dictionaries(weird, st.one_of(weird, st.floats(allow_nan=True), st.integers()), max_size=3),
    st.lists(st.just("x"), min_size=201, max_size=220),
)


def test_mcp_tools_refuse_bad_input_and_stay_up(project: Path, record_property) -> None:
    service = Service(project, actor="test")
    real = service.start(level="prod", number=1).state.session_id
    claude = project / ".claude"
    counts = {"refused": 0, "accepted": 0}
    server = build_server(project, backups=False)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Client(server)) as client:

        @settings(max_examples=EXAMPLES * len(TOOL_ARGS), deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(sorted(TOOL_ARGS)), st.data(), st.booleans())
        def check(tool: str, data: st.DataObject, use_real_id: bool) -> None:
            fields = TOOL_ARGS[tool]
            arguments = data.draw(st.fixed_dictionaries({}, optional={f: json_value for f in fields}))
            if use_real_id and "session_id" in fields:
                arguments["session_id"] = real
            server.derived.drain()  # an earlier accepted call's markdown is written after its answer
            before = tree_snapshot(claude)
            result = portal.call(client.call_tool, tool, arguments)
            if result.is_error:
                counts["refused"] += 1
                text = result.content[0].text
                assert text and "Traceback" not in text and len(text) < 2000, text
                assert tree_snapshot(claude) == before, f"{tool}({arguments!r}) wrote despite refusing"
            else:
                counts["accepted"] += 1
            alive = portal.call(client.call_tool, "session_status", {"session_id": real})
            assert not alive.is_error  # the server is still up and answering

        check()
    record_property("counts", f"bad-input test (MCP): {sum(counts.values())} calls, {counts['refused']} refused,"
          f" {counts['accepted']} accepted; server up throughout")
    assert counts["refused"] > counts["accepted"]


COMMANDS = [
    ["start", "{a}"], ["start", "prod", "{a}"], ["start", "dev", "--tag", "{a}"], ["start", "prod", "5", "--budget", "{a}"],
    ["status", "{a}"], ["end", "{a}"], ["task", "add", "{a}", "{b}"], ["task", "done", "{id}", "{a}"],
    ["blocker", "clear", "{id}", "{a}"], ["stage", "start", "{id}", "{a}"],
    ["stage", "complete", "{id}", "{a}", "--quality", "{b}"], ["stage", "complete", "{id}", "{a}", "--cost", "{b}"],
    ["stage", "fail", "{a}", "{b}", "--error", "{b}"], ["resume", "{id}", "--from", "{a}"],
    ["bypass", "{id}", "{a}", "--reason", "{b}"], ["list", "--since", "{a}"], ["list", "--level", "{a}"],
    ["report", "{a}"], ["cost", "add", "{id}", "--usd", "{a}"], ["backup", "restore", "{id}", "--at", "{a}"],
    ["render", "{id}", "{a}"], ["templates", "show", "{a}"],
]
argument = st.one_of(
    st.sampled_from(["../x", "/etc/passwd", "-1", "nan", "inf", "1e309", "x" * 3000, "", "--", "ep_001_20200101_0000",
                     "overall=2", "overall=nan", "a=b", "=", "HEAD", "-x", "1", "05_quality_gemini"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)


@pytest.mark.parametrize("seed", [0])
def test_cli_refuses_bad_input_with_one_line(project: Path, seed: int, record_property) -> None:
    service = Service(project, actor="test")
    real = service.start(level="prod", number=2).state.session_id
    claude = project / ".claude"
    tally = {"exit 0": 0, "exit 2": 0}

    @settings(max_examples=CLI_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(COMMANDS), argument, argument)
    def check(command: list[str], a: str, b: str) -> None:
        argv = [part.format(a=a, b=b, id=real) if "{" in part else part for part in command]
        before = tree_snapshot(claude)
        result = run_cli(project, *argv)
        assert result.code in (0, 2), result
        tally[f"exit {result.code}"] += 1
        if result.code == 2:
            assert result.err.startswith("error: ") and len(result.err.strip().splitlines()) == 1, result
            assert tree_snapshot(claude) == before, f"{argv!r} wrote despite refusing"

    check()
    record_property("counts", f"bad-input test (CLI): {sum(tally.values())} processes: {tally}")
