"""The bounded outbound queue each connection owns, with its overflow policy."""

from __future__ import annotations

from typing import Callable

from tornado.concurrent import Future
from tornado.queues import Queue

from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.core.history import Event
from tornado_pubsub.server.tornado_patches import slim_queue

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


class Close:
    """The close instruction a queue ends with (``OutboundQueue.close``):
    the writer sends what was queued before it, then ends the connection with
    ``disconnect`` (``abort``: at once, without waiting for the peer's reply)."""

    __slots__ = ("disconnect", "abort")

    def __init__(self, disconnect: Disconnect, abort: bool) -> None:
        self.disconnect = disconnect
        self.abort = abort


def item_size(item: Item | Close) -> int:
    """Bytes an item counts against the queue's bound (a replayed event or a close: none)."""
    cls = item.__class__
    if cls is bytes:
        return len(item)  # type: ignore[arg-type]
    return len(item.data) if cls is Event else 0  # type: ignore[union-attr]


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
        slim_queue(self)  # ~1.2 KB less per idle connection (see tornado_patches)
        self.max_bytes = max_bytes
        self.replayed = 0  # Replayed items queued: not counted against maxsize
        self.drop_oldest = drop_oldest
        self.on_drop = on_drop
        self.nbytes = 0
        # The writer's side of the contract (see _get, wait_sent, sent):
        self.taken = False  # it holds items it has not finished writing
        self.interrupt: Callable[[], None] | None = None  # see wait_sent
        self.closing: Close | None = None

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
        # Whatever get() returns (and drain_nowait after it) counts as taken
        # until the writer calls sent().
        self.taken = True
        item = self._queue.pop(0)
        if item.__class__ is Replayed:
            self.replayed -= 1
        self.nbytes -= item_size(item)
        return item

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
        # _enqueue, inlined: fan-out runs this for every subscriber of every event.
        if not self._queue and not self.taken:
            self.put_nowait(item)
        else:
            self._append(item, size)
        return True

    def _enqueue(self, item: Item | Close, size: int) -> None:
        if not self._queue and not self.taken:
            # The writer, which calls get() again right after sent(), may be
            # waiting: Queue hands it the item.  The queue is empty, so
            # put_nowait (which checks maxsize) cannot refuse it.
            self.put_nowait(item)  # type: ignore[arg-type]
        else:
            # Skip put_nowait's bookkeeping (expired getters, join()'s
            # counter), which this queue never needs; store it as _put would.
            self._append(item, size)  # type: ignore[arg-type]

    def offer_replay(self, event: Event) -> None:
        """Queue a retained event of a replay or resume; always admitted."""
        self.replayed += 1
        self._enqueue(Replayed(event), 0)

    def close(self, disconnect: Disconnect, last_frame: bytes | None = None, abort: bool = False) -> None:
        """End the connection through its writer: it sends what is queued
        (``abort``: nothing, it is discarded), then ``last_frame``, then closes
        with ``disconnect``.  Both bypass the bounds: control is never dropped.

        A write the socket has not finished (a reader that stopped reading)
        is not waited for: the close would otherwise wait for that reader.
        Only the first close counts.
        """
        if self.closing is not None:
            return
        if abort:
            self.clear()
        if last_frame is not None:
            self._enqueue(last_frame, len(last_frame))
        self.closing = Close(disconnect, abort)
        self._enqueue(self.closing, 0)
        if self.interrupt is not None:
            self.interrupt()  # the writer waits on a write: it closes now (see wait_sent)

    # -- the writer's side --------------------------------------------------------

    def wait_sent(self, write: "Future[None]", interrupt: Callable[[], None]) -> "Future[None]":
        """What the writer awaits for a write the socket did not take at once
        (``write`` itself).  A ``close`` meanwhile calls ``interrupt``, so the
        close does not wait for a reader that may never read again: the
        writer takes the close instruction from the queue and carries it out
        at once."""
        self.interrupt = interrupt
        return write

    def sent(self) -> None:
        """The writer has written everything it took."""
        self.taken = False
        self.interrupt = None

    def idle(self) -> bool:
        """True when nothing is queued, or taken and not yet written."""
        return not self._queue and not self.taken

    def drain_nowait(self) -> list[Item]:
        """Take everything queued right now (the writer sends it as one batch)."""
        items = self._queue
        self._queue = []
        self.nbytes = 0
        self.replayed = 0
        return items

    def clear(self) -> None:
        """Discard everything queued (the connection is going away, or is aborted)."""
        self._queue.clear()
        self.nbytes = 0
        self.replayed = 0
