"""Project memory: `.claude/memory/patterns.md`, `decisions.md` and `errors.md`.

When a session ends, its learnings, decisions and errors are appended, one line each, dated and
linked to the session's review. Each line carries an invisible marker (`<!-- sm:ID:KIND:HASH -->`)
and a line whose marker is already in the file is never written again, so a second end, a retry
or a re-render adds nothing. Appends hold a lock and rewrite the file atomically.
A memory file (or the folder) that is a symbolic link is refused with one line, never followed:
it would copy whatever it points to (a credentials file) into the memory and the backups.
"""

from __future__ import annotations

import hashlib
from session_manager.levels import level_of
from session_manager.model import SessionState
from session_manager.store import Store, atomic_write, guard, read_bytes

FILES = {
    "learning": ("patterns.md", "Patterns", "Learnings recorded at the end of each session, newest last."),
    "decision": ("decisions.md", "Decisions", "Decisions recorded during sessions, newest last."),
    "error": ("errors.md", "Known issues",
              "Errors met during sessions, newest last. Lines you add here as `- text` are shown in the"
              " next session's context too."),
}


def marker(session_id: str, kind: str, text: str) -> str:
    digest = hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()[:12]
    return f"<!-- sm:{session_id}:{kind}:{digest} -->"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entries(state: SessionState) -> dict[str, list[tuple[str, str]]]:
    """{kind: [(date, text), ...]} for one session, in the order they happened."""
    found: dict[str, list[tuple[str, str]]] = {kind: [] for kind in FILES}
    for kind, notes in (("learning", state.progress.learnings), ("decision", state.progress.decisions)):
        for note in notes:
            prefix = f"{note.stage}: " if note.stage else ""
            found[kind].append((f"{note.at:%Y-%m-%d}", prefix + _one_line(note.text)))
    for error in state.errors:
        where = f"{error.stage} (attempt {error.attempt}, {error.decision}): " if error.stage else ""
        found["error"].append((f"{error.at:%Y-%m-%d}", where + _one_line(error.error)))
    return found


def record(store: Store, state: SessionState, lock_timeout: float = 30.0) -> dict[str, int]:
    """Append the session's entries that are not in memory yet; {file name: lines added}."""
    from filelock import FileLock, Timeout

    from session_manager.errors import LockTimeout

    folder = store.claude_dir / "memory"
    link = f"../{level_of(state.session_id).dirname}/sessions/{state.session_id}/review.md"
    added: dict[str, int] = {}
    wanted = {kind: items for kind, items in entries(state).items() if items}
    if not wanted:
        return added
    guard(folder)  # a linked memory folder or file is refused (UnsafePath), never read or written through
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(store.private_file("memory.lock")), timeout=lock_timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeout(f"the project memory is busy (lock held {lock_timeout:g} s); try again") from None
    try:
        for kind, items in wanted.items():
            name, title, intro = FILES[kind]
            path = folder / name
            try:
                text = read_bytes(path).decode("utf-8", errors="replace")
            except FileNotFoundError:
                text = f"# {title}\n\n{intro}\n\n"
            lines: list[str] = []
            for date, body in items:
                mark = marker(state.session_id, kind, body)
                if mark in text or any(mark in line for line in lines):
                    continue
                lines.append(f"- {date} · [{state.session_id}]({link}) · {body} {mark}")
            if lines:
                if text and not text.endswith("\n"):
                    text += "\n"
                atomic_write(path, text + "\n".join(lines) + "\n")
                added[name] = len(lines)
    finally:
        lock.release()
    return added
