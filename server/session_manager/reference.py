"""Reference documents generated from the operation registry, so they never drift:
`docs/cli.md` (every command's `--help`), `docs/tools.md` (every MCP tool's schema) and the slash
command `commands/session-manager.md` (its verb table maps the CLI spellings to the tools).

    python -m session_manager.reference            # write them
    python -m session_manager.reference --check    # exit 1 naming the files that drifted (CI)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from session_manager import operations
from session_manager.operations import Cli, Effect, Operation

REPO = Path(__file__).resolve().parents[2]
GENERATED = "<!-- Generated from the operation registry by `python -m session_manager.reference`; do not edit. -->"
EFFECTS = {Effect.read: "read-only", Effect.write: "writes", Effect.destroy: "destructive (undoable)"}


def cli_reference() -> str:
    from session_manager.cli import PROG, build_parser, top_help

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width
    parts = ["# CLI reference", "", GENERATED, "", "```", top_help(), "```", ""]
    for path, (op, cli) in operations.BY_PATH.items():
        text = build_parser(op, cli).format_help().rstrip()
        parts += [f"## `{PROG} {path}`", "", "```", text, "```", ""]
    return "\n".join(parts)


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "")
    kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"]
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if kinds == ["array"]:
        return f"{_type_of(schema.get('items', {}))}[]"
    if kinds == ["object"]:
        values = next(iter(schema.get("patternProperties", {}).values()), schema.get("additionalProperties", {}))
        return f"{{name: {_type_of(values) if isinstance(values, dict) else 'any'}}}"
    return "/".join(kinds) or "any"


def _limits(schema: dict[str, Any]) -> str:
    values = schema
    if "patternProperties" in schema:
        values = next(iter(schema["patternProperties"].values()))
    names = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "maxLength": "max length",
             "maxItems": "max items", "pattern": "pattern"}
    found = [f"{label} `{values[key]}`" for key, label in names.items() if key in values]
    return ", ".join(found)


def tool_reference() -> str:
    from session_manager.mcp_server import input_schema

    parts = ["# MCP tool reference", "", GENERATED, "",
             "Every tool refuses an argument it does not know (`additionalProperties: false`) with a tool error"
             " naming the allowed ones, and writes nothing. A change that was saved is never an error: problems"
             " after it (a template, the backup) come back as `warnings` in the result.", ""]
    for op in operations.OPERATIONS:
        if not op.tool:
            continue
        schema = input_schema(op)
        required = set(schema.get("required", []))
        parts += [f"## `{op.tool}`", "", op.tool_summary or op.summary, "",
                  f"{EFFECTS[op.effect]}; CLI: " + ", ".join(f"`{cli.path}`" for cli in op.cli), ""]
        rows = [(name, _type_of(prop), "yes" if name in required else "", _limits(prop),
                 prop.get("description", "")) for name, prop in schema["properties"].items()]
        if rows:
            parts += ["| argument | type | required | limits | meaning |", "|---|---|---|---|---|"]
            parts += [f"| `{n}` | {t} | {r} | {lim} | {d} |" for n, t, r, lim, d in rows]
        else:
            parts.append("No arguments.")
        parts.append("")
    return "\n".join(parts)


def _call(op: Operation, cli: Cli) -> str:
    from session_manager.cli import words_of

    words = words_of(cli)
    args: list[str] = []
    for word in words:
        args.append(f"{word.field}=[...]" if word.kind == "list" else word.field)
    args += [f"{name}={json.dumps(value)}" for name, value in cli.fixed.items()]
    if cli.only is None:
        taken = {w.field for w in words} | set(cli.fixed)
        args += [name for name in op.exposed_fields() if name not in taken]
    return f"`{op.tool}({', '.join(args)})`"


PLUGIN_SERVER = "mcp__plugin_session-manager_sessions"  # the server as the plugin starts it
PROJECT_SERVER = "mcp__sessions"  # the server as `setup --standalone` registers it


def slash_command(servers: tuple[str, ...] = (PLUGIN_SERVER,)) -> str:
    """The slash command: the plugin's (`/session-manager:session-manager`) by default; `setup`
    writes it with both servers for the short `/session-manager` of a project or user."""
    from session_manager.cli import words_of

    rows, verbs = [], []
    for op in operations.OPERATIONS:
        if not op.tool:
            continue
        for cli in op.cli:
            usage = " ".join([cli.path, *(w.metavar for w in words_of(cli))])
            rows.append(f"| `{usage}` | {_call(op, cli)} |")
            head = cli.path.split()[0]
            if head not in verbs:
                verbs.append(head)
    hint = " | ".join(verbs)
    return f"""---
description: Track work sessions (start, status, stages, tasks, costs, reports, backups) with the session-manager tools
argument-hint: {hint}
allowed-tools: {", ".join(servers)}
---
{GENERATED}

# Session manager

Carry out the session-manager command `$ARGUMENTS` with the `sessions` MCP tools
({" or ".join(f"`{server}__*`" for server in servers)}). The verb is `$0`; the words after it are its arguments.
Call the tools; never edit files under `.claude/level-*` by hand.

Session ids look like `ep_005_20261121_0930`, `dev_20261121_0930`, `plan_...`, `code_...`. When a verb
needs a session and no id is given, leave `session_id` out: the tools use the active session touched
last; if several are active and it is unclear which is meant, call `session_status` and ask. Levels:
`dev` (1), `prod` (2, needs an episode number), `platform` (3), `coded` (4). Words in capitals are the
user's; `[...]` is optional. Options the user gives as `--name value` map to the argument of that name.

| Command | What to call |
|---|---|
{chr(10).join(rows)}

After a call, report the result briefly: the decision of a stage call (advanced, retry with the feedback,
routed back, escalated, completed), what changed, and any `warnings` or alerts. Restore a backup only when
the user asked for it. With no verb, or an unknown one, call `session_status` and show this list of
commands. The tool results already hold the numbers: keep the answer short.
"""


DOCUMENTS: dict[str, Callable[[], str]] = {
    "docs/cli.md": cli_reference,
    "docs/tools.md": tool_reference,
    "commands/session-manager.md": slash_command,
}


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    drifted = []
    for relative, build in DOCUMENTS.items():
        path = REPO / relative
        text = build().rstrip("\n") + "\n"
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            drifted.append(relative)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    if drifted:
        print(f"generated documents out of date: {', '.join(drifted)};"
              " run `python -m session_manager.reference` and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
