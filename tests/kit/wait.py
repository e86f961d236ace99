"""Waiting for something to become true, bounded in time: the one way tests poll.

``wait_until`` is what tests await.  ``block_until`` is the same loop for the
few callers that cannot await (a process starting inside a synchronous
fixture); it blocks its thread, loop included.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable, Protocol

import pytest

#: Seconds between two checks.
POLL = 0.02


class Watched(Protocol):
    """A process whose death ends the wait at once (``tests.kit.procs.Proc``)."""

    name: str

    def alive(self) -> bool: ...

    def output(self) -> str: ...


class _Deadline:
    def __init__(self, timeout: float, what: str, proc: Watched | None) -> None:
        self.end = time.monotonic() + timeout
        self.timeout = timeout
        self.what = what
        self.proc = proc

    def check(self) -> None:
        """Fail the test if the watched process died or the time is up."""
        if self.proc is not None and not self.proc.alive():
            pytest.fail(f"{self.proc.name} exited while waiting for {self.what}:\n{self.proc.output()[-3000:]}")
        if time.monotonic() > self.end:
            tail = f":\n{self.proc.output()[-3000:]}" if self.proc is not None else ""
            pytest.fail(f"timed out after {self.timeout}s waiting for {self.what}{tail}")


async def wait_until(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition", proc: Watched | None = None
) -> Any:
    """Poll ``check`` (plain or async) every 20 ms until it returns something
    truthy, and return that.  Fails the test after ``timeout`` seconds, or as
    soon as ``proc`` has exited (with the end of its output)."""
    deadline = _Deadline(timeout, what, proc)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check()
        await asyncio.sleep(POLL)


def block_until(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition", proc: Watched | None = None
) -> Any:
    """``wait_until`` for synchronous callers (``check`` must be plain): blocks
    the calling thread between checks."""
    deadline = _Deadline(timeout, what, proc)
    while True:
        value = check()
        if value:
            return value
        deadline.check()
        time.sleep(POLL)
