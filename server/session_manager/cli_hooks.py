"""`session-manager hook EVENT`: Claude Code hooks (see hooks/hooks.json). Always exits 0."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_hook(args: argparse.Namespace) -> None:
    from session_manager import hooks

    hooks.main(args.event)
    sys.stdout.flush()


def register(sub: Any, command: Any) -> None:
    p = command("hook", cmd_hook, "Run a Claude Code hook with its JSON on stdin: session-start (context),"
                " stop, pre-compact, session-end (autosave). Never fails a conversation: exits 0.", json=False)
    p.add_argument("event", nargs="?", metavar="EVENT",
                   help="session-start, stop, pre-compact or session-end (default: hook_event_name from stdin)")
