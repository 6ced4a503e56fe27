"""Where sessions live on disk, and the only code that writes them.

* The project root is found like git finds `.git` (`CLAUDE_PROJECT_DIR` wins).
* Every id is checked against `levels.SESSION_ID_PATTERN` before it becomes a path.
* Every write is atomic (temp file in the same folder, fsync, rename); a new session folder
  appears complete or not at all (built under a temp name, then renamed).
* Every read-modify-write runs in `Store.transaction`, which holds the session's lock
  (an `flock`, released by the kernel if the holder dies, so a killed process leaves no stale lock).
* `events.jsonl` is append-only: one JSON line per change.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from session_manager.errors import CorruptState, InvalidInput, LockTimeout, NotFound
from session_manager.levels import LEVELS, Level, check_session_id, level_of
from session_manager.model import SCHEMA_VERSION, Metadata, SessionState, _iso, dump_json, utcnow

STATE_FILE = "pipeline_status.json"
METADATA_FILE = "metadata.json"
EVENTS_FILE = "events.jsonl"
PRIVATE_DIR = ".session-manager"  # inside .claude/: locks, caches; never backed up
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def find_root(cwd: Path | None = None) -> Path:
    """The project root: `CLAUDE_PROJECT_DIR`, else the nearest folder upwards holding
    `.claude/` or `.git`, else the current folder."""
    env = os.environ.get("CLAUDE_PROJECT_DIR")
    if env:
        return Path(env).expanduser().resolve()
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".claude").is_dir() or (folder / ".git").exists():
            return folder
    return start


def atomic_write(path: Path, data: str | bytes, *, durable: bool = True, sync_dir: bool = True) -> None:
    """Write `data` to `path` so a reader sees the old or the new file, never a torn one.

    The rename alone gives that against a killed process; `durable` adds the fsyncs that give
    it against a power cut too. Caches we can rebuild pass `durable=False`; a caller writing
    several files into one folder passes `sync_dir=False` and syncs the folder once at the end."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write, so concurrent appenders never interleave."""
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a torn last line (crash mid-write) stays alone, never glued to ours
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Every complete line of a JSON-lines file, and how many lines were unreadable
    (a torn last line after a crash is skipped, not fatal)."""
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return records, 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            skipped += 1
    return records, skipped


class Transaction:
    """A locked read-modify-write of one session. Mutate `state`, call `event()` and
    `write()`; nothing reaches the disk unless the block ends without an exception."""

    def __init__(self, store: Store, session_id: str, actor: str, now: datetime) -> None:
        self.store = store
        self.session_id = session_id
        self.actor = actor
        self.now = now
        self.folder = store.session_dir(session_id)
        self.state = store.read_state(session_id)
        self.events: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}
        self.moves: list[tuple[str, str]] = []

    def event(self, name: str, **data: Any) -> None:
        self.events.append({"at": _iso(self.now), "actor": self.actor, "event": name, **data})

    def write(self, relative: str, text: str) -> None:
        self.files[relative] = text

    def move(self, relative: str, target: str) -> None:
        """Rename a file in the session folder at commit (e.g. archive a superseded record)."""
        self.moves.append((relative, target))

    def commit(self) -> None:
        self.state.last_updated = self.now
        checked = SessionState.model_validate(self.state.model_dump())
        for source, target in self.moves:
            destination = self.folder / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.folder / source, destination)
        folders = {self.folder}
        for relative, text in self.files.items():
            path = self.folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text, sync_dir=False)
            folders.add(path.parent)
        atomic_write(self.folder / STATE_FILE, dump_json(checked), sync_dir=False)
        for folder in folders:  # one folder sync per transaction, not one per file
            _fsync_dir(folder)
        journal = self.folder / EVENTS_FILE
        for record in self.events:
            append_line(journal, {"session_id": self.session_id, **record})


class Store:
    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.claude_dir = root / ".claude"
        self.lock_timeout = lock_timeout

    # -- layout -----------------------------------------------------------------
    def level_dir(self, level: Level) -> Path:
        return self.claude_dir / level.dirname / "sessions"

    def session_dir(self, session_id: str) -> Path:
        """The folder of an existing, valid session id; InvalidInput or NotFound otherwise."""
        folder = self.level_dir(level_of(session_id)) / session_id
        if not folder.is_dir():
            raise NotFound(f"no session {session_id!r} (run `session-manager list` to see sessions)")
        return folder

    def private_dir(self, *parts: str) -> Path:
        folder = self.claude_dir.joinpath(PRIVATE_DIR, *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def session_file(self, session_id: str, name: str) -> Path:
        """A file inside a session folder, confined to it (names from input are checked)."""
        folder = self.session_dir(session_id)
        parts = name.split("/")
        if len(parts) > 2 or not all(FILE_NAME_PATTERN.match(part) for part in parts):
            raise InvalidInput(f"invalid file name {name!r}: use a plain name such as context.md")
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise InvalidInput(f"file {name!r} is outside session {session_id}")
        if not path.is_file():
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
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            session_id = base if n == 1 else f"{base}_{n}"
            if (parent / session_id).exists():
                continue
            staging = parent / f".{session_id}.{secrets.token_hex(4)}.creating"
            staging.mkdir()
            try:
                for name, text in build(session_id).items():
                    atomic_write(staging / name, text, sync_dir=False)
                _fsync_dir(staging)
                os.rename(staging, parent / session_id)  # fails if another process won the id
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if (parent / session_id).exists():
                    continue
                raise
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(parent)
            # the lock file exists from birth, so a later refused operation changes nothing on disk
            self.lock_path(session_id).touch()
            return session_id
        raise InvalidInput(f"too many sessions named {base}; use a different --tag")

    # -- reading ------------------------------------------------------------------
    def _read_model(self, session_id: str, name: str, model: type[Any]) -> Any:
        path = self.session_dir(session_id) / name
        restore = f"session-manager backup restore {session_id}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CorruptState(f"{session_id}: {name} is missing; restore it with `{restore}`") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorruptState(
                f"{session_id}: {name} is not valid JSON ({exc.msg} at line {exc.lineno});"
                f" restore it with `{restore}`"
            ) from None
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

    def read_state(self, session_id: str) -> SessionState:
        return self._read_model(session_id, STATE_FILE, SessionState)

    def read_metadata(self, session_id: str) -> Metadata:
        return self._read_model(session_id, METADATA_FILE, Metadata)

    def read_events(self, session_id: str) -> tuple[list[dict[str, Any]], int]:
        return read_jsonl(self.session_dir(session_id) / EVENTS_FILE)

    # -- writing ------------------------------------------------------------------
    def lock_path(self, session_id: str) -> Path:
        check_session_id(session_id)
        return self.private_dir("locks") / f"{session_id}.lock"

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path(session_id)), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise LockTimeout(
                f"session {session_id} is busy: another process held its lock for"
                f" {self.lock_timeout:g} s; try again"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def transaction(self, session_id: str, actor: str, now: datetime | None = None) -> Iterator[Transaction]:
        self.session_dir(session_id)  # validate and check existence before taking the lock
        with self.lock(session_id):
            tx = Transaction(self, session_id, actor, now or utcnow())
            yield tx
            tx.commit()

    def append_event(self, session_id: str, actor: str, name: str, **data: Any) -> None:
        record = {"session_id": session_id, "at": _iso(utcnow()), "actor": actor, "event": name, **data}
        append_line(self.session_dir(session_id) / EVENTS_FILE, record)

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
                stamped.append((folder.stat().st_mtime_ns, session_id))
            except FileNotFoundError:
                continue
        stamped.sort(reverse=True)
        return [session_id for _, session_id in stamped]
