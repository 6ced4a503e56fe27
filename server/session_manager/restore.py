"""Restore that cannot destroy: a session folder brought back as it was at a backup.

Order: refuse when the session folder or a parent up to `.claude/` is a symlink (nothing
changed); take the lock of the session; back up the present state (`before restore`, the undo);
then, through directory descriptors opened with `O_NOFOLLOW` (a link planted meanwhile is never
followed):
  - every file of the backup is written atomically (temp file + rename in the same folder);
  - a file the backup does not have is deleted only when the `before restore` backup holds it
    (a regular file the trail tracks, so the undo brings it back);
  - anything else in the way (hidden files such as `.env`, links, a nested repository, files the
    trail does not take) is moved to `.claude/.session-manager/restore-trash/<time>/<session>/`
    and listed as `moved`, so the undo plus moving those back gives the folder as it was.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from session_manager.backup_models import RestoreResult
from session_manager.errors import BackupError, InvalidInput, NotFound, RestoreRefused, SessionError
from session_manager.repository import Repo, open_repo
from session_manager.store import PRIVATE_DIR, STATE_FILE

if TYPE_CHECKING:
    from session_manager.trail import Trail

DEFAULT_SEARCH = 200  # how many backups of a session `restore` looks through for a readable state
TRASH = "restore-trash"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
Files = dict[str, tuple[str, str]]  # path inside the folder: (mode, blob id)


def restore(trail: Trail, session_id: str, at: str | None, actor: str) -> RestoreResult:
    """Bring a session's folder back as it was at backup `at` (default: the newest backup
    holding a readable state of it), after backing up the present state."""
    folder_rel = trail.folder(session_id)
    refuse_links(trail.root, folder_rel)
    repo = open_repo(trail.root, create=False)
    if repo is None or repo.tip(trail.ref) is None:
        raise NotFound("there are no backups yet (take one with `session-manager backup`)")
    commit, files = _target(trail, repo, session_id, folder_rel, at)
    with trail.store.lock(session_id):  # nothing changes the session between the safety backup and the restore
        refuse_links(trail.root, folder_rel)
        trail.store.redo.checkpoint_locked(session_id)  # a log left behind must never replay over the restore
        folder = trail.root / folder_rel
        existed = folder.is_dir() and any(folder.iterdir())
        before = trail.backup("before restore")
        tracked = files_at(repo, before.revision, folder_rel) if before.revision else {}
        blobs = read_blobs(repo, sorted({oid for _, oid in files.values()}))
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        trash = Path(".claude", PRIVATE_DIR, TRASH, stamp, session_id)
        writer = FolderWriter(trail.root, folder_rel, trash, tracked)
        try:
            restored, unchanged = writer.write(files, blobs)
            writer.remove_others(files)
        finally:
            writer.close()
        trail.store.append_event(session_id, actor, "session_restored", revision=commit,
                                 backup_before=before.revision, moved=writer.moved,
                                 moved_to=trash.as_posix() if writer.moved else None)
    when = datetime.fromisoformat(repo.out("show", "-s", "--format=%cI", commit))
    undo = None
    if existed and before.revision:
        undo = f"session-manager backup restore {session_id} --at {before.revision[:12]}"
    return RestoreResult(session_id=session_id, revision=commit, short=commit[:12], time=when,
                         restored=restored, deleted=sorted(writer.deleted), moved=sorted(writer.moved),
                         moved_to=trash.as_posix() if writer.moved else None, unchanged=unchanged,
                         backup_before=before, undo=undo)


def refuse_links(root: Path, folder_rel: str) -> None:
    """RestoreRefused when `.claude/` or any folder down to the session folder (or down to the
    restore trash) is a symlink."""
    for relative in (folder_rel, f".claude/{PRIVATE_DIR}/{TRASH}"):
        path = root
        for part in Path(relative).parts:
            path = path / part
            if path.is_symlink():
                raise RestoreRefused(
                    f"{path.relative_to(root)} is a symbolic link; restore refused (it would write and delete"
                    " where the link points). Replace the link with a real folder, then restore again"
                )


def _target(trail: Trail, repo: Repo, session_id: str, folder: str, at: str | None) -> tuple[str, Files]:
    see = f"see `session-manager backup history {session_id}`"
    if at is not None:
        commit = commit_on_trail(trail, repo, at, f"; {see}")
        files = files_at(repo, commit, folder)
        if not files:
            raise NotFound(f"backup {at} does not hold session {session_id}; {see}")
        return commit, files
    commits = repo.out("log", "--format=%H", trail.ref, "--", f":(top,literal){repo.prefix}{folder}").split()
    if not commits:
        raise NotFound(f"no backup holds session {session_id}")
    for commit in commits[:DEFAULT_SEARCH]:
        files = files_at(repo, commit, folder)
        if STATE_FILE in files and _readable_state(read_blobs(repo, [files[STATE_FILE][1]])[files[STATE_FILE][1]], session_id):
            return commit, files
    raise NotFound(f"no backup of {session_id} holds a readable {STATE_FILE}; pick one with --at ({see})")


def commit_on_trail(trail: Trail, repo: Repo, at: str, hint: str = "") -> str:
    """The commit `at` names, which must be on the backup branch; `hint` ends the refusal."""
    proc = repo.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{at}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise NotFound(f"no backup revision {at!r}{hint}")
    commit = proc.stdout.decode().strip()
    if repo.run("merge-base", "--is-ancestor", commit, trail.ref, check=False).returncode != 0:
        raise InvalidInput(f"revision {at!r} is not on the backup branch {trail.branch}{hint}")
    return commit


def files_at(repo: Repo, commit: str, folder: str) -> Files:
    """The regular files of `folder` at `commit`: a symlink in a backup is never written."""
    full = repo.prefix + folder
    raw = repo.run("ls-tree", "-r", "-z", "--full-tree", commit, "--", full).stdout
    files: Files = {}
    for record in raw.split(b"\0"):
        meta, _, name = record.partition(b"\t")
        if not name:
            continue
        mode, kind, oid = meta.decode().split()
        path = name.decode("utf-8", "surrogateescape")
        if kind == "blob" and mode in ("100644", "100755") and path.startswith(full + "/"):
            relative = path[len(full) + 1:]
            if not any(part in ("", ".", "..") for part in relative.split("/")):
                files[relative] = (mode, oid)
    return files


def read_blobs(repo: Repo, oids: list[str]) -> dict[str, bytes]:
    data = repo.run("cat-file", "--batch", input="".join(oid + "\n" for oid in oids).encode()).stdout
    blobs: dict[str, bytes] = {}
    position = 0
    for oid in oids:
        end = data.index(b"\n", position)
        header = data[position:end].split()
        if len(header) != 3:
            raise BackupError(f"backup object {oid} is missing from the repository")
        size = int(header[2])
        blobs[oid] = data[end + 1:end + 1 + size]
        position = end + 1 + size + 1
    return blobs


def _readable_state(raw: bytes, session_id: str) -> bool:
    from session_manager.migrations import upgrade
    from session_manager.model import SCHEMA_VERSION, SessionState

    try:
        data = json.loads(raw)
        if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            data = upgrade(data, session_id, "")
        SessionState.model_validate(data)
    except (ValueError, AttributeError, SessionError):
        return False
    return True


class FolderWriter:
    """Writes and removes inside one session folder through descriptors that never follow a link."""

    def __init__(self, root: Path, folder_rel: str, trash_rel: Path, tracked: Files) -> None:
        self.root = root
        self.trash_rel = trash_rel
        self.tracked = tracked
        self.deleted: list[str] = []
        self.moved: list[str] = []
        self.fds: dict[str, int] = {}  # folder-relative dir ("" = the session folder) -> fd
        fd = os.open(str(root), DIR_FLAGS)
        try:
            for part in Path(folder_rel).parts:
                child = _step(fd, part, create=True)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self.fds[""] = fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # -- writing --
    def write(self, files: Files, blobs: dict[str, bytes]) -> tuple[list[str], int]:
        written: list[str] = []
        unchanged = 0
        for relative, (mode, oid) in sorted(files.items()):
            parent, name = self._parent(relative)
            content, wanted = blobs[oid], 0o755 if mode == "100755" else 0o644
            if self._same(parent, name, content, wanted):
                unchanged += 1
                continue
            self._clear(parent, name, relative, keep_file=True)
            tmp = f".{name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, wanted, dir_fd=parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fchmod(handle.fileno(), wanted)
                    os.fsync(handle.fileno())
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)  # replaces the entry, never its target
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=parent)
                except OSError:
                    pass
                raise
            written.append(relative)
        for fd in self.fds.values():
            os.fsync(fd)
        return written, unchanged

    def _parent(self, relative: str) -> tuple[int, str]:
        """The descriptor of the file's folder (made as needed, never through a link) and its name."""
        *dirs, name = relative.split("/")
        key = ""
        for part in dirs:
            child = f"{key}/{part}" if key else part
            if child not in self.fds:
                if not _is_dir(self.fds[key], part):
                    self._clear(self.fds[key], part, child, keep_file=False)
                self.fds[child] = _step(self.fds[key], part, create=True)
            key = child
        return self.fds[key], name

    def _same(self, parent: int, name: str, content: bytes, mode: int) -> bool:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size != len(content) or handle.read() != content:
                return False
            if info.st_mode & 0o777 != mode:
                os.fchmod(handle.fileno(), mode)
        return True

    def _clear(self, parent: int, name: str, relative: str, keep_file: bool) -> None:
        """Make room for `name`: a regular file the trail tracks may be replaced (`keep_file`: the
        rename will) or deleted; anything else is moved to the trash."""
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(info.st_mode) and relative in self.tracked:
            if not keep_file:
                os.unlink(name, dir_fd=parent)
                self.deleted.append(relative)
            return
        self._move(parent, name, relative)

    # -- removing --
    def remove_others(self, files: Files) -> None:
        """Delete the tracked files the backup does not have; move everything else aside."""
        self._sweep(self.fds[""], "", files)

    def _sweep(self, fd: int, prefix: str, files: Files) -> bool:
        """Clean one folder; True when it ended up empty."""
        left = False
        for entry in sorted(os.listdir(fd)):
            relative = f"{prefix}{entry}"
            info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                wanted = any(p.startswith(relative + "/") for p in files)
                if wanted or _is_plain_folder(fd, entry):
                    child = _step(fd, entry, create=False)
                    try:
                        empty = self._sweep(child, relative + "/", files)
                    finally:
                        os.close(child)
                    if empty and not wanted:
                        os.rmdir(entry, dir_fd=fd)
                        continue
                    left = True
                else:  # a nested repository: the trail never holds its files
                    self._move(fd, entry, relative)
                continue
            if relative in files:
                left = True
            elif entry.startswith(".") and entry.endswith(".tmp"):
                left = True  # an atomic write in flight (rendering runs outside the lock): it renames itself away
            elif stat.S_ISREG(info.st_mode) and relative in self.tracked:
                os.unlink(entry, dir_fd=fd)
                self.deleted.append(relative)
            else:
                self._move(fd, entry, relative)
        return not left

    def _move(self, parent: int, name: str, relative: str) -> None:
        target = self.root / self.trash_rel / relative
        _make_private_dirs(self.root, self.trash_rel / relative)
        os.rename(name, target, src_dir_fd=parent)
        self.moved.append(relative)


def _is_plain_folder(fd: int, name: str) -> bool:
    """A folder that is not a nested git repository (one holding `.git`)."""
    try:
        os.stat(f"{name}/.git", dir_fd=fd, follow_symlinks=False)
    except OSError:
        return True
    return False


def _is_dir(fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return True  # absent: `_step` makes it


def _step(parent: int, name: str, create: bool) -> int:
    """Open the folder `name` inside `parent` without following a link (made when `create`)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RestoreRefused(f"{name} became a symbolic link or a file during the restore; restore stopped") from None
        raise


def _make_private_dirs(root: Path, relative_file: Path) -> None:
    """The trash folders under `.claude/.session-manager/`, made without following a link."""
    fd = os.open(str(root), DIR_FLAGS)
    try:
        for part in relative_file.parent.parts:
            child = _step(fd, part, create=True)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


# -- the project's own files (issue 17: undo `templates evolve --apply`) ---------------------------
PROJECT_FILES = (".claude/session-manager.toml", ".claude/templates")


def restore_project_files(trail: Trail, at: str | None, actor: str) -> RestoreResult:
    """Bring `.claude/session-manager.toml` and `.claude/templates/` back as they were at backup
    `at` (required), after backing up the present state (the undo). A template or config the
    backup does not hold is deleted only when the safety backup holds it."""
    if at is None:
        raise InvalidInput("restoring the project files needs --at REVISION (`templates evolve --apply` prints it)")
    for relative in PROJECT_FILES:
        refuse_links(trail.root, relative)
    repo = open_repo(trail.root, create=False)
    if repo is None or repo.tip(trail.ref) is None:
        raise NotFound("there are no backups yet (take one with `session-manager backup`)")
    commit = commit_on_trail(trail, repo, at)
    claude = {name: entry for name, entry in files_at(repo, commit, ".claude").items()
              if name == "session-manager.toml" or name.startswith("templates/")}
    before = trail.backup("before restore")
    tracked = files_at(repo, before.revision, ".claude") if before.revision else {}
    blobs = read_blobs(repo, sorted({oid for _, oid in claude.values()}))
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
    trash = Path(".claude", PRIVATE_DIR, TRASH, stamp, "project-files")
    templates = {name[len("templates/"):]: entry for name, entry in claude.items() if name.startswith("templates/")}
    writer = FolderWriter(trail.root, ".claude/templates", trash / "templates",
                          {n[len("templates/"):]: e for n, e in tracked.items() if n.startswith("templates/")})
    try:
        restored, unchanged = writer.write(templates, blobs)
        writer.remove_others(templates)
    finally:
        writer.close()
    restored = [f"templates/{name}" for name in restored]
    deleted = [f"templates/{name}" for name in writer.deleted]
    config = trail.root / ".claude" / "session-manager.toml"
    if "session-manager.toml" in claude:
        top = FolderWriter(trail.root, ".claude", trash, tracked)
        try:
            done, same = top.write({"session-manager.toml": claude["session-manager.toml"]}, blobs)
        finally:
            top.close()
        restored += done
        unchanged += same
    elif "session-manager.toml" in tracked and config.is_file() and not config.is_symlink():
        config.unlink()
        deleted.append("session-manager.toml")
    trail.backup("project files restored")
    when = datetime.fromisoformat(repo.out("show", "-s", "--format=%cI", commit))
    undo = f"session-manager backup restore --project-files --at {before.revision[:12]}" if before.revision else None
    return RestoreResult(session_id="project files", revision=commit, short=commit[:12], time=when,
                         restored=sorted(restored), deleted=sorted(deleted), moved=sorted(writer.moved),
                         moved_to=trash.as_posix() if writer.moved else None, unchanged=unchanged,
                         backup_before=before, undo=undo)
