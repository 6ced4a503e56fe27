"""The git backup trail, against real git repositories in temporary folders."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import git, run_cli, tree_snapshot
from session_manager import backup
from session_manager.errors import BackupError, InvalidInput, NotFound
from session_manager.service import Service

BRANCH = "session-backups"
STATE = "pipeline_status.json"


# -- helpers ------------------------------------------------------------------------------
def folder_of(service: Service, session_id: str) -> str:
    return str(service.store.session_dir(session_id).relative_to(service.root))


def commits(root: Path, *extra: str) -> list[str]:
    proc = subprocess.run(["git", "rev-list", BRANCH, *extra], cwd=root, capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def subject(root: Path, rev: str = BRANCH) -> str:
    return git(root, "log", "-1", "--format=%s", rev).strip()


def blob(root: Path, rev: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, check=True).stdout


def user_view(root: Path) -> dict[str, str]:
    """What the user sees of their own work: it must not change by a byte."""

    def out(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return f"{proc.returncode}:{proc.stdout}"

    return {
        "HEAD file": (root / ".git" / "HEAD").read_text(),
        "HEAD": out("rev-parse", "--verify", "-q", "HEAD"),
        "branch": out("branch", "--show-current"),
        "diff --cached": out("diff", "--cached"),
        "diff": out("diff"),
        "status": out("status", "--porcelain"),
        "branches": "".join(line for line in out("for-each-ref", "--format=%(refname) %(objectname)%0a", "refs/")
                            .splitlines(keepends=True) if f"refs/heads/{BRANCH} " not in line),
    }


def user_work(root: Path) -> None:
    """A feature branch with a commit, a staged change and an unstaged change of the user's own."""
    (root / "README.md").write_text("hello\n")
    (root / "app.py").write_text("print('v1')\n")
    git(root, "add", "README.md", "app.py")
    git(root, "commit", "-q", "-m", "initial")
    git(root, "checkout", "-q", "-b", "feature")
    (root / "staged.txt").write_text("staged\n")
    git(root, "add", "staged.txt")
    (root / "app.py").write_text("print('v2, not staged')\n")
    (root / "untracked.txt").write_text("mine\n")


def write_config(root: Path, text: str) -> None:
    (root / ".claude").mkdir(exist_ok=True)
    (root / ".claude" / "session-manager.toml").write_text(text)


# -- backup ---------------------------------------------------------------------------------
def test_backup_commits_session_files_to_the_backup_branch(project: Path, service: Service, cli) -> None:
    session_id = service.start(level="dev", tag="one").state.session_id
    service.update(session_id=session_id, learnings=["backed up"])
    result = cli("backup")
    assert result.code == 0, result
    assert result.out.startswith(f"backed up 1 session to {BRANCH} at ")
    files = git(project, "ls-tree", "-r", "--name-only", BRANCH).split()
    assert f"{folder_of(service, session_id)}/{STATE}" in files
    assert b"backed up" in blob(project, BRANCH, f"{folder_of(service, session_id)}/{STATE}")


def test_backup_never_touches_head_index_branch_or_files(project: Path, service: Service) -> None:
    user_work(project)
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["more"])
    before, index = user_view(project), (project / ".git" / "index").read_bytes()
    files = [(project / name).read_bytes() for name in ("README.md", "app.py", "staged.txt", "untracked.txt")]
    result = service.backup_now()
    assert result.committed
    assert (project / ".git" / "index").read_bytes() == index
    assert user_view(project) == before
    assert [(project / name).read_bytes() for name in ("README.md", "app.py", "staged.txt", "untracked.txt")] == files
    assert git(project, "rev-parse", "HEAD").strip() not in commits(project)


def test_backup_works_when_claude_folder_is_gitignored(project: Path, service: Service) -> None:
    (project / ".gitignore").write_text(".claude/\n")
    git(project, "add", ".gitignore")
    user_work(project)
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["ignored but kept"])
    before = user_view(project)
    assert service.backup_now().committed
    assert user_view(project) == before
    assert f"{folder_of(service, session_id)}/{STATE}" in git(project, "ls-tree", "-r", "--name-only", BRANCH)


def test_backup_works_in_a_repository_without_commits(project: Path, service: Service) -> None:
    (project / "mine.txt").write_text("staged, never committed\n")
    git(project, "add", "mine.txt")
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["no commits yet"])
    before = user_view(project)
    assert service.backup_now().committed
    assert user_view(project) == before
    assert before["HEAD"].startswith("1:")  # still unborn
    assert f"{folder_of(service, session_id)}/{STATE}" in git(project, "ls-tree", "-r", "--name-only", BRANCH)


def test_backup_outside_any_repository_creates_claude_backups_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(root)
    result = run_cli(root, "start", "dev", "--json")
    assert result.code == 0, result
    session_id = result.json()["state"]["session_id"]
    assert run_cli(root, "learning", "add", session_id, "outside git").code == 0
    assert run_cli(root, "backup").code == 0
    repo = root / ".claude" / "backups.git"
    assert not (root / ".git").exists()
    assert git(root, "--git-dir", str(repo), "rev-parse", "--is-bare-repository").strip() == "true"
    files = git(root, "--git-dir", str(repo), "ls-tree", "-r", "--name-only", BRANCH).split()
    assert f".claude/level-1-dev/sessions/{session_id}/{STATE}" in files
    assert len(git(root, "--git-dir", str(repo), "rev-list", BRANCH).split()) == 2


def test_backup_with_nothing_changed_makes_no_commit(project: Path, service: Service) -> None:
    service.start(level="dev")
    service.backup_now()
    before = commits(project)
    result = service.backup_now()
    assert not result.committed and result.skipped == "nothing changed since the last backup"
    assert result.revision == before[0]
    assert commits(project) == before


def test_backup_leaves_out_temp_files_and_private_folder(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    folder = service.store.session_dir(session_id)
    (folder / f".{STATE}.1a2b3c4d.tmp").write_text("half written")
    staging = folder.parent / ".dev_20990101_0000.1a2b3c4d.creating"
    staging.mkdir()
    (staging / STATE).write_text("{}")
    (folder / "notes.md").write_text("kept\n")
    service.backup_now()
    files = git(project, "ls-tree", "-r", "--name-only", BRANCH).split()
    assert f"{folder_of(service, session_id)}/notes.md" in files
    assert not [f for f in files if ".tmp" in f or ".creating" in f or ".session-manager" in f]


def test_backup_takes_memory_templates_and_config(project: Path, service: Service) -> None:
    write_config(project, "[backup]\ncoalesce_seconds = 0\n")
    (project / ".claude" / "memory").mkdir()
    (project / ".claude" / "memory" / "learnings.md").write_text("- a learning\n")
    (project / ".claude" / "templates").mkdir()
    (project / ".claude" / "templates" / "plan.md.j2").write_text("# our own plan\n")
    (project / ".claude" / "settings.local.json").write_text('{"secret": "not ours"}')
    service.start(level="dev")
    files = set(git(project, "ls-tree", "-r", "--name-only", BRANCH).split())
    assert {".claude/memory/learnings.md", ".claude/templates/plan.md.j2", ".claude/session-manager.toml"} <= files
    assert ".claude/settings.local.json" not in files


def test_backup_message_names_the_changed_sessions_and_reason(project: Path, service: Service) -> None:
    first = service.start(level="dev", tag="first").state.session_id
    second = service.start(level="dev", tag="second").state.session_id
    service.backup_now()
    service.update(session_id=second, learnings=["only the second changed"])
    result = service.backup_now()
    assert result.sessions == [second]
    message = git(project, "log", "-1", "--format=%B", BRANCH)
    assert message.startswith("session-manager: manual (1 session)\n")
    assert second in message and first not in message and "Reason: manual" in message


def test_backup_records_a_deleted_session(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    folder = folder_of(service, session_id)
    shutil.rmtree(project / folder)
    result = service.backup_now()
    assert result.committed and result.sessions == [session_id]
    assert folder not in git(project, "ls-tree", "-r", "--name-only", BRANCH)


def test_backup_without_any_git_identity_still_commits(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(key, raising=False)
    Path(os.environ["GIT_CONFIG_GLOBAL"]).write_text("[user]\n\tuseConfigOnly = true\n")
    service = Service(project, actor="test")
    service.start(level="dev")
    assert git(project, "log", "-1", "--format=%an <%ae>", BRANCH).strip() == "session-manager <session-manager@localhost>"


def test_backup_uses_the_users_git_identity(project: Path, service: Service) -> None:
    service.start(level="dev")
    assert git(project, "log", "-1", "--format=%an <%ae>", BRANCH).strip() == "Test Author <author@example.com>"


def test_backup_ignores_git_variables_leaked_from_a_hook(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.git"
    git(tmp_path, "init", "-q", "--bare", str(other))
    monkeypatch.setenv("GIT_DIR", str(other))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "hook-index"))
    monkeypatch.setenv("GIT_LITERAL_PATHSPECS", "1")
    service = Service(project, actor="test")
    service.start(level="dev")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_LITERAL_PATHSPECS"):
        monkeypatch.delenv(key)
    assert len(commits(project)) == 1
    assert git(other, "for-each-ref").strip() == ""
    assert not (tmp_path / "hook-index").exists()


def test_backup_refuses_when_the_backup_branch_is_checked_out(project: Path, service: Service) -> None:
    service.start(level="dev")
    git(project, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
    before = commits(project)
    with pytest.raises(BackupError, match="is checked out"):
        service.backup_now()
    assert commits(project) == before


def test_backup_recovers_from_a_stale_index_lock(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    lock = project / ".git" / "session-manager" / "index.lock"
    lock.write_text("left by a killed git")
    service.update(session_id=session_id, learnings=["after the crash"])
    assert service.backup_now().committed
    assert not lock.exists()


def test_backup_of_a_project_below_the_repository_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "mono"
    root = top / "apps" / "site"
    root.mkdir(parents=True)
    git(top, "init", "-q", "-b", "main")
    monkeypatch.chdir(root)
    service = Service(root, actor="test")
    session_id = service.start(level="dev").state.session_id
    path = f"apps/site/{folder_of(service, session_id)}/{STATE}"
    assert path in git(top, "ls-tree", "-r", "--name-only", BRANCH)
    assert [e.reason for e in service.backup_history(session_id=session_id).entries] == ["session start"]
    (root / folder_of(service, session_id) / STATE).write_text('{"trunc')
    service.backup_restore(session_id=session_id)
    assert service.show(session_id=session_id).state.session_id == session_id


# -- when backups happen -----------------------------------------------------------------------
def test_session_start_and_end_back_up_at_once_and_updates_wait(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    assert subject(project) == "session-manager: session start (1 session)"
    service.update(session_id=session_id, learnings=["waits for the interval"])
    assert len(commits(project)) == 1
    service.end(session_id=session_id, summary="done")
    assert len(commits(project)) == 2
    assert subject(project) == "session-manager: session end (1 session)"
    assert b"waits for the interval" in blob(project, BRANCH, f"{folder_of(service, session_id)}/{STATE}")


def test_a_burst_of_stage_completions_is_coalesced_but_recovery_always_commits(project: Path, service: Service) -> None:
    write_config(project, "[backup]\ncoalesce_seconds = 3600\n")
    session_id = service.start(level="dev").state.session_id
    for stage in ("initialization", "planning"):
        service.stage_start(session_id=session_id, stage=stage)
        service.stage_complete(session_id=session_id, stage=stage)
    assert len(commits(project)) == 1
    service.stage_start(session_id=session_id, stage="execution")
    service.record_failure(session_id=session_id, stage="execution", error="tool crashed")
    assert len(commits(project)) == 2
    assert subject(project) == "session-manager: before recovery (1 session)"


def test_the_last_change_of_a_burst_lands_after_the_window_without_git_per_trigger(
        project: Path, service: Service) -> None:
    """A long-running server hands every completion to the loop: within the window they run no git
    at all, and one trailing backup takes the last change once the window has passed."""
    write_config(project, "[backup]\ninterval_seconds = 3600\ncoalesce_seconds = 1\n")
    requests: queue.Queue[str] = queue.Queue()
    service.defer_backup = requests.put  # as the server hands them over
    session_id = service.start(level="dev").state.session_id
    stop = threading.Event()
    thread = threading.Thread(target=backup.run_loop, args=(project,), kwargs={"stop": stop, "requests": requests})
    thread.start()
    try:
        stages = ("initialization", "planning", "execution")
        for stage in stages:
            service.stage_start(session_id=session_id, stage=stage)
            service.stage_complete(session_id=session_id, stage=stage, notes=f"done {stage}")
        deadline = time.monotonic() + 30
        record = f"{BRANCH}:{folder_of(service, session_id)}/execution_complete.json"
        while b"done execution" not in subprocess.run(["git", "show", record], cwd=project,
                                                      capture_output=True).stdout:
            assert time.monotonic() < deadline, "the trailing backup never landed"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert len(commits(project)) <= 4  # the start, the interval round, the first completion, the trailing one


def test_a_failed_backup_does_not_fail_the_operation(project: Path, cli) -> None:
    git(project, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
    result = cli("start", "dev", "--json")
    assert result.code == 0, result
    assert "backup failed" in result.err
    session_id = result.json()["state"]["session_id"]
    events = [json.loads(line) for line in (project / result.json()["folder"] / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "backup_failed"]
    assert failed and failed[0]["trigger"] == "session start" and "checked out" in failed[0]["error"]
    assert cli("status", session_id).code == 0


# -- history and restore ----------------------------------------------------------------------------
def test_cli_history_lists_the_backups_of_one_session(project: Path, service: Service, cli) -> None:
    first = service.start(level="dev", tag="first").state.session_id
    service.update(session_id=first, learnings=["v2"])
    service.backup_now()
    other = service.start(level="dev", tag="other").state.session_id
    service.update(session_id=other, learnings=["not the first"])
    service.backup_now()
    result = cli("backup", "history", first, "--json")
    assert result.code == 0, result
    entries = result.json()["entries"]
    assert [e["revision"] for e in entries] == commits(project, "--", folder_of(service, first))
    assert [e["reason"] for e in entries] == ["manual", "session start"]
    human = cli("backup", "history", first)
    assert entries[0]["short"] in human.out and "session start" in human.out


def test_cli_restore_brings_back_a_revision_and_backs_up_the_present_first(project: Path, service: Service, cli) -> None:
    session_id = service.start(level="dev").state.session_id
    path = f"{folder_of(service, session_id)}/{STATE}"
    old = commits(project)[0]
    service.update(session_id=session_id, learnings=["v2"])
    service.backup_now()
    service.update(session_id=session_id, learnings=["v3, never backed up"])
    present = (project / path).read_bytes()
    result = cli("backup", "restore", session_id, "--at", old[:10], "--json")
    assert result.code == 0, result
    assert (project / path).read_bytes() == blob(project, old, path)
    assert subject(project) == "session-manager: before restore (1 session)"
    assert blob(project, BRANCH, path) == present
    assert result.json()["backup_before"]["revision"] == commits(project)[0]


def test_cli_restore_repairs_a_truncated_state_file(project: Path, service: Service, cli) -> None:
    session_id = service.start(level="dev").state.session_id
    path = project / folder_of(service, session_id) / STATE
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    broken = cli("status", session_id)
    assert broken.code == 2 and f"session-manager backup restore {session_id}" in broken.err
    result = cli("backup", "restore", session_id)
    assert result.code == 0, result
    assert path.read_bytes() == good
    assert cli("status", session_id).code == 0


def test_restore_deletes_files_the_backup_did_not_have(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    folder = project / folder_of(service, session_id)
    (folder / "notes").mkdir()
    (folder / "notes" / "extra.md").write_text("added after the backup\n")
    result = service.backup_restore(session_id=session_id, at=commits(project)[0])
    assert result.deleted == ["notes/extra.md"]
    assert not (folder / "notes").exists()


def test_restore_refuses_an_option_like_revision(project: Path, service: Service, cli) -> None:
    session_id = service.start(level="dev").state.session_id
    before, files = commits(project), tree_snapshot(project / ".claude")
    result = cli("backup", "restore", session_id, "--at=--output=/tmp/x")
    assert result.code == 2 and "must not start with '-'" in result.err
    assert commits(project) == before and tree_snapshot(project / ".claude") == files


def test_restore_refuses_a_revision_off_the_backup_branch(project: Path, service: Service) -> None:
    user_work(project)
    session_id = service.start(level="dev").state.session_id
    before = commits(project)
    with pytest.raises(InvalidInput, match="not on the backup branch"):
        service.backup_restore(session_id=session_id, at="HEAD")
    with pytest.raises(NotFound, match="no backup revision"):
        service.backup_restore(session_id=session_id, at="no-such-rev")
    assert commits(project) == before


def test_restore_brings_back_a_deleted_session_folder(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    folder = project / folder_of(service, session_id)
    files = tree_snapshot(folder)
    shutil.rmtree(folder)
    result = service.backup_restore(session_id=session_id)
    assert result.undo is None
    assert {k: v for k, v in tree_snapshot(folder).items() if k != "events.jsonl"} == {
        k: v for k, v in files.items() if k != "events.jsonl"}
    assert service.show(session_id=session_id).state.session_id == session_id


def test_restore_can_be_undone(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    path = project / folder_of(service, session_id) / STATE
    service.update(session_id=session_id, learnings=["kept by the safety backup"])
    present = path.read_bytes()
    result = service.backup_restore(session_id=session_id, at=commits(project)[0])
    assert path.read_bytes() != present
    assert result.undo == f"session-manager backup restore {session_id} --at {result.backup_before.revision[:12]}"
    service.backup_restore(session_id=session_id, at=result.backup_before.revision)
    assert path.read_bytes() == present


# -- push --------------------------------------------------------------------------------------------
def test_cli_push_to_a_local_bare_repository(project: Path, tmp_path: Path, service: Service, cli) -> None:
    remote = tmp_path / "team.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    service.start(level="dev")
    result = cli("backup", "push", "--remote", str(remote), "--json")
    assert result.code == 0, result
    assert result.json()["status"] == "new"
    assert git(remote, "rev-parse", BRANCH).strip() == commits(project)[0]
    assert cli("backup", "push", "--remote", str(remote), "--json").json()["status"] == "up to date"


def test_push_uses_the_configured_remote(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "team.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    write_config(project, f'[backup]\nremote = "{remote}"\n')
    service = Service(project, actor="test")
    service.start(level="dev")
    assert service.backup_push().remote == str(remote)
    assert git(remote, "rev-parse", BRANCH).strip() == commits(project)[0]


def test_push_without_a_remote_is_refused(project: Path, service: Service) -> None:
    service.start(level="dev")
    with pytest.raises(InvalidInput, match="no remote to push to"):
        service.backup_push()


# -- concurrency --------------------------------------------------------------------------------------
WORKER = """
import json, sys, time
from pathlib import Path
from session_manager.service import Service
root, folder, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
service = Service(root, actor=name)
(root / f"ready-{name}").touch()
while len(list(root.glob("ready-*"))) < 2:  # both start backing up at the same moment
    time.sleep(0.005)
for i in range(10):
    (folder / "notes.txt").write_text(f"{name}-{i}\\n")
    result = service.backup_now()
    print(json.dumps({"committed": result.committed, "revision": result.revision}), flush=True)
"""


def test_concurrent_backups_lose_no_commit_and_keep_history_linear(project: Path, service: Service) -> None:
    folders = {}
    for name in ("a", "b"):
        session_id = service.start(level="dev", tag=name).state.session_id
        folders[name] = project / folder_of(service, session_id)
    service.backup_now()
    base = len(commits(project))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(project), str(folders[name]), name],
                                stdout=subprocess.PIPE, text=True) for name in folders]
    results = [json.loads(line) for worker in workers for line in worker.communicate(timeout=120)[0].splitlines()]
    assert all(worker.returncode == 0 for worker in workers) and len(results) == 20
    history = commits(project)
    made = [r["revision"] for r in results if r["committed"]]
    assert len(history) == base + len(made)
    assert set(made) <= set(history)
    assert commits(project, "--min-parents=2") == []
    patches = git(project, "log", "-p", "--format=", BRANCH, "--", *(str(f.relative_to(project)) for f in folders.values()))
    for name in folders:
        assert all(f"+{name}-{i}" in patches for i in range(10)), name


# -- the loop and watch ---------------------------------------------------------------------------------
def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_watch_commits_a_change_within_seconds(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    proc = subprocess.Popen([sys.executable, "-m", "session_manager", "watch", "--interval", "1"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = lines_of(proc)
        assert lines.get(timeout=60).startswith("watching ")
        service.update(session_id=session_id, learnings=["saved by watch"])
        line = lines.get(timeout=60)
        while "saved" not in blob(project, BRANCH, f"{folder_of(service, session_id)}/{STATE}").decode():
            line = lines.get(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"backed up 1 session to {BRANCH} at " in line and "(interval)" in line
    assert subject(project) == "session-manager: interval (1 session)"


def test_watch_stops_cleanly_on_ctrl_c(project: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "session_manager", "watch", "--interval", "1"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = lines_of(proc)
    assert lines.get(timeout=60).startswith("watching ")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert lines.get(timeout=30).strip() == "stopped"
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_run_loop_backs_up_at_once_and_stops_when_told(project: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["for the loop"])
    stop, made = threading.Event(), []
    thread = threading.Thread(target=backup.run_loop, args=(project, 3600, stop),
                              kwargs={"on_commit": made.append}, daemon=True)
    thread.start()
    while not made and thread.is_alive():
        thread.join(timeout=0.05)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert made and made[0].reason == "interval" and made[0].revision == commits(project)[0]


def test_run_loop_pushes_each_commit_when_push_is_configured(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "team.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    write_config(project, f'[backup]\npush = true\nremote = "{remote}"\n')
    service = Service(project, actor="test")
    session_id = service.start(level="dev").state.session_id
    service.update(session_id=session_id, learnings=["pushed by the loop"])
    stop, errors = threading.Event(), []
    backup.run_loop(project, 3600, stop, on_commit=lambda _: stop.set(), on_error=errors.append)
    assert errors == []
    assert git(remote, "rev-parse", BRANCH).strip() == commits(project)[0]


def test_disabled_backups_skip_automatic_ones_but_not_manual(project: Path) -> None:
    write_config(project, "[backup]\nenabled = false\n")
    service = Service(project, actor="test")
    service.start(level="dev")
    assert commits(project) == []
    assert service.backup_now(reason="stop").skipped == "backups are disabled (backup.enabled = false)"
    assert commits(project) == []
    assert service.backup_now().committed


def test_restore_never_writes_through_a_symlink(project: Path, tmp_path: Path, service: Service) -> None:
    session_id = service.start(level="dev").state.session_id
    folder = project / folder_of(service, session_id)
    (folder / "notes").mkdir()
    (folder / "notes" / "a.md").write_text("backed up\n")
    revision = service.backup_now().revision
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(folder / "notes")
    (folder / "notes").symlink_to(outside)
    service.backup_restore(session_id=session_id, at=revision)
    assert list(outside.iterdir()) == []
    assert not (folder / "notes").is_symlink() and (folder / "notes" / "a.md").read_text() == "backed up\n"


def test_backup_in_a_folder_without_sessions_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    result = Service(root, actor="test").backup_now()
    assert not result.committed and result.skipped == "nothing to back up yet"
    assert list(root.iterdir()) == []
