"""The second-core helper: a forked child answers, takes one message, goes on with it, and is
waited for; where forking is unsafe (threads) or the child fails, the caller does the job itself."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from session_manager import forked

pytestmark = pytest.mark.skipif(not forked.available(), reason="needs fork, two cores and no other threads")


def test_a_child_answers_then_goes_on_with_the_message_it_is_sent(tmp_path: Path) -> None:
    done = tmp_path / "done"

    def job(channel: forked.Channel) -> None:
        channel.answer(f"pid {os.getpid()}".encode())
        message = channel.receive()
        done.write_bytes(b"got " + (message or b"nothing"))

    child = forked.Forked.start(job)
    assert child is not None
    child.send(b"the other half")
    answer = child.answer()
    assert answer is not None and answer != f"pid {os.getpid()}".encode()  # another process answered
    assert child.wait()
    assert done.read_bytes() == b"got the other half"


def test_a_child_sent_nothing_hears_none(tmp_path: Path) -> None:
    done = tmp_path / "done"

    def job(channel: forked.Channel) -> None:
        channel.answer(b"ok")
        done.write_text(repr(channel.receive()))

    child = forked.Forked.start(job)
    assert child is not None and child.answer() == b"ok"
    assert child.wait()  # waiting sends nothing first
    assert done.read_text() == "None"


def test_a_child_that_fails_before_answering_gives_no_answer() -> None:
    def job(channel: forked.Channel) -> None:
        raise RuntimeError("the job broke")

    child = forked.Forked.start(job)
    assert child is not None
    assert child.answer() is None
    assert child.wait() is False


def test_a_child_left_behind_is_waited_for_by_settle(tmp_path: Path) -> None:
    done = tmp_path / "done"

    def job(channel: forked.Channel) -> None:
        channel.answer(b"")
        time.sleep(0.3)
        done.write_text("written")

    child = forked.Forked.start(job)
    assert child is not None and child.answer() == b""
    forked.behind(child)
    assert not done.exists()
    forked.settle()
    assert done.read_text() == "written" and not forked._BEHIND


def test_no_fork_while_another_thread_runs() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert forked.available() is False
        assert forked.Forked.start(lambda channel: channel.answer(b"never")) is None
    finally:
        stop.set()
        thread.join()


def test_a_second_ctrl_c_while_the_process_ends_stops_the_wait_quietly() -> None:
    import signal

    def job(channel: forked.Channel) -> None:
        channel.answer(b"")
        time.sleep(1)

    child = forked.Forked.start(job)
    assert child is not None and child.answer() == b""
    forked.behind(child)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    began = time.monotonic()
    try:
        forked._settle_at_exit()  # what runs at exit: interrupted, it returns instead of raising
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - began < 0.8
    assert child.wait()  # the child itself finishes on its own, and is waited for here
