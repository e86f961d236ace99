"""Running a frame's coroutine without a Task.

A frame's handling is a coroutine.  With the in-memory broker it never
suspends, and with Redis it suspends once or twice (the publish's reply,
then this process's bus catching up).  An ``asyncio.Task`` per frame, and a
waiter future between the Task and each future the coroutine awaits, cost
more than the rest of a small frame's handling; ``run_inline`` runs the
coroutine until it first suspends and then steps it from the done-callback
of each future it awaits, which is what a Task does, minus the Task.

What the coroutine must not rely on, past its first suspension: being the
loop's ``asyncio.current_task()`` (so no ``asyncio.timeout`` and, on Python
3.12+, no ``asyncio.wait_for``, directly in it; work that needs them runs in
a task of its own, as ``backends.redis.store.Store.call`` does).
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine


def run_inline(coro: Coroutine[Any, Any, None]) -> "asyncio.Future[None] | None":
    """Run ``coro`` until it first suspends: None if it finished, else a
    future for its end (its result, its exception, or cancelled when it
    raised ``CancelledError``).

    Contract: ``coro`` runs in steps on the loop, each step started by the
    future it awaited (a bare ``yield``, as ``asyncio.sleep(0)``, waits one
    loop pass), so its steps keep the order a Task would give them.
    Cancelling the returned future closes ``coro`` where it waits and
    leaves the future it waited on alone (it may be shared).
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return _Stepper(coro).wait(yielded)


async def settled(future: "asyncio.Future[None]") -> None:
    """Return once ``future`` is done, however it ended (its own errors are
    its own, and cancelling the caller does not cancel it)."""
    if not future.done():
        waiter = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
        await waiter


class _Outcome(asyncio.Future):  # type: ignore[type-arg]
    """A driven coroutine's end; cancelling it closes the coroutine (no
    done-callback per run for that: a run is a frame)."""

    def __init__(self, coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.coro = coro

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self.coro.close()
        return True


class _Stepper:
    """Steps one suspended coroutine to its end; ``outcome`` is its future."""

    __slots__ = ("coro", "outcome", "loop")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.loop = asyncio.get_running_loop()
        self.outcome: asyncio.Future[None] = _Outcome(coro, self.loop)

    def wait(self, yielded: Any) -> "asyncio.Future[None]":
        """Resume the coroutine once what it yielded is done."""
        if yielded is None:  # a bare yield: one loop pass, as a Task gives it
            self.loop.call_soon(self.step)
        elif getattr(yielded, "_asyncio_future_blocking", None) is not None:
            # A future awaited with ``await``: clear the flag its __await__
            # set for a Task to see (as the Task would).
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(self.step)
        else:  # what a Task refuses too: throw it back into the coroutine
            error = RuntimeError(f"run_inline got bad yield: {yielded!r}")
            self.loop.call_soon(self.step, None, error)
        return self.outcome

    def step(self, _done: object = None, error: BaseException | None = None) -> None:
        """Run the coroutine to its next suspension (or its end)."""
        if self.outcome.done():  # cancelled while it waited: already closed
            return
        try:
            yielded = self.coro.send(None) if error is None else self.coro.throw(error)
        except StopIteration:
            self.outcome.set_result(None)
        except asyncio.CancelledError:
            self.outcome.cancel()
        except (KeyboardInterrupt, SystemExit) as exc:
            self.outcome.set_exception(exc)
            raise
        except BaseException as exc:
            self.outcome.set_exception(exc)
        else:
            self.wait(yielded)
