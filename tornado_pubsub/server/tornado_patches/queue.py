"""The outbound queue: members every ``Queue`` has and ours never uses."""

from __future__ import annotations

from typing import Any

from tornado.locks import Event as _LockEvent
from tornado.queues import Queue

from tornado_pubsub.server.tornado_patches.checks import ENABLED

# Shared stand-ins (see slim_queue): an empty tuple fails loudly if anything
# ever tries to queue a waiting putter.
_NO_PUTTERS: tuple[()] = ()
_NEVER_JOINED = _LockEvent()


class _Waiters(list):  # type: ignore[type-arg]
    """The futures waiting in get(): the writer waits with ``next_item``
    instead, so hardly ever any; a list with the deque method Queue uses
    (popleft) is enough."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def slim_queue(queue: Queue[Any]) -> None:
    """Gain: ~1.2 KB per idle connection (measured; it matters at 10 000).

    ``OutboundQueue`` never calls put() (so no putter ever waits) nor
    join()/task_done() (so no one waits on ``_finished``): those two members
    of every Queue, a deque and an Event, are replaced by shared stand-ins;
    its getters (the writer is none of them) need no 760-byte deque either.
    Relies on: Queue keeping its putters, getters and join event in
    ``_putters``, ``_getters`` (deques) and ``_finished``.
    """
    if ENABLED["queue_standins"]:
        queue._putters = _NO_PUTTERS  # type: ignore[assignment]
        queue._finished = _NEVER_JOINED
        queue._getters = _Waiters()  # type: ignore[assignment]
