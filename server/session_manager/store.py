"""Where sessions live on disk, and the only code that writes them.

* The project root is found like git finds `.git` (`CLAUDE_PROJECT_DIR` wins).
* Every id is checked against `levels.SESSION_ID_PATTERN` before it becomes a path.
* Every write is atomic (temp file in the same folder, fsync, rename); a new session folder
  appears complete or not at all (built under a temp name, then renamed).
* Every read-modify-write runs in `Store.transaction`, which holds the session's lock
  (an `flock`, released by the kernel if the holder dies, so a killed process leaves no stale lock).
* `events.jsonl` is append-only: one JSON line per change, written AHEAD of the state (see
  `Transaction.commit`), so a change is in both or in neither.
* Confinement: nothing under `.claude/` is ever reached through a symbolic link. Every path is
  checked from `.claude/` down (`guard`) and files are opened with `O_NOFOLLOW`; a link (or a
  FIFO, a device) where one of our files or folders should be is damage (`UnsafePath`), named
  in one line with the command that restores it, never followed. `.claude` itself may be a link
  (dotfile managers do that); everything below it is ours and must be real.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from session_manager.errors import (
    CorruptState,
    InvalidInput,
    LockTimeout,
    NotFound,
    StorageFull,
    UnsafePath,
)
from session_manager.events import Event
from session_manager.levels import LEVELS, Level, check_session_id, level_of, looks_like_session_id
from session_manager.model import SCHEMA_VERSION, Metadata, SessionState, _iso, dump_json, require_finite, utcnow

if TYPE_CHECKING:
    from session_manager.index import Index
    from session_manager.redo import Redo

STATE_FILE = "pipeline_status.json"
METADATA_FILE = "metadata.json"
EVENTS_FILE = "events.jsonl"
PRIVATE_DIR = ".session-manager"  # inside .claude/: locks, caches; never backed up
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def find_root(cwd: Path | None = None) -> Path:
    """The project root: `CLAUDE_PROJECT_DIR` (it must be an existing folder: a misspelt one
    would silently start a new project), else the nearest folder upwards holding `.claude/` or
    `.git`, else the current folder.

    The walk stops at `$HOME`: Claude Code keeps its own `~/.claude` for every user, so `~/.claude`
    alone never makes `$HOME` a project (only `~/.git` does). Below `$HOME`, a folder with no
    project marker up to `$HOME` is its own project, like `git init` makes the current folder a
    repository: that is where a user who runs `start` there expects the session to appear, and
    refusing would make the first session impossible outside git. Only `$HOME` itself (without
    `.git`) is refused, since sessions there would mix with Claude Code's own files."""
    env = os.environ.get("CLAUDE_PROJECT_DIR")
    if env:
        chosen = Path(env).expanduser()
        if not chosen.is_dir():
            raise InvalidInput(
                f"CLAUDE_PROJECT_DIR={env[:200]!r} is not an existing folder; fix it or unset it"
            )
        return chosen.resolve()
    start = (cwd or Path.cwd()).resolve()
    home = _home()
    for folder in (start, *start.parents):
        if folder == home:
            if (folder / ".git").exists():
                return folder
            if start == home:
                raise InvalidInput(
                    "the home folder is not a project (its .claude/ belongs to Claude Code): run"
                    " session-manager inside a project folder, or set CLAUDE_PROJECT_DIR"
                )
            return start
        if (folder / ".claude").is_dir() or (folder / ".git").exists():
            return folder
    return start


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        return None


# -- confinement ------------------------------------------------------------------------
FULL_DISK = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def shown(path: Path) -> str:
    """`path` from its `.claude/` on (what a user recognises), else as given."""
    parts = path.parts
    if ".claude" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index(".claude"):])
    return str(path)


def _fix_hint(path: Path) -> str:
    for part in path.parts:
        if looks_like_session_id(part):
            return f"remove it, then restore the session with `session-manager backup restore {part}`"
    return "remove it or replace it with a regular file"


def _link_error(path: Path) -> UnsafePath:
    prefix = next((f"{p}: " for p in path.parts if looks_like_session_id(p)), "")
    return UnsafePath(f"{prefix}{shown(path)} is a symbolic link; session-manager never follows links"
                      f" under .claude/; {_fix_hint(path)}")


def guard(path: Path) -> int | None:
    """Refuse `path` if it, or any folder between the nearest `.claude/` above it and it, is a
    symbolic link; its `lstat` mode when it exists, None when it does not (yet).
    A path outside `.claude/` has only its last part checked."""
    text = os.fspath(path)
    if text == ".claude" or text.endswith("/.claude"):
        return None  # `.claude` itself may be a link (dotfile managers); only what is below it is ours
    found = text.rfind("/.claude/")
    start = found + len("/.claude/") if found >= 0 else (len(".claude/") if text.startswith(".claude/") else -1)
    if start < 0:  # outside .claude/ (or .claude itself): the last part only
        ends = [len(text)]
    else:  # every folder below .claude/, then the path itself (string work: this runs on every save)
        ends = [i for i in range(start, len(text)) if text[i] == "/"] + [len(text)]
    mode: int | None = None
    for end in ends:
        try:
            mode = os.lstat(text[:end]).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(mode):
            raise _link_error(Path(text[:end]))
    return mode


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` confined: parents checked by `guard`, the file itself opened with O_NOFOLLOW
    (and O_NONBLOCK, so a planted FIFO cannot hang us) and required to be a regular file."""
    guard(path.parent)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{shown(path)} is not a regular file (a device, FIFO or folder); {_fix_hint(path)}")
    return fd


_MODES = {
    "rb": os.O_RDONLY,
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "r+b": os.O_RDWR,
}


def safe_open(path: Path, mode: str = "rb") -> Any:
    """`open(path, mode)` for our own files ("rb", "ab", "wb", "r+b"), confined like `open_fd`:
    a link is refused (UnsafePath), never followed or truncated through."""
    return os.fdopen(open_fd(path, _MODES[mode]), mode)


def read_bytes(path: Path) -> bytes:
    """The bytes of one of our files, confined (FileNotFoundError when it does not exist)."""
    with safe_open(path, "rb") as handle:
        data: bytes = handle.read()
    return data


def storage_error(exc: OSError, what: str) -> StorageFull:
    return StorageFull(f"nothing was saved: writing {what} failed ({exc.strerror or exc});"
                       " free disk space (or raise the file-size limit) and retry")


def atomic_write(path: Path, data: str | bytes, *, durable: bool = True, sync_dir: bool = True) -> None:
    """Write `data` to `path` so a reader sees the old or the new file, never a torn one.

    The rename alone gives that against a killed process; `durable` adds the fsyncs that give
    it against a power cut too. Caches we can rebuild pass `durable=False`; a caller writing
    several files into one folder passes `sync_dir=False` and syncs the folder once at the end."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    mode = guard(path)  # a link at the path or above it (under .claude/) is refused, not replaced
    if mode is not None and not stat.S_ISREG(mode):
        raise UnsafePath(f"{shown(path)} is not a regular file (a device, FIFO or folder); {_fix_hint(path)}")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable and sync_dir:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file written earlier without it (missing: nothing to do)."""
    try:
        fd = open_fd(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
            + "\n").encode()


def append_lines(path: Path, records: list[dict[str, Any]], *, durable: bool = True) -> tuple[int, int]:
    """Append JSON lines with one write and fdatasync them, so concurrent appenders never
    interleave and the lines are on disk when this returns (`durable=False`: a transaction's
    journal lines, made durable by its redo record). Returns the file's size before and
    after. On any failure (a full disk) the file is cut back to its old size: a half-written
    line never stays behind, and the error is raised."""
    payload = b"".join(_line(record) for record in records)
    fd = open_fd(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload  # a torn last line (crash mid-write) stays alone, never glued to ours
        try:
            written = 0
            while written < len(payload):
                written += os.write(fd, payload[written:])
            if durable:
                os.fdatasync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
        return size, size + len(payload)
    finally:
        os.close(fd)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (see `append_lines`)."""
    append_lines(path, [record])


JOURNAL_TAIL = 1 << 16  # how far back the next change looks for lines of a change that never landed


def cut_unapplied_tail(path: Path, revision: int) -> int:
    """Cut the lines at the end of a journal that were written ahead of a state that never
    landed (their `rev` is above the state's `revision`: the process died between the journal
    append and the state replace). The next change runs this under the session lock before it
    appends, so a later change that reuses that revision is never confused with them. Returns
    the number of bytes cut."""
    try:
        fd = open_fd(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - JOURNAL_TAIL)
        tail = os.pread(fd, size - start, start)
        if not tail.endswith(b"\n"):
            return 0  # a torn last line: the reader counts it as unreadable
        keep = len(tail)
        while keep:
            line_start = tail.rfind(b"\n", 0, keep - 1) + 1
            if line_start == 0 and start > 0:
                break  # the line begins before what was read: leave it
            try:
                record = json.loads(tail[line_start:keep - 1])
            except ValueError:
                break
            rev = record.get("rev") if isinstance(record, dict) else None
            if not isinstance(rev, int) or rev <= revision:
                break
            keep = line_start
        if keep < len(tail):
            os.ftruncate(fd, start + keep)
            os.fdatasync(fd)
        return len(tail) - keep
    finally:
        os.close(fd)


def undo_append(path: Path, before: int, after: int) -> None:
    """Cut a journal back to `before`, if nobody appended after our lines (best effort)."""
    try:
        fd = open_fd(path, os.O_RDWR)
    except (OSError, UnsafePath):
        return
    try:
        if os.fstat(fd).st_size == after:
            os.ftruncate(fd, before)
            os.fdatasync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Every complete line of a JSON-lines file that holds a JSON object, and how many lines were
    skipped: unreadable (a torn last line after a crash, bad bytes, nesting too deep) or of the
    wrong shape (valid JSON that is not an object, e.g. `[1,2]`)."""
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return records, 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


class ParsedStates:
    """The states a long-running process (the MCP server) committed last, as parsed objects: the
    next change of the same session takes its state from here instead of reading and validating
    the file again, while the file is still the one this process wrote (same device, inode,
    size, modification and change times: every commit renames a new file in, so a write by any
    other process or by hand shows). An entry is taken out when a change starts and put back
    only when it commits, so a failed change never leaves a half-changed object behind."""

    LIMIT = 64

    def __init__(self) -> None:
        self._items: dict[str, tuple[tuple[int, ...], SessionState]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _identity(path: Path) -> tuple[int, ...] | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if stat.S_ISREG(st.st_mode) else None

    def take(self, path: Path) -> SessionState | None:
        with self._lock:
            item = self._items.pop(str(path), None)
        if item is None or self._identity(path) != item[0]:
            return None
        return item[1]

    def keep(self, path: Path, state: SessionState) -> None:
        identity = self._identity(path)
        if identity is None:
            return
        with self._lock:
            self._items[str(path)] = (identity, state)
            while len(self._items) > self.LIMIT:
                self._items.pop(next(iter(self._items)))


PARSED = ParsedStates()


class Transaction:
    """A locked read-modify-write of one session. Mutate `state`, call `event()` and
    `write()`; nothing reaches the disk unless the block ends without an exception."""

    def __init__(self, store: Store, session_id: str, actor: str, now: datetime) -> None:
        self.store = store
        self.session_id = session_id
        self.actor = actor
        self.now = now
        self.folder = store.session_dir(session_id)
        kept = PARSED.take(self.folder / STATE_FILE) if store.keeps_states else None
        self.state = kept if kept is not None else store.read_state(session_id)
        self.initial_status = self.state.status
        self.events: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}
        self.moves: list[tuple[str, str]] = []

    def event(self, name: Event, **data: Any) -> None:
        self.events.append({"at": _iso(self.now), "actor": self.actor, "event": name, **data})

    def write(self, relative: str, text: str) -> None:
        self.files[relative] = text

    def move(self, relative: str, target: str) -> None:
        """Rename a file in the session folder at commit (e.g. archive a superseded record)."""
        self.moves.append((relative, target))

    def commit(self) -> None:
        """The one commit point of a change, write-ahead, with one durable write (see redo.py):

        1. the new state is validated and serialised (a NaN or an infinity is refused here,
           before anything is written);
        2. the whole change (every file's text, the moves, the journal lines) is appended to the
           session's redo log as one line and fdatasync'ed: that is the commit point;
        3. the journal lines (each carrying `"rev"`, the state's new `revision`) are appended to
           `events.jsonl`, then the session files and last `pipeline_status.json` are replaced by
           atomic renames, without fsync: `redo.checkpoint` makes them durable after the answer.

        If any step fails, everything is put back: the files replaced get their old version, the
        journal and the redo log are cut back to their old size, so the old state and the old
        journal stay as they were; a full disk is reported as `StorageFull` (exit 2: nothing was
        saved). Should the process die (or the power fail) after step 2, the next access replays
        the log before it reads (`Redo.settle`); journal lines whose `rev` is above the state's
        `revision` are left out by `Store.read_journal` until then."""
        from session_manager.redo import Record

        base = self.state.revision
        self.state.last_updated = self.now
        self.state.revision += 1
        text = dump_json(self.state)  # a NaN or an infinity is refused here, by name, before anything is written
        checked = SessionState.model_validate_json(text)  # what is written is what a read accepts
        journal = self.folder / EVENTS_FILE
        records = [{"session_id": self.session_id, **record, "rev": checked.revision} for record in self.events]
        redo = self.store.redo
        level = checked.level
        token: str | None = None
        logged: tuple[Path, int, int] | None = None
        mark: tuple[int, int] | None = None

        undo: list[tuple[Path, Path | None]] = []  # the session files replaced, and their old version
        try:
            logged = redo.append(self.session_id, Record(checked.revision, base, {**self.files, STATE_FILE: text},
                                                         list(self.moves), records))
            if records:
                cut_unapplied_tail(journal, base)
                mark = append_lines(journal, records, durable=False)
            # the index learns of the change before it lands (see index.py): a crash from here on
            # leaves a pending row that readers settle from the state file
            token = self.store.index.mark(self.session_id, level, checked.status != self.initial_status)
            for source, target in self.moves:
                destination = self.folder / target
                guard(destination.parent)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.folder / source, destination)
            for relative, body in self.files.items():
                path = self.folder / relative
                guard(path.parent)
                path.parent.mkdir(parents=True, exist_ok=True)
                undo.append((path, _keep_old(path)))
                atomic_write(path, body, durable=False)
            atomic_write(self.folder / STATE_FILE, text, durable=False)
        except BaseException as exc:
            _put_back(undo)
            if mark is not None:
                undo_append(journal, *mark)
            if logged is not None:
                redo.take_back(*logged)
            if isinstance(exc, OSError) and exc.errno in FULL_DISK:
                raise storage_error(exc, f"session {self.session_id}") from None
            raise
        for path, kept in undo:
            if kept is not None and kept != path:
                kept.unlink(missing_ok=True)
        if token is not None:
            self.store.index.settle(self.session_id, level, str(checked.status))
        if self.store.keeps_states:
            PARSED.keep(self.folder / STATE_FILE, checked)


def _keep_old(path: Path) -> Path | None:
    """A hard link to the file about to be replaced (no copy, no space), so a failed commit can put
    it back; `path` itself when there was no file (a failed commit removes the new one); None when
    it cannot be kept (no hard links here): that file then stays as written. Runs under the
    session lock, so one name per file is enough."""
    if not os.path.lexists(path):
        return path
    kept = path.with_name(f".{path.name}.undo")
    try:
        kept.unlink(missing_ok=True)
        os.link(path, kept, follow_symlinks=False)
    except OSError:
        return None
    return kept


def _put_back(undo: list[tuple[Path, Path | None]]) -> None:
    """After a failed commit: each session file replaced goes back to its old version (a new one is
    removed), so the folder is as it was, byte for byte."""
    for path, kept in reversed(undo):
        try:
            if kept == path:
                path.unlink(missing_ok=True)
            elif kept is not None:
                os.replace(kept, path)
        except OSError:
            pass


class Journal:
    """A session's journal as read: the applied records, the lines skipped as unreadable or
    of the wrong shape, and the lines written ahead for a change whose state never landed."""

    def __init__(self, records: list[dict[str, Any]], unreadable: int, unapplied: int) -> None:
        self.records = records
        self.unreadable = unreadable
        self.unapplied = unapplied


class Store:
    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.claude_dir = root / ".claude"
        self.lock_timeout = lock_timeout
        self._index: Index | None = None
        self._redo: Redo | None = None
        # set by the MCP server: a committed change's checkpoint (its fsyncs) runs after the answer
        self.defer_checkpoint: Callable[[str], None] | None = None

    @property
    def keeps_states(self) -> bool:
        """A long-running server keeps the states it committed parsed (see ParsedStates)."""
        return self.defer_checkpoint is not None

    @property
    def index(self) -> Index:
        """The derived index of sessions (active ones, touched last, changed since the last backup)."""
        if self._index is None:
            from session_manager.index import Index

            self._index = Index(self)
        self._index.timeout = self.lock_timeout
        return self._index

    @property
    def redo(self) -> Redo:
        """The sessions' redo logs: a change's one durable write (see redo.py)."""
        if self._redo is None:
            from session_manager.redo import Redo

            self._redo = Redo(self)
        return self._redo

    # -- layout -----------------------------------------------------------------
    def level_dir(self, level: Level) -> Path:
        return self.claude_dir / level.dirname / "sessions"

    def session_dir(self, session_id: str) -> Path:
        """The folder of an existing, valid session id; InvalidInput or NotFound otherwise."""
        folder = self.level_dir(level_of(session_id)) / session_id
        mode = guard(folder)  # a linked level or sessions folder, or session folder, is refused
        if mode is None:
            raise NotFound(f"no session {session_id!r} (run `session-manager list` to see sessions)")
        if not stat.S_ISDIR(mode):
            raise CorruptState(f"{session_id}: {shown(folder)} is a file, not a session folder; move it away,"
                               f" then restore the session with `session-manager backup restore {session_id}`")
        return folder

    def guard_level(self, level: Level) -> None:
        """Refuse a linked level or sessions folder (UnsafePath); FileNotFoundError when absent."""
        if guard(self.level_dir(level)) is None:
            raise FileNotFoundError(str(self.level_dir(level)))

    def private_dir(self, *parts: str) -> Path:
        folder = self.claude_dir.joinpath(PRIVATE_DIR, *parts)
        mode = guard(folder)
        if mode is None or not stat.S_ISDIR(mode):
            folder.mkdir(parents=True, exist_ok=True)
            guard(folder)
        return folder

    def private_file(self, name: str) -> Path:
        """A file of ours in `.claude/.session-manager/` (a lock, a cache), refused when it is a
        link or not a regular file: filelock opens with O_TRUNC, which would truncate a link's target."""
        path = self.private_dir() / name
        mode = guard(path)
        if mode is not None and not stat.S_ISREG(mode):
            raise UnsafePath(f"{shown(path)} is not a regular file; remove it")
        return path

    def session_file(self, session_id: str, name: str) -> Path:
        """A file inside a session folder, confined to it (names from input are checked)."""
        folder = self.session_dir(session_id)
        parts = name.split("/")
        if len(parts) > 2 or not all(FILE_NAME_PATTERN.match(part) for part in parts):
            raise InvalidInput(f"invalid file name {name!r}: use a plain name such as context.md")
        path = folder / name
        mode = guard(path)
        if not path.resolve().is_relative_to(folder.resolve()):
            raise InvalidInput(f"file {name!r} is outside session {session_id}")
        if mode is None or not stat.S_ISREG(mode):
            raise NotFound(f"session {session_id} has no file {name!r}")
        return path

    # -- ids and creation ---------------------------------------------------------
    @staticmethod
    def base_id(level: Level, number: int | None, tag: str | None, now: datetime) -> str:
        local = now.astimezone()
        stamp = tag or local.strftime("%H%M")
        episode = f"_{number:03d}" if level.needs_number else ""
        session_id = f"{level.prefix}{episode}_{local:%Y%m%d}_{stamp}"
        check_session_id(session_id)
        return session_id

    def create_session(
        self, level: Level, number: int | None, tag: str | None, now: datetime, build: Any
    ) -> str:
        """Create the folder for a new session; `build(session_id)` returns {file name: text}.
        A clash in the same minute (or tag) gets `_2`, `_3`, ..."""
        base = self.base_id(level, number, tag, now)
        parent = self.level_dir(level)
        guard(parent)
        parent.mkdir(parents=True, exist_ok=True)
        guard(parent)
        for n in range(1, 1000):
            session_id = base if n == 1 else f"{base}_{n}"
            if os.path.lexists(parent / session_id):
                continue
            # the index hears of the new session before its folder appears (a pending row)
            token = self.index.mark(session_id, level.name, True, creating=True)
            staging = parent / f".{session_id}.{secrets.token_hex(4)}.creating"
            staging.mkdir()
            try:
                files = build(session_id)
                for name, text in files.items():
                    atomic_write(staging / name, text, sync_dir=False)
                fsync_dir(staging)
                os.rename(staging, parent / session_id)  # fails if another process won the id
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if token is not None:
                    self.index.forget(session_id, token)
                if (parent / session_id).exists():
                    continue
                raise
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                if token is not None:
                    self.index.forget(session_id, token)
                raise
            fsync_dir(parent)
            self.index.settle(session_id, level.name, status_of(files.get(STATE_FILE)), record_dirs=True)
            # the lock file exists from birth, so a later refused operation changes nothing on disk
            os.close(open_fd(self.lock_path(session_id), os.O_WRONLY | os.O_CREAT))
            return session_id
        raise InvalidInput(f"too many sessions named {base}; use a different --tag")

    # -- reading ------------------------------------------------------------------
    def _read_model(self, session_id: str, name: str, model: type[Any]) -> Any:
        path = self.session_dir(session_id) / name
        restore = f"session-manager backup restore {session_id}"
        try:
            raw = read_bytes(path)
        except FileNotFoundError:
            raise CorruptState(f"{session_id}: {name} is missing; restore it with `{restore}`") from None
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise CorruptState(f"{session_id}: {name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset"
                               f" {exc.start}); restore it with `{restore}`") from None
        except RecursionError:
            raise CorruptState(f"{session_id}: {name} is nested too deeply to be ours; restore it with"
                               f" `{restore}`") from None
        except ValueError as exc:
            where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise CorruptState(f"{session_id}: {name} is not valid JSON{where}; restore it with `{restore}`") from None
        if not isinstance(data, dict):
            raise CorruptState(f"{session_id}: {name} is not a JSON object; restore it with `{restore}`")
        version = data.get("schema_version", SCHEMA_VERSION)
        if model is SessionState and version != SCHEMA_VERSION:
            from session_manager.migrations import upgrade

            data = upgrade(data, session_id, restore)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            from session_manager.errors import describe_validation_error

            detail = describe_validation_error(exc)
            raise CorruptState(f"{session_id}: {name} is damaged ({detail}); restore it with `{restore}`") from None
        except RecursionError:
            raise CorruptState(f"{session_id}: {name} is nested too deeply to be ours; restore it with"
                               f" `{restore}`") from None

    def read_state(self, session_id: str) -> SessionState:
        self.redo.settle(session_id)  # after a crash, the changes its redo log holds are replayed first
        state: SessionState = self._read_model(session_id, STATE_FILE, SessionState)
        return state

    def read_metadata(self, session_id: str) -> Metadata:
        metadata: Metadata = self._read_model(session_id, METADATA_FILE, Metadata)
        return metadata

    def read_journal(self, session_id: str) -> Journal:
        """The journal without the lines written ahead for a change that never reached the
        state (their `rev` is above the state's `revision`; see `Transaction.commit`). With a
        damaged state file nothing can be told apart, so every readable line is returned."""
        records, unreadable = read_jsonl(self.session_dir(session_id) / EVENTS_FILE)
        try:
            revision = self.read_state(session_id).revision
        except CorruptState:
            return Journal(records, unreadable, 0)
        applied = [r for r in records if not (type(r.get("rev")) is int and r["rev"] > revision)]
        return Journal(applied, unreadable, len(records) - len(applied))

    def read_events(self, session_id: str) -> tuple[list[dict[str, Any]], int]:
        """Applied journal records, and how many lines were left out (unreadable, of the wrong
        shape, or written ahead for a change that never reached the state)."""
        journal = self.read_journal(session_id)
        return journal.records, journal.unreadable + journal.unapplied

    # -- writing ------------------------------------------------------------------
    def lock_path(self, session_id: str) -> Path:
        check_session_id(session_id)
        self.private_dir("locks")
        return self.private_file(f"locks/{session_id}.lock")

    @contextmanager
    def lock(self, session_id: str, timeout: float | None = None) -> Iterator[None]:
        """The session's lock: an `flock` on its lock file (what filelock takes too, so older
        versions and other tools interoperate), released by the kernel if the holder dies.
        Taken directly: it is on every change's path. LockTimeout after `timeout` seconds
        (default: the config's lock timeout)."""
        import fcntl

        from session_manager.redo import hold

        limit = self.lock_timeout if timeout is None else timeout
        fd = open_fd(self.lock_path(session_id), os.O_RDWR | os.O_CREAT)
        try:
            deadline = time.monotonic() + limit
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"session {session_id} is busy: another process held its lock for"
                                          f" {limit:g} s; try again") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            hold(session_id, True)
            try:
                yield
            finally:
                hold(session_id, False)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def transaction(self, session_id: str, actor: str, now: datetime | None = None) -> Iterator[Transaction]:
        self.session_dir(session_id)  # validate and check existence before taking the lock
        with self.lock(session_id):
            self.redo.trim(session_id)
            tx = Transaction(self, session_id, actor, now or utcnow())
            yield tx
            tx.commit()
            if self.defer_checkpoint is not None:  # a long-running server: after the answer
                self.defer_checkpoint(session_id)
                return
            try:  # a command: durable before it exits, as every write used to be
                self.redo.checkpoint_locked(session_id)
            except OSError:
                pass  # committed (the redo record is on disk): the next access checkpoints again

    def append_event(self, session_id: str, actor: str, name: str, **data: Any) -> None:
        """A journal line outside a transaction (a failed backup, a restore). The index marks the
        session changed and pending: a restore may have changed its status, the next reader checks."""
        record = {"session_id": session_id, "at": _iso(utcnow()), "actor": actor, "event": name, **data}
        append_line(self.session_dir(session_id) / EVENTS_FILE, record)
        self.index.mark(session_id, level_of(session_id).name, True)

    def mark_changed(self, session_id: str) -> None:
        """Files of the session changed outside a transaction (rendered markdown): the next backup takes it."""
        self.index.mark(session_id, level_of(session_id).name, False)

    # -- the active sessions, from the index -------------------------------------------------
    def active_states(self) -> Iterator[tuple[str, SessionState | CorruptState]]:
        """The active sessions, the one touched last first, each with its state (or the
        CorruptState naming its damage: a damaged session may be active). Reads the index and
        the state files of its candidates only, never every session folder (see index.py);
        rows found wrong are corrected on the way. Without a usable index (a read-only
        project, say), every session is scanned as before."""
        import sqlite3

        if not self.claude_dir.is_dir():
            return
        try:
            rows = self.index.candidates()
        except (sqlite3.Error, OSError, UnsafePath):
            rows = None
        if rows is None:
            for session_id in self.ids_by_recent_change():
                try:
                    state = self.read_state(session_id)
                except CorruptState as exc:
                    yield session_id, exc
                    continue
                if state.active:
                    yield session_id, state
            return
        for session_id, token in rows:
            try:
                state = self.read_state(session_id)
            except NotFound:
                self.index.forget(session_id, token)
                continue
            except CorruptState as exc:
                yield session_id, exc
                continue
            if token is not None or not state.active:
                self.index.observed(session_id, str(state.status), token)
            if state.active:
                yield session_id, state

    # -- listing ------------------------------------------------------------------
    def iter_ids(self, levels: list[Level] | None = None, since: datetime | None = None) -> list[str]:
        """Session ids, newest first by the date in the id, without opening any file.
        `since` filters on the id's date with a day of slack (ids use local time)."""
        floor = (since - timedelta(days=1)).astimezone().strftime("%Y%m%d") if since else None
        found: list[tuple[str, str]] = []
        for level in levels or list(LEVELS.values()):
            try:
                names = os.listdir(self.level_dir(level))
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    match = check_session_id(name)
                except InvalidInput:
                    continue
                if floor and match["date"] < floor:
                    continue
                found.append((match["date"] + match["tag"] + (match["clash"] or "").zfill(4), name))
        found.sort(reverse=True)
        return [name for _, name in found]

    def ids_by_recent_change(self) -> list[str]:
        """Session ids, the most recently written first (by folder mtime: every atomic
        write renames into the folder, so its mtime moves)."""
        stamped = []
        for session_id in self.iter_ids():
            folder = self.level_dir(level_of(session_id)) / session_id
            try:
                stamped.append((os.lstat(folder).st_mtime_ns, session_id))
            except FileNotFoundError:
                continue
        stamped.sort(reverse=True)
        return [session_id for _, session_id in stamped]


def status_of(text: str | None) -> str:
    """The status in a state file's text we just wrote ("?" when there is none)."""
    try:
        status = json.loads(text or "").get("status")
    except (ValueError, AttributeError):
        return "?"
    return status if isinstance(status, str) else "?"
