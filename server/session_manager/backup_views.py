"""Terminal views of the backup operations (backup, history, restore, push)."""

from __future__ import annotations

from typing import Any

from session_manager.formatting import when


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
    rows = [(e.short, when(e.time, seconds=True), e.reason) for e in r.entries]
    head = f"{r.session_id}: {len(r.entries)} backup{'s' if len(r.entries) > 1 else ''} on {r.branch}, newest first\n\n"
    foot = f"\n\nRestore one: session-manager backup restore {r.session_id} --at REVISION"
    return head + table(("REVISION", "TIME", "REASON"), rows) + foot


def restore_view(r: Any) -> str:
    lines = [
        f"restored {r.session_id} to backup {r.short} of {when(r.time, seconds=True)}:"
        f" {len(r.restored)} file(s) written, {len(r.deleted)} deleted, {r.unchanged} unchanged"
    ]
    lines += [f"  wrote   {name}" for name in r.restored]
    lines += [f"  deleted {name}" for name in r.deleted]
    moved = getattr(r, "moved", [])
    if moved:
        lines.append(f"  {len(moved)} path(s) the trail never tracked were moved aside, not deleted, to {r.moved_to}:")
        lines += [f"  moved   {name}" for name in moved]
    if r.undo:
        lines.append(f"the state before the restore is backup {r.backup_before.short}; undo with: {r.undo}")
    return "\n".join(lines)


def push_view(r: Any) -> str:
    return f"pushed {r.branch} ({r.short}) to {r.remote}: {r.status}"
