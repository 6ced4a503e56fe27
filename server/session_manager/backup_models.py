"""What the backup operations take and give: triggers, request models and result models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from session_manager.requests import Request, SessionId

Reason = Literal[
    "interval", "session start", "stage complete", "before recovery", "resume", "session end",
    "manual", "before restore", "stop", "pre-compact",
]
# Triggers of the service that back up at once; the others ("update", "stage start", ...) wait
# for the interval loop. The coalesced ones skip the commit when the last backup is younger than
# `backup.coalesce_seconds`, so a burst of events makes a handful of commits, not hundreds
# ("stop" is the Claude Code hook after every reply; "pre-compact" and "session end" always commit).
IMMEDIATE = frozenset({"session start", "stage complete", "before recovery", "resume", "session end"})
COALESCED = frozenset({"session start", "stage complete", "stop"})


def check_revision(value: str) -> str:
    # A revision becomes a git argument: one starting with "-" would be read as an option.
    if value.startswith("-"):
        raise ValueError("must not start with '-' (give a revision from `backup history`)")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("must not contain spaces or control characters")
    return value


def check_remote(value: str) -> str:
    if value.startswith("-"):
        raise ValueError("must not start with '-' (give a remote name, URL or path)")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("must not contain control characters")
    return value


Revision = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_revision)]
Remote = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(check_remote)]


class BackupNowRequest(Request):
    reason: Reason = "manual"


class BackupHistoryRequest(Request):
    session_id: SessionId | None = None


class BackupRestoreRequest(Request):
    session_id: SessionId | None = None
    at: Revision | None = None
    project_files: Annotated[bool, Field(description="the config and templates instead (needs at)")] = False


class BackupPushRequest(Request):
    remote: Remote | None = None


class BackupResult(BaseModel):
    """One backup: the commit it made, or why it made none."""

    committed: bool
    reason: str
    branch: str
    revision: str | None = None  # the branch tip after the backup (None: no backup yet)
    short: str | None = None
    sessions: list[str] = Field(default_factory=list)  # sessions whose files changed
    paths_changed: int = 0
    skipped: str | None = None  # why no commit was made
    repository: str | None = None  # the git directory holding the trail


class BackupEntry(BaseModel):
    revision: str
    short: str
    time: datetime
    reason: str
    subject: str


class BackupHistory(BaseModel):
    """The backups that changed one session's folder, newest first."""

    session_id: str
    branch: str
    folder: str
    entries: list[BackupEntry]


class RestoreResult(BaseModel):
    session_id: str
    revision: str
    short: str
    time: datetime
    restored: list[str]  # files written (relative to the session folder)
    deleted: list[str]  # tracked files removed because the backup did not have them (they stay in `backup_before`)
    moved: list[str] = Field(default_factory=list)  # untracked paths moved aside, relative to the session folder
    moved_to: str | None = None  # where they went (relative to the project root); moving them back undoes
    unchanged: int
    backup_before: BackupResult  # the state before the restore, so the restore can be undone
    undo: str | None = None  # the command that undoes this restore


class PushResult(BaseModel):
    remote: str  # credentials in a URL are redacted
    branch: str
    revision: str
    short: str
    status: Literal["new", "updated", "up to date"]
