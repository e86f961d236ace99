"""The outbound queue: members every ``Queue`` has and ours never uses."""

from __future__ import annotations

from typing import Any

from tornado.concurrent import Future
from tornado.locks import Event as _LockEvent
from tornado.queues import Queue

from tornado_pubsub.server.tornado_patches.checks import ENABLED

# Shared stand-ins (see slim_queue): an empty tuple fails loudly if anything
# ever tries to queue a waiting putter.
_NO_PUTTERS: tuple[()] = ()
_NEVER_JOINED = _LockEvent()


class _Waiters(list):  # type: ignore[type-arg]
    """The futures waiting in get(): at most the writer's one, so a list with
    the deque method Queue uses (popleft) is enough."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def slim_queue(queue: Queue[Any]) -> None:
    """Gain: ~1.2 KB per idle connection (measured; it matters at 10 000).

    ``OutboundQueue`` never calls put() (so no putter ever waits) nor
    join()/task_done() (so no one waits on ``_finished``): those two members
    of every Queue, a deque and an Event, are replaced by shared stand-ins;
    the one waiting getter (the writer) needs no 760-byte deque either.
    Relies on: Queue keeping its putters, getters and join event in
    ``_putters``, ``_getters`` (deques) and ``_finished``.
    """
    if ENABLED["queue_standins"]:
        queue._putters = _NO_PUTTERS  # type: ignore[assignment]
        queue._finished = _NEVER_JOINED
        queue._getters = _Waiters()  # type: ignore[assignment]


def direct_get(queue: Queue[Any]) -> "Future[Any] | None":
    """``queue.get()`` (no timeout) for a queue nothing ever put() into;
    None when the patch is off (the caller then uses ``Queue.get``).

    Gain: with ``hand_over``, 4.2-6.2 -> 3.0-4.1 us per wake of an idle
    writer (``bench/wake_cost.py``), paid once per event delivered to a subscriber
    that was not already being written to: most of them, when a publisher's
    consecutive messages go to different topics.  ``Queue.get`` finds an
    empty queue by raising and catching ``QueueEmpty`` and arms a timeout
    it does not have; here the queue is checked and the getter queued.
    Relies on: ``_getters`` holding the waiting getters' futures, each
    resolved with ``_get()`` by the next put; ``_queue`` being the items
    (the subclass's own, see ``OutboundQueue._init``); no putter ever waiting.
    """
    if not ENABLED["queue_handover"]:
        return None
    future: Future[Any] = Future()
    if queue._queue:  # type: ignore[attr-defined]
        future.set_result(queue._get())  # type: ignore[attr-defined]
    else:
        queue._getters.append(future)  # type: ignore[attr-defined]
    return future


def hand_over(queue: Queue[Any], item: Any) -> bool:
    """Give ``item`` to the getter waiting on the empty ``queue`` (see
    ``direct_get``), as ``put_nowait`` would; False when none is waiting
    or the patch is off: the caller stores the item itself.

    Skips ``put_nowait``'s expired-waiter sweep, ``join()``'s counter and its
    fullness check, none of which a queue with one getter and no joiner
    needs: a cancelled getter (its writer gone) is just dropped here.
    """
    getters = queue._getters  # type: ignore[attr-defined]
    while getters and ENABLED["queue_handover"]:
        getter = getters.popleft()
        if not getter.done():
            queue._put(item)  # type: ignore[attr-defined]
            getter.set_result(queue._get())  # type: ignore[attr-defined]
            return True
    return False
