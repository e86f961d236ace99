"""Published messages and the per-topic ring buffer that keeps the newest ones."""

from __future__ import annotations

from collections import deque
from typing import Any


class Event:
    """One published message, rendered once and shared by every subscriber.

    ``data`` is the complete ``event`` frame (JSON); queues hold this object,
    never a per-subscriber copy.  ``owner`` (the topic) holds the ``dropped``
    counter, so a queue that drops the event can count it without knowing
    topics.  Nothing else is kept per event: a slow reader's queue retains
    exactly the bytes its bound counts.
    """

    __slots__ = ("seq", "id", "data", "owner")

    def __init__(self, seq: int, message_id: str, data: bytes, owner: Any) -> None:
        self.seq = seq
        self.id = message_id
        self.data = data
        self.owner = owner

    def __repr__(self) -> str:
        return f"Event(seq={self.seq}, id={self.id!r})"


class History:
    """The newest ``size`` events of a topic, oldest first, indexed by message id.

    ``size`` 0 keeps nothing (no replay, no idempotent publish).
    """

    __slots__ = ("size", "_events", "_by_id")

    def __init__(self, size: int) -> None:
        self.size = size
        self._events: deque[Event] = deque()
        self._by_id: dict[str, Event] = {}

    @property
    def first_seq(self) -> int | None:
        """Seq of the oldest retained event, or None when empty."""
        return self._events[0].seq if self._events else None

    def append(self, event: Event) -> None:
        """Retain ``event``, evicting the oldest beyond ``size``."""
        if self.size == 0:
            return
        if len(self._events) == self.size:
            evicted = self._events.popleft()
            if self._by_id.get(id_key(evicted.id)) is evicted:
                del self._by_id[id_key(evicted.id)]
        self._events.append(event)
        self._by_id[id_key(event.id)] = event

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


def id_key(message_id: str) -> str:
    """The key a message id is deduplicated by, in memory and in Redis: UUIDs
    are case-insensitive, so "ABC..." and "abc..." are the same message."""
    return message_id.lower()
