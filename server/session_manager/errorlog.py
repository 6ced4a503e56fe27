"""The internal-error log: where a traceback goes when session-manager itself fails.

One file per user, `$XDG_STATE_HOME/session-manager/errors.log` (else
`~/.local/state/session-manager/errors.log`), mode 0600 in a 0700 folder, opened with O_NOFOLLOW
(a planted symbolic link is refused: the traceback then goes to stderr only). Each entry has a
UTC timestamp and the command NAME only, never argument values: a token in a task title or a
remote URL must not land in a log file.
"""

from __future__ import annotations

import os
import stat
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

LOG_NAME = "errors.log"
MAX_BYTES = 1_000_000  # past this the log starts again (the newest failures are the useful ones)


def log_folder() -> Path:
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "session-manager"


def log_internal_error(command: str) -> Path:
    """Append the current exception's traceback under `command` (a command name such as
    `task add`; callers pass no argument values) and return the log's path. When the log cannot
    be written safely the entry goes to stderr and OSError is raised."""
    name = " ".join(command.split())[:80] or "(unknown)"
    entry = (f"--- {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} session-manager {name}\n"
             f"{traceback.format_exc()}\n").encode("utf-8", errors="replace")
    path = log_folder() / LOG_NAME
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_ISLNK(os.lstat(path.parent).st_mode):
            raise OSError(f"{path.parent} is a symbolic link")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o600)
    except OSError:
        sys.stderr.write(entry.decode("utf-8", errors="replace"))
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            sys.stderr.write(entry.decode("utf-8", errors="replace"))
            raise OSError(f"{path} is not a regular file of this user")
        os.fchmod(fd, 0o600)
        if info.st_size > MAX_BYTES:
            os.ftruncate(fd, 0)
        os.write(fd, entry)
    finally:
        os.close(fd)
    return path
