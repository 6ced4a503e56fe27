"""Work for the second core: a forked copy of this process does one job while this one goes on.

The child answers once (bytes, through a temporary file, announced on a pipe), and may then be
sent one message back and go on with it (a report's reader answers with the sessions it read,
then gets the other half and writes the cache while the parent builds the report).

Only where forking is safe and worth it: a process with no other threads (a fork copies only the
calling thread, so a lock another thread held would stay held forever in the child: never in the
MCP server) and at least two cores to run on. Everywhere else `start` says no and the caller does
the job itself, the same job: a forked job is only ever a way to run it sooner. The child leaves
with `os._exit`, so nothing of the parent's (atexit handlers, buffered output, open sqlite
connections) runs or is flushed twice. Children nobody waits for in line are `settle`d before the
process ends.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from collections.abc import Callable

_SIGNAL = b"!"


def available() -> bool:
    """Whether a forked job can run beside this process now."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return False
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on, not the machine's
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores >= 2


class Channel:
    """The child's side: `answer` once, then `receive` what the parent sends back."""

    def __init__(self, forked: Forked) -> None:
        self._forked = forked

    def answer(self, data: bytes) -> None:
        f = self._forked
        f.answer_file.write(data)
        f.answer_file.flush()
        os.write(f.up, _SIGNAL)

    def receive(self) -> bytes | None:
        """The parent's message; None when it sent none (or is gone)."""
        f = self._forked
        if os.read(f.down, 1) != _SIGNAL:
            return None
        f.message_file.seek(0)
        return f.message_file.read()


class Forked:
    """A job running in a forked child (`start`); the parent takes its `answer`, may `send` it one
    message, and `wait`s for it to end (or leaves that to `settle`, after `behind`)."""

    def __init__(self) -> None:
        self.answer_file = tempfile.TemporaryFile()
        self.message_file = tempfile.TemporaryFile()
        self.up, self._up_w = os.pipe()  # the child announces its answer
        self._down_r, self.down = os.pipe()  # the parent announces its message
        self.pid = 0
        self.ended = False

    @classmethod
    def start(cls, job: Callable[[Channel], None]) -> Forked | None:
        """Run `job` in a forked child; None when this process cannot fork now (see `available`),
        and the caller does the job itself."""
        if not available():
            return None
        try:
            forked = cls()
        except OSError:  # no temporary file or pipe to be had (a full disk, no descriptors left)
            return None
        try:
            forked.pid = os.fork()
        except OSError:  # no room for a second process
            forked._close()
            return None
        if forked.pid == 0:  # the child: the job, then leave without running anything of the parent's
            code = 1
            _BEHIND.clear()  # the parent's children: not this one's to wait for
            try:
                os.close(forked.up)
                os.close(forked.down)
                forked.up, forked.down, forked._up_w, forked._down_r = forked._up_w, forked._down_r, -1, -1
                job(Channel(forked))
                code = 0
            finally:
                os._exit(code)
        os.close(forked._up_w)
        os.close(forked._down_r)
        forked._up_w = forked._down_r = -1
        return forked

    def answer(self) -> bytes | None:
        """The child's answer, once it has given it (it may still be running); None if it ended without one."""
        if os.read(self.up, 1) != _SIGNAL:
            return None
        self.answer_file.seek(0)
        return self.answer_file.read()

    def send(self, data: bytes | None) -> bool:
        """The one message the child `receive`s; None sends nothing (the child hears None). False
        when it could not be written (a full disk, a file size limit): the child hears None then."""
        sent = False
        if data is not None:
            try:
                self.message_file.write(data)
                self.message_file.flush()
                os.write(self.down, _SIGNAL)
                sent = True
            except OSError:
                pass
        os.close(self.down)
        self.down = -1
        return sent

    def wait(self) -> bool:
        """Wait for the child to end; True if its job finished."""
        if self.ended:
            return False
        if self.down >= 0:
            self.send(None)
        _, status = os.waitpid(self.pid, 0)
        self.ended = True
        self._close()
        return os.waitstatus_to_exitcode(status) == 0

    def _close(self) -> None:
        self.answer_file.close()
        self.message_file.close()
        for fd in (self.up, self.down, self._up_w, self._down_r):
            if fd >= 0:
                os.close(fd)
        self.up = self.down = self._up_w = self._down_r = -1


_BEHIND: list[Forked] = []  # children nobody waits for in line: settled before the process ends
_EXIT: list[bool] = []  # settle registered to run at exit


def behind(forked: Forked) -> None:
    """Let `forked` finish on its own; `settle` (at the latest when the process ends) waits for it."""
    if not _EXIT:
        atexit.register(_settle_at_exit)
        _EXIT.append(True)
    _BEHIND.append(forked)


def settle() -> None:
    """Wait for every child left `behind`."""
    while _BEHIND:
        _BEHIND.pop().wait()


def _settle_at_exit() -> None:
    """`settle` as the process ends; a second Ctrl-C there stops the wait quietly (the children
    finish on their own) instead of printing a traceback."""
    try:
        settle()
    except KeyboardInterrupt:
        pass
