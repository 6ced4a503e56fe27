"""The interval loop: back up now, then every interval and whenever a trigger is handed over."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from session_manager.backup_models import COALESCED, BackupResult
from session_manager.config import Backup as BackupConfig
from session_manager.config import load_config
from session_manager.errors import BackupError, InvalidInput, SessionError
from session_manager.git import redact
from session_manager.trail import Trail


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
    burst = Burst()
    while not stop.is_set():
        reason = _next_reason(stop, requests, min(next_round, burst.due))
        if reason is None:
            continue
        if reason == "interval" and burst.due <= time.monotonic() < next_round:
            reason = burst.reason  # the trailing backup of a burst of coalesced triggers
        try:
            config = load_config(root / ".claude")
            if reason == "interval":
                next_round = time.monotonic() + (interval or config.backup.interval_seconds)
            if not config.backup.enabled:
                continue
            if burst.hold(reason, config.backup.coalesce_seconds):
                continue  # no git at all: the trailing backup takes this change
            trail = Trail(root, config.backup, config.lock_timeout_seconds)
            result = trail.backup(reason)
            if result.skipped and result.skipped.startswith("coalesced"):  # the tip is recent (another process)
                burst.retry(reason, config.backup.coalesce_seconds)
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
            report(BackupError(redact(f"unexpected {type(exc).__name__}: {exc}")))
        if reason == "interval" and next_round <= time.monotonic():
            next_round = time.monotonic() + (interval or BackupConfig().interval_seconds)


class Burst:
    """Coalescing on the trailing edge: a coalesced trigger (a stage completion, a start) within
    `coalesce_seconds` of the last one this loop backed up runs no git at all; one backup is due
    when the window has passed, so the last change of a burst is on the trail seconds later, not
    at the next interval round."""

    SLACK = 0.25  # past the window, so `Trail.backup`'s own age check (whole seconds) lets it through

    def __init__(self) -> None:
        self.last = -float("inf")  # when this loop last ran a coalesced backup (monotonic)
        self.due = float("inf")  # when the trailing backup is due
        self.reason = ""

    def hold(self, reason: str, window: float) -> bool:
        """Whether to hold this trigger for the trailing backup instead of backing up now."""
        now = time.monotonic()
        if reason not in COALESCED:
            self.due = float("inf")  # this backup takes every change so far
            return False
        if now - self.last < window:
            self.due, self.reason = min(self.due, self.last + window + self.SLACK), reason
            return True
        self.last, self.due = now, float("inf")
        return False

    def retry(self, reason: str, window: float) -> None:
        """`Trail.backup` skipped this trigger (the branch's tip is younger than the window): the
        trailing backup is due once the window has passed."""
        self.due, self.reason = min(self.due, time.monotonic() + window + self.SLACK), reason


def _next_reason(stop: threading.Event, requests: queue.Queue[str] | None, next_round: float) -> str | None:
    """Wait for a requested backup or the next interval round; None: nothing due yet (or stopping)."""
    left = max(0.0, next_round - time.monotonic())
    if requests is None:
        return None if stop.wait(left) else "interval"
    try:
        return requests.get(timeout=min(left, 0.25)) if left else requests.get_nowait()
    except queue.Empty:
        return "interval" if time.monotonic() >= next_round and not stop.is_set() else None
