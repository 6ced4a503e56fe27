"""The git backup trail: session files committed to a side branch, never touching the user's work.

What is backed up: `.claude/level-*/sessions/**`, `.claude/memory/**`, `.claude/templates/**`,
`.claude/usage/**` (the ledger of usage bookings and the bindings of conversations) and
`.claude/session-manager.toml`; never `.claude/.session-manager/` (locks, caches) nor the temp
files the store writes (`.*.tmp`, `.*.creating/`).

How a backup is made, all with git plumbing:
  1. find the repository (`rev-parse`); outside any repository a bare one is created at
     `.claude/backups.git`, with the project root as its work tree;
  2. `git add --force --all` the backed-up paths into a private index,
     `<git-dir>/session-manager/index` (seeded by `read-tree` of the branch when missing, and kept
     between runs so git's stat cache makes an `add` cost about what a `git status` costs);
  3. `write-tree`; no commit when the tree equals the branch tip's;
  4. `commit-tree` with the tip as parent, then `update-ref <branch> NEW OLD` (compare-and-swap).
HEAD, the user's index, branch and working tree are never written. A file lock
(`.claude/.session-manager/backup.lock`) serialises the backups of one project and the
compare-and-swap protects the ref from anything outside that lock.

Why plain `git` and no GitPython: importing GitPython costs ~70 ms of the hooks' 250 ms budget,
every step here is one plumbing command that GitPython would itself run as a subprocess, and its
pure-Python index would re-read and re-write 40,000 entries where `git add` uses its stat cache.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from session_manager.config import CONFIG_NAME, load_config
from session_manager.config import Backup as BackupConfig
from session_manager.errors import BackupError, InvalidInput, NotFound, SessionError
from session_manager.levels import LEVELS, level_of, looks_like_session_id
from session_manager.requests import Request, SessionId
from session_manager.store import STATE_FILE, Store, atomic_write

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

LEVEL_DIR = re.compile(r"^level-[A-Za-z0-9_-]+$")
UNMATCHED = re.compile(r"pathspec '(.*)' did not match any files")
EMPTY_TREES = {
    "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "session-manager", "GIT_AUTHOR_EMAIL": "session-manager@localhost",
    "GIT_COMMITTER_NAME": "session-manager", "GIT_COMMITTER_EMAIL": "session-manager@localhost",
}
# Variables that point git at another repository, index or object store, or change how pathspecs
# and dates are read. They leak in when we run inside a git hook (or a rebase's exec).
LEAKY_ENV = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_QUARANTINE_PATH", "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE", "GIT_REPLACE_REF_BASE", "GIT_NO_REPLACE_OBJECTS", "GIT_LITERAL_PATHSPECS",
    "GIT_GLOB_PATHSPECS", "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_DATE",
})
IDENTITY_PROBLEM = re.compile(r"identity|who you are|auto-detect|empty ident", re.IGNORECASE)
SUBJECT = re.compile(r"^session-manager: (?P<reason>.+) \(\d+ sessions?\)$")
MESSAGE_SESSIONS = 50  # the commit message lists at most this many session ids
DEFAULT_SEARCH = 200  # how many backups of a session `restore` looks through for a readable state


# -- inputs -------------------------------------------------------------------------------
def _revision(value: str) -> str:
    # A revision becomes a git argument: one starting with "-" would be read as an option.
    if value.startswith("-"):
        raise ValueError("must not start with '-' (give a revision from `backup history`)")
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("must not contain spaces or control characters")
    return value


def _remote(value: str) -> str:
    if value.startswith("-"):
        raise ValueError("must not start with '-' (give a remote name, URL or path)")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError("must not contain control characters")
    return value


Revision = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_revision)]
Remote = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_remote)]


class BackupNowRequest(Request):
    reason: Reason = "manual"


class BackupHistoryRequest(Request):
    session_id: SessionId | None = None


class BackupRestoreRequest(Request):
    session_id: SessionId | None = None
    at: Revision | None = None


class BackupPushRequest(Request):
    remote: Remote | None = None


# -- results ------------------------------------------------------------------------------
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
    deleted: list[str]  # files removed because the backup did not have them
    unchanged: int
    backup_before: BackupResult  # the state before the restore, so the restore can be undone
    undo: str | None = None  # the command that undoes this restore


class PushResult(BaseModel):
    remote: str
    branch: str
    revision: str
    short: str
    status: Literal["new", "updated", "up to date"]


# -- git ----------------------------------------------------------------------------------
def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment git runs with: ours minus what could point it elsewhere."""
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_ENV}
    env["LC_ALL"] = "C"  # git's messages are parsed (identity problems, push status)
    env.update(extra or {})
    return env


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["no message"])[-1]


def _run_git(cmd: list[str], env: dict[str, str], input: bytes | None, timeout: float | None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise BackupError("git is not installed (or not on PATH); backups need git") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"git {cmd[3] if len(cmd) > 3 else ''} took longer than {timeout:g} s; gave up") from None
    except OSError as exc:
        raise BackupError(f"cannot run git: {exc.strerror}") from None


class Repo:
    """A git directory and the project root whose session files it backs up."""

    def __init__(self, root: Path, git_dir: Path, prefix: str, separate: bool) -> None:
        self.root = root
        self.git_dir = git_dir
        self.prefix = prefix  # the root's path inside the work tree ("" at its top)
        self.separate = separate  # our own `.claude/backups.git`, not the project's repository
        self.index = git_dir / "session-manager" / "index"
        self.index_tree = self.index.with_name("index.tree")  # the tree the index held after the last backup
        # Index format 4 compresses the paths: ~40% smaller for 40,000 session files.
        self.env = git_env({"GIT_INDEX_FILE": str(self.index), "GIT_INDEX_VERSION": "4"})

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
        cmd = ["git", "-C", str(self.root)]
        if self.separate:
            cmd += [f"--git-dir={self.git_dir}", f"--work-tree={self.root}"]
        proc = _run_git([*cmd, *args], {**self.env, **(env or {})}, input, timeout)
        if check and proc.returncode != 0:
            raise BackupError(f"git {args[0]} failed: {_last_line(proc.stderr)}")
        return proc

    def out(self, *args: str, **kw: Any) -> str:
        return self.run(*args, **kw).stdout.decode("utf-8", "surrogateescape").strip()

    def head_is(self, ref: str) -> bool:
        try:
            return (self.git_dir / "HEAD").read_text().strip() == f"ref: {ref}"
        except OSError:
            return False


def open_repo(root: Path, create: bool) -> Repo | None:
    """The repository the trail lives in: the project's own, else `.claude/backups.git`
    (created when `create`; None when it does not exist and may not be created)."""
    proc = _run_git(["git", "-C", str(root), "rev-parse", "--absolute-git-dir", "--show-prefix"],
                    git_env(), None, None)
    if proc.returncode == 0:
        git_dir, prefix = (proc.stdout.decode("utf-8", "surrogateescape").split("\n") + [""])[:2]
        return Repo(root, Path(git_dir), prefix, separate=False)
    if b"not a git repository" not in proc.stderr:
        raise BackupError(f"git cannot open the repository at {root}: {_last_line(proc.stderr)}")
    own = root / ".claude" / "backups.git"
    if not (own / "HEAD").is_file():
        if not create:
            return None
        own.parent.mkdir(parents=True, exist_ok=True)
        init = _run_git(["git", "init", "--quiet", "--bare", str(own)], git_env(), None, None)
        if init.returncode != 0:
            raise BackupError(f"cannot create the backup repository {own}: {_last_line(init.stderr)}")
    return Repo(root, own, "", separate=True)


@dataclass(frozen=True)
class Tip:
    commit: str
    tree: str
    time: int  # committer time, seconds since the epoch


# -- the trail ----------------------------------------------------------------------------
class Trail:
    """The backup branch of one project: backup, history, restore, push."""

    def __init__(self, root: Path, config: BackupConfig, lock_timeout: float = 30.0, store: Store | None = None) -> None:
        self.root = root
        self.config = config
        self.branch = config.branch
        self.ref = f"refs/heads/{config.branch}"
        self.store = store or Store(root, lock_timeout)
        self.lock_timeout = lock_timeout

    # -- backup --
    def backup(self, reason: str) -> BackupResult:
        """Commit the session files to the backup branch when anything changed."""
        if not self.store.claude_dir.is_dir():  # e.g. the server started in a folder with no sessions
            return BackupResult(committed=False, reason=reason, branch=self.branch, skipped="nothing to back up yet")
        coalesce = reason in COALESCED
        lock = self._acquire(wait=not coalesce)
        if lock is None:  # a backup is running right now; this coalesced trigger can skip
            return BackupResult(committed=False, reason=reason, branch=self.branch, skipped="another backup is running")
        try:
            repo = open_repo(self.root, create=True)
            assert repo is not None
            if repo.head_is(self.ref):
                raise BackupError(
                    f"the backup branch {self.branch} is checked out; switch to another branch"
                    " (backups would move your HEAD)"
                )
            tip = self._tip(repo)
            done = BackupResult(committed=False, reason=reason, branch=self.branch, repository=str(repo.git_dir))
            if tip:
                done.revision, done.short = tip.commit, tip.commit[:12]
                age = time.time() - tip.time
                if coalesce and 0 <= age < self.config.coalesce_seconds:
                    done.skipped = f"coalesced: the last backup is {age:.0f} s old"
                    return done
            try:
                try:
                    tree = self._snapshot(repo, tip)
                except BackupError:  # a stale index.lock left by a killed git, or a damaged index
                    self._reset_index(repo)
                    tree = self._snapshot(repo, tip)
                if tip is None and tree in EMPTY_TREES:
                    done.skipped = "nothing to back up yet"
                    return done
                return self._commit(repo, tip, tree, done)
            except BackupError:
                self._reset_index(repo)  # it may no longer match the branch: rebuilt from it next time
                raise
        finally:
            lock.release()

    def _acquire(self, wait: bool) -> Any:
        from filelock import FileLock, Timeout

        try:
            path = self.store.private_dir() / "backup.lock"
            lock = FileLock(str(path), timeout=self.lock_timeout if wait else 0)
            lock.acquire()
        except Timeout:
            if not wait:
                return None
            raise BackupError(f"another backup held the lock for {self.lock_timeout:g} s; try again") from None
        except OSError as exc:
            raise BackupError(f"cannot take the backup lock: {exc}") from None
        return lock

    def _tip(self, repo: Repo) -> Tip | None:
        fmt = "--format=%(refname)%00%(objectname)%00%(tree)%00%(committerdate:raw)"
        for line in repo.out("for-each-ref", fmt, self.ref).splitlines():
            name, commit, tree, date = line.split("\0")
            if name == self.ref:
                if not tree:
                    raise BackupError(f"{self.ref} does not point at a commit; delete or rename that ref")
                return Tip(commit, tree, int(date.split()[0]))
        return None

    def paths(self) -> tuple[list[str], list[str]]:
        """The backed-up paths (relative to the root) that exist, and the known ones that do not."""
        claude = self.store.claude_dir
        on_disk = {path.parent.name for path in claude.glob("level-*/sessions")
                   if path.is_dir() and LEVEL_DIR.match(path.parent.name)}
        present: list[str] = []
        missing: list[str] = []
        for name in sorted(on_disk | {level.dirname for level in LEVELS.values()}):
            (present if name in on_disk else missing).append(f".claude/{name}/sessions")
        for name in ("memory", "templates", "usage", CONFIG_NAME):
            (present if (claude / name).exists() else missing).append(f".claude/{name}")
        return present, missing

    def _snapshot(self, repo: Repo, tip: Tip | None) -> str:
        """`git add` the backed-up paths into the private index; its tree."""
        self._seed_index(repo, tip)
        present, missing = self.paths()
        specs = [_pathspec(path) for path in present]
        if missing and tip:  # a path gone from disk goes to `add` only when the backup has it (else git refuses it)
            full = [repo.prefix + path for path in missing]
            listed = repo.run("ls-tree", "--name-only", "-z", "--full-tree", tip.tree, "--", *full).stdout
            held = {name.removeprefix(repo.prefix) for name in listed.decode("utf-8", "surrogateescape").split("\0")}
            specs += [f":(literal){path}" for path in missing if path in held]
        while specs:
            proc = repo.run("add", "--force", "--all", "--", *specs, check=False)
            if proc.returncode == 0:
                break
            unmatched = UNMATCHED.search(proc.stderr.decode("utf-8", "surrogateescape"))
            if not unmatched or unmatched[1] not in specs:
                raise BackupError(f"git add failed: {_last_line(proc.stderr)}")
            specs.remove(unmatched[1])  # e.g. an empty sessions folder: nothing to take from it
        tree = repo.out("write-tree")
        atomic_write(repo.index_tree, tree + "\n", durable=False)  # a cache of the private index
        return tree

    def _seed_index(self, repo: Repo, tip: Tip | None) -> None:
        """Keep the private index equal to the branch tip's tree before `add`. It is kept between
        runs for git's stat cache; when the branch moved without us (or the index is gone), it
        is rebuilt from the tip (the next `add` then reads every file once)."""
        try:
            matches = repo.index.exists() and repo.index_tree.read_text().strip() == (tip.tree if tip else "")
        except OSError:
            matches = False
        if matches:
            return
        self._reset_index(repo)
        repo.index.parent.mkdir(parents=True, exist_ok=True)
        if tip:
            repo.run("read-tree", tip.tree)

    def _reset_index(self, repo: Repo) -> None:
        # The private index is ours alone (we hold the lock): a stale index.lock left by a killed
        # git goes with it.
        for path in (repo.index, repo.index.with_name(repo.index.name + ".lock"), repo.index_tree):
            path.unlink(missing_ok=True)

    def _commit(self, repo: Repo, tip: Tip | None, tree: str, done: BackupResult) -> BackupResult:
        for _ in range(5):
            if tip and tip.tree == tree:
                done.skipped = "nothing changed since the last backup"
                done.revision, done.short = tip.commit, tip.commit[:12]
                return done
            sessions, paths = self._changes(repo, tip.tree if tip else None, tree)
            message = commit_message(done.reason, sessions, paths)
            commit = self._commit_tree(repo, tree, tip.commit if tip else None, message)
            old = tip.commit if tip else "0" * len(commit)
            update = repo.run("update-ref", "-m", f"session-manager: {done.reason}", self.ref, commit, old, check=False)
            if update.returncode == 0:
                done.committed, done.revision, done.short = True, commit, commit[:12]
                done.sessions, done.paths_changed = sessions, len(paths)
                return done
            newer = self._tip(repo)  # someone outside our lock moved the branch: build on its new tip
            if newer == tip:
                raise BackupError(f"cannot update {self.ref}: {_last_line(update.stderr)}")
            tip = newer
        raise BackupError(f"{self.ref} kept moving while backing up; try again")

    def _changes(self, repo: Repo, old_tree: str | None, tree: str) -> tuple[list[str], list[str]]:
        """The ids of the sessions whose files changed, and every changed path (relative to the root)."""
        if old_tree:
            raw = repo.run("diff-tree", "-r", "--name-only", "-z", old_tree, tree).stdout
        else:
            raw = repo.run("ls-tree", "-r", "--name-only", "-z", "--full-tree", tree).stdout
        paths = [path.removeprefix(repo.prefix) for path in raw.decode("utf-8", "surrogateescape").split("\0") if path]
        sessions = {session_of(path) for path in paths} - {None}
        return sorted(sessions), paths  # type: ignore[arg-type]

    def _commit_tree(self, repo: Repo, tree: str, parent: str | None, message: str) -> str:
        args = ["commit-tree", "--no-gpg-sign", *(["-p", parent] if parent else []), "-F", "-", tree]
        proc = repo.run(*args, input=message.encode(), check=False)
        if proc.returncode != 0 and IDENTITY_PROBLEM.search(proc.stderr.decode("utf-8", "replace")):
            # No git identity on this machine: commits still must not fail.
            proc = repo.run(*args, input=message.encode(), env=FALLBACK_IDENTITY, check=False)
        if proc.returncode != 0:
            raise BackupError(f"git commit-tree failed: {_last_line(proc.stderr)}")
        return proc.stdout.decode().strip()

    # -- history --
    def folder(self, session_id: str) -> str:
        """A session's folder relative to the root (it need not exist any more)."""
        return f".claude/{level_of(session_id).dirname}/sessions/{session_id}"

    def history(self, session_id: str) -> BackupHistory:
        folder = self.folder(session_id)
        history = BackupHistory(session_id=session_id, branch=self.branch, folder=folder, entries=[])
        repo = open_repo(self.root, create=False)
        if repo is None or self._tip(repo) is None:
            return history
        fmt = "--format=%H%x1f%cI%x1f%s%x1e"
        raw = repo.out("log", fmt, self.ref, "--", f":(top,literal){repo.prefix}{folder}")
        for record in raw.split("\x1e"):
            record = record.strip()
            if not record:
                continue
            commit, when, subject = record.split("\x1f", 2)
            match = SUBJECT.match(subject)
            history.entries.append(BackupEntry(
                revision=commit, short=commit[:12], time=datetime.fromisoformat(when),
                reason=match["reason"] if match else subject, subject=subject,
            ))
        return history

    # -- restore --
    def restore(self, session_id: str, at: str | None, actor: str) -> RestoreResult:
        """Bring a session's folder back as it was at backup `at` (default: the newest backup
        holding a readable state of it), after backing up the present state."""
        folder_rel = self.folder(session_id)
        repo = open_repo(self.root, create=False)
        if repo is None or self._tip(repo) is None:
            raise NotFound("there are no backups yet (take one with `session-manager backup`)")
        commit, files = self._target(repo, session_id, folder_rel, at)
        folder = self.root / folder_rel
        with self.store.lock(session_id):  # nothing changes the session between the safety backup and the restore
            existed = folder.is_dir() and any(folder.iterdir())
            before = self.backup("before restore")
            blobs = self._blobs(repo, sorted({oid for _, oid in files.values()}))
            restored, deleted, unchanged = _write_folder(folder, files, blobs)
            self.store.append_event(session_id, actor, "session_restored", revision=commit,
                                    backup_before=before.revision)
        when = datetime.fromisoformat(repo.out("show", "-s", "--format=%cI", commit))
        undo = None
        if existed and before.revision:
            undo = f"session-manager backup restore {session_id} --at {before.revision[:12]}"
        return RestoreResult(session_id=session_id, revision=commit, short=commit[:12], time=when,
                             restored=restored, deleted=deleted, unchanged=unchanged,
                             backup_before=before, undo=undo)

    def _target(self, repo: Repo, session_id: str, folder: str, at: str | None) -> tuple[str, dict[str, tuple[str, str]]]:
        see = f"see `session-manager backup history {session_id}`"
        if at is not None:
            proc = repo.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{at}^{{commit}}", check=False)
            if proc.returncode != 0:
                raise NotFound(f"no backup revision {at!r}; {see}")
            commit = proc.stdout.decode().strip()
            if repo.run("merge-base", "--is-ancestor", commit, self.ref, check=False).returncode != 0:
                raise InvalidInput(f"revision {at!r} is not on the backup branch {self.branch}; {see}")
            files = self._files_at(repo, commit, folder)
            if not files:
                raise NotFound(f"backup {at} does not hold session {session_id}; {see}")
            return commit, files
        commits = repo.out("log", "--format=%H", self.ref, "--", f":(top,literal){repo.prefix}{folder}").split()
        if not commits:
            raise NotFound(f"no backup holds session {session_id}")
        for commit in commits[:DEFAULT_SEARCH]:
            files = self._files_at(repo, commit, folder)
            if STATE_FILE in files and _readable_state(self._blobs(repo, [files[STATE_FILE][1]])[files[STATE_FILE][1]], session_id):
                return commit, files
        raise NotFound(f"no backup of {session_id} holds a readable {STATE_FILE}; pick one with --at ({see})")

    def _files_at(self, repo: Repo, commit: str, folder: str) -> dict[str, tuple[str, str]]:
        """{path inside the folder: (mode, blob id)} of the regular files of `folder` at `commit`."""
        full = repo.prefix + folder
        raw = repo.run("ls-tree", "-r", "-z", "--full-tree", commit, "--", full).stdout
        files: dict[str, tuple[str, str]] = {}
        for record in raw.split(b"\0"):
            meta, _, name = record.partition(b"\t")
            if not name:
                continue
            mode, kind, oid = meta.decode().split()
            path = name.decode("utf-8", "surrogateescape")
            # Only regular files come back: a symlink in a backup is never written into the project.
            if kind == "blob" and mode in ("100644", "100755") and path.startswith(full + "/"):
                files[path[len(full) + 1:]] = (mode, oid)
        return files

    def _blobs(self, repo: Repo, oids: list[str]) -> dict[str, bytes]:
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

    # -- push --
    def push(self, remote: str | None) -> PushResult:
        remote = remote or self.config.remote
        if not remote:
            raise InvalidInput(
                "no remote to push to: give one (`backup push --remote origin`)"
                " or set backup.remote in .claude/session-manager.toml"
            )
        try:
            _remote(remote)  # the configured remote is checked like a typed one
        except ValueError as exc:
            raise InvalidInput(f"backup.remote {remote!r}: {exc}") from None
        repo = open_repo(self.root, create=False)
        tip = self._tip(repo) if repo else None
        if repo is None or tip is None:
            raise NotFound("nothing to push: there are no backups yet (take one with `session-manager backup`)")
        looks_like_name = not any(mark in remote for mark in "/:\\")
        if looks_like_name and remote not in repo.out("remote").split():
            raise InvalidInput(
                f"no git remote named {remote!r} (`git remote -v` lists them); add one with"
                f" `git remote add {remote} URL`, or give a URL or a path"
            )
        # Never wait for a password nobody will type (hooks, the MCP server).
        env = {} if sys.stdin and sys.stdin.isatty() else {"GIT_TERMINAL_PROMPT": "0"}
        proc = repo.run("push", "--porcelain", "--", remote, f"{self.ref}:{self.ref}",
                        env=env, check=False, timeout=300)
        flag, summary = None, ""
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1].endswith(f":{self.ref}"):
                flag, summary = fields[0], fields[2]
        if proc.returncode != 0 or flag in (None, "!"):
            reason = summary if flag == "!" else _last_line(proc.stderr)
            raise BackupError(f"git push to {remote} failed: {reason}")
        status: Literal["new", "updated", "up to date"] = {"*": "new", "=": "up to date"}.get(flag, "updated")  # type: ignore[assignment]
        return PushResult(remote=remote, branch=self.branch, revision=tip.commit, short=tip.commit[:12], status=status)

    def tidy(self) -> None:
        """`git gc --auto`: plumbing never runs it, and nobody else does in `.claude/backups.git`."""
        repo = open_repo(self.root, create=False)
        if repo is not None:
            repo.run("gc", "--auto", "--quiet", check=False, timeout=600)


def _pathspec(path: str) -> str:
    """What `git add` takes from a backed-up path: its files, but no hidden name (the store's temp
    files `.*.tmp` and the `.*.creating/` folders of sessions being created). Globs, not
    `:(exclude)` pathspecs: git 2.39 adds nothing at all when an exclude is shorter than the path."""
    if path.endswith("/sessions"):
        return f":(glob){path}/[!.]*/**/[!.]*"
    if path.endswith(".toml"):
        return f":(literal){path}"
    return f":(glob){path}/**/[!.]*"


def session_of(path: str) -> str | None:
    """The session id a backed-up path belongs to (`.claude/level-*/sessions/ID/...`), if any."""
    parts = path.split("/")
    if len(parts) > 4 and parts[0] == ".claude" and parts[2] == "sessions" and looks_like_session_id(parts[3]):
        return parts[3]
    return None


def commit_message(reason: str, sessions: list[str], paths: list[str]) -> str:
    n = len(sessions)
    lines = [f"session-manager: {reason} ({n} session{'' if n == 1 else 's'})", ""]
    if sessions:
        lines.append("Sessions:")
        lines += [f"  {session_id}" for session_id in sessions[:MESSAGE_SESSIONS]]
        if n > MESSAGE_SESSIONS:
            lines.append(f"  ... and {n - MESSAGE_SESSIONS} more")
    others = [path for path in paths if session_of(path) is None]
    if others:
        areas = sorted({"/".join(path.split("/")[:2]) for path in others})
        lines.append("Also: " + ", ".join(areas))
    lines += ["", f"Reason: {reason}"] if len(lines) > 2 else [f"Reason: {reason}"]
    return "\n".join(lines) + "\n"


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


def _write_folder(folder: Path, files: dict[str, tuple[str, str]], blobs: dict[str, bytes]) -> tuple[list[str], list[str], int]:
    """Make `folder` hold exactly `files` (atomic writes); return (written, deleted, unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    real = folder.resolve()
    written: list[str] = []
    unchanged = 0
    for relative, (mode, oid) in sorted(files.items()):
        if any(part in ("", ".", "..") for part in relative.split("/")):
            continue  # git trees cannot hold these; refused all the same
        path = folder / relative
        for ancestor in reversed(Path(relative).parents[:-1]):  # a file or symlink where a folder must be
            if (folder / ancestor).is_symlink() or (folder / ancestor).is_file():
                (folder / ancestor).unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.parent.resolve().is_relative_to(real):
            raise BackupError(f"{relative} would be written outside {folder}; restore refused")
        if path.is_symlink() or path.is_dir():
            _remove(path)
        content = blobs[oid]
        try:
            same = path.read_bytes() == content
        except OSError:
            same = False
        if not same:
            atomic_write(path, content)
            written.append(relative)
        else:
            unchanged += 1
        wanted_mode = 0o755 if mode == "100755" else 0o644
        if path.stat().st_mode & 0o777 != wanted_mode:
            path.chmod(wanted_mode)
    deleted: list[str] = []
    for directory, dirnames, filenames in os.walk(folder, topdown=False):
        base = Path(directory)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            relative = (base / name).relative_to(folder).as_posix()
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # an atomic write in flight (rendering runs outside the lock): it renames itself away
            if relative not in files:
                (base / name).unlink()
                deleted.append(relative)
        if base != folder and not any(base.iterdir()):
            base.rmdir()
    return written, sorted(deleted), unchanged


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# -- the interval loop ----------------------------------------------------------------------
def run_loop(
    root: Path,
    interval: float | None = None,
    stop: threading.Event | None = None,
    on_commit: Callable[[BackupResult], None] | None = None,
    on_error: Callable[[SessionError], None] | None = None,
    requests: queue.Queue[str] | None = None,
) -> None:
    """Back up the project at `root` now, then every `interval` seconds, until `stop` is set.

    Blocks: run it in a thread, e.g. in the MCP server's lifespan::

        stop = threading.Event()
        thread = threading.Thread(target=run_loop, args=(root,), kwargs={"stop": stop}, daemon=True)
        thread.start(); ...; stop.set(); thread.join()

    `interval` None means `backup.interval_seconds` from `.claude/session-manager.toml` (re-read
    every round, like `backup.enabled`: a disabled config makes the rounds do nothing).
    `requests`: a queue of trigger reasons ("stage complete", "session end", ...) that a
    long-running process hands over instead of backing up on its request path; each is backed
    up promptly, between the interval rounds (a burst is coalesced by `Trail.backup`).
    `on_commit(result)` is called for each backup that made a commit. A failure never ends the
    loop: it goes to `on_error(error)` (default: one line on stderr) and the next round tries
    again. With `backup.push = true` and `backup.remote` set, each commit is pushed.
    """
    if interval is not None and not 0 < interval <= 86_400:
        raise InvalidInput(f"interval must be between 0 and 86400 seconds, got {interval:g}")
    stop = stop or threading.Event()
    report = on_error or (lambda error: print(f"session-manager backup: {error}", file=sys.stderr, flush=True))
    next_round = time.monotonic()  # the first round runs at once
    unpushed = False
    while not stop.is_set():
        reason = _next_reason(stop, requests, next_round)
        if reason is None:
            continue
        try:
            config = load_config(root / ".claude")
            if reason == "interval":
                next_round = time.monotonic() + (interval or config.backup.interval_seconds)
            if not config.backup.enabled:
                continue
            trail = Trail(root, config.backup, config.lock_timeout_seconds)
            result = trail.backup(reason)
            if result.committed:
                unpushed = True
                if on_commit:
                    on_commit(result)
                if reason == "interval":
                    trail.tidy()
            if unpushed and config.backup.push and config.backup.remote:
                trail.push(None)
                unpushed = False
        except SessionError as exc:
            report(exc)
        except Exception as exc:  # a bug must not end the autosave of a long-running server
            report(BackupError(f"unexpected {type(exc).__name__}: {exc}"))
        if reason == "interval" and next_round <= time.monotonic():
            next_round = time.monotonic() + (interval or BackupConfig().interval_seconds)


def _next_reason(stop: threading.Event, requests: queue.Queue[str] | None, next_round: float) -> str | None:
    """Wait for a requested backup or the next interval round; None: nothing due yet (or stopping)."""
    left = max(0.0, next_round - time.monotonic())
    if requests is None:
        return None if stop.wait(left) else "interval"
    try:
        return requests.get(timeout=min(left, 0.25)) if left else requests.get_nowait()
    except queue.Empty:
        return "interval" if time.monotonic() >= next_round and not stop.is_set() else None
