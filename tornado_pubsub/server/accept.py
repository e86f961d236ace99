"""Accepting connections: without spinning when the process runs out of file
descriptors, and with connections still in their HTTP handshake bounded."""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections import OrderedDict
from typing import Any, Callable

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from tornado_pubsub.logs import log_op

#: How long to stop watching the listening socket after accept() ran out of
#: resources; connections meanwhile wait in the kernel's backlog.
PAUSE = 0.1
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BATCH = 128  # accepts per wake-up, so one busy listener cannot starve the loop


def add_guarded_accept_handler(sock: socket.socket, callback: Callable[[socket.socket, Any], None]) -> Callable[[], None]:
    """Like ``tornado.netutil.add_accept_handler``, but survives running out
    of file descriptors.

    Tornado lets ``EMFILE`` escape its accept handler; the listening socket
    stays readable, so the IOLoop calls the handler again at once and logs a
    traceback each time: 100% CPU and thousands of log lines a second until a
    descriptor frees up.  Here the socket is unwatched for ``PAUSE`` seconds
    instead, with one warning per pause.  Returns a function that stops
    accepting for good.
    """
    io_loop = IOLoop.current()
    state: dict[str, Any] = {"removed": False, "paused": None}

    def accept_handler(fd: Any, events: int) -> None:
        for _ in range(_BATCH):
            if state["removed"]:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                io_loop.remove_handler(sock)
                state["paused"] = io_loop.call_later(PAUSE, resume)
                log_op("accept", logging.WARNING, error=errno.errorcode.get(exc.errno, str(exc.errno)), outcome="paused")
                return
            callback(connection, address)

    def resume() -> None:
        state["paused"] = None
        if not state["removed"]:
            io_loop.add_handler(sock, accept_handler, IOLoop.READ)

    def remove() -> None:
        if state["paused"] is not None:
            io_loop.remove_timeout(state["paused"])
        elif not state["removed"]:
            io_loop.remove_handler(sock)
        state["removed"] = True

    io_loop.add_handler(sock, accept_handler, IOLoop.READ)
    return remove


# Descriptors the process needs besides one per connection: listening
# sockets, the event loop, log files, connections still in their handshake.
RESERVED_DESCRIPTORS = 256


def raise_descriptor_limit(connections: int) -> tuple[int, bool]:
    """Raise the soft RLIMIT_NOFILE toward the hard limit so ``connections``
    WebSockets fit (plus ``RESERVED_DESCRIPTORS`` of headroom); returns the soft
    limit now in force and whether it is at least ``connections``.  A limit
    between the two is not worth a warning: the last few connections near it
    may meet EMFILE, which the guarded accept loop survives (see above).

    Only the standalone server calls this: an embedding application owns its
    process limits.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + RESERVED_DESCRIPTORS if connections else hard
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    enough = soft == resource.RLIM_INFINITY or soft >= connections
    return soft, enough


#: Half-open connections allowed beyond ``max_connections``, so that a server
#: full of WebSockets still answers a handshake with 503 and serves REST.
HANDSHAKE_MARGIN = 64
#: Descriptors never given to connections: the listening sockets, the event
#: loop, stdio, a Redis client's pool.
DESCRIPTOR_HEADROOM = 32


class HalfOpen:
    """TCP connections that are not (yet) WebSockets, oldest first, bounded.

    A connection counts from ``accept()`` until it is upgraded (a WebSocket,
    or an SSE stream: both then count as connections of the broker) or closed.
    Together with the upgraded ones they may not exceed ``capacity``:
    ``max_connections + HANDSHAKE_MARGIN``, and never more than the
    descriptor limit less ``DESCRIPTOR_HEADROOM``.  Admitting one more past
    that closes the oldest half-open connection first.

    Threat: clients that open sockets and never finish their HTTP request
    (slowloris, or a flood of bare TCP connects) would otherwise hold every
    descriptor until ``handshake_timeout`` and lock everyone else out, since
    ``accept()`` fails with EMFILE.  Shedding the oldest rather than refusing
    the newest means a legitimate client, which sends its request at once,
    gets in; an attacker must keep reconnecting faster than a real
    handshake takes to keep it out.  Keep-alive REST connections are
    half-open too (idle ones are the first to go, being the oldest).
    """

    def __init__(self, max_connections: int, descriptor_limit: int, upgraded: Callable[[], int]) -> None:
        capacity = descriptor_limit - DESCRIPTOR_HEADROOM
        if max_connections:
            capacity = min(capacity, max_connections + HANDSHAKE_MARGIN)
        self.capacity = max(1, capacity)
        self._upgraded = upgraded
        self._streams: OrderedDict[IOStream, None] = OrderedDict()
        self._unlogged = 0  # shed since the last record
        self._report: object | None = None

    def admit(self, stream: IOStream) -> None:
        """Count ``stream``, first closing the oldest half-open connection if it
        would take the total past ``capacity``: O(1), and the total never grows
        past the bound.  One at most: if the WebSockets alone fill the bound
        (descriptors are short), the half-open ones are not all cut at once."""
        if self._streams and len(self._streams) + self._upgraded() >= self.capacity:
            oldest, _ = self._streams.popitem(last=False)
            oldest.close()
            self._unlogged += 1
            if self._report is None:  # one record a second: a flood must not become a log flood
                self._report = IOLoop.current().call_later(1.0, self._log)
        self._streams[stream] = None

    def done(self, stream: IOStream) -> None:
        """``stream`` was upgraded to a WebSocket, started an SSE stream, or closed."""
        self._streams.pop(stream, None)

    def _log(self) -> None:
        self._report = None
        log_op(
            "half_open_shed",
            logging.WARNING,
            shed=self._unlogged,
            half_open=len(self._streams),
            capacity=self.capacity,
            outcome="oldest half-open connections closed",
        )
        self._unlogged = 0


def descriptor_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft
