"""The detached autosave: `python -m session_manager.autosave ROOT REASON FINGERPRINT`.

Started by the Stop, PreCompact and SessionEnd hooks in a session of its own (see
`quickhooks.spawn_autosave`), so it finishes after Claude Code has exited. It takes the backup,
then stamps the fingerprint the hook saw, so the next hook with nothing changed returns at once.
A backup skipped because the last one is seconds old is retried once after that interval: the
last reply of a print-mode conversation must land. A failure is written in one line to
`.claude/.session-manager/autosave-failed.txt`, which the next hook shows to the user.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from session_manager import quickhooks


def run(root: Path, reason: str, mark: str) -> int:
    from session_manager.errors import SessionError
    from session_manager.service import Service

    failure = root / ".claude" / quickhooks.PRIVATE / quickhooks.FAILURE
    try:
        service = Service(root, actor="hook")
        result = service.backup_now(reason=reason)
        if result.skipped and result.skipped.startswith("coalesced"):
            time.sleep(service.config.backup.coalesce_seconds + 0.2)
            result = service.backup_now(reason=reason)
        if not (result.skipped and result.skipped.startswith(("coalesced", "another backup"))):
            quickhooks.write_stamp(root, mark)
        return 0
    except SessionError as exc:
        message = f"session-manager autosave ({reason}) failed: {exc}"
    except Exception as exc:  # our fault: the traceback to the error log, one line for the next hook
        from session_manager.errorlog import log_internal_error

        try:
            where = f"; details in {log_internal_error(f'autosave {reason}')}"
        except OSError:
            where = ""
        message = f"session-manager autosave ({reason}) failed ({type(exc).__name__}: {exc}){where}"
    try:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(" ".join(message.split())[:300] + "\n", encoding="utf-8")
    except OSError:
        pass
    return 1


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m session_manager.autosave ROOT REASON FINGERPRINT", file=sys.stderr)
        return 2
    return run(Path(argv[0]), argv[1], argv[2])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
