"""One connection as the broker sees it (``Subscriber``), and the process's
totals behind /metrics (``Counters``).  The hub (``core.hub``) owns both;
they live here so the hub module holds subscriptions and fan-out only.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from tornado_pubsub.core.history import Event
from tornado_pubsub.core.outbound import OutboundQueue

if TYPE_CHECKING:
    from tornado_pubsub.core.hub import Hub


class Subscriber:
    """One connection as the broker sees it: queue, subscriptions, counters.

    The core talks to the connection's transport only through ``queue``:
    frames to write, and at the end a close instruction (``OutboundQueue.close``).
    """

    __slots__ = ("id", "remote", "user", "connected_at", "queue", "topics", "closed", "dropped", "_broker")

    def __init__(self, hub: "Hub", conn_id: str, remote: str | None, user: str | None = None) -> None:
        self._broker = hub
        self.id = conn_id
        self.remote = remote
        self.user = user  # a token's sub; None for admin, anonymous and open connections
        self.connected_at = time.time()  # for GET /connections
        self.closed = False
        self.dropped = 0
        self.topics: dict[str, str] = {}  # topic name -> client_id
        self.queue = OutboundQueue(
            hub.queue_size, hub.queue_max_bytes, hub.drop_oldest, self._count_drop
        )

    def _count_drop(self, event: Event) -> None:
        self.dropped += 1
        if event.owner is not None:  # a live event always has one (see Hub.deliver)
            event.owner.dropped += 1
        self._broker.counters.dropped += 1

    def send(self, frame: bytes) -> bool:
        """Queue a control frame for this connection; False if it was evicted instead."""
        if self.closed:
            return False
        if self.queue.offer(frame):
            return True
        self._broker.evict_slow(self)
        return False

    def idle(self) -> bool:
        """True when nothing is queued or being written."""
        return self.queue.idle()

    def client_id(self) -> str | None:
        """A label for logs: the client_id of the first subscription, if any."""
        return next(iter(self.topics.values()), None)

    def __repr__(self) -> str:
        return f"Subscriber({self.id!r}, topics={len(self.topics)})"


@dataclasses.dataclass
class Counters:
    """Process-wide totals behind /metrics (monotonic, never reset)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    slow_consumers: int = 0
    connections_total: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)

    def error(self, code: str) -> None:
        """Count one error reply with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1
