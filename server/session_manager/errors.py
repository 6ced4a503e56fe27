"""One exception family. Every message is written for the person who reads it.

Surfaces (CLI, MCP server, hooks) catch `SessionError` and show `str(error)`; anything
else escaping the service layer is our fault and is reported as an internal error.
"""

from __future__ import annotations

from typing import Any


class SessionError(Exception):
    """Root of every error the service layer raises on purpose."""

    exit_code = 2


class InvalidInput(SessionError):
    """The caller gave something we cannot accept (bad level, id, number, option)."""


class ConfigError(InvalidInput):
    """`.claude/session-manager.toml` is malformed; the message names the file and key."""


class NotFound(SessionError):
    """A session, stage, task or file that does not exist."""


class InvalidTransition(SessionError):
    """A state change the state machine does not allow from where things are."""


class CorruptState(SessionError):
    """A state file on disk cannot be read; the message says how to restore it."""


class LockTimeout(SessionError):
    """Another process held the session lock for too long."""

    exit_code = 1


class BackupError(SessionError):
    """git refused a backup operation; the message carries git's reason."""

    exit_code = 1


class TemplateError(SessionError):
    """A markdown template cannot be rendered; the message names the template, the line
    and what was wrong (an undefined variable, a syntax error, a sandbox refusal)."""


def describe_validation_error(error: Any, source: str | None = None) -> str:
    """One line for a pydantic ValidationError: `source: field.path: what is wrong`."""
    problems = error.errors()
    first = problems[0]
    location = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    message = message.removeprefix("Value error, ")
    more = len(problems) - 1
    parts = [part for part in (source, location) if part]
    text = ": ".join([*parts, message])
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


# -- the backup trail (helper-a) --
class BranchRefused(BackupError):
    """backup.branch names a branch that is not a session-manager trail (the user's branch,
    HEAD, a branch checked out in a worktree, or an invalid name); nothing was written."""

    exit_code = 2


class RestoreRefused(BackupError):
    """A restore that could write or delete outside the session folder (a symlinked folder or
    parent); nothing was changed."""

    exit_code = 2


class UnsafePath(CorruptState):
    """A symbolic link (or a non-regular file) where session-manager keeps its own files under
    `.claude/`: it is damage, reported in one line and never followed."""


class StorageFull(SessionError):
    """The disk (or a file-size limit) refused a write; nothing of the change was saved."""


class NonFiniteNumber(InvalidInput):
    """A NaN or an infinity was about to be saved; nothing was written."""
