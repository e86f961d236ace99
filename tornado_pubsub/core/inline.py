"""Running coroutines without a Task: a frame's handling, and each
connection's writer.

A frame's handling is a coroutine.  With the in-memory broker it never
suspends, and with Redis it suspends once or twice (the publish's reply,
then this process's bus catching up).  An ``asyncio.Task`` per frame, and a
waiter future between the Task and each future the coroutine awaits, cost
more than the rest of a small frame's handling; ``run_inline`` runs the
coroutine until it first suspends and then steps it from the done-callback
of each future it awaits, which is what a Task does, minus the Task.

A connection's writer (``handlers.writer``) is a coroutine that waits for
its queue's next item far more often than for anything else: once per event
when a publisher's consecutive messages go to different topics.  ``spawn``
runs it like a Task, and lets it await a ``Park`` as well as a future: the
queue wakes a parked writer without a future, and every writer woken in one
loop pass is stepped by one callback (``_Pass``), not one Task wake-up each.

What such a coroutine must not rely on: being the loop's
``asyncio.current_task()`` (so no ``asyncio.timeout`` and, on Python 3.12+,
no ``asyncio.wait_for``, directly in it; work that needs them runs in a task
of its own, as ``backends.redis.store.Store.call`` does).
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Generator


class _Waiting:
    __slots__ = ()


#: What ``Park.claim`` returns when there is nothing to take yet.
WAITING: Any = _Waiting()


class Park:
    """Something a spawned coroutine waits for without a future: ``await park``
    gives what ``claim`` returns.

    Contract for a subclass: ``claim(stepper)`` returns the value at once when
    there is one, else registers ``stepper`` and returns ``WAITING``; once
    there is a value it calls ``stepper.wake()`` (once) and forgets the
    stepper, which then claims again.  ``release(stepper)``: the stepper was
    cancelled while registered.  A Park may be awaited only by a coroutine
    run by ``spawn`` (a Task would refuse the yield).
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)

    def claim(self, stepper: "Stepper") -> Any:
        raise NotImplementedError

    def release(self, stepper: "Stepper") -> None:
        raise NotImplementedError


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
    stepper = Stepper(coro, None)
    if isinstance(yielded, Park):  # nobody could wake it: step() raises where it waits, at once
        stepper.step(park=yielded)
    else:
        stepper.wait(yielded)
    return stepper.outcome


def _outside_spawn() -> RuntimeError:
    return RuntimeError("a Park may only be awaited by a coroutine run by spawn()")


def spawn(coro: Coroutine[Any, Any, None]) -> "asyncio.Future[None]":
    """Run ``coro`` from the next loop pass on, as ``asyncio.ensure_future``
    would, and return the future of its end; ``coro`` may await ``Park``
    objects as well as futures.  Cancelling the future closes ``coro`` where
    it waits (a ``Park`` forgets it)."""
    global _last_pass
    loop = asyncio.get_running_loop()
    runner = _last_pass
    if runner is None or runner.loop is not loop:
        # One per loop, kept here for the next spawn (a process serves one
        # loop; tests start many, and a stepper keeps the one it got).
        runner = _last_pass = _Pass(loop)
    stepper = Stepper(coro, runner)
    stepper.wake()
    return stepper.outcome


async def settled(future: "asyncio.Future[None]") -> None:
    """Return once ``future`` is done, however it ended (its own errors are
    its own, and cancelling the caller does not cancel it)."""
    if not future.done():
        waiter = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
        await waiter


class _Pass:
    """The steppers woken since the loop last ran this: one callback steps
    them all, in the order they were woken."""

    __slots__ = ("loop", "ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: list[Stepper] = []

    def wake(self, stepper: "Stepper") -> None:
        if not self.ready:
            self.loop.call_soon(self.run)
        self.ready.append(stepper)

    def run(self) -> None:
        ready, self.ready = self.ready, []
        for at, stepper in enumerate(ready):
            try:
                stepper.resume()
            except BaseException:  # KeyboardInterrupt or SystemExit (step keeps the rest)
                for rest in ready[at + 1 :]:  # the others still run, on the next pass
                    self.wake(rest)
                raise


_last_pass: _Pass | None = None


class _Outcome(asyncio.Future):  # type: ignore[type-arg]
    """A stepped coroutine's end; cancelling it closes the coroutine (no
    done-callback per run for that: a run is a frame)."""

    def __init__(self, stepper: "Stepper", loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.stepper = stepper

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self.stepper.close()
        return True


class Stepper:
    """Steps one coroutine to its end; ``outcome`` is its future."""

    __slots__ = ("coro", "outcome", "loop", "runner", "parked", "running")

    def __init__(self, coro: Coroutine[Any, Any, None], runner: _Pass | None) -> None:
        self.coro = coro
        self.loop = asyncio.get_running_loop()
        self.runner = runner
        self.parked: Park | None = None
        self.running = False  # inside coro.send(): a cancel then closes it when it next waits
        self.outcome: asyncio.Future[None] = _Outcome(self, self.loop)

    def wake(self) -> None:
        """The ``Park`` it waits on has its value (or it is starting): claim
        it on this loop pass.  Only a spawned stepper is ever woken (one run
        by ``run_inline`` never stays registered with a Park)."""
        self.runner.wake(self)  # type: ignore[union-attr]

    def resume(self) -> None:
        """Run it on from where it waits (started, or woken by its ``Park``)."""
        park, self.parked = self.parked, None
        self.step(park=park)

    def wait(self, yielded: Any) -> None:
        """Resume the coroutine once what it yielded is done."""
        if yielded is None:  # a bare yield: one loop pass, as a Task gives it
            self.loop.call_soon(self.step)
        elif getattr(yielded, "_asyncio_future_blocking", None) is not None:
            # A future awaited with ``await``: clear the flag its __await__
            # set for a Task to see (as the Task would).
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(self._done)
        else:  # what a Task refuses too: throw it back into the coroutine
            self.loop.call_soon(self._throw, RuntimeError(f"bad yield: {yielded!r}"))

    def _done(self, _future: object) -> None:
        self.step()

    def _throw(self, error: BaseException) -> None:
        self.step(error=error)

    def step(self, value: Any = None, error: BaseException | None = None, park: Park | None = None) -> None:
        """Run the coroutine to its next wait (or its end), sending ``value``
        or throwing ``error``, or first claiming ``park`` (the one it waits
        on, woken); a ``Park`` with a value ready is claimed on the spot,
        without a loop pass, and one that raises raises where it is awaited."""
        outcome = self.outcome
        if outcome.done():  # cancelled while it waited: already closed
            return
        coro = self.coro
        self.running = True
        try:
            while True:
                if park is None:
                    yielded = coro.send(value) if error is None else coro.throw(error)
                    if not isinstance(yielded, Park):
                        break
                else:
                    yielded, park = park, None
                value = error = None
                if self.runner is None:  # not spawned: nobody could wake it
                    error = _outside_spawn()
                    continue
                try:
                    value = yielded.claim(self)
                except Exception as exc:
                    error = exc
                    continue
                if value is WAITING:
                    if outcome.done():  # cancelled from inside this step
                        yielded.release(self)
                        coro.close()
                    else:
                        self.parked = yielded
                    return
        except StopIteration:
            if not outcome.done():
                outcome.set_result(None)
        except asyncio.CancelledError:
            outcome.cancel()
        except (KeyboardInterrupt, SystemExit) as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc)
        else:
            if outcome.done():  # cancelled from inside this step: close it where it now waits
                coro.close()
            else:
                self.wait(yielded)
        finally:
            self.running = False

    def close(self) -> None:
        """Stop it where it waits (its outcome was cancelled); if it is
        running (it cancelled itself), once it next waits."""
        if self.running:
            return  # step() closes it when the coroutine yields
        park, self.parked = self.parked, None
        if park is not None:
            park.release(self)
        self.coro.close()
