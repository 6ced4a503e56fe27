"""Where the trail lives and whether its branch is ours.

The trail lives in the project's repository (`rev-parse`), or, outside any repository, in a bare
one created at `.claude/backups.git` with the project root as its work tree. Every git command of
the trail runs through `git.Git` with the user's hooks off and a private index,
`<git-dir>/session-manager/index`.

The branch (`backup.branch`) is used only when it is ours (`check_branch`): a valid branch name,
not `HEAD`, not checked out in any worktree, and absent or a trail, recognised by its root commit
(the `Session-Manager-Trail: 1` trailer, or the message shape every trail commit had before it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from session_manager.errors import BackupError, BranchRefused
from session_manager.git import Git, last_line, no_hooks_dir
from session_manager.store import atomic_write

TRAILER = "Session-Manager-Trail: 1"
# The root commit of a trail made before the trailer existed: our subject, and our last line.
OLD_ROOT = re.compile(r"\Asession-manager: .+ \(\d+ sessions?\)\n(?:.*\n)*Reason: .+\n*\Z")
LOCK_HELD = re.compile(r"Unable to create '(?P<path>[^']+\.lock)': File exists")


@dataclass(frozen=True)
class Tip:
    commit: str
    tree: str
    time: int  # committer time, seconds since the epoch


class Repo:
    """A git directory and the project root whose session files it backs up."""

    def __init__(self, root: Path, git_dir: Path, common_dir: Path, prefix: str, separate: bool) -> None:
        self.root = root
        self.git_dir = git_dir
        self.common_dir = common_dir  # refs live here (the main repository's for a linked worktree)
        self.prefix = prefix  # the root's path inside the work tree ("" at its top)
        self.separate = separate  # our own `.claude/backups.git`, not the project's repository
        self.private = git_dir / "session-manager"
        self.index = self.private / "index"
        self.index_tree = self.private / "index.tree"  # the tree the index held after the last backup
        self.changes_mark = self.private / "changes-epoch"  # the session index's epoch our last backup consumed
        self.verified = self.private / "trail-verified"  # `branch tip` last checked (or written) as ours
        # Index format 4 compresses the paths: ~40% smaller for 40,000 session files.
        self.git = Git(root, git_dir=git_dir if separate else None, work_tree=root if separate else None,
                       hooks_off=no_hooks_dir(git_dir),
                       env={"GIT_INDEX_FILE": str(self.index), "GIT_INDEX_VERSION": "4"})
        self.run = self.git.run
        self.out = self.git.out

    def tip(self, ref: str) -> Tip | None:
        fmt = "--format=%(refname)%00%(objectname)%00%(tree)%00%(committerdate:raw)"
        for line in self.out("for-each-ref", fmt, ref).splitlines():
            name, commit, tree, date = line.split("\0")
            if name == ref:
                if not tree:
                    raise BranchRefused(f"{ref} does not point at a commit, so it is not a backup trail;"
                                        " set another backup.branch in .claude/session-manager.toml")
                return Tip(commit, tree, int(date.split()[0]))
        return None

    def clear_stale_ref_lock(self, ref: str, older_than: float) -> bool:
        """Remove `<ref>.lock` when it is older than `older_than` seconds: git holds a ref lock for
        milliseconds, so an old one was left by a killed process. True when one was removed."""
        lock = self.common_dir / f"{ref}.lock"
        try:
            age = time.time() - lock.lstat().st_mtime
        except OSError:
            return False
        if age < older_than:
            raise BackupError(f"{lock} exists: another git process is updating {ref}; try again"
                              f" (it is removed once older than {older_than:g} s)")
        lock.unlink(missing_ok=True)
        return True


def open_repo(root: Path, create: bool) -> Repo | None:
    """The repository the trail lives in: the project's own, else `.claude/backups.git`
    (created when `create`; None when it does not exist and may not be created)."""
    probe = Git(root)
    proc = probe.run("rev-parse", "--absolute-git-dir", "--path-format=absolute", "--git-common-dir",
                     "--show-prefix", check=False)
    if proc.returncode == 0:
        git_dir, common_dir, prefix = (proc.stdout.decode("utf-8", "surrogateescape").split("\n") + ["", ""])[:3]
        return Repo(root, Path(git_dir), Path(common_dir), prefix, separate=False)
    if b"not a git repository" not in proc.stderr:
        raise BackupError(f"git cannot open the repository at {root}: {last_line(proc.stderr)}")
    own = root / ".claude" / "backups.git"
    if not (own / "HEAD").is_file():
        if not create:
            return None
        own.parent.mkdir(parents=True, exist_ok=True)
        init = probe.run("init", "--quiet", "--bare", str(own), check=False)
        if init.returncode != 0:
            raise BackupError(f"cannot create the backup repository {own}: {last_line(init.stderr)}")
    return Repo(root, own, own, "", separate=True)


def check_branch(repo: Repo, branch: str, tip: Tip | None) -> None:
    """Refuse a backup branch that is not only ours (see the module docstring): one line naming
    the branch and what to do. The root-commit check is remembered per tip, so a backup that
    moved the branch itself does not walk the history again."""
    ref = f"refs/heads/{branch}"
    fix = "set another backup.branch in .claude/session-manager.toml"
    if branch == "HEAD" or branch.startswith("-"):
        raise BranchRefused(f"backup.branch {branch!r} is not a branch name git allows; {fix}")
    known = tip is not None and _verified(repo) == f"{ref} {tip.commit}"  # we checked (or made) this tip
    if not known:
        checked = repo.run("check-ref-format", "--branch", branch, check=False)
        if checked.returncode != 0 or checked.stdout.decode().strip() != branch:
            raise BranchRefused(f"backup.branch {branch!r} is not a valid git branch name; {fix}")
    for worktree, head in _worktree_branches(repo):
        if head == ref:
            raise BranchRefused(
                f"the backup branch {branch} is checked out in {worktree}; switch that worktree to another"
                f" branch (backups would move it under your work), or {fix}"
            )
    if tip is None or known:
        return
    roots = repo.out("log", "--max-parents=0", "--format=%H%x00%B%x1e", tip.commit).split("\x1e")
    for record in filter(None, (r.strip("\n") for r in roots)):
        commit, _, message = record.partition("\0")
        if not is_trail_root(message + "\n"):
            raise BranchRefused(
                f"branch {branch} exists and is not a session-manager backup trail (its first commit"
                f" {commit[:12]} is not ours); {fix}, or rename that branch"
            )
    remember_verified(repo, ref, tip.commit)


def is_trail_root(message: str) -> bool:
    return TRAILER in message.splitlines() or OLD_ROOT.match(message.strip("\n") + "\n") is not None


def remember_verified(repo: Repo, ref: str, commit: str) -> None:
    repo.private.mkdir(parents=True, exist_ok=True)
    atomic_write(repo.verified, f"{ref} {commit}\n", durable=False)


def _verified(repo: Repo) -> str:
    try:
        return repo.verified.read_text().strip()
    except OSError:
        return ""


def _worktree_branches(repo: Repo) -> list[tuple[str, str]]:
    """(worktree path, the ref it has checked out) for every worktree of the repository."""
    found: list[tuple[str, str]] = []
    path = ""
    for line in repo.out("worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line.startswith("branch "):
            found.append((path, line[len("branch "):]))
    return found
