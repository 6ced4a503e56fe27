"""The one way session-manager runs git: one environment policy, the user's hooks off, no secret
in a message.

Environment (pre-commit's `no_git_env()` habit): every `GIT_*` variable is dropped except the few
that say *how* to reach git, a remote or an identity (below). The dropped ones (`GIT_DIR`,
`GIT_INDEX_FILE`, `GIT_WORK_TREE`, `GIT_OBJECT_DIRECTORY`, `GIT_COMMON_DIR`, dates, pathspec
modes, ...) leak in when we run inside a git hook or a rebase's `exec` and would point git at
another repository, index or object store.

Hooks: a runner made with `hooks_off` passes `-c core.hooksPath=<an empty folder we own>`, so no
hook of the user runs for our commands (`post-index-change`, `reference-transaction`,
`pre-push`, ...): a failing or slow hook cannot block a backup, and ours never run theirs.

Secrets: `redact()` removes `user:password@` from URLs; every message this module builds goes
through it (push errors echo the remote's URL).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from session_manager.errors import BackupError

# What may stay of the caller's GIT_* variables: the git binary, transport and TLS settings, the
# user's configuration files, where repository discovery stops, and the author/committer names.
KEEP = frozenset({
    "GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
    "GIT_SSL_NO_VERIFY", "GIT_ASKPASS", "GIT_TERMINAL_PROMPT", "GIT_HTTP_PROXY_AUTHMETHOD",
    "GIT_ALLOW_PROTOCOL", "GIT_PROXY_COMMAND", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
})
KEEP_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")  # with GIT_CONFIG_COUNT: `-c` given by the caller
KEEP_COUNT = "GIT_CONFIG_COUNT"
CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@")


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every git process runs with."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in KEEP or key == KEEP_COUNT or key.startswith(KEEP_PREFIXES)
    }
    env["LC_ALL"] = "C"  # git's messages are parsed (identity problems, push status)
    env.update(extra or {})
    return env


def redact(text: str) -> str:
    """`https://user:token@host/x` -> `https://***@host/x`: credentials never reach a message."""
    return CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)


def has_credentials(url: str) -> bool:
    return CREDENTIALS.search(url) is not None


def last_line(stderr: bytes) -> str:
    """The line of git's stderr that says what went wrong (redacted)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return redact((fatal or lines or ["no message"])[-1])


def no_hooks_dir(git_dir: Path) -> Path:
    """An empty folder of ours that `core.hooksPath` points at, so the user's hooks never run."""
    folder = git_dir / "session-manager" / "no-hooks"
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():  # it must stay empty: a file put there would run as a hook
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
    return folder


class Git:
    """git on one repository: `git -C cwd [--git-dir --work-tree] [-c core.hooksPath=...] ARGS`."""

    def __init__(
        self,
        cwd: Path,
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        hooks_off: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.prefix = ["git", "-C", str(cwd)]
        if git_dir is not None:
            self.prefix.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            self.prefix.append(f"--work-tree={work_tree}")
        if hooks_off is not None:
            self.prefix += ["-c", f"core.hooksPath={hooks_off}"]
        self.env = environment(env)
        self.timeout = timeout

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one git command; with `check`, a non-zero exit is a BackupError carrying git's reason."""
        timeout = timeout if timeout is not None else self.timeout
        try:
            proc = subprocess.run(
                [*self.prefix, *args], input=input, capture_output=True, env={**self.env, **(env or {})},
                timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise BackupError("git is not installed (or not on PATH); backups need git") from None
        except subprocess.TimeoutExpired:
            raise BackupError(f"git {args[0] if args else ''} took longer than {timeout:g} s; gave up") from None
        except OSError as exc:
            raise BackupError(f"cannot run git: {exc.strerror}") from None
        if check and proc.returncode != 0:
            raise BackupError(f"git {args[0]} failed: {last_line(proc.stderr)}")
        return proc

    def out(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> str:
        """stdout of a command that must succeed, stripped."""
        return self.run(*args, input=input, env=env, timeout=timeout).stdout.decode("utf-8", "surrogateescape").strip()
