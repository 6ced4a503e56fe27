"""`session-manager serve`: the MCP server over stdio (how Claude Code starts it, see .mcp.json)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_serve(args: argparse.Namespace) -> None:
    from session_manager.mcp_server import build_server

    build_server(backups=not args.no_backups).run("stdio")


def register(sub: Any, command: Any) -> None:
    p = command("serve", cmd_serve, "Run the MCP server over stdio (Claude Code starts it from .mcp.json).",
                json=False)
    p.add_argument("--no-backups", action="store_true", help="do not run the periodic backup loop")
