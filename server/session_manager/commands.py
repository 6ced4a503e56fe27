"""Commands that are surfaces of their own rather than service operations: the MCP server,
the Claude Code hooks, the status line, the Claude Code set-up and the foreground autosave.
Declared in the registry like the rest."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from session_manager.errors import InvalidInput
from session_manager.requests import HookRequest, NoArguments, ServeRequest, SetupRequest, WatchRequest

if TYPE_CHECKING:
    from session_manager.service import Service


def service(actor: str = "cli") -> Service:
    """The service for a command-line process: the project found from the current folder, the
    actor from SESSION_MANAGER_ACTOR (hooks and scripts name themselves)."""
    from session_manager.service import Service

    return Service(actor=os.environ.get("SESSION_MANAGER_ACTOR", actor))


def serve(request: ServeRequest) -> None:
    from session_manager.mcp_server import build_server

    build_server(backups=not request.no_backups).run("stdio")


def hook(request: HookRequest) -> None:
    from session_manager import hooks

    hooks.main(request.event)
    sys.stdout.flush()


def watch(request: WatchRequest) -> None:
    import signal
    import threading
    from datetime import datetime

    from session_manager import backup
    from session_manager.backup_views import backup_line
    svc = service()
    config = svc.config.backup
    if not config.enabled:
        raise InvalidInput("backups are disabled (backup.enabled = false in .claude/session-manager.toml)")
    interval = request.interval if request.interval is not None else config.interval_seconds
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def committed(result: Any) -> None:
        print(f"{datetime.now():%Y-%m-%d %H:%M:%S}  {backup_line(result)}", flush=True)

    def failed(error: Exception) -> None:
        print(f"backup failed: {error}", file=sys.stderr, flush=True)

    try:
        print(f"watching {svc.root}: a backup every {interval:g} s to branch {config.branch}"
              " when anything changed (Ctrl-C to stop)", flush=True)
        backup.run_loop(svc.root, interval, stop, on_commit=committed, on_error=failed)
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)


def setup(request: SetupRequest) -> None:
    from session_manager.claude_setup import setup as run_setup
    from session_manager.textsafe import terminal_safe

    outcome = run_setup(None, request.user, request.standalone, request.statusline)
    for line in outcome.lines():
        print(terminal_safe(line))


def statusline(request: NoArguments) -> None:
    from session_manager import statusline as status_line

    status_line.main()
