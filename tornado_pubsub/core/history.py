"""Published messages, the per-topic ring buffer that keeps the newest ones,
and the byte budget all topics' rings share."""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any, Sequence


class Event:
    """One published message, rendered once and shared by every subscriber.

    ``data`` is the complete ``event`` frame (JSON); queues hold this object,
    never a per-subscriber copy.  ``owner`` (the topic) holds the ``dropped``
    counter, so a queue that drops the event can count it without knowing
    topics.  The links to other events (``home``, ``older``, ``newer``) are
    cleared when the history evicts it, so an event left in a slow reader's
    queue keeps no other event alive: the queue retains exactly the bytes its
    bound counts.
    """

    __slots__ = ("seq", "id", "data", "owner", "home", "older", "newer")

    def __init__(self, seq: int, message_id: str, data: bytes, owner: Any) -> None:
        self.seq = seq
        self.id = message_id
        self.data = data
        self.owner = owner
        # Set while a History under a shared Retention holds this event: the
        # history, and the neighbours in the process-wide publish order.
        self.home: History | None = None
        self.older: Event | None = None
        self.newer: Event | None = None

    def __repr__(self) -> str:
        return f"Event(seq={self.seq}, id={self.id!r})"


#: What one retained event costs besides its frame: the ``Event`` object, the
#: message id and its lower-cased key, the deque slot and the id index entry
#: (measured with tracemalloc on CPython 3.11: ~350 bytes).  Counted toward
#: every byte bound, so the bounds hold for RSS even when frames are tiny.
EVENT_OVERHEAD = 384


def retained_cost(event: Event) -> int:
    """Bytes ``event`` counts toward ``history_max_bytes`` and ``max_retained_bytes``."""
    return len(event.data) + EVENT_OVERHEAD


class Retention:
    """The byte budget every topic's history in one process shares
    (``max_retained_bytes``), with the retained events in publish order.

    Events are linked oldest to newest through their own ``older``/``newer``
    slots, so adding, forgetting and evicting the oldest are each O(1): a
    publish never scans topics.  When an addition takes the total over the
    budget, the oldest events across all topics are evicted from their
    histories until it fits; their topics' ``first_seq`` moves, so a later
    resume from before them reports ``history_gap``.

    Threat: a client publishing large messages to many topics (each within
    its own ``history_size`` and ``history_max_bytes``) would otherwise grow
    the process until it is killed, taking every connection with it.
    """

    __slots__ = ("max_bytes", "bytes", "evicted", "_oldest", "_newest")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0  # events evicted by this budget (not by a topic's own bounds)
        self._oldest: Event | None = None
        self._newest: Event | None = None

    def add(self, event: Event) -> None:
        """Link ``event`` (already in its history) as the newest, then evict the
        oldest events across all topics while the total is over budget."""
        event.older = self._newest
        event.newer = None
        if self._newest is None:
            self._oldest = event
        else:
            self._newest.newer = event
        self._newest = event
        self.bytes += retained_cost(event)
        while self.bytes > self.max_bytes and self._oldest is not None:
            oldest = self._oldest
            oldest.home.evict_oldest()  # calls forget(oldest)
            self.evicted += 1

    def forget(self, event: Event) -> None:
        """Unlink ``event``, which its history no longer holds."""
        older, newer = event.older, event.newer
        if older is None:
            self._oldest = newer
        else:
            older.newer = newer
        if newer is None:
            self._newest = older
        else:
            newer.older = older
        event.older = event.newer = event.home = None
        self.bytes -= retained_cost(event)


class History:
    """The newest events of a topic, oldest first, indexed by message id.

    Bounded by count (``size``; 0 keeps nothing: no replay, no idempotent
    publish), by bytes (``max_bytes``, frames plus ``EVENT_OVERHEAD`` each) and
    by the process-wide ``retention`` it shares with every other topic.  Only
    the oldest event is ever evicted, so retained seqs stay consecutive.
    """

    __slots__ = ("size", "max_bytes", "bytes", "retention", "closed", "_events", "_by_id")

    def __init__(self, size: int, max_bytes: int | None = None, retention: Retention | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.retention = retention
        self.closed = False  # the topic was deleted: a replay reading here just ends
        self._events: deque[Event] = deque()
        self._by_id: dict[str, Event] = {}

    @property
    def first_seq(self) -> int | None:
        """Seq of the oldest retained event, or None when empty."""
        return self._events[0].seq if self._events else None

    def append(self, event: Event) -> None:
        """Retain ``event``, evicting the oldest beyond ``size`` or ``max_bytes``
        here, then beyond the shared ``retention`` budget anywhere.  An event
        larger than a byte bound on its own is not retained at all."""
        if self.size == 0:
            return
        self._events.append(event)
        self._by_id[id_key(event.id)] = event
        self.bytes += retained_cost(event)
        while self._events and (len(self._events) > self.size or (self.max_bytes is not None and self.bytes > self.max_bytes)):
            self.evict_oldest()
        if self.retention is not None and self._events and self._events[-1] is event:
            event.home = self
            self.retention.add(event)

    def evict_oldest(self) -> None:
        """Forget the oldest retained event."""
        evicted = self._events.popleft()
        key = id_key(evicted.id)
        if self._by_id.get(key) is evicted:
            del self._by_id[key]
        self.bytes -= retained_cost(evicted)
        if evicted.home is not None:
            self.retention.forget(evicted)  # type: ignore[union-attr]

    def clear(self) -> None:
        """Forget every event (the topic is deleted): the shared budget is freed."""
        self.closed = True
        while self._events:
            self.evict_oldest()

    def find(self, message_id: str) -> Event | None:
        """The retained event published with ``message_id``, if any."""
        return self._by_id.get(id_key(message_id))

    def last(self, n: int) -> list[Event]:
        """The newest ``n`` retained events, oldest first."""
        if n <= 0:
            return []
        if n >= len(self._events):
            return list(self._events)
        return list(self._events)[-n:]

    def after(self, seq: int) -> list[Event]:
        """Retained events with a seq greater than ``seq``, oldest first."""
        first = self.first_seq
        if first is None:
            return []
        skip = max(0, seq - first + 1)  # seqs in history are consecutive
        return list(self._events)[skip:] if skip else list(self._events)

    def page(self, after: int, upto: int, max_bytes: int, at_least_one: bool) -> tuple[int | None, list[Event]]:
        """See ``EventSource.page``: read without copying the history."""
        return self.first_seq, page_of(self._events, after, upto, max_bytes, at_least_one)

    def pending(self, after: int, upto: int) -> int:
        """See ``EventSource.pending``."""
        return sum(len(e.data) for e in page_of(self._events, after, upto, 1 << 62, True))


class EventList:
    """An ``EventSource`` over events held privately (a Redis snapshot, the
    live events a subscribe kept while it read): they are this list's own,
    so they stay alive until the replay has read them."""

    __slots__ = ("events", "closed")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.closed = False

    def page(self, after: int, upto: int, max_bytes: int, at_least_one: bool) -> tuple[int | None, list[Event]]:
        """See ``EventSource.page``; a private list loses nothing (first seq 0)."""
        return 0, page_of(self.events, after, upto, max_bytes, at_least_one)

    def pending(self, after: int, upto: int) -> int:
        """See ``EventSource.pending``."""
        return sum(len(e.data) for e in page_of(self.events, after, upto, 1 << 62, True))


def page_of(events: Sequence[Event], after: int, upto: int, max_bytes: int, at_least_one: bool) -> list[Event]:
    """The events of ``events`` (in seq order) with ``after < seq <= upto``,
    oldest first, as many as fit in ``max_bytes`` of frames (and at least one,
    whatever its size, when ``at_least_one``).  A binary search finds the
    start: the cost is the page's, not the history's."""
    i = bisect.bisect_right(events, after, key=_seq)  # type: ignore[call-overload]
    out: list[Event] = []
    size = 0
    count = len(events)
    while i < count:
        event = events[i]
        if event.seq > upto:
            break
        size += len(event.data)
        if size > max_bytes and (out or not at_least_one):
            break
        out.append(event)
        i += 1
    return out


def _seq(event: Event) -> int:
    return event.seq


def id_key(message_id: str) -> str:
    """The key a message id is deduplicated by, in memory and in Redis: UUIDs
    are case-insensitive, so "ABC..." and "abc..." are the same message."""
    return message_id.lower()
