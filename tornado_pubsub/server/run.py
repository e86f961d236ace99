"""Running the standalone server: listen, handle signals, shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from typing import Any, Callable, Iterable

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets

from tornado_pubsub.server.tornado_patches import AnsweringStream
from tornado_pubsub.server.accept import HalfOpen, add_guarded_accept_handler, descriptor_limit, raise_descriptor_limit
from tornado_pubsub.server.app import make_app, make_broker, server_options
from tornado_pubsub.core.node import Node
from tornado_pubsub.server.context import Context
from tornado_pubsub.core.errors import SHUTDOWN
from tornado_pubsub.server import tornado_patches
from tornado_pubsub.logs import log_op, set_worker
from tornado_pubsub.settings import Settings

# After closing every socket with 1001, how long to wait for clients to answer
# the close handshake before exiting anyway.
CLOSE_GRACE = 0.8


class _HTTPServer(HTTPServer):
    """Tornado's HTTPServer with an accept loop that survives EMFILE and a bound
    on connections still in their handshake (see ``accept``).

    Only public API: accepted sockets are handed to ``handle_stream`` as
    Tornado's own accept handler would (we never configure TLS), and
    ``stop`` closes what ``add_sockets`` opened.
    """

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        self._guarded: list[tuple[socket.socket, Callable[[], None]]] = []
        super().initialize(*args, **kwargs)

    half_open: HalfOpen

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._guarded.append((sock, add_guarded_accept_handler(sock, self._accept)))

    def _accept(self, connection: socket.socket, address: Any) -> None:
        # AnsweringStream: a request with oversized headers gets a 431, not a silent close.
        stream = AnsweringStream(connection, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
        self.handle_stream(stream, address)

    def stop(self) -> None:
        for sock, remove in self._guarded:
            remove()
            sock.close()
        self._guarded = []
        super().stop()

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        self.half_open.admit(stream)
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        # Tornado calls this when the connection closes and when a WebSocket
        # upgrade detaches it: either way it is no longer half-open.
        self.half_open.done(server_conn.stream)  # type: ignore[attr-defined]
        super().on_close(server_conn)


class Server:
    """One listening tornado-pubsub process and its graceful shutdown."""

    def __init__(self, settings: Settings, broker: Node | None = None, worker: int | None = None) -> None:
        self.settings = settings
        self.broker = broker or make_broker(settings)
        if worker is not None:
            self.broker.hub.id_prefix = f"w{worker}-"
        half_open = HalfOpen(settings.max_connections, descriptor_limit(), lambda: len(self.broker.connections))
        self.app = make_app(settings, self.broker, half_open)
        self.context: Context = self.app.pubsub  # type: ignore[attr-defined]
        self.http = _HTTPServer(self.app, **server_options(settings))
        self.http.half_open = half_open
        self.port = settings.port
        self._stopped = asyncio.Event()
        self._shutting_down = False

    def listen(self, sockets: list[socket.socket] | None = None) -> int:
        """Start accepting on ``sockets`` (bound here when None); returns the bound
        port (useful with port 0)."""
        if sockets is None:
            sockets = bind_sockets(self.settings.port, self.settings.address)
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        log_op(
            "startup",
            address=self.settings.address,
            port=self.port,
            overflow_policy=self.settings.overflow_policy,
            queue_size=self.settings.queue_size,
            history_size=self.settings.history_size,
            broker=self.settings.broker,
            auth=self.settings.api_key is not None,
            tornado_patches_disabled=tornado_patches.disabled() or None,
            # Whether tokens are accepted, never the key material itself.
            user_tokens=self.context.credentials.verify is not None,
            anonymous_caps=self.settings.anonymous_caps is not None,
            outcome="listening",
        )
        return self.port

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT start a graceful shutdown; a second one exits at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        if self._shutting_down:
            log_op("shutdown", signal=signal.Signals(sig).name, outcome="forced")
            self._cut_off()
            self._stopped.set()
            return
        asyncio.ensure_future(self.shutdown(signal.Signals(sig).name))

    async def shutdown(self, cause: str = "requested") -> None:
        """Drain: refuse new work, flush queues up to ``shutdown_timeout``, close with 1001."""
        if self._shutting_down:
            return
        self._shutting_down = True
        started = time.monotonic()
        broker = self.broker
        log_op("shutdown", signal=cause, connections=len(broker.connections), outcome="draining")
        broker.begin_shutdown()
        self.http.stop()  # no new connections; /health on open keep-alives says 503
        deadline = started + self.settings.shutdown_timeout
        while time.monotonic() < deadline:
            # Look only after yielding: a frame handed straight to a writer that
            # was waiting on its queue has left the queue but is not yet counted
            # as in flight until that writer runs, so an immediate idle() would
            # close the socket before the shutting_down notice is written.
            await asyncio.sleep(0.02)
            if broker.idle():
                break
        flushed = broker.idle()
        remaining = len(broker.connections)
        broker.close_all(SHUTDOWN)
        grace = time.monotonic() + CLOSE_GRACE
        while broker.connections and time.monotonic() < grace:
            await asyncio.sleep(0.02)
        self._cut_off()  # peers that ignored the close frame
        await asyncio.sleep(0)  # let their on_close run and log the disconnect
        self.context.heartbeat.stop()
        await broker.stop()
        log_op(
            "shutdown",
            signal=cause,
            connections=remaining,
            flushed=flushed,
            duration_ms=round((time.monotonic() - started) * 1000),
            outcome="stopped",
        )
        self._stopped.set()

    def _cut_off(self) -> None:
        # Drop every socket still open.  A write still pending when the loop
        # stops is cancelled by asyncio, and Tornado's callback on it logs a
        # CancelledError traceback; a closed stream fails it quietly instead.
        self.context.heartbeat.abort_all("shutdown", SHUTDOWN.code, SHUTDOWN.reason)

    async def wait_stopped(self) -> None:
        """Return once shutdown has finished."""
        await self._stopped.wait()


_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def local_url(address: str, port: int) -> str:
    """``http://host:port`` to reach a server listening on ``address`` from this
    machine: loopback for a wildcard address (``::`` is IPv6-only: Tornado
    sets IPV6_V6ONLY)."""
    host = _WILDCARDS.get(address, address)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def announce(settings: Settings, port: int, processes: int = 1) -> None:
    """On a terminal, one human line on stderr: where to point a browser or a client.
    (The JSON log on stdout is for machines; nothing is printed when stderr is not a tty.)"""
    if not sys.stderr.isatty():
        return
    base = local_url(settings.address, port)
    where = " (all interfaces)" if settings.address in _WILDCARDS else ""
    workers = f" with {processes} processes" if processes > 1 else ""
    print(f"tornado-pubsub listening on {base}{where}{workers}; dashboard {base}/dashboard/", file=sys.stderr, flush=True)


async def serve(settings: Settings, sockets: list[socket.socket] | None = None, worker: int | None = None) -> None:
    """Run a server until SIGTERM or SIGINT has drained it.

    ``worker`` is the worker number under ``--processes`` (its log records and
    conn_ids carry it); the parent then owns ``sockets`` and the start-up line.
    The port is bound before the broker starts, so a port in use is reported
    at once, not after waiting for Redis."""
    set_worker(worker)
    own_sockets = sockets is None
    if sockets is None:
        sockets = bind_sockets(settings.port, settings.address)
    descriptors, enough = raise_descriptor_limit(settings.max_connections)
    if not enough:
        # Past the descriptor limit accept() fails (see accept.py) before
        # max_connections is reached: say so once, at startup.
        log_op(
            "descriptor_limit",
            logging.WARNING,
            max_connections=settings.max_connections,
            descriptor_limit=descriptors,
            outcome="max_connections exceeds the file descriptor limit (raise ulimit -n)",
        )
    server = Server(settings, worker=worker)
    await server.broker.start()
    port = server.listen(sockets)
    if own_sockets:
        announce(settings, port)
    server.install_signal_handlers()
    await server.wait_stopped()
