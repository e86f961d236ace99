"""The heartbeat: one timer for every connection of an app."""

from __future__ import annotations

import time
from typing import Protocol

from tornado.ioloop import IOLoop, PeriodicCallback

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import HEARTBEAT_TIMEOUT, WRITE_TIMEOUT


class Beating(Protocol):
    """What the heartbeat needs of a connection."""

    #: ``time.monotonic()`` of the last sign of life (a frame, a pong).
    last_seen: float

    def write_waiting_since(self) -> float | None:
        """``time.monotonic()`` since which a write waits for the peer to read
        (None: nothing waits)."""
        ...

    def heartbeat(self, notice: bytes) -> None:
        """Queue ``notice`` (``info ping``) and send a transport-level ping, if any."""
        ...

    def abort(self, cause: str, code: int, reason: str) -> None:
        """Close with ``code`` and drop the connection at once; ``cause`` goes to the log."""
        ...


class Heartbeat:
    """One ``PeriodicCallback`` for all connections of an app.

    Every ``interval`` it queues ``info ping`` and sends a WebSocket ping to
    each connection; ``timeout`` seconds later it closes those that have sent
    nothing (no pong, no frame) since that ping, and those that have not
    taken what they were sent since then (a write still waits that began
    before the ping): the write-progress deadline.  One timer for everyone
    instead of one task per connection keeps idle connections cheap.

    Threat: a peer that never reads but keeps talking (pongs, frames) would
    otherwise live forever with its queue and its pending write.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.sockets: set[Beating] = set()
        self._timer: PeriodicCallback | None = None

    def add(self, sock: Beating) -> None:
        self.sockets.add(sock)
        if self._timer is None:
            self._timer = PeriodicCallback(self._beat, self.interval * 1000)
            self._timer.start()

    def discard(self, sock: Beating) -> None:
        self.sockets.discard(sock)

    def abort_all(self, cause: str, code: int, reason: str) -> int:
        """Drop every open connection at once (see ``Beating.abort``); returns how many."""
        sockets = list(self.sockets)
        for sock in sockets:
            sock.abort(cause, code, reason)
        return len(sockets)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _beat(self) -> None:
        loop = IOLoop.current()
        sent_at = time.monotonic()
        notice = frames.info("ping")
        for sock in list(self.sockets):
            sock.heartbeat(notice)
        loop.call_later(self.timeout, self._reap, sent_at)

    def _reap(self, sent_at: float) -> None:
        for sock in list(self.sockets):
            if sock.last_seen < sent_at:
                sock.abort(HEARTBEAT_TIMEOUT.reason, HEARTBEAT_TIMEOUT.code, HEARTBEAT_TIMEOUT.reason)
                continue
            waiting = sock.write_waiting_since()
            if waiting is not None and waiting <= sent_at:  # not read for at least ``timeout``
                sock.abort(WRITE_TIMEOUT.reason, WRITE_TIMEOUT.code, WRITE_TIMEOUT.reason)
