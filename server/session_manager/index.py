"""The session index: which sessions are active, which was touched last, which changed since the
last backup. Derived and rebuildable; the session files stay the source of truth.

It lives in `.claude/.session-manager/index.sqlite` (stdlib sqlite3, WAL mode, `synchronous=NORMAL`:
a write is a few page writes and no fsync; losing the last ones to a power cut only makes the
index stale, which is detected). Tables:

* `sessions(id, level, status, active, touched, pending)`: one row per session. `touched` is the
  time (ns) of its last change; `pending` is a token set while a change is in flight.
* `changes(seq, id)`: a row per change, consumed by the backup (`trail.py`): the sessions whose
  folder may differ from the last backup.
* `meta(key, value)`: the format version, a random `epoch` (new at every rebuild, so a backup
  knows its `changes` rows cover everything since its last run), and the mtime of every level's
  `sessions/` folder.

How a change reaches it (`Store.transaction`, under the session lock):
1. before the state file is renamed into place, one write marks the change: a `changes` row, the
   new `touched`, and, when the session's status may change, `pending` = a fresh token;
2. the rename (the commit point);
3. when a token was set, the row is settled with the new status (`pending` cleared).
A crash between 1 and 3 leaves a pending row: readers treat it as "maybe active", read that one
state file and settle the row (only if its token is still the same, so a live writer's own
settle always wins). Creating a session marks the row pending before the folder's rename.

Staleness is detected, never guessed: the index is rebuilt (once, under sqlite's write lock, so
racing readers wait for one rebuild) when the database is missing or unreadable, of another
format, or when a level's `sessions/` folder mtime differs from the recorded one (a folder added
or removed by hand, a restore of a deleted session, a crash mid-creation). Our own creations
re-record the mtime in step 3, so normal use never rebuilds. A state file edited by hand to
another status is not seen until a full `list` (which reads every state and corrects the rows).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from session_manager.levels import LEVELS, check_session_id

if TYPE_CHECKING:
    from session_manager.store import Store

INDEX_FILE = "index.sqlite"
FORMAT = "1"
ACTIVE = frozenset({"initialized", "in_progress", "failed"})
UNKNOWN = "?"  # a status we could not read (a damaged state): listed as a candidate, so readers name it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, level TEXT NOT NULL, status TEXT NOT NULL,
    active INTEGER NOT NULL, touched INTEGER NOT NULL, pending TEXT);
CREATE INDEX IF NOT EXISTS sessions_candidates ON sessions(active, pending);
CREATE TABLE IF NOT EXISTS changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);
"""

# counters a test (or a benchmark) reads: rebuilds done by this process
stats = {"rebuilds": 0}
_local = threading.local()


def is_active(status: str) -> bool:
    return status in ACTIVE or status == UNKNOWN


class Index:
    """The index of one project (opened lazily; one connection per thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.timeout = store.lock_timeout

    # -- connection ----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.store.private_file(INDEX_FILE)

    def _connect(self) -> sqlite3.Connection:
        key = f"{os.getpid()}:{self.store.claude_dir}"
        cache: dict[str, tuple[sqlite3.Connection, int]] = getattr(_local, "connections", None) or {}
        _local.connections = cache
        path = self.path
        cached = cache.get(key)
        if cached is not None:
            conn, inode = cached
            try:
                if os.stat(path).st_ino == inode:
                    return conn
            except OSError:
                pass
            conn.close()  # the file was removed or replaced (by hand, or by a writer that could not mark)
            del cache[key]
        conn = sqlite3.connect(path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            _discard(path)
            conn = sqlite3.connect(path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        cache[key] = (conn, os.stat(path).st_ino)
        return conn

    def _run(self, fn: Any) -> Any:
        """Run `fn(conn)` in a write transaction; a damaged database is thrown away and rebuilt."""
        for attempt in range(2):
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.DatabaseError:
                if attempt:
                    raise
                self.close()
                _discard(self.path)
        return None  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        cache = getattr(_local, "connections", None) or {}
        cached = cache.pop(f"{os.getpid()}:{self.store.claude_dir}", None)
        if cached is not None:
            cached[0].close()

    # -- staleness -----------------------------------------------------------------------
    def _dir_marks(self) -> str:
        marks = {}
        for level in LEVELS.values():
            try:
                marks[level.dirname] = os.stat(self.store.level_dir(level)).st_mtime_ns
            except OSError:
                marks[level.dirname] = 0
        return json.dumps(marks, sort_keys=True)

    def _fresh(self, conn: sqlite3.Connection) -> bool:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return meta.get("format") == FORMAT and meta.get("dirs") == self._dir_marks()

    def ensure(self) -> sqlite3.Connection:
        """The connection, the index rebuilt first when it is missing or stale."""
        conn = self._connect()
        try:
            fresh = self._fresh(conn)
        except sqlite3.DatabaseError:
            fresh = False
        if not fresh:
            self._run(self._rebuild_if_stale)
            conn = self._connect()
        return conn

    def _rebuild_if_stale(self, conn: sqlite3.Connection) -> None:
        if self._fresh(conn):  # another process rebuilt it while we waited for the lock
            return
        stats["rebuilds"] += 1
        rows = []
        for session_id in self.store.iter_ids():
            folder = self.store.level_dir(LEVELS_BY_PREFIX[session_id.split("_", 1)[0]]) / session_id
            try:
                touched = os.lstat(folder).st_mtime_ns
            except OSError:
                continue
            status = _peek_status(folder / "pipeline_status.json")
            rows.append((session_id, LEVELS_BY_PREFIX[session_id.split("_", 1)[0]].name, status,
                         int(is_active(status)), touched, None))
        conn.execute("DELETE FROM sessions")
        conn.executemany("INSERT INTO sessions VALUES (?,?,?,?,?,?)", rows)
        conn.execute("DELETE FROM changes")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(8),))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('dirs', ?)", (self._dir_marks(),))

    def rebuild(self) -> None:
        """Rebuild now, whatever the marks say."""
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM meta WHERE key = 'format'")
            self._rebuild_if_stale(conn)

        self._run(run)

    # -- writing (under the session lock) --------------------------------------------------
    def mark(self, session_id: str, level: str, may_change_status: bool, creating: bool = False) -> str | None:
        """Step 1 of a change: a `changes` row, the new `touched`, and a pending token when the
        status may change (returned, to settle with). Never raises: the index is derived.
        `creating`: before a new session's folder appears, a stale index is rebuilt first (the
        settle then records the folders' new mtimes, which would otherwise hide the staleness)."""
        token = secrets.token_hex(6) if may_change_status else None

        def run(conn: sqlite3.Connection) -> None:
            if creating:
                self._ensure_fresh_locked(conn)
            now = time.time_ns()
            conn.execute("INSERT INTO changes(id) VALUES (?)", (session_id,))
            if token is None:
                conn.execute("UPDATE sessions SET touched = ? WHERE id = ?", (now, session_id))
            else:
                conn.execute("INSERT INTO sessions VALUES (?,?,?,1,?,?) ON CONFLICT(id) DO UPDATE SET"
                             " touched = excluded.touched, pending = excluded.pending",
                             (session_id, level, UNKNOWN, now, token))

        if self._quiet(run):
            return token
        if may_change_status:  # unmarked, the index would miss this change: throw it away (rebuilt once)
            self.discard()
        return None

    def discard(self) -> None:
        """Remove the database (readers reconnect and rebuild it: see `_connect`)."""
        self.close()
        try:
            _discard(self.path)
        except (OSError, Exception):  # noqa: BLE001 - nothing more to do for a derived file
            pass

    def settle(self, session_id: str, level: str, status: str, record_dirs: bool = False) -> None:
        """Step 3 (the writer, under the session lock): the row holds the committed status."""
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO sessions VALUES (?,?,?,?,?,NULL) ON CONFLICT(id) DO UPDATE SET"
                         " status = excluded.status, active = excluded.active, pending = NULL",
                         (session_id, level, status, int(is_active(status)), time.time_ns()))
            if record_dirs:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('dirs', ?)", (self._dir_marks(),))

        self._quiet(run)

    def observed(self, session_id: str, status: str, token: str | None) -> None:
        """A reader read the state of a row that was pending (`token`) or wrong: the row takes the
        status read, only while it still carries the same token (a live writer's settle wins)."""
        self._quiet(lambda conn: conn.execute(
            "UPDATE sessions SET status = ?, active = ?, pending = NULL WHERE id = ? AND pending IS ?",
            (status, int(is_active(status)), session_id, token)))

    def forget(self, session_id: str, token: str | None) -> None:
        """A row whose session folder does not exist (a creation that lost or crashed, a folder
        removed by hand), only while it carries the same token."""
        self._quiet(lambda conn: conn.execute("DELETE FROM sessions WHERE id = ? AND pending IS ?",
                                              (session_id, token)))

    def correct(self, statuses: Iterable[tuple[str, str, str]]) -> None:
        """Rows read from the state files by a full listing: (id, level, status)."""
        wanted = list(statuses)

        def run(conn: sqlite3.Connection) -> None:
            known = {row[0]: row[1] for row in conn.execute("SELECT id, status FROM sessions WHERE pending IS NULL")}
            for session_id, level, status in wanted:
                if known.get(session_id) not in (status, None):
                    conn.execute("UPDATE sessions SET status = ?, active = ? WHERE id = ? AND pending IS NULL",
                                 (status, int(is_active(status)), session_id))

        if wanted:
            self._quiet(run)

    def _ensure_fresh_locked(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: a stale index is rebuilt before a change is marked,
        so a mark never lands in an index that would then be thrown away."""
        if not self._fresh(conn):
            self._rebuild_if_stale(conn)

    def _quiet(self, fn: Any) -> bool:
        try:
            self._run(fn)
        except (sqlite3.Error, OSError):
            return False
        except Exception as exc:  # UnsafePath on the private folder: the index is derived, skip it
            from session_manager.errors import SessionError

            if isinstance(exc, SessionError):
                return False
            raise
        return True

    # -- reading -------------------------------------------------------------------------
    def candidates(self) -> list[tuple[str, str | None]]:
        """(id, pending token) of every session that is, or may be, active: the touched last first."""
        conn = self.ensure()
        rows = conn.execute("SELECT id, pending FROM sessions WHERE active = 1 OR pending IS NOT NULL"
                            " ORDER BY touched DESC, id DESC").fetchall()
        return [(row[0], row[1]) for row in rows]

    def recent(self, limit: int = 1) -> list[str]:
        """The sessions touched last, active or not."""
        conn = self.ensure()
        return [row[0] for row in conn.execute("SELECT id FROM sessions ORDER BY touched DESC, id DESC LIMIT ?",
                                               (limit,))]

    # -- the backup's view ----------------------------------------------------------------
    def changed_since_backup(self) -> tuple[str, int, list[str]]:
        """(epoch, highest seq, the sessions changed) for the backup to take."""
        conn = self.ensure()
        epoch_row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        ids = [row[0] for row in conn.execute("SELECT DISTINCT id FROM changes WHERE seq <= ?", (top,))]
        return (epoch_row[0] if epoch_row else ""), int(top), ids

    def consumed(self, upto: int) -> None:
        """The changes up to `upto` are in a backup."""
        self._quiet(lambda conn: conn.execute("DELETE FROM changes WHERE seq <= ?", (upto,)))


LEVELS_BY_PREFIX = {level.prefix: level for level in LEVELS.values()}


def _peek_status(path: Path) -> str:
    """The `status` field of a state file, read without the model; UNKNOWN when unreadable."""
    from session_manager.store import read_bytes

    try:
        data = json.loads(read_bytes(path))
    except Exception:  # noqa: BLE001 - any damage: the readers name it when they read the file
        return UNKNOWN
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) and status in ACTIVE | {"completed", "abandoned"} else UNKNOWN


def _discard(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def valid_id(session_id: str) -> bool:
    try:
        check_session_id(session_id)
    except Exception:  # noqa: BLE001
        return False
    return True
