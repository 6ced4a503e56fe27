"""The redo log: one durable write per change.

A change to a session (`store.Transaction`) writes several files: the state, a stage record, a
quality report, `tasks.json`, journal lines. Making each of them durable on its own (temp file,
fsync, rename, folder fsync) cost five fsyncs and an fdatasync a change, most of a stage
completion's time. Instead the whole change is first appended to the session's redo log as ONE
line (every file's new text, the moves, the journal lines) and fdatasync'ed: that write is the
commit point. The files are then replaced by atomic renames without fsync, so a reader sees the
old or the new file, never a torn one, and `checkpoint` (after the answer: the server's worker,
the end of a CLI command) fsyncs them and empties the log.

After a crash, a killed process or a power cut, the log holds every change since the last
checkpoint, whatever reached the disk of its files: the next access replays it (`Redo.replay`,
under the session lock) before it reads. A log is replayed only onto the state it was written
on: when the state file's revision lies outside the log's records (a session restored or put
back by hand since), the log is stale and is dropped instead of overwriting it.

The log lives in `.claude/.session-manager/redo/SESSION_ID.log` (private: never backed up).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from session_manager.errors import LockTimeout, NotFound, SessionError, UnsafePath

if TYPE_CHECKING:
    from session_manager.store import Store

REDO_DIR = "redo"
CHECKPOINT_AT = 1 << 20  # a log this large is checkpointed before the next change appends to it

_held = threading.local()  # the sessions whose lock this thread holds (the lock is not reentrant)


def holding(session_id: str) -> bool:
    return session_id in getattr(_held, "ids", ())


def hold(session_id: str, held: bool) -> None:
    ids: set[str] = getattr(_held, "ids", set())
    if held:
        ids.add(session_id)
    else:
        ids.discard(session_id)
    _held.ids = ids


@dataclass
class Record:
    """One committed change: the state's new `rev`, the revision it was built on (`base`), the
    files it wrote (path relative to the session folder -> text), the moves it made, and its
    journal lines."""

    rev: int
    base: int
    files: dict[str, str] = field(default_factory=dict)
    moves: list[tuple[str, str]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> dict[str, Any]:
        return {"rev": self.rev, "base": self.base, "files": self.files, "moves": [list(m) for m in self.moves],
                "journal": self.journal}

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Record | None:
        """A record of ours, or None for anything of another shape (never trusted to write)."""
        rev, base, files, moves, journal = (data.get(k) for k in ("rev", "base", "files", "moves", "journal"))
        if type(rev) is not int or type(base) is not int or not isinstance(files, dict):
            return None
        if not all(isinstance(k, str) and _relative_ok(k) and isinstance(v, str) for k, v in files.items()):
            return None
        if not isinstance(moves, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) and _relative_ok(p) for p in m)
                for m in moves):
            return None
        if not isinstance(journal, list) or not all(isinstance(r, dict) for r in journal):
            return None
        return cls(rev, base, files, [(m[0], m[1]) for m in moves], journal)


def _relative_ok(relative: str) -> bool:
    """A path inside the session folder (as the transaction writes them: a name, or folder/name)."""
    parts = relative.split("/")
    return 1 <= len(parts) <= 2 and all(p and p not in (".", "..") and not p.startswith(".") for p in parts)


class Redo:
    """The redo logs of one project's sessions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.folder = store.claude_dir / ".session-manager" / REDO_DIR
        self._made = False

    def path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}.log"

    # -- the commit point --------------------------------------------------------------
    def append(self, session_id: str, record: Record) -> tuple[Path, int, int]:
        """Append `record` with one write and fdatasync it (the change's one durable write).
        Returns the path and its size before and after, to cut it back if the change fails."""
        from session_manager.store import append_lines

        if not self._made:
            self.store.private_dir(REDO_DIR)
            self._made = True
        path = self.path(session_id)
        before, after = append_lines(path, [record.line()])
        return path, before, after

    def take_back(self, path: Path, before: int, after: int) -> None:
        """A change failed after its record: the log is cut back to `before` (removed when that
        leaves it empty: the folder holds only the logs in use)."""
        from session_manager.store import undo_append

        undo_append(path, before, after)
        if before == 0:
            try:
                if os.lstat(path).st_size == 0:
                    path.unlink()
            except OSError:
                pass

    # -- reading -------------------------------------------------------------------------
    def waiting(self, session_id: str) -> bool:
        """Whether the session's log holds anything (one lstat; a link is left to `read` to refuse)."""
        try:
            return os.lstat(self.path(session_id)).st_size > 0
        except OSError:
            return False

    def read(self, session_id: str) -> list[Record]:
        from session_manager.store import read_jsonl

        lines, _torn = read_jsonl(self.path(session_id))  # a torn last line: a change that never committed
        return [r for r in map(Record.parse, lines) if r is not None]

    def needs_replay(self, session_id: str) -> bool:
        """Whether the session's files may lag behind its log (a crash between the commit point
        and the state's rename): the state file does not hold the log's last revision."""
        records = self.read(session_id)
        if not records:
            return False
        current = _revision(self._state_path(session_id))
        return current is None or current < records[-1].rev

    def _state_path(self, session_id: str) -> Path:
        from session_manager.store import STATE_FILE

        return self.store.session_dir(session_id) / STATE_FILE

    # -- after a crash, or before a reader trusts the files --------------------------------
    def settle(self, session_id: str) -> None:
        """Before reading a session: replay its log when its files lag behind it. Without the
        lock (another process holds it too long, a read-only project), the files are read as they are."""
        if not self.waiting(session_id):
            return
        try:
            if self.needs_replay(session_id):
                self._checkpoint_under_lock(session_id, wait=True)
        except (LockTimeout, OSError):
            return

    def checkpoint(self, session_id: str, wait: bool = True) -> None:
        """Make the session's committed changes durable (fsync their files, the journal and the
        folders) and empty its log. A no-op (one lstat) when the log is empty. `wait=False`:
        a session locked by someone else is left to them (LockTimeout at once)."""
        if self.waiting(session_id):
            self._checkpoint_under_lock(session_id, wait)

    def _checkpoint_under_lock(self, session_id: str, wait: bool) -> None:
        """`checkpoint_locked` under the session's lock, taken unless this thread holds it already."""
        if holding(session_id):
            self.checkpoint_locked(session_id)
            return
        with self.store.lock(session_id, timeout=None if wait else 0):
            self.checkpoint_locked(session_id)

    def trim(self, session_id: str) -> None:
        """Under the lock, before a change: a log grown past CHECKPOINT_AT (its checkpoints keep
        failing, or never ran) is checkpointed first, so it stays small."""
        try:
            large = os.lstat(self.path(session_id)).st_size > CHECKPOINT_AT
        except OSError:
            return
        if large:
            self.checkpoint_locked(session_id)

    def checkpoint_all(self) -> None:
        """Every session's pending log (after a crash, before a backup takes the files). A session
        whose lock is held is skipped: its holder checkpoints it (and a backup holding its own
        lock must never wait for a session's, see restore)."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            session_id = name.removesuffix(".log")
            if name.endswith(".log") and self.waiting(session_id):
                try:
                    self.checkpoint(session_id, wait=False)
                except (SessionError, OSError):
                    continue

    def checkpoint_locked(self, session_id: str) -> None:
        """Under the session's lock: replay what the files lack, make it durable, remove the log."""
        from session_manager.store import guard

        path = self.path(session_id)
        records = self.read(session_id)
        try:
            folder = self.store.session_dir(session_id)
        except NotFound:  # the session folder is gone (removed by hand): nothing to make durable
            path.unlink(missing_ok=True)
            return
        if records:
            current = _revision(self._state_path(session_id))
            if current is None or records[0].base <= current <= records[-1].rev:
                self._replay(session_id, folder, records, current)
                self._sync(folder, records)
            # else: the state was replaced since (a restore, a hand edit): the log is stale
        guard(path)  # never unlink through a linked folder
        path.unlink(missing_ok=True)  # removed, not emptied: the folder holds only the logs in use

    def _replay(self, session_id: str, folder: Path, records: list[Record], current: int | None) -> None:
        """Bring the files to the log's last change. Records the state already holds get their
        files checked (a power cut may lose a file written without fsync); later records are
        applied in order: moves whose target is not there yet, then files."""
        from session_manager.store import STATE_FILE, atomic_write, guard, status_of

        applied = [r for r in records if current is not None and r.rev <= current]
        missing = [r for r in records if current is None or r.rev > current]
        later = {p for r in missing for p in r.files} | {m[0] for r in missing for m in r.moves}
        final: dict[str, str] = {}
        for record in applied:
            final.update(record.files)
        for relative, text in final.items():
            if relative not in later:
                _write_if_different(folder / relative, text)
        for record in missing:
            for source, target in record.moves:
                destination = folder / target
                guard(destination.parent)
                if not os.path.lexists(destination) and os.path.lexists(folder / source):
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(folder / source, destination)
            state_text = record.files.get(STATE_FILE)
            for relative, text in record.files.items():
                if relative != STATE_FILE:
                    _write_if_different(folder / relative, text)
            if state_text is not None:
                atomic_write(folder / STATE_FILE, state_text, durable=False)
        self._ensure_journal(folder, records)
        if missing:  # the status may have changed: the index settles from the replayed state
            from session_manager.levels import level_of

            level = level_of(session_id).name
            self.store.index.mark(session_id, level, True)
            self.store.index.settle(session_id, level, status_of(records[-1].files.get(STATE_FILE)))

    @staticmethod
    def _ensure_journal(folder: Path, records: list[Record]) -> None:
        """Every record's journal lines are in `events.jsonl`, once: lines lost at the end are
        cut from the first missing revision on and written again in order."""
        from session_manager.store import EVENTS_FILE, append_lines, cut_unapplied_tail

        journal = folder / EVENTS_FILE
        present = _journal_revisions(journal)
        missing = [r for r in records if r.journal and r.rev not in present]
        if not missing:
            return
        cut_unapplied_tail(journal, missing[0].rev - 1)
        present = _journal_revisions(journal)
        lines = [line for r in records if r.rev >= missing[0].rev and r.rev not in present for line in r.journal]
        if lines:
            append_lines(journal, lines)

    @staticmethod
    def _sync(folder: Path, records: list[Record]) -> None:
        from session_manager.store import EVENTS_FILE, fsync_dir, fsync_file

        paths = {folder / EVENTS_FILE}
        for record in records:
            paths.update(folder / relative for relative in record.files)
            paths.update(folder / target for _, target in record.moves)
        for path in sorted(paths):
            fsync_file(path)
        for parent in sorted({path.parent for path in paths}):
            fsync_dir(parent)


def _write_if_different(path: Path, text: str) -> None:
    from session_manager.store import atomic_write, read_bytes

    payload = text.encode("utf-8")
    try:
        if read_bytes(path) == payload:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, payload, durable=False)


def _revision(path: Path) -> int | None:
    """The revision a state file holds, read raw (None when it is missing, torn or not ours)."""
    from session_manager.store import read_bytes

    try:
        data = json.loads(read_bytes(path))
    except (OSError, ValueError, RecursionError, UnsafePath):
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if type(revision) is int else None


def _journal_revisions(journal: Path) -> set[int]:
    """The `rev` of the journal lines in its last 64 KB (a checkpoint looks no further back:
    a log holds the changes since the last one)."""
    from session_manager.store import JOURNAL_TAIL, open_fd

    try:
        fd = open_fd(journal, os.O_RDONLY)
    except FileNotFoundError:
        return set()
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, min(size, JOURNAL_TAIL), max(0, size - JOURNAL_TAIL))
    finally:
        os.close(fd)
    found: set[int] = set()
    for line in tail.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        rev = record.get("rev") if isinstance(record, dict) else None
        if type(rev) is int:
            found.add(rev)
    return found
