"""The bounded outbound queue each connection owns, with its overflow policy."""

from __future__ import annotations

import time
from typing import Callable, Protocol

from tornado.concurrent import Future
from tornado.queues import Queue

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.core.history import Event
from tornado_pubsub.core.inline import WAITING, Park, Stepper
from tornado_pubsub.server.tornado_patches import slim_queue


class EventSource(Protocol):
    """Where a replay reads its events: a topic's ``History`` (in memory,
    shared with every other reader) or an ``EventList`` (events read for this
    subscribe only, e.g. a Redis snapshot)."""

    #: True once the topic is deleted: a replay reading here just ends.
    closed: bool

    def page(self, after: int, upto: int, max_bytes: int, at_least_one: bool) -> tuple[int | None, list[Event] | None]:
        """``(oldest seq held now, None: none; 0: it never loses any,
        events with after < seq <= upto)``, oldest first, within ``max_bytes``
        (at least one, whatever its size, when ``at_least_one``).  Events
        ``None``: not yet read; a source that answers so has ``waiting`` set
        and an ``async fill(after, upto)`` the writer awaits first."""
        ...

    def pending(self, after: int, upto: int) -> int:
        """Bytes of the events after..upto still held (for /metrics)."""
        ...


class Replay:
    """A replay or resume in a queue: a *position* in a topic's history, not
    a copy of it.

    The writer pulls the next events from ``source`` as it has room
    (``OutboundQueue.take``), so however many topics a connection replays and
    however large their messages, it pins one reference per replay and the
    bytes of the write in progress: the events stay where the history keeps
    them.  Exempt from the queue's bounds and never dropped, so the whole
    replay is sent in order, before the topic's live events queued behind it.

    If the history evicts events before the writer reaches them (a reader
    slower than the topic's retention), the writer sends ``info
    history_gap`` with the new first seq and goes on from there: the same
    notice a resume gets when its position is no longer retained.
    """

    __slots__ = ("topic", "epoch", "source", "after", "upto")

    def __init__(self, topic: str, epoch: str, source: EventSource, after: int, upto: int) -> None:
        self.topic = topic
        self.epoch = epoch
        self.source = source
        self.after = after  # the newest seq sent (or skipped) so far
        self.upto = upto  # the newest seq this replay covers; live events follow

    @property
    def done(self) -> bool:
        """True once every seq up to ``upto`` was pulled (or found gone)."""
        return self.after >= self.upto

    def pull(self, max_bytes: int, at_least_one: bool) -> tuple[list["Event | bytes"], int]:
        """The next frames (events, maybe a ``history_gap`` notice first) within
        ``max_bytes``, and their size; advances the position."""
        source = self.source
        first, events = source.page(self.after, self.upto, max_bytes, at_least_one)
        out: list[Event | bytes] = []
        size = 0
        if source.closed:  # deleted: its topic_deleted notice follows in the queue
            self.after = self.upto
            return out, 0
        if events is None:  # the source must read its next page first (see OutboundQueue.refill)
            return out, 0
        if first is None or first > self.after + 1:  # evicted before we got there
            first_seq = first if first is not None and first <= self.upto else self.upto + 1
            notice = frames.info("history_gap", topic=self.topic, epoch=self.epoch, first_seq=first_seq)
            out.append(notice)
            size += len(notice)
            self.after = first_seq - 1
        for event in events:
            out.append(event)
            size += len(event.data)
        if events:
            self.after = events[-1].seq
        elif at_least_one or first is None:
            self.after = self.upto  # nothing more is held up to ``upto``
        return out, size

    def pending(self) -> int:
        """Bytes this replay has still to send (what a stalled reader holds up)."""
        return 0 if self.done else self.source.pending(self.after, self.upto)

    def __repr__(self) -> str:
        return f"Replay({self.topic!r}, after={self.after}, upto={self.upto})"


class _Hole:
    """Where a dropped event was: skipped by the writer (see ``OutboundQueue``)."""

    __slots__ = ()


HOLE = _Hole()

#: What a queue holds: an Event shared with other subscribers, a Replay
#: position, or the bytes of one control frame (ack, error, pong, info) meant
#: for this connection only.
Item = Event | Replay | bytes


class Close:
    """The close instruction a queue ends with (``OutboundQueue.close``):
    the writer sends what was queued before it, then ends the connection with
    ``disconnect`` (``abort``: at once, without waiting for the peer's reply)."""

    __slots__ = ("disconnect", "abort")

    def __init__(self, disconnect: Disconnect, abort: bool) -> None:
        self.disconnect = disconnect
        self.abort = abort


def item_size(item: Item | Close) -> int:
    """Bytes an item counts against the queue's bound (a replay or a close: none)."""
    cls = item.__class__
    if cls is bytes:
        return len(item)  # type: ignore[arg-type]
    return len(item.data) if cls is Event else 0  # type: ignore[union-attr]


#: The most one write joins (PROTOCOL.md 9): with the queue's bound, what a
#: connection can pin beyond the shared history.  A single frame larger than
#: this still goes out whole, alone.
WRITE_MAX = 256 * 1024


class OutboundQueue(Queue):
    """A ``tornado.queues.Queue`` bounded by frames *and* bytes.

    ``offer`` never blocks: the publisher must not wait for a subscriber.  On
    overflow under ``drop_oldest`` the oldest queued *event* is discarded and
    reported to ``on_drop``; control frames are never discarded.  When nothing
    can be dropped (policy ``disconnect``, or the queue holds only control
    frames) ``offer`` returns False and the caller disconnects the consumer.

    A single frame larger than ``max_bytes`` is still admitted into an empty
    queue, so one big message can never wedge a connection forever.
    ``offer_replay`` queues a ``Replay`` position, outside the bounds: it
    holds no event bytes of its own.

    Dropping is O(1) per event, whatever sits ahead of the oldest event
    (control frames, parked replays): from its first overflow until it is
    next empty the queue keeps the positions of its live events in order
    (found once, in one pass), and a dropped event leaves a hole the writer
    skips; holes are compacted away once they are half the queue.  A queue
    that never overflows does none of this: fan-out pays one check.

    Threat: a reader that never reads, subscribed to many topics with large
    replays, pins ``max_bytes`` of live frames, one reference per replay and
    one write (``WRITE_MAX``), no more; and a publisher overflowing its
    queue costs the same small work per event however much is parked ahead.
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
        self.max_items = maxsize  # Queue.maxsize without its property call, for offer()
        self.max_bytes = max_bytes
        self.parked = 0  # Replay items queued: not counted against maxsize
        self.holes = 0  # dropped events' places, not yet skipped or compacted
        self.drop_oldest = drop_oldest
        self.on_drop = on_drop
        self.nbytes = 0
        # While tracking (from an overflow until the queue is next empty):
        # absolute positions of the queued live events, oldest first, from
        # index _live_at; _base is the absolute position of _queue[0].
        self._live: list[int] | None = None
        self._live_at = 0
        self._base = 0
        # The writer's side of the contract (see take, wait_sent, sent):
        self.taken = False  # it holds items it has not finished writing
        self.interrupt: Callable[[], None] | None = None  # see wait_sent
        self.waiting_since: float | None = None  # see wait_sent
        self.closing: Close | None = None
        self.writer: Stepper | None = None  # the writer, while it waits for an item (see next_item)
        self._next = _NextItem(self)

    # Queue's subclass hooks: keep the byte count beside the items.  A list,
    # not a deque (56 bytes empty instead of 760); pop(0) moves at most a
    # bounded queue's worth of pointers.  Invariant: _queue[0] is never a hole.
    def _init(self) -> None:
        self._queue: list[Item] = []  # type: ignore[assignment]

    def _put(self, item: Item) -> None:
        self._append(item, item_size(item))

    def _append(self, item: Item | Close, size: int) -> None:
        # offer() has this and _fits inlined (fan-out runs it per subscriber
        # per event; the call measured 0.21 -> 0.25 us an offer): change both.
        if self._live is not None and item.__class__ is Event:
            self._live.append(self._base + len(self._queue))
        self._queue.append(item)  # type: ignore[arg-type]
        self.nbytes += size

    def _get(self) -> Item:
        # Whatever get() returns (and take after it) counts as taken until
        # the writer calls sent().
        self.taken = True
        queue = self._queue
        item = queue.pop(0)
        self._base += 1
        cls = item.__class__
        if cls is Event:
            self.nbytes -= len(item.data)  # type: ignore[union-attr]
            if self._live is not None:
                self._live_at += 1  # it is the oldest live event: drops took those before it
        elif cls is bytes:
            self.nbytes -= len(item)  # type: ignore[arg-type]
        elif cls is Replay:
            self.parked -= 1
        if not queue:
            self._live = None  # empty: stop tracking until the next overflow
        elif queue[0] is HOLE:
            self._skip_holes()
        live = self._live
        if live is not None and self._live_at > 64 and self._live_at * 2 > len(live):
            del live[: self._live_at]
            self._live_at = 0
        return item

    def _skip_holes(self) -> None:
        queue = self._queue
        while queue and queue[0] is HOLE:
            queue.pop(0)
            self._base += 1
            self.holes -= 1

    def _fits(self, size: int) -> bool:
        count = len(self._queue) - self.parked - self.holes
        return count == 0 or (count < self.max_items and self.nbytes + size <= self.max_bytes)

    def _drop_oldest_event(self) -> bool:
        # Live events only: replays and control frames stay.  O(1): the
        # oldest event's position is at hand, its place becomes a hole.
        live = self._live
        if live is None:  # the first overflow since the queue was empty: one pass
            live = self._live = [self._base + i for i, item in enumerate(self._queue) if item.__class__ is Event]
            self._live_at = 0
        if self._live_at >= len(live):
            return False
        index = live[self._live_at] - self._base
        self._live_at += 1
        item: Event = self._queue[index]  # type: ignore[assignment]
        self._queue[index] = HOLE  # type: ignore[call-overload]
        self.holes += 1
        self.nbytes -= len(item.data)
        self.on_drop(item)
        if index == 0:
            self._skip_holes()
        elif self.holes > 32 and self.holes * 2 > len(self._queue):
            self._compact()
        return True

    def _compact(self) -> None:
        """Remove the holes (amortized O(1) per drop: runs once they are half the queue)."""
        self._queue = [item for item in self._queue if item is not HOLE]
        self.holes = 0
        self._base = 0
        self._live = [i for i, item in enumerate(self._queue) if item.__class__ is Event]
        self._live_at = 0

    def offer(self, item: Item, size: int | None = None) -> bool:
        """Queue ``item`` without waiting; False means the consumer must go.

        ``size`` is ``item_size(item)``, passed by fan-out, which measures an
        event once for all its subscribers."""
        if size is None:
            size = item_size(item)
        # Fan-out runs this for every subscriber of every event: _fits and
        # _append are inlined for the usual case (room, no drops tracked).
        count = len(self._queue) - self.parked - self.holes
        if count and (count >= self.max_items or self.nbytes + size > self.max_bytes):
            while not self._fits(size):
                if not (self.drop_oldest and self._drop_oldest_event()):
                    return False
        if self._live is not None and item.__class__ is Event:
            self._live.append(self._base + len(self._queue))
        self._queue.append(item)  # type: ignore[arg-type]
        self.nbytes += size
        if self.writer is not None or self._getters:
            self._wake()
        return True

    def _enqueue(self, item: Item | Close, size: int) -> None:
        # Not put_nowait: its bookkeeping (expired getters, join()'s
        # counter, fullness) is for queues used otherwise; stored as _put
        # would, then the writer waiting for it is woken (see next_item).
        self._append(item, size)
        self._wake()

    def _wake(self) -> None:
        """Wake the writer waiting for an item (``next_item``), or else hand
        the oldest item to a plain ``get()`` waiting, as put_nowait would."""
        writer = self.writer
        if writer is not None:
            self.writer = None
            writer.wake()
            return
        getters = self._getters
        while getters and self._queue:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(self._get())

    def offer_replay(self, replay: Replay) -> None:
        """Queue a replay position (see ``Replay``); always admitted."""
        self.parked += 1
        self._enqueue(replay, 0)

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

    def next_item(self) -> Park:
        """What the writer awaits for its next item: ``await queue.next_item()``
        in a coroutine run by ``inline.spawn``.

        Each item queued while it waits wakes it once (``Stepper.wake``), with
        no future, and the writers woken in one loop pass run in one
        callback: an idle writer's wake is paid once per event delivered to
        it when a publisher's consecutive messages go to different topics.
        """
        return self._next

    def take(self, first: Item | Close, limit: int = WRITE_MAX) -> list[Item | Close]:
        """The next batch for one write: ``first`` (what ``next_item`` gave),
        then what follows while the frames fit in ``limit`` bytes, a close
        instruction ending it.  A replay at the head gives its next events; if
        it has more, it stays at the head for the next batch."""
        cls = first.__class__
        if cls is not Replay and not self.parked:
            # Everything queued fits in one write (the usual case): take it
            # all at once, as one list, with no work per item.
            size = len(first) if cls is bytes else len(first.data) if cls is Event else 0  # type: ignore[arg-type, union-attr]
            if size + self.nbytes <= limit:
                if not self._queue:
                    return [first]
                rest = self._queue if not self.holes else [i for i in self._queue if i is not HOLE]
                self._queue = []  # type: ignore[assignment]
                self.nbytes = self.holes = self._base = 0
                self._live = None
                return [first, *rest]
        batch: list[Item | Close] = []
        size = 0
        item = first
        queue = self._queue
        while True:
            cls = item.__class__
            if cls is Replay:
                frames_, nbytes = item.pull(limit - size, not batch)  # type: ignore[union-attr]
                batch += frames_
                size += nbytes
                if not item.done:  # type: ignore[union-attr]
                    queue.insert(0, item)  # type: ignore[arg-type]
                    self._base -= 1
                    self.parked += 1
                    break
            else:
                batch.append(item)
                if cls is Close:
                    break
                size += len(item) if cls is bytes else len(item.data)  # type: ignore[arg-type, union-attr]
            if not queue or size >= limit:
                break
            head = queue[0]
            if head.__class__ is not Replay and size + item_size(head) > limit:
                break
            item = self._get()
        return batch

    def wait_sent(self, write: "Future[None]", interrupt: Callable[[], None]) -> "Future[None]":
        """What the writer awaits for a write the socket did not take at once
        (``write`` itself).  A ``close`` meanwhile calls ``interrupt``, so the
        close does not wait for a reader that may never read again: the
        writer takes the close instruction from the queue and carries it out
        at once.  ``waiting_since`` says since when the peer has not taken
        what it was sent (the write-progress deadline, ``Heartbeat``)."""
        self.interrupt = interrupt
        self.waiting_since = time.monotonic()
        return write

    def sent(self) -> None:
        """The writer has written everything it took."""
        self.taken = False
        self.interrupt = None
        self.waiting_since = None

    def idle(self) -> bool:
        """True when nothing is queued, or taken and not yet written."""
        return not self._queue and not self.taken

    async def refill(self) -> None:
        """Await the next page of the replay at the head, if it is waiting for
        one (a source that reads from a store: ``RedisPages``)."""
        head = self._queue[0] if self._queue else None
        if head.__class__ is Replay:
            source = head.source  # type: ignore[union-attr]
            if getattr(source, "waiting", False):
                await source.fill(head.after, head.upto)  # type: ignore[union-attr]

    def replay_pending(self) -> int:
        """Bytes the queued replays have still to send (for /metrics)."""
        if not self.parked:
            return 0
        return sum(item.pending() for item in self._queue if item.__class__ is Replay)  # type: ignore[union-attr]

    def drain_nowait(self, replays: bool = True) -> list[Item | Close]:
        """Take everything queued right now, oldest first, each replay read
        out whole into its events (``replays=False``: left out).  For a close
        that must not wait, and for tests; the writer uses ``take``."""
        items: list[Item | Close] = []
        for item in self._queue:
            if item is HOLE:
                continue
            if item.__class__ is Replay:
                while replays and not item.done:  # type: ignore[union-attr]
                    pulled = item.pull(1 << 62, True)[0]  # type: ignore[union-attr]
                    if not pulled:
                        break  # the rest would need a store read: left out
                    items += pulled
                continue
            items.append(item)
        self.clear()
        return items

    def clear(self) -> None:
        """Discard everything queued (the connection is going away, or is aborted)."""
        self._queue.clear()
        self.nbytes = 0
        self.parked = 0
        self.holes = 0
        self._live = None
        self._live_at = 0
        self._base = 0


class _NextItem(Park):
    """``OutboundQueue.next_item``: the oldest item, or the writer waits
    (registered as the queue's ``writer``) until one is queued."""

    __slots__ = ("queue",)

    def __init__(self, queue: OutboundQueue) -> None:
        self.queue = queue

    def claim(self, stepper: Stepper) -> Item | Close:
        queue = self.queue
        if queue._queue:
            return queue._get()
        queue.writer = stepper
        return WAITING

    def release(self, stepper: Stepper) -> None:
        if self.queue.writer is stepper:
            self.queue.writer = None
