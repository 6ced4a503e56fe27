"""`session-manager backup [history|restore|push]` and `session-manager watch`."""

from __future__ import annotations

import argparse
from typing import Any

from session_manager.errors import InvalidInput


# -- views ----------------------------------------------------------------------------------
def backup_line(r: Any) -> str:
    if not r.committed:
        where = f" ({r.branch} at {r.short})" if r.short else ""
        return f"no backup made: {r.skipped}{where}"
    n = len(r.sessions)
    names = ", ".join(r.sessions[:5]) + (f", +{n - 5} more" if n > 5 else "")
    return f"backed up {n} session{'' if n == 1 else 's'} to {r.branch} at {r.short} ({r.reason})" + (
        f": {names}" if names else "")


def history_view(r: Any) -> str:
    from session_manager.views import table

    if not r.entries:
        return f"no backups of {r.session_id} on {r.branch} yet"
    rows = [(e.short, e.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"), e.reason) for e in r.entries]
    head = f"{r.session_id}: {len(r.entries)} backup{'s' if len(r.entries) > 1 else ''} on {r.branch}, newest first\n\n"
    foot = f"\n\nRestore one: session-manager backup restore {r.session_id} --at REVISION"
    return head + table(("REVISION", "TIME", "REASON"), rows) + foot


def restore_view(r: Any) -> str:
    lines = [
        f"restored {r.session_id} to backup {r.short} of {r.time.astimezone():%Y-%m-%d %H:%M:%S}:"
        f" {len(r.restored)} file(s) written, {len(r.deleted)} deleted, {r.unchanged} unchanged"
    ]
    lines += [f"  wrote   {name}" for name in r.restored]
    lines += [f"  deleted {name}" for name in r.deleted]
    if r.undo:
        lines.append(f"the state before the restore is backup {r.backup_before.short}; undo with: {r.undo}")
    return "\n".join(lines)


def push_view(r: Any) -> str:
    return f"pushed {r.branch} ({r.short}) to {r.remote}: {r.status}"


# -- handlers ---------------------------------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service

    _emit(args, service().backup_now(reason="manual"), backup_line)


def cmd_history(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service

    _emit(args, service().backup_history(session_id=args.id), history_view)


def cmd_restore(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service

    _emit(args, service().backup_restore(session_id=args.id, at=args.at), restore_view)


def cmd_push(args: argparse.Namespace) -> None:
    from session_manager.cli import _emit, service

    _emit(args, service().backup_push(remote=args.remote), push_view)


def cmd_watch(args: argparse.Namespace) -> None:
    import signal
    import sys
    import threading

    from session_manager import backup
    from session_manager.cli import service

    svc = service()
    config = svc.config.backup
    if not config.enabled:
        raise InvalidInput("backups are disabled (backup.enabled = false in .claude/session-manager.toml)")
    interval = args.interval if args.interval is not None else config.interval_seconds
    if not 0 < interval <= 86_400:
        raise InvalidInput(f"--interval must be between 0 and 86400 seconds, got {interval:g}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def committed(r: Any) -> None:
        from datetime import datetime

        print(f"{datetime.now():%Y-%m-%d %H:%M:%S}  {backup_line(r)}", flush=True)

    def failed(error: Exception) -> None:
        print(f"backup failed: {error}", file=sys.stderr, flush=True)

    try:
        print(f"watching {svc.root}: a backup every {interval:g} s to branch {config.branch}"
              " when anything changed (Ctrl-C to stop)", flush=True)
        backup.run_loop(svc.root, interval, stop, on_commit=committed, on_error=failed)
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)


def register(sub: Any, command: Any) -> None:
    from session_manager.cli import Parser

    p = command("backup", cmd_backup, "Back up the session files to the git branch session-backups now"
                " (history, restore, push: see `backup VERB --help`).")
    verbs = p.add_subparsers(dest="verb", metavar="[VERB]", parser_class=Parser)

    def verb(name: str, handler: Any, text: str, takes_id: bool = True) -> argparse.ArgumentParser:
        note = " When ID is left out, the most recent active session is meant." if takes_id else ""
        v = verbs.add_parser(name, help=text, description=text + note)
        v.set_defaults(handler=handler)
        v.add_argument("--json", action="store_true", help="print JSON instead of the terminal view")
        return v

    v = verb("history", cmd_history, "List the backups that changed a session, newest first.")
    v.add_argument("id", nargs="?", metavar="ID")
    v = verb("restore", cmd_restore, "Bring a session's files back as they were at a backup (default: the"
             " newest backup with a readable state). The present state is backed up first, so it can be undone.")
    v.add_argument("id", nargs="?", metavar="ID")
    v.add_argument("--at", metavar="REV", help="the backup to restore (a revision from `backup history`)")
    v = verb("push", cmd_push, "Push the backup branch to a remote, so a team shares one trail.", takes_id=False)
    v.add_argument("--remote", metavar="R", help="remote name, URL or path (default: backup.remote in the config)")

    text = ("Autosave in the foreground: a backup now and every S seconds when anything changed,"
            " one line per commit; Ctrl-C stops it.")
    p = command("watch", cmd_watch, text, json=False)
    p.add_argument("--interval", type=float, metavar="S", help="seconds between backups (default: backup.interval_seconds, 300)")
