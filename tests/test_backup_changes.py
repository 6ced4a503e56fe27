"""Backups proportional to the change (issue 14): a trigger backup gives `git add` only the
session folders the session index marked changed; `manual` and `before restore` take every file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import git
from session_manager.service import Service

BRANCH = "session-backups"
_args: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and len(args) > 1 and isinstance(args[1], (list, tuple)):
        _args.append([str(a) for a in args[1]])


sys.addaudithook(_audit)  # the git command lines a backup runs, as the kernel is asked to run them


def _adds(fn: Any) -> list[list[str]]:
    _args.clear()
    fn()
    return [argv[argv.index("add"):] for argv in _args if "add" in argv and "--verbose" in argv]


def test_a_trigger_backup_adds_only_the_changed_session(project: Path) -> None:
    service = Service(project, actor="test")
    ids = [service.start(level="dev", tag=f"s{n}").state.session_id for n in range(5)]
    service.backup_now(reason="manual")
    changed = ids[2]
    service.update(session_id=changed, add_tasks=["only this one"])
    adds = _adds(lambda: service.backup_now(reason="pre-compact"))
    assert len(adds) == 1
    specs = " ".join(adds[0])
    assert changed in specs and not any(other in specs for other in ids if other != changed)
    tree = git(project, "ls-tree", "-r", "--name-only", BRANCH)
    assert f"{changed}/pipeline_status.json" in tree
    shown = git(project, "show", f"{BRANCH}:.claude/level-1-dev/sessions/{changed}/pipeline_status.json")
    assert "only this one" in shown
    # nothing marked since: the next trigger backup gives `add` no session folder at all
    specs = " ".join(" ".join(argv) for argv in _adds(lambda: service.backup_now(reason="pre-compact")))
    assert "/sessions" not in specs


def test_hand_edits_reach_the_branch_on_a_manual_backup(project: Path) -> None:
    service = Service(project, actor="test")
    first = service.start(level="dev", tag="one").state.session_id
    service.backup_now(reason="manual")
    note = service.store.session_dir(first) / "notes.md"
    note.write_text("written by hand\n")  # not through the store: no change is marked
    service.backup_now(reason="pre-compact")
    tree = git(project, "ls-tree", "-r", "--name-only", BRANCH)
    assert "notes.md" not in tree  # a trigger backup follows the marks only (a full pass comes hourly)
    service.backup_now(reason="manual")
    assert f"{first}/notes.md" in git(project, "ls-tree", "-r", "--name-only", BRANCH)


def test_a_rebuilt_index_means_a_full_pass(project: Path) -> None:
    service = Service(project, actor="test")
    first = service.start(level="dev", tag="one").state.session_id
    service.backup_now(reason="manual")
    (service.store.session_dir(first) / "notes.md").write_text("by hand\n")
    for path in (project / ".claude" / ".session-manager").glob("index.sqlite*"):
        path.unlink()  # the marks are gone with it: the epoch changes, so nothing is trusted
    specs = " ".join(_adds(lambda: service.backup_now(reason="pre-compact"))[0])
    assert "/sessions" in specs
    assert f"{first}/notes.md" in git(project, "ls-tree", "-r", "--name-only", BRANCH)
