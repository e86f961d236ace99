"""run_inline without sockets: a frame's coroutine stepped without a Task
keeps a Task's order and outcomes, and a cancel never reaches a future the
coroutine was waiting on (it may be another frame's)."""

from __future__ import annotations

import asyncio

import pytest

from tornado_pubsub.core.inline import run_inline, spawn


async def passes(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_coroutine_that_never_suspends_has_run_whole_and_returns_none():
    ran: list[str] = []

    async def frame() -> None:
        ran.append("all")

    assert run_inline(frame()) is None
    assert ran == ["all"]


async def test_each_step_runs_when_the_future_it_awaits_is_resolved_and_gets_its_value():
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    seen: list[object] = []

    async def frame() -> None:
        seen.append(await first)
        try:
            await second
        except KeyError as exc:
            seen.append(exc.args[0])

    pending = run_inline(frame())
    assert pending is not None and seen == []
    await passes()
    assert seen == [] and not pending.done()
    first.set_result("one")
    await passes()
    assert seen == ["one"] and not pending.done()
    second.set_exception(KeyError("two"))
    await passes()
    assert seen == ["one", "two"] and pending.done() and pending.result() is None


async def test_a_bare_yield_resumes_after_one_loop_pass_before_later_callbacks():
    order: list[str] = []

    async def frame() -> None:
        order.append("before")
        await asyncio.sleep(0)
        order.append("after")

    pending = run_inline(frame())
    asyncio.get_running_loop().call_soon(order.append, "later callback")
    await passes()
    assert order == ["before", "after", "later callback"] and pending.done()


async def test_an_error_or_cancellation_raised_by_the_coroutine_ends_its_future_so():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def failing() -> None:
        await gate
        raise ValueError("bad frame")

    async def cancelled() -> None:
        await gate
        raise asyncio.CancelledError

    failed, gone = run_inline(failing()), run_inline(cancelled())
    gate.set_result(None)
    await passes()
    with pytest.raises(ValueError, match="bad frame"):
        failed.result()
    assert gone.cancelled()


async def test_cancelling_it_closes_the_coroutine_and_leaves_the_awaited_future_alone():
    loop = asyncio.get_running_loop()
    shared = loop.create_future()  # as a publish's 'before': someone else's
    ran: list[str] = []

    async def frame() -> None:
        try:
            await shared
            ran.append("resumed")
        finally:
            ran.append("closed")

    pending = run_inline(frame())
    assert pending.cancel()
    assert ran == ["closed"] and pending.cancelled() and not shared.cancelled()
    shared.set_result(None)
    await passes()
    assert ran == ["closed"]


async def test_past_its_first_suspension_it_can_wait_on_a_task_of_its_own():
    # What Store.call does for every Redis command.
    loop = asyncio.get_running_loop()
    gate = loop.create_future()

    async def work() -> str:
        await asyncio.sleep(0.01)
        return "reply"

    got: list[str] = []

    async def frame() -> None:
        await gate
        task = asyncio.ensure_future(work())
        await asyncio.wait((task,))
        got.append(task.result())

    pending = run_inline(frame())
    gate.set_result(None)
    await asyncio.wait_for(asyncio.shield(pending), 5)
    assert got == ["reply"]


async def test_a_park_awaited_outside_spawn_raises_there_and_is_not_left_registered():
    from tornado_pubsub.core.outbound import OutboundQueue

    queue = OutboundQueue(10, 1 << 20, True, lambda event: None)
    raised: list[str] = []

    async def frame() -> None:
        try:
            await queue.next_item()  # empty: it would have to wait, and nobody could wake it
        except RuntimeError as exc:
            raised.append(str(exc))

    pending = run_inline(frame())
    assert pending is None or pending.done()  # raised at once, where it awaited
    assert raised and "spawn" in raised[0]
    assert queue.writer is None
    assert queue.offer(b"later")  # nothing stale to wake


async def test_a_spawned_coroutine_that_cancels_its_own_future_is_closed_when_it_next_waits():
    # A writer's transport may end the connection from inside the writer,
    # and the handler's close cancels the writer's future.
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    seen: list[str] = []
    handle: list[asyncio.Future] = []

    async def writer() -> None:
        try:
            handle[0].cancel()  # still running: nothing is closed under it
            seen.append("went on")
            await gate
            seen.append("resumed")
        finally:
            seen.append("closed")

    handle.append(spawn(writer()))
    await passes()
    assert seen == ["went on", "closed"] and handle[0].cancelled() and not gate.cancelled()
    gate.set_result(None)
    await passes()
    assert seen == ["went on", "closed"]


async def test_an_exit_raised_through_one_woken_writer_leaves_the_others_woken():
    # KeyboardInterrupt and SystemExit pass through a step, as through a Task;
    # the writers woken with it in the same pass must not be stranded.
    from tornado_pubsub.core.inline import _Pass

    resumed: list[str] = []

    class Woken:
        def __init__(self, name: str, exit_: bool = False) -> None:
            self.name, self.exit_ = name, exit_

        def resume(self) -> None:
            resumed.append(self.name)
            if self.exit_:
                raise KeyboardInterrupt

    runner = _Pass(asyncio.get_running_loop())
    for woken in (Woken("a"), Woken("b", exit_=True), Woken("c"), Woken("d")):
        runner.wake(woken)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert resumed == ["a", "b"]
    assert [w.name for w in runner.ready] == ["c", "d"]  # woken again, for the next pass
    runner.run()
    assert resumed == ["a", "b", "c", "d"] and runner.ready == []
