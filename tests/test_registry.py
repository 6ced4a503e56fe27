"""The operation registry is the one declaration of every operation: these tests iterate it and
check that the CLI and the MCP tools generated from it agree (same names, same refusals), that
every tool is strict, and that a typo'd argument writes nothing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from conftest import tree_snapshot
from session_manager import operations
from session_manager.cli import build_parser, words_of
from session_manager.mcp_server import build_server, input_schema
from session_manager.service import Op, Service

pytestmark = pytest.mark.anyio
TOOL_OPS = [op for op in operations.OPERATIONS if op.tool]
# arguments a tool keeps for callers of its older form, whose CLI spelling now belongs to another
# operation: session_update's tasks are `task add` / `task done` (the `task` operation)
MCP_ONLY = {"update": {"add_tasks", "complete_tasks"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cli_fields(op: operations.Operation, cli: operations.Cli) -> dict[str, str]:
    """The request fields a CLI spelling reaches, and how (`--flag`, `WORD`, `fixed`)."""
    parser = build_parser(op, cli)
    reached = {w.field: w.metavar for w in words_of(cli)}
    presentation = {option.flag.lstrip("-").replace("-", "_") for option in cli.options}
    for action in parser._actions:
        if action.dest in presentation:
            continue
        if isinstance(action, argparse._StoreAction | argparse._AppendAction | argparse._StoreTrueAction
                      | argparse._StoreFalseAction) and action.option_strings and action.dest != "json":
            reached.setdefault(action.dest, action.option_strings[0])
    reached.update({name: "fixed" for name in cli.fixed})
    return reached


@pytest.mark.parametrize("op", operations.OPERATIONS, ids=lambda op: op.name)
def test_every_operation_resolves_to_code_that_exists(op: operations.Operation) -> None:
    model = op.request_model()
    assert model.model_config.get("extra") == "forbid", op.name
    assert op.summary and op.cli, op.name
    if op.runs:
        assert callable(operations.load(op.runs))
    else:
        assert isinstance(Service.__dict__.get(op.name), Op), f"Service.{op.name} is not an @operation"
    for path in filter(None, [op.view, op.tool_view, *(cli.view for cli in op.cli)]):
        assert callable(operations.load(path)), path
    assert bool(op.tool) == bool(op.tool_view), op.name
    for name in op.internal:
        assert name in model.model_fields, (op.name, name)


@pytest.mark.parametrize("op", TOOL_OPS, ids=lambda op: op.name)
def test_cli_and_tool_reach_the_same_arguments(op: operations.Operation) -> None:
    exposed = set(op.exposed_fields())
    assert list(input_schema(op)["properties"]) == op.exposed_fields()
    reached: set[str] = set()
    for cli in op.cli:
        fields = set(cli_fields(op, cli))
        assert fields <= exposed | set(cli.fixed), (cli.path, fields - exposed)
        if cli.only is None:
            assert fields == exposed | set(cli.fixed), (cli.path, exposed - fields)
        reached |= fields
    assert exposed - MCP_ONLY.get(op.name, set()) <= reached, f"{op.name}: no CLI spelling reaches {exposed - reached}"


def test_names_are_unique_and_paths_do_not_shadow_each_other() -> None:
    tools = [op.tool for op in TOOL_OPS]
    assert len(tools) == len(set(tools))
    paths = [cli.path for op in operations.OPERATIONS for cli in op.cli]
    assert len(paths) == len(set(paths))
    for path in paths:  # `usage attach` must win over `usage` with a positional "attach"
        op, cli, used = operations.cli_match(path.split() + ["x"])  # type: ignore[misc]
        assert cli.path == path and used == len(path.split())


def _out_of_range(schema: dict[str, Any]) -> Any:
    for key, shift in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1)):
        if key in schema:
            value = schema[key] + shift
            return int(value) if "integer" in str(schema.get("type")) else value
    return None


BOUNDED = [(op, name, prop) for op in TOOL_OPS for name, prop in input_schema(op)["properties"].items()
           if _out_of_range(prop) is not None]


@pytest.mark.parametrize(("op", "name", "prop"), BOUNDED, ids=[f"{op.name}.{name}" for op, name, _ in BOUNDED])
async def test_out_of_range_numbers_are_refused_with_the_same_text_on_both_surfaces(
    op: operations.Operation, name: str, prop: dict[str, Any], project: Path, cli
) -> None:
    value = _out_of_range(prop)
    service = Service(project, actor="test")
    session_id = service.start(level="prod", number=5).state.session_id
    spelled = next(c for c in op.cli if name in cli_fields(op, c))
    before = tree_snapshot(project / ".claude")
    arguments = {name: value, **({"session_id": session_id} if "session_id" in op.exposed_fields() else {})}
    arguments.update(spelled.fixed)  # e.g. the action of `task add`
    for required in input_schema(op).get("required", []):
        arguments.setdefault(required, {"level": "dev", "stage": "01_deep_research", "error": "x",
                                        "reason": "r", "action": "skip", "entry": 1, "items": ["x"],
                                        "claude_session": "abc"}[required])
    async with Client(build_server(project, backups=False)) as client:
        result = await client.call_tool(op.tool, arguments)  # type: ignore[arg-type]
    assert result.is_error, result
    message = result.content[0].text
    assert message.startswith(f"{name}: ") and "\n" not in message
    assert tree_snapshot(project / ".claude") == before
    reached = cli_fields(op, spelled)
    words = [*spelled.path.split()]
    for word in words_of(spelled):  # positional words in their order
        if word.field in arguments:
            value = arguments[word.field]
            words += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for field, how in reached.items():  # then the flags
        if field in arguments and how.startswith("--"):
            words.append(f"{how}={arguments[field]}")
    outcome = cli(*words)
    assert outcome.code == 2 and outcome.err.strip() == f"error: {message}", (words, outcome)
    assert tree_snapshot(project / ".claude") == before


TYPOS = [("session_end", "summmary"), ("session_update", "learning"), ("session_start", "topc"),
         ("stage_complete", "qualty"), ("record_cost", "cost"), ("stage_override", "why")]


@pytest.mark.parametrize(("tool", "typo"), TYPOS)
async def test_a_misspelled_argument_is_a_tool_error_naming_it_and_writes_nothing(
    tool: str, typo: str, project: Path
) -> None:
    service = Service(project, actor="test")
    session_id = service.start(level="prod", number=5).state.session_id
    op = operations.BY_TOOL[tool]
    arguments: dict[str, Any] = {typo: "x"}
    if "session_id" in op.exposed_fields():
        arguments["session_id"] = session_id
    if tool == "session_start":
        arguments["level"] = "dev"
    before = tree_snapshot(project / ".claude")
    async with Client(build_server(project, backups=False)) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    message = result.content[0].text
    assert f"unknown argument '{typo}' for {tool}" in message
    assert all(name in message for name in op.exposed_fields())  # the allowed names
    assert tree_snapshot(project / ".claude") == before


def test_the_internal_fields_are_not_reachable_from_outside(project: Path, cli) -> None:
    result = cli("start", "dev", "--claude-session", "abc")
    assert result.code == 2 and "unrecognized arguments: --claude-session" in result.err
