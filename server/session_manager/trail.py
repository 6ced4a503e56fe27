"""The backup branch of one project: take a backup (snapshot + commit), list history, push.

A backup, all with git plumbing through the private index (see `repository`):
  1. check the branch is only ours (`repository.check_branch`);
  2. `git add --force --all --verbose` the backed-up paths into the private index (kept between
     runs, so git's stat cache makes this cost about what `git status` costs); its `--verbose`
     lines are the changed paths, so no diff of trees is needed;
  3. `write-tree`; no commit when the tree equals the branch tip's;
  4. `commit-tree` with the tip as parent (a new trail's root carries `Session-Manager-Trail: 1`),
     then `update-ref <branch> NEW OLD` (compare-and-swap).
HEAD, the user's index, branches and working tree are never written; the user's hooks never run.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from session_manager.backup_models import COALESCED, BackupEntry, BackupHistory, BackupResult, PushResult, check_remote
from session_manager.config import CONFIG_NAME
from session_manager.config import Backup as BackupConfig
from session_manager.errors import BackupError, InvalidInput, NotFound, SessionError
from session_manager.git import has_credentials, last_line, redact
from session_manager.levels import LEVELS, level_of, looks_like_session_id
from session_manager.repository import TRAILER, Repo, Tip, check_branch, open_repo, remember_verified
from session_manager.store import Store, atomic_write

if TYPE_CHECKING:
    from filelock import BaseFileLock

    from session_manager.backup_models import RestoreResult

LEVEL_DIR = re.compile(r"^level-[A-Za-z0-9_-]+$")
UNMATCHED = re.compile(r"pathspec '(.*)' did not match any files")
VERBOSE = re.compile(r"^(?:add|remove) '(?P<path>.*)'$")
EMPTY_TREES = {
    "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
}
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "session-manager", "GIT_AUTHOR_EMAIL": "session-manager@localhost",
    "GIT_COMMITTER_NAME": "session-manager", "GIT_COMMITTER_EMAIL": "session-manager@localhost",
}
IDENTITY_PROBLEM = re.compile(r"identity|who you are|auto-detect|empty ident", re.IGNORECASE)
SUBJECT = re.compile(r"^session-manager: (?P<reason>.+) \(\d+ sessions?\)$")
MESSAGE_SESSIONS = 50  # the commit message lists at most this many session ids


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
        lock = self.acquire(wait=not coalesce)
        if lock is None:  # a backup is running right now; this coalesced trigger can skip
            return BackupResult(committed=False, reason=reason, branch=self.branch, skipped="another backup is running")
        try:
            repo = open_repo(self.root, create=True)
            assert repo is not None
            tip = repo.tip(self.ref)
            check_branch(repo, self.branch, tip)
            done = BackupResult(committed=False, reason=reason, branch=self.branch, repository=str(repo.git_dir))
            if tip:
                done.revision, done.short = tip.commit, tip.commit[:12]
                age = time.time() - tip.time
                if coalesce and 0 <= age < self.config.coalesce_seconds:
                    done.skipped = f"coalesced: the last backup is {age:.0f} s old"
                    return done
            self.store.redo.checkpoint_all()  # a change a crash left in a redo log is replayed before it is taken
            marks = self._changes_marked(repo, reason)
            try:
                try:
                    tree, changed = self._snapshot(repo, tip, marks)
                except BackupError:  # a stale index.lock left by a killed git, or a damaged index
                    self._reset_index(repo)
                    marks = None
                    tree, changed = self._snapshot(repo, tip, None)
                if tip is None and tree in EMPTY_TREES:
                    done.skipped = "nothing to back up yet"
                    return done
                result = self._commit(repo, tip, tree, changed, done)
                self._changes_taken(repo, marks)
                return result
            except BackupError:
                self._reset_index(repo)  # it may no longer match the branch: rebuilt from it next time
                raise
        finally:
            lock.release()

    def acquire(self, wait: bool) -> BaseFileLock | None:
        """The project's backup lock (None: busy and `wait` is false)."""
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
        # batches (issue 17): `.claude/level-2-production/batches/`, backed up like sessions
        for level in LEVELS.values():
            batches = f".claude/{level.dirname}/batches"
            if (claude / level.dirname / "batches").is_dir():
                present.append(batches)
            elif level.needs_number:
                missing.append(batches)
        return present, missing

    def _changes_marked(self, repo: Repo, reason: str) -> Changes | None:
        """What the session index says changed since the last backup, when that can be trusted
        for this backup; None means a full pass (see `Changes`)."""
        import json
        import sqlite3

        try:
            epoch, upto, ids = self.store.index.changed_since_backup()
            recorded = json.loads(repo.changes_mark.read_text()) if repo.changes_mark.exists() else {}
        except (sqlite3.Error, OSError, ValueError, SessionError):
            return None
        full = (reason in FULL_PASS_REASONS or not isinstance(recorded, dict) or recorded.get("epoch") != epoch
                or not isinstance(recorded.get("full_at"), (int, float))
                or not 0 <= time.time() - recorded["full_at"] < FULL_PASS_SECONDS)
        return Changes(epoch, upto, None if full else ids, time.time() if full else recorded["full_at"])

    def _changes_taken(self, repo: Repo, marks: Changes | None) -> None:
        """The marked changes are in the branch now: consume them, and remember the epoch."""
        import json

        if marks is None:
            return
        self.store.index.consumed(marks.upto)
        try:
            atomic_write(repo.changes_mark, json.dumps({"epoch": marks.epoch, "full_at": marks.full_at}),
                         durable=False)
        except OSError:
            pass

    def _snapshot(self, repo: Repo, tip: Tip | None, marks: Changes | None = None) -> tuple[str, list[str] | None]:
        """`git add` the backed-up paths into the private index: its tree, and the changed paths
        (None when the index was rebuilt and `add` could not tell them). With `marks` listing the
        sessions changed since the last backup (and the private index still the tip's), only
        their folders and the small shared paths are given to `add`: the cost follows the change."""
        seeded = self._seed_index(repo, tip)
        present, missing = self.paths()
        if marks is not None and marks.ids is not None and not seeded:
            folders = [self.folder(session_id) for session_id in sorted(set(marks.ids))]
            if all((self.root / folder).is_dir() for folder in folders):
                present = [path for path in present if not path.endswith("/sessions")] + folders
                missing = [path for path in missing if not path.endswith("/sessions")]
        specs = [_pathspec(path) for path in present]
        if missing and tip:  # a path gone from disk goes to `add` only when the backup has it (else git refuses it)
            full = [repo.prefix + path for path in missing]
            listed = repo.run("ls-tree", "--name-only", "-z", "--full-tree", tip.tree, "--", *full).stdout
            held = {name.removeprefix(repo.prefix) for name in listed.decode("utf-8", "surrogateescape").split("\0")}
            specs += [f":(literal){path}" for path in missing if path in held]
        changed: list[str] = []
        while specs:
            proc = repo.run("add", "--force", "--all", "--verbose", "--", *specs, check=False)
            if proc.returncode == 0:
                for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
                    match = VERBOSE.match(line)
                    if match:
                        changed.append(match["path"])
                break
            unmatched = UNMATCHED.search(proc.stderr.decode("utf-8", "surrogateescape"))
            if not unmatched or unmatched[1] not in specs:
                raise BackupError(f"git add failed: {last_line(proc.stderr)}")
            specs.remove(unmatched[1])  # e.g. an empty sessions folder: nothing to take from it
        self._redact_config(repo)
        tree = repo.out("write-tree")
        atomic_write(repo.index_tree, tree + "\n", durable=False)  # a cache of the private index
        # `add` prints paths relative to the current folder, which is the project root
        return tree, None if seeded else changed

    def _redact_config(self, repo: Repo) -> None:
        """The committed copy of the config has `user:token@` removed from every URL (the file on
        disk keeps it, so `backup push` still works): a token never enters the history."""
        path = self.store.claude_dir / CONFIG_NAME
        try:
            text = path.read_text(encoding="utf-8") if not path.is_symlink() else ""
        except (OSError, UnicodeDecodeError):
            return
        if not has_credentials(text):
            return
        oid = repo.out("hash-object", "-w", "--stdin", "--no-filters", input=redact(text).encode("utf-8"))
        repo.run("update-index", "--cacheinfo", f"100644,{oid},.claude/{CONFIG_NAME}")

    def _seed_index(self, repo: Repo, tip: Tip | None) -> bool:
        """Keep the private index equal to the branch tip's tree before `add`. It is kept between
        runs for git's stat cache; when the branch moved without us (or the index is gone), it
        is rebuilt from the tip (the next `add` then reads every file once). True when rebuilt."""
        try:
            matches = repo.index.exists() and repo.index_tree.read_text().strip() == (tip.tree if tip else "")
        except OSError:
            matches = False
        if matches:
            return False
        self._reset_index(repo)
        repo.index.parent.mkdir(parents=True, exist_ok=True)
        if tip:
            repo.run("read-tree", tip.tree)
        return True

    def _reset_index(self, repo: Repo) -> None:
        # The private index is ours alone (we hold the lock): a stale index.lock left by a killed
        # git goes with it.
        for path in (repo.index, repo.index.with_name(repo.index.name + ".lock"), repo.index_tree):
            path.unlink(missing_ok=True)

    def _commit(self, repo: Repo, tip: Tip | None, tree: str, changed: list[str] | None, done: BackupResult) -> BackupResult:
        for _ in range(5):
            if tip and tip.tree == tree:
                done.skipped = "nothing changed since the last backup"
                done.revision, done.short = tip.commit, tip.commit[:12]
                return done
            paths = changed if changed is not None else self._changes(repo, tip.tree if tip else None, tree)
            sessions = sorted({s for s in map(session_of, paths) if s is not None})
            message = commit_message(done.reason, sessions, paths) + ("" if tip else f"\n{TRAILER}\n")
            commit = self._commit_tree(repo, tree, tip.commit if tip else None, message)
            old = tip.commit if tip else "0" * len(commit)
            update = self._update_ref(repo, commit, old, done.reason)
            if update is None:
                remember_verified(repo, self.ref, commit)
                done.committed, done.revision, done.short = True, commit, commit[:12]
                done.sessions, done.paths_changed = sessions, len(paths)
                return done
            newer = repo.tip(self.ref)  # someone outside our lock moved the branch: build on its new tip
            if newer == tip:
                raise BackupError(f"cannot update {self.ref}: {update}")
            if newer is not None:
                check_branch(repo, self.branch, newer)
            tip, changed = newer, None
        raise BackupError(f"{self.ref} kept moving while backing up; try again")

    def _update_ref(self, repo: Repo, commit: str, old: str, reason: str) -> str | None:
        """Compare-and-swap the branch; None when done, else git's reason. A stale
        `<branch>.lock` (left by a killed git) is removed once and the update tried again."""
        for attempt in range(2):
            proc = repo.run("update-ref", "-m", f"session-manager: {reason}", self.ref, commit, old, check=False)
            if proc.returncode == 0:
                return None
            if attempt == 0 and b".lock': File exists" in proc.stderr and repo.clear_stale_ref_lock(self.ref, self.lock_timeout):
                continue
            return last_line(proc.stderr)
        return None  # pragma: no cover - the loop returns

    def _changes(self, repo: Repo, old_tree: str | None, tree: str) -> list[str]:
        """Every path changed between two trees (relative to the root)."""
        if old_tree:
            raw = repo.run("diff-tree", "-r", "--name-only", "-z", old_tree, tree).stdout
        else:
            raw = repo.run("ls-tree", "-r", "--name-only", "-z", "--full-tree", tree).stdout
        return [path.removeprefix(repo.prefix) for path in raw.decode("utf-8", "surrogateescape").split("\0") if path]

    def _commit_tree(self, repo: Repo, tree: str, parent: str | None, message: str) -> str:
        args = ["commit-tree", "--no-gpg-sign", *(["-p", parent] if parent else []), "-F", "-", tree]
        proc = repo.run(*args, input=message.encode(), check=False)
        if proc.returncode != 0 and IDENTITY_PROBLEM.search(proc.stderr.decode("utf-8", "replace")):
            # No git identity on this machine: commits still must not fail.
            proc = repo.run(*args, input=message.encode(), env=FALLBACK_IDENTITY, check=False)
        if proc.returncode != 0:
            raise BackupError(f"git commit-tree failed: {last_line(proc.stderr)}")
        return proc.stdout.decode().strip()

    # -- history --
    def folder(self, session_id: str) -> str:
        """A session's folder relative to the root (it need not exist any more)."""
        return f".claude/{level_of(session_id).dirname}/sessions/{session_id}"

    def history(self, session_id: str) -> BackupHistory:
        folder = self.folder(session_id)
        history = BackupHistory(session_id=session_id, branch=self.branch, folder=folder, entries=[])
        repo = open_repo(self.root, create=False)
        if repo is None or repo.tip(self.ref) is None:
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
        """Bring a session's folder back as it was at backup `at` (see `restore.restore`)."""
        from session_manager.restore import restore

        return restore(self, session_id, at, actor)

    # -- push --
    def push(self, remote: str | None) -> PushResult:
        remote = remote or self.config.remote
        if not remote:
            raise InvalidInput(
                "no remote to push to: give one (`backup push --remote origin`)"
                " or set backup.remote in .claude/session-manager.toml"
            )
        shown = redact(remote)
        try:
            check_remote(remote)  # the configured remote is checked like a typed one
        except ValueError as exc:
            raise InvalidInput(f"backup.remote {shown!r}: {exc}") from None
        repo = open_repo(self.root, create=False)
        tip = repo.tip(self.ref) if repo else None
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
            reason = redact(summary) if flag == "!" else last_line(proc.stderr)
            hint = "; keep the token in a credential helper, not the URL" if has_credentials(remote) else ""
            raise BackupError(f"git push to {shown} failed: {reason}{hint}")
        status: Literal["new", "updated", "up to date"] = (
            "new" if flag == "*" else "up to date" if flag == "=" else "updated"
        )
        return PushResult(remote=shown, branch=self.branch, revision=tip.commit, short=tip.commit[:12], status=status)

    def tidy(self) -> None:
        """`git gc --auto`: plumbing never runs it, and nobody else does in `.claude/backups.git`."""
        repo = open_repo(self.root, create=False)
        if repo is not None:
            repo.run("gc", "--auto", "--quiet", check=False, timeout=600)


FULL_PASS_REASONS = frozenset({"manual", "before restore"})  # a user asking, or a restore: take every file
FULL_PASS_SECONDS = 3600.0  # and at least once an hour: files edited by hand reach the branch


class Changes:
    """The session index's changes marked since the last backup: its `epoch` (new at every
    rebuild of the index, which forgets the marks), the last mark taken (`upto`), the sessions
    changed (None: take a full pass), and when the last full pass ran.

    Trusted only when the recorded epoch is the index's (no rebuild since our last backup), the
    private index is still the tip's tree, and the last full pass is under an hour old; the
    `manual` and `before restore` backups always take a full pass."""

    def __init__(self, epoch: str, upto: int, ids: list[str] | None, full_at: float) -> None:
        self.epoch = epoch
        self.upto = upto
        self.ids = ids
        self.full_at = full_at


def _pathspec(path: str) -> str:
    """What `git add` takes from a backed-up path: its files, but no hidden name (the store's temp
    files `.*.tmp` and the `.*.creating/` folders of sessions being created). Globs, not
    `:(exclude)` pathspecs: git 2.39 adds nothing at all when an exclude is shorter than the path."""
    if path.endswith("/sessions"):
        return f":(glob){path}/[!.]*/**/[!.]*"
    if "/sessions/" in path:  # one session's folder
        return f":(glob){path}/**/[!.]*"
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
