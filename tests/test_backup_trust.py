"""The trail is only ours, restore cannot destroy, secrets stay out: each test is an attack,
run with real git repositories, hooks, worktrees and symlinks."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import git, tree_snapshot
from session_manager.errors import BackupError, BranchRefused, RestoreRefused
from session_manager.service import Service

BRANCH = "session-backups"
STATE = "pipeline_status.json"
TOKEN = "ghp_s3cretTOKENvalue"


def folder_of(service: Service, session_id: str) -> Path:
    return service.store.session_dir(session_id)


def commits(root: Path, ref: str = BRANCH) -> list[str]:
    proc = subprocess.run(["git", "rev-list", ref], cwd=root, capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def write_config(root: Path, text: str) -> None:
    (root / ".claude").mkdir(exist_ok=True)
    (root / ".claude" / "session-manager.toml").write_text(text)


def user_commit(root: Path) -> str:
    (root / "app.py").write_text("print('mine')\n")
    git(root, "add", "app.py")
    git(root, "commit", "-q", "-m", "my work")
    return git(root, "rev-parse", "HEAD").strip()


def backed_up_session(service: Service) -> tuple[str, str]:
    session_id = service.start(level="dev").state.session_id
    revision = service.backup_now().revision
    assert revision
    return session_id, revision


# -- a trail that is only ours -------------------------------------------------------------------
def test_backup_refuses_branch_main(project: Path) -> None:
    mine = user_commit(project)
    git(project, "checkout", "-q", "-b", "feature")  # main is not checked out: it must still be refused
    write_config(project, '[backup]\nbranch = "main"\n')
    service = Service(project, actor="test")
    with pytest.raises(BranchRefused, match="branch main exists and is not a session-manager backup trail"):
        service.backup_now()
    assert git(project, "rev-parse", "main").strip() == mine


def test_backup_refuses_head(project: Path) -> None:
    user_commit(project)
    write_config(project, '[backup]\nbranch = "HEAD"\n')
    with pytest.raises(BranchRefused, match="'HEAD' is not a branch name"):
        Service(project, actor="test").backup_now()
    assert not (project / ".git" / "refs" / "heads" / "HEAD").exists()


def test_backup_refuses_foreign_branch_named_session_backups(project: Path, service: Service) -> None:
    user_commit(project)
    git(project, "branch", BRANCH)
    theirs = git(project, "rev-parse", BRANCH).strip()
    service.store.claude_dir.mkdir(exist_ok=True)
    with pytest.raises(BranchRefused, match=f"branch {BRANCH} exists and is not a session-manager backup trail"):
        service.start(level="dev") and service.backup_now()
    assert git(project, "rev-parse", BRANCH).strip() == theirs


def test_backup_refuses_branch_checked_out_in_worktree(project: Path, tmp_path: Path, service: Service) -> None:
    user_commit(project)
    session_id, revision = backed_up_session(service)
    git(project, "worktree", "add", "-q", str(tmp_path / "wt"), BRANCH)
    service.update(session_id=session_id, learnings=["after the worktree"])
    with pytest.raises(BranchRefused, match=f"checked out in {tmp_path / 'wt'}"):
        service.backup_now()
    assert commits(project) == commits(project, revision)


def test_backup_recognises_a_trail_made_before_the_marker(project: Path, service: Service) -> None:
    service.start(level="dev")
    git(project, "update-ref", "-d", f"refs/heads/{BRANCH}")
    (project / ".git" / "session-manager" / "trail-verified").unlink()
    tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # the empty tree
    old = subprocess.run(["git", "commit-tree", tree], input="session-manager: manual (0 sessions)\n\nReason: manual\n",
                         cwd=project, capture_output=True, text=True, check=True).stdout.strip()
    git(project, "update-ref", f"refs/heads/{BRANCH}", old)
    result = service.backup_now()
    assert result.committed and commits(project)[-1] == old


def test_a_new_trail_root_carries_the_marker(project: Path, service: Service) -> None:
    service.start(level="dev")
    root = commits(project)[-1]
    assert "Session-Manager-Trail: 1" in git(project, "log", "-1", "--format=%B", root)


def test_backup_cleans_stale_ref_lock(project: Path, service: Service) -> None:
    session_id, _ = backed_up_session(service)
    lock = project / ".git" / "refs" / "heads" / f"{BRANCH}.lock"
    lock.write_text("left by a killed git\n")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    service.update(session_id=session_id, learnings=["after the crash"])
    assert service.backup_now().committed
    assert not lock.exists()


def test_backup_leaves_a_fresh_ref_lock_alone(project: Path, service: Service) -> None:
    session_id, revision = backed_up_session(service)
    lock = project / ".git" / "refs" / "heads" / f"{BRANCH}.lock"
    lock.write_text("held right now\n")
    service.update(session_id=session_id, learnings=["while git works"])
    with pytest.raises(BackupError, match="another git process is updating"):
        service.backup_now()
    assert lock.exists() and commits(project)[0] == revision


def test_backup_ignores_failing_user_hooks(project: Path, tmp_path: Path, service: Service) -> None:
    user_commit(project)
    ran = tmp_path / "hooks-ran"
    hooks = project / ".git" / "hooks"
    for name in ("post-index-change", "reference-transaction", "pre-commit", "post-commit", "pre-push"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> '{ran}'\nexit 1\n")
        (hooks / name).chmod(0o755)
    git(project, "config", "core.hooksPath", str(hooks))  # the user's setting is overridden too
    subprocess.run(["git", "update-ref", "refs/heads/probe", "HEAD"], cwd=project, capture_output=True)
    assert ran.exists()  # the hooks are live for the user's own git commands
    ran.unlink()
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["hooks fail"])
    assert service.backup_now().committed
    assert len(commits(project)) == 2
    assert not ran.exists()


# -- secrets -----------------------------------------------------------------------------------
def test_push_error_does_not_print_token(project: Path, service: Service, cli) -> None:
    service.start(level="dev")
    url = f"https://someone:{TOKEN}@127.0.0.1:9/team.git"
    with pytest.raises(BackupError) as caught:
        service.backup_push(remote=url)
    assert TOKEN not in str(caught.value) and "https://***@127.0.0.1:9/team.git" in str(caught.value)
    result = cli("backup", "push", "--remote", url)
    assert result.code != 0 and TOKEN not in result.out + result.err


def test_config_remote_token_not_committed(project: Path) -> None:
    write_config(project, f'[backup]\nremote = "https://someone:{TOKEN}@example.com/team.git"\n')
    service = Service(project, actor="test")
    service.start(level="dev")
    committed = git(project, "show", f"{BRANCH}:.claude/session-manager.toml")
    assert TOKEN not in committed and 'remote = "https://***@example.com/team.git"' in committed
    assert TOKEN in (project / ".claude" / "session-manager.toml").read_text()
    assert TOKEN not in subprocess.run(["git", "log", "-p", BRANCH], cwd=project, capture_output=True, text=True).stdout
    assert not service.backup_now().committed  # the redacted copy is stable: no commit per backup


# -- restore that cannot destroy -----------------------------------------------------------------
def test_restore_refuses_symlinked_session_folder(project: Path, tmp_path: Path, service: Service) -> None:
    session_id, revision = backed_up_session(service)
    folder = folder_of(service, session_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("not a session file\n")
    shutil.rmtree(folder)
    folder.symlink_to(elsewhere)
    before = tree_snapshot(elsewhere)
    with pytest.raises(RestoreRefused, match="is a symbolic link; restore refused"):
        service.backup_restore(session_id=session_id, at=revision)
    assert tree_snapshot(elsewhere) == before and folder.is_symlink()


def test_restore_refuses_symlink_to_project_root(project: Path, service: Service) -> None:
    user_commit(project)
    session_id, revision = backed_up_session(service)
    folder = folder_of(service, session_id)
    shutil.rmtree(folder)
    folder.symlink_to("../../..")  # sessions/ID -> the project root
    assert (folder / ".git").is_dir()
    with pytest.raises(RestoreRefused):
        service.backup_restore(session_id=session_id, at=revision)
    assert (project / ".git" / "HEAD").is_file() and (project / "app.py").is_file()
    assert git(project, "status", "--porcelain", "--", "app.py") == ""


def test_restore_refuses_a_symlinked_parent_folder(project: Path, tmp_path: Path, service: Service) -> None:
    session_id, revision = backed_up_session(service)
    sessions = folder_of(service, session_id).parent
    moved = tmp_path / "moved-sessions"
    shutil.move(str(sessions), moved)
    sessions.symlink_to(moved)
    before = tree_snapshot(moved)
    with pytest.raises(RestoreRefused, match="sessions is a symbolic link"):
        service.backup_restore(session_id=session_id, at=revision)
    assert tree_snapshot(moved) == before


def test_restore_keeps_untracked_files_recoverable(project: Path, service: Service) -> None:
    session_id, revision = backed_up_session(service)
    folder = folder_of(service, session_id)
    (folder / ".env").write_text(f"TOKEN={TOKEN}\n")  # hidden: never backed up
    (folder / "notes.md").write_text("tracked by the safety backup\n")
    nested = folder / "vendor"
    nested.mkdir()
    git(nested, "init", "-q")
    (nested / "lib.py").write_text("x = 1\n")
    result = service.backup_restore(session_id=session_id, at=revision)
    assert result.deleted == ["notes.md"]
    assert result.moved == [".env", "vendor"]
    trash = project / result.moved_to
    assert (trash / ".env").read_text() == f"TOKEN={TOKEN}\n"
    assert (trash / "vendor" / ".git").is_dir() and (trash / "vendor" / "lib.py").read_text() == "x = 1\n"
    assert not (folder / ".env").exists() and not nested.exists()
    service.backup_restore(session_id=session_id, at=result.backup_before.revision)  # the printed undo
    assert (folder / "notes.md").read_text() == "tracked by the safety backup\n"


def test_restore_replaces_a_symlinked_file_without_writing_through_it(project: Path, tmp_path: Path, service: Service) -> None:
    session_id, revision = backed_up_session(service)
    folder = folder_of(service, session_id)
    target = tmp_path / "shell-rc"
    target.write_text("export PATH=/usr/bin\n")
    (folder / "context.md").unlink()
    (folder / "context.md").symlink_to(target)
    result = service.backup_restore(session_id=session_id, at=revision)
    assert target.read_text() == "export PATH=/usr/bin\n"
    assert not (folder / "context.md").is_symlink() and "context.md" in result.restored
    assert result.moved == ["context.md"] and (project / result.moved_to / "context.md").is_symlink()


# -- one environment policy ------------------------------------------------------------------------
def test_start_context_reads_the_project_despite_leaked_git_variables(project: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    user_commit(project)
    (project / "dirty.txt").write_text("uncommitted\n")
    other = tmp_path / "other.git"
    git(tmp_path, "init", "-q", "--bare", str(other))
    monkeypatch.setenv("GIT_DIR", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "hook-index"))
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    for key in ("GIT_DIR", "GIT_INDEX_FILE"):
        monkeypatch.delenv(key)
    import json

    facts = json.loads((folder_of(service, session_id) / "context.json").read_text())["git"]
    assert facts["branch"] == "main" and facts["subject"] == "my work" and facts["dirty_files"] == 1
    assert not (tmp_path / "hook-index").exists()
