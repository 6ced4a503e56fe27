"""The git backup trail: session files committed to a side branch, never touching the user's work.

What is backed up: `.claude/level-*/sessions/**`, `.claude/memory/**`, `.claude/templates/**`, `.claude/usage/**` and
`.claude/session-manager.toml` (with credentials in URLs redacted); never
`.claude/.session-manager/` (locks, caches) nor the temp files the store writes (`.*.tmp`,
`.*.creating/`).

This module is the public face; the work is done in small modules, one concern each:
  - `git`: the one git runner (environment policy, the user's hooks off, redaction);
  - `repository`: where the trail lives and whether its branch is only ours;
  - `trail`: a backup (snapshot into the private index + commit), history, push;
  - `restore`: restore that cannot destroy (no links followed, untracked files moved aside);
  - `backup_loop`: the interval loop of the MCP server and `watch`;
  - `backup_models`: the request and result models.

Why plain `git` and no GitPython here: importing GitPython costs ~70 ms of the hooks' budget,
every step is one plumbing command GitPython would itself run as a subprocess, and its
pure-Python index would re-read and re-write 40,000 entries where `git add` uses its stat cache.
"""

from __future__ import annotations

from session_manager.backup_loop import run_loop
from session_manager.backup_models import (
    COALESCED,
    IMMEDIATE,
    BackupEntry,
    BackupHistory,
    BackupHistoryRequest,
    BackupNowRequest,
    BackupPushRequest,
    BackupRestoreRequest,
    BackupResult,
    PushResult,
    Reason,
    RestoreResult,
)
from session_manager.trail import Trail, commit_message, session_of

__all__ = [
    "COALESCED", "IMMEDIATE", "BackupEntry", "BackupHistory", "BackupHistoryRequest", "BackupNowRequest",
    "BackupPushRequest", "BackupRestoreRequest", "BackupResult", "PushResult", "Reason", "RestoreResult",
    "Trail", "commit_message", "run_loop", "session_of",
]
