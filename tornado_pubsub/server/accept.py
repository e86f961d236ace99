"""Accepting connections without spinning when the process runs out of file
descriptors."""

from __future__ import annotations

import errno
import logging
import resource
import socket
from typing import Any, Callable

from tornado.ioloop import IOLoop

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
