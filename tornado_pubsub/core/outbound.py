"""The bounded outbound queue each connection owns, with its overflow policy."""

from __future__ import annotations

from typing import Callable

from tornado.locks import Event as _LockEvent
from tornado.queues import Queue

from tornado_pubsub.core.history import Event

class Replayed:
    """A retained event queued by a replay or resume (``last_n``/``since_seq``).

    The contract promises the whole replay with no gap, however it compares
    with the queue's bounds, so these are exempt from the bounds and never
    dropped.  That costs one reference per event: the bytes are the event's
    own, already held by the topic's history.
    """

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event

    @property
    def data(self) -> bytes:
        """The event frame's bytes."""
        return self.event.data


#: What a queue holds: an Event shared with other subscribers, a Replayed
#: event, or the bytes of one control frame (ack, error, pong, info) meant for
#: this connection only.
Item = Event | Replayed | bytes


# Shared stand-ins (see OutboundQueue.__init__): an empty tuple fails loudly
# if anything ever tries to queue a waiting putter.
_NO_PUTTERS: tuple[()] = ()
_NEVER_JOINED = _LockEvent()


class _Waiters(list):  # type: ignore[type-arg]
    """The futures waiting in get(): at most the writer's one, so a list with
    the deque method Queue uses (popleft) is enough."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def item_size(item: Item) -> int:
    """Bytes an item counts against the queue's bound (a replayed event: none)."""
    if item.__class__ is bytes:
        return len(item)  # type: ignore[arg-type]
    return 0 if item.__class__ is Replayed else len(item.data)  # type: ignore[union-attr]


class OutboundQueue(Queue):
    """A ``tornado.queues.Queue`` bounded by frames *and* bytes.

    ``offer`` never blocks: the publisher must not wait for a subscriber.  On
    overflow under ``drop_oldest`` the oldest queued *event* is discarded and
    reported to ``on_drop``; control frames are never discarded.  When nothing
    can be dropped (policy ``disconnect``, or the queue holds only control
    frames) ``offer`` returns False and the caller disconnects the consumer.

    A single frame larger than ``max_bytes`` is still admitted into an empty
    queue, so one big message can never wedge a connection forever.
    ``offer_replay`` queues a replayed event outside the bounds (see
    ``Replayed``).
    """

    def __init__(
        self,
        maxsize: int,
        max_bytes: int,
        drop_oldest: bool,
        on_drop: Callable[[Event], None],
    ) -> None:
        super().__init__(maxsize=maxsize)
        # Memory per idle connection matters at 10 000 connections.  We never
        # call put() (so no putter ever waits) nor join()/task_done() (so no
        # one waits on _finished): those two members of every Queue, a deque
        # and an Event of ~1.2 KB together, are replaced by shared stand-ins;
        # the one waiting getter (the writer) needs no 760-byte deque either.
        self._putters = _NO_PUTTERS  # type: ignore[assignment]
        self._finished = _NEVER_JOINED
        self._getters = _Waiters()  # type: ignore[assignment]
        self.max_bytes = max_bytes
        self.replayed = 0  # Replayed items queued: not counted against maxsize
        self.drop_oldest = drop_oldest
        self.on_drop = on_drop
        self.nbytes = 0

    # Queue's subclass hooks: keep the byte count beside the items.  A list,
    # not a deque (56 bytes empty instead of 760): the writer takes one item
    # and then swaps out the rest (drain_nowait), so pop(0) runs once a batch.
    def _init(self) -> None:
        self._queue: list[Item] = []  # type: ignore[assignment]

    def _put(self, item: Item) -> None:
        self._append(item, item_size(item))

    def _append(self, item: Item, size: int) -> None:
        self._queue.append(item)
        self.nbytes += size

    def _get(self) -> Item:
        item = self._queue.pop(0)
        if item.__class__ is Replayed:
            self.replayed -= 1
        self.nbytes -= item_size(item)
        return item

    def full(self) -> bool:
        # The bounds are enforced by offer(), which knows replayed events are
        # exempt; put_nowait() must not refuse what offer() admitted.
        return False

    def _fits(self, size: int) -> bool:
        count = len(self._queue) - self.replayed
        return count == 0 or (count < self.maxsize and self.nbytes + size <= self.max_bytes)

    def _drop_oldest_event(self) -> bool:
        for index, item in enumerate(self._queue):
            if item.__class__ is Event:  # live events only: replays and control frames stay
                del self._queue[index]
                self.nbytes -= len(item.data)
                self.on_drop(item)
                return True
        return False

    def offer(self, item: Item, size: int | None = None) -> bool:
        """Queue ``item`` without waiting; False means the consumer must go.

        ``size`` is ``item_size(item)``, passed by fan-out, which measures an
        event once for all its subscribers."""
        if size is None:
            size = item_size(item)
        while not self._fits(size):
            if not (self.drop_oldest and self._drop_oldest_event()):
                return False
        if self._getters:  # the writer is waiting: Queue hands it the item
            self.put_nowait(item)
        else:
            # Fan-out runs this for every subscriber of every event: skip
            # put_nowait's bookkeeping for timed-out getters and join(), which
            # this queue never has, and store the item as _put would.
            self._append(item, size)
        return True

    def offer_replay(self, event: Event) -> None:
        """Queue a retained event of a replay or resume; always admitted."""
        self.replayed += 1
        self.put_nowait(Replayed(event))

    def drain_nowait(self) -> list[Item]:
        """Take everything queued right now (the writer sends it as one batch)."""
        items = self._queue
        self._queue = []
        self.nbytes = 0
        self.replayed = 0
        return items

    def clear(self) -> None:
        """Discard everything queued (the connection is going away)."""
        self._queue.clear()
        self.nbytes = 0
        self.replayed = 0
