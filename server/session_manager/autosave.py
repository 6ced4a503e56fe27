"""The hooks' detached jobs: `python -m session_manager.autosave backup ROOT REASON FINGERPRINT`
and `python -m session_manager.autosave bind ROOT SESSION CONVERSATION SINCE`.

Started by the hooks in a session of its own (see `quickhooks.spawn_detached`), so they finish
after Claude Code has exited and the hook answers at once.

`bind`: the SessionStart hook answers from its stdlib path and hands the conversation's binding
to the only active session here, from the moment the hook ran (epoch seconds), exactly as the
full path would have written it (`Service.attach_claude_session`).

`backup` (Stop, PreCompact, SessionEnd) takes the backup,
then stamps the fingerprint the hook saw, so the next hook with nothing changed returns at once.
A backup skipped because the last one is seconds old is retried once after that interval: the
last reply of a print-mode conversation must land. A failure is written in one line to
`.claude/.session-manager/autosave-failed.txt`, which the next hook shows to the user.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from session_manager import quickhooks


def run(root: Path, reason: str, mark: str) -> int:
    def backup() -> None:
        from session_manager.service import Service

        service = Service(root, actor="hook")
        result = service.backup_now(reason=reason)
        if result.skipped and result.skipped.startswith("coalesced"):
            time.sleep(service.config.backup.coalesce_seconds + 0.2)
            result = service.backup_now(reason=reason)
        if not (result.skipped and result.skipped.startswith(("coalesced", "another backup"))):
            quickhooks.write_stamp(root, mark)

    return _job(root, f"autosave ({reason})", backup)


def bind(root: Path, session_id: str, conversation: str, since: str) -> int:
    def write() -> None:
        from datetime import UTC, datetime

        from session_manager.service import Service

        moment = datetime.fromtimestamp(int(since), UTC)
        Service(root, actor="hook").attach_claude_session(session_id, conversation, moment)

    return _job(root, "binding of the conversation", write)


def _job(root: Path, what: str, work: Callable[[], None]) -> int:
    """Run one job; a failure is one line in the failure file, which the next hook shows."""
    from session_manager.errors import SessionError

    failure = root / ".claude" / quickhooks.PRIVATE / quickhooks.FAILURE
    try:
        work()
        return 0
    except SessionError as exc:
        message = f"session-manager {what} failed: {exc}"
    except Exception as exc:  # our fault: the traceback to the error log, one line for the next hook
        from session_manager.errorlog import log_internal_error

        try:
            where = f"; details in {log_internal_error(what)}"
        except OSError:
            where = ""
        message = f"session-manager {what} failed ({type(exc).__name__}: {exc}){where}"
    try:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(" ".join(message.split())[:300] + "\n", encoding="utf-8")
    except OSError:
        pass
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "backup":
        return run(Path(argv[1]), argv[2], argv[3])
    if len(argv) == 5 and argv[0] == "bind" and argv[4].isdigit():
        return bind(Path(argv[1]), argv[2], argv[3], argv[4])
    print("usage: python -m session_manager.autosave backup ROOT REASON FINGERPRINT\n"
          "       python -m session_manager.autosave bind ROOT SESSION CONVERSATION SINCE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
