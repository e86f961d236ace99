"""The WebSocket endpoint ``/ws``: handshake checks, frame routing, the writer.

Each connection gets a ``Subscriber`` (its bounded queue) from the broker and
one writer task that drains that queue onto the socket, awaiting the socket
so Tornado's own buffer never grows behind the queue.  Frames from the client
are parsed in ``schemas``, routed by ``_OPS`` here and answered through the
same queue, so replies keep their order with events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Coroutine, Mapping

import tornado.web
import tornado.websocket
from tornado import gen
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream, StreamClosedError

from tornado_pubsub.handlers.wsframe import text_header
from tornado_pubsub.core import frames
from tornado_pubsub.core import schemas
from tornado_pubsub.core.auth import host_allowed, host_refused, key_matches, origin_allowed
from tornado_pubsub.backends.memory import Subscriber
from tornado_pubsub.server.context import Context
from tornado_pubsub.core.errors import (
    BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    FORBIDDEN,
    INTERNAL,
    LIMIT_EXCEEDED,
    UNAUTHORIZED,
    PubSubError,
    code_for_status,
    error_body,
)
from tornado_pubsub.logs import log_op, redact_uri
from tornado_pubsub.core.ratelimit import TokenBucket

_CLOSED = (tornado.websocket.WebSocketClosedError, StreamClosedError)


# Frames one connection may handle back to back before yielding a loop pass.
INLINE_BURST = 32


def run_inline(coro: Coroutine[Any, Any, None]) -> "asyncio.Future[None] | None":
    """Run ``coro`` until it first suspends: None if it finished, else a Task
    that finishes it as ``asyncio`` would have."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coro, yielded))


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    while True:
        try:
            if yielded is None:  # a bare yield (asyncio.sleep(0)): one loop pass
                await asyncio.sleep(0)
            else:  # the future it awaits; send() below hands it the outcome
                await asyncio.wait([yielded])
        except BaseException:
            coro.close()
            raise
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def _send(stream: IOStream, data: bytes) -> "asyncio.Future[None] | None":
    """Write ``data`` to ``stream``; None when the kernel took all of it at once.

    With Tornado's write buffer empty the bytes go straight to the socket: one
    ``send`` and no Future or buffer bookkeeping per batch.  What the kernel
    does not take, and any socket error, goes through ``stream.write``, so
    Tornado buffers, reports and closes exactly as usual.  Valid because this
    handler never negotiates per-message compression (see ``wsframe``).
    """
    if stream.__class__ is IOStream and not stream.writing():
        try:
            sent = stream.socket.send(data)
        except OSError:  # EAGAIN, or an error stream.write will meet and report
            sent = 0
        if sent == len(data):
            return None
        if sent:
            data = memoryview(data)[sent:]  # type: ignore[assignment]
    return stream.write(data)


def _retrieve(future: "asyncio.Future[None]") -> None:
    # A write fails when the peer has gone; that is expected, and retrieving the
    # error keeps asyncio from logging "Task exception was never retrieved".
    if not future.cancelled():
        future.exception()


class Heartbeat:
    """One ``PeriodicCallback`` for all connections of an app.

    Every ``interval`` it queues ``info ping`` and sends a WebSocket ping to
    each connection; ``timeout`` seconds later it closes those that have sent
    nothing (no pong, no frame) since that ping.  One timer for everyone
    instead of one task per connection keeps idle connections cheap.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.sockets: set[PubSubSocket] = set()
        self._timer: PeriodicCallback | None = None

    def add(self, sock: "PubSubSocket") -> None:
        self.sockets.add(sock)
        if self._timer is None:
            self._timer = PeriodicCallback(self._beat, self.interval * 1000)
            self._timer.start()

    def discard(self, sock: "PubSubSocket") -> None:
        self.sockets.discard(sock)

    def abort_all(self, cause: str, code: int, reason: str) -> int:
        """Drop every open socket at once (see ``PubSubSocket.abort``); returns how many."""
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
                sock.abort("heartbeat timeout", CLOSE_NORMAL, "heartbeat timeout")


# Error records one connection may log per second (bursts of as many); the
# rest are counted and reported on its disconnect record, so a client sending
# garbage at full speed cannot turn each bad frame into a log line.
ERROR_LOGS_PER_SECOND = 20.0

# After refusing an oversized frame, how long we keep reading (and discarding)
# what the client still sends, so our close frame is not destroyed by a TCP
# reset: closing a socket with unread input makes the kernel send RST.
LINGER = 2.0


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 protocol with two repairs, both covered by
    tests/test_fuzz_ws.py, and its frame loop in a task of its own (see
    ``_receive_frame_loop``; tests/test_idle_footprint.py).  These use
    Tornado 6.6 internals; it is pinned:

    - a text frame that is not valid UTF-8 is answered like any other
      unreadable frame (``BAD_REQUEST``, the connection stays usable) instead
      of a silent TCP abort that leaves the client guessing;
    - a frame over ``max_message_size`` gets its close frame 1009 delivered:
      Tornado aborts at once, and the unread rest of the frame turns the
      close into a reset that discards the 1009 on the client side.
    """

    _close_sent: int | None = None
    _lingering = False

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated:
            self._close_sent = code
        super().close(code, reason)

    def _abort(self) -> None:
        if self._lingering:
            return
        if self._close_sent == CLOSE_TOO_BIG and self.stream is not None and not self.stream.closed():
            self._lingering = True
            self.client_terminated = self.server_terminated = True
            asyncio.ensure_future(_drain_then_close(self.stream))
            return
        super()._abort()

    def _receive_frame_loop(self) -> "asyncio.Future[None]":  # type: ignore[override]
        # Tornado awaits this loop at the bottom of the handshake's coroutine
        # chain (the handler's _execute task -> get -> accept_connection ->
        # _accept_connection), which keeps those four suspended frames and
        # their locals alive for the connection's whole life.  Running the
        # loop as a task of its own lets the handshake chain finish: ~1.5 KB
        # less per idle connection, same frame handling.
        loop_task = asyncio.ensure_future(super()._receive_frame_loop())
        loop_task.add_done_callback(self._frame_loop_ended)
        handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handshake_done.set_result(None)
        return handshake_done

    def _frame_loop_ended(self, loop_task: "asyncio.Future[None]") -> None:
        # An exception escaping the loop (not one from on_message: Tornado
        # catches those) is a bug: log it, and drop the connection rather than
        # leave it open and unread.
        if loop_task.cancelled() or loop_task.exception() is None:
            return
        log_op("internal", logging.ERROR, exc_info=loop_task.exception(), outcome="frame loop crashed")
        self._abort()

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x1 and not self._frame_compressed and not self.client_terminated:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self._message_bytes_in += len(data)
                return self._run_callback(self.handler.on_invalid_text)  # type: ignore[attr-defined]
        return super()._handle_message(opcode, data)


async def _drain_then_close(stream: IOStream) -> None:
    deadline = IOLoop.current().time() + LINGER
    try:
        while True:
            await gen.with_timeout(deadline, stream.read_bytes(65536, partial=True))
    except (StreamClosedError, gen.TimeoutError, OSError):
        pass
    finally:
        stream.close()


# Handshake-only state is replaced by these after the upgrade (see open()).
_NO_HEADERS = HTTPHeaders()
_NO_ARGUMENTS: Mapping[str, Any] = MappingProxyType({})


class PubSubSocket(tornado.websocket.WebSocketHandler):
    """One client connection speaking the tornado-pubsub protocol."""

    # Our own attributes live in slots.  Tornado's handler already sets ~27
    # attributes; with ours on top the instance dict passes CPython's 30-key
    # limit for shared-key (split) dicts and becomes a 64-slot table of its own
    # (~1.6 KB per connection); in slots ours cost 8 bytes each.
    __slots__ = (
        "context",
        "broker",
        "config",
        "sub",
        "last_seen",
        "close_cause",
        "_writer",
        "_stream",
        "_greeting",
        "budget",
        "error_logs",
        "errors_unlogged",
        "_inline",
    )

    def initialize(self, context: Context) -> None:
        self.context = context
        self.broker = context.broker
        self.config = context.settings
        self.sub: Subscriber | None = None
        self.last_seen = time.monotonic()
        self.close_cause: str | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stream: IOStream | None = None  # kept: close() forgets ws_connection
        self._greeting: object | None = None
        self.budget = TokenBucket(self.config.max_frames_per_second)
        self.error_logs = TokenBucket(ERROR_LOGS_PER_SECOND)
        self.errors_unlogged = 0
        self._inline = 0  # frames handled back to back (see on_message)

    # -- handshake ---------------------------------------------------------

    def prepare(self) -> None:
        # Checked here rather than in an overridden get(): Tornado's get()
        # coroutine stays suspended for the connection's whole life, and a
        # wrapper around it would keep a second coroutine frame (~800 bytes)
        # alive per idle connection.  Finishing here skips get() entirely.
        if not host_allowed(self.request.host, self.config.allowed_hosts):  # DNS rebinding (§10)
            return self._refuse(403, FORBIDDEN, host_refused(self.request.host))
        if self.request.method != "GET":
            return  # Tornado answers other methods with 405 (see write_error)
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            # Tornado would answer this with a plain-text 400; keep errors JSON.
            return self._refuse(400, BAD_REQUEST, 'this endpoint speaks WebSocket only ("Upgrade: websocket" missing)')
        key = self.config.api_key
        if not (
            key_matches(key, self.request.headers.get("X-API-Key"))
            or key_matches(key, self.get_query_argument("api_key", None))
        ):
            return self._refuse(401, UNAUTHORIZED, "missing or invalid API key (X-API-Key header or api_key parameter)")
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            # Refused here rather than by Tornado, whose 403 body is plain text.
            return self._refuse(403, FORBIDDEN, f"cross-origin handshake from origin {origin[:200]!r} not allowed")
        try:
            self.broker.check_admission()
        except PubSubError as exc:  # draining, or the connection limit: 503 at the handshake
            return self._refuse(503, exc.code, exc.message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer the handshake with a JSON error instead of upgrading."""
        self.broker.counters.error(code)
        log_op(
            "connect",
            logging.WARNING,
            remote=self.request.remote_ip,
            path=redact_uri(self.request.uri or ""),
            code=code,
            status=status,
            outcome="refused",
        )
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(error_body(code, message))

    # Limits come from our settings, not the Application's: an application that
    # embeds these routes (``tornado_pubsub.server.embed``) never saw ``tornado_settings``.
    @property
    def max_message_size(self) -> int:
        """Inbound frames above ``max_message_size`` close the connection with 1009."""
        return self.config.max_message_size

    @property
    def ping_interval(self) -> float:
        # Our Heartbeat sends WebSocket pings and enforces heartbeat_timeout for
        # all connections from one timer; Tornado's would add a task per
        # connection and cap the timeout at the interval.
        return 0

    @property
    def ping_timeout(self) -> float:
        return 0

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Plain HTTP to /ws with another method: JSON, like every other error.
        self._refuse(status_code, code_for_status(status_code), self._reason)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _Protocol(self, False, protocol.params)
        return protocol

    def check_origin(self, origin: str) -> bool:
        """Allow same-origin handshakes and those from ``allowed_origins``; see ``auth.origin_allowed``."""
        return origin_allowed(origin, self.request.headers.get("Host", ""), self.config.allowed_origins)

    # -- lifecycle ---------------------------------------------------------

    def open(self, *args: Any, **kwargs: Any) -> None:
        remote = self.request.remote_ip
        try:
            self.sub = self.broker.connect(remote, self._close_from_broker)
        except PubSubError as exc:  # limit reached while the upgrade was in flight
            self.close_cause = exc.code
            self.broker.counters.error(exc.code)
            log_op("connect", logging.WARNING, remote=remote, code=exc.code, outcome="refused")
            self._write_now(frames.error(exc.code, exc.message))
            self.close(CLOSE_TRY_AGAIN_LATER, exc.message)
            return
        self.set_nodelay(True)  # small frames must not wait for Nagle's algorithm
        self._release_handshake_state()
        self._stream = getattr(self.ws_connection, "stream", None)
        self._writer = asyncio.ensure_future(self._write_loop(self.sub))
        self.context.heartbeat.add(self)
        # A peer must show it is alive within handshake_timeout: any frame, or
        # the pong every WebSocket client sends for this ping by itself.  A
        # socket that upgraded and went silent would otherwise hold a
        # connection slot until the first heartbeat timeout.
        opened = self.last_seen = time.monotonic()
        self._ping_quietly()
        self._greeting = IOLoop.current().call_later(self.config.handshake_timeout, self._check_greeted, opened)
        log_op("connect", conn_id=self.sub.id, remote=remote, outcome="ok")

    def _release_handshake_state(self) -> None:
        """Drop what only the HTTP upgrade needed and Tornado keeps until close:
        request and response headers, template namespace, URL arguments (~2 KB
        per idle connection; nothing reads them once the socket is open)."""
        self.ui = None  # type: ignore[assignment]
        self._headers = _NO_HEADERS
        self.path_args = self.open_args = ()  # type: ignore[assignment]
        self.path_kwargs = self.open_kwargs = _NO_ARGUMENTS  # type: ignore[assignment]
        request = self.request
        request.headers = _NO_HEADERS
        request.arguments = request.query_arguments = request.body_arguments = _NO_ARGUMENTS  # type: ignore[assignment]
        request.files = _NO_ARGUMENTS  # type: ignore[assignment]

    def _check_greeted(self, opened: float) -> None:
        self._greeting = None
        if self.last_seen <= opened:
            self.abort("handshake timeout", CLOSE_NORMAL, "handshake timeout")

    def on_close(self) -> None:
        self.context.heartbeat.discard(self)
        if self._greeting is not None:
            IOLoop.current().remove_timeout(self._greeting)
            self._greeting = None
        if self._writer is not None:
            self._writer.cancel()
        sub = self.sub
        if sub is None:
            return
        client_id = sub.client_id()
        removed = self.broker.disconnect(sub) if not sub.closed else 0
        log_op(
            "disconnect",
            conn_id=sub.id,
            client_id=client_id,
            remote=sub.remote,
            subscriptions=removed,
            dropped=sub.dropped,
            errors_unlogged=self.errors_unlogged or None,
            close_code=self.close_code,
            reason=self.close_cause or self.close_reason or ("client closed" if self.close_code else "connection lost"),
            outcome="closed",
        )

    def on_pong(self, data: bytes) -> None:
        self.last_seen = time.monotonic()

    def heartbeat(self, notice: bytes) -> None:
        """Queue the ``info ping`` and send a WebSocket ping (called by ``Heartbeat``)."""
        if self.sub is None or self.sub.closed:
            return
        self.sub.send(notice)
        self._ping_quietly()

    def _ping_quietly(self) -> None:
        try:
            self.ping(b"")
        except _CLOSED:
            pass

    def drop(self, cause: str, code: int, reason: str) -> None:
        """Close this connection for ``cause`` (recorded in the disconnect log)."""
        self.close_cause = self.close_cause or cause
        self.close(code, reason)

    def abort(self, cause: str, code: int, reason: str) -> None:
        """Send a close frame (unless one was sent) and drop the TCP connection
        at once, without waiting for the peer's close reply (Tornado waits 5 s)."""
        self.drop(cause, code, reason)
        if self._stream is not None:
            self._stream.close()  # on_close runs from the stream's close callback

    def _close_from_broker(self, code: int, reason: str, last_frame: bytes | None) -> None:
        # The broker evicts slow consumers and closes everyone at shutdown.
        sub = self.sub
        if code == CLOSE_GOING_AWAY and sub is not None and not sub.idle():
            # Shutdown's flush deadline passed and this peer still has not read
            # its queue: it will not read our close frame either, and waiting
            # for its reply would hold the process past shutdown_timeout.
            self.abort(reason, code, reason)
            return
        if last_frame is not None:
            self._write_now(last_frame)
        self.drop(reason, code, reason)

    def _write_now(self, data: bytes) -> None:
        try:
            self.write_message(data).add_done_callback(_retrieve)
        except _CLOSED:
            pass

    async def _write_loop(self, sub: Subscriber) -> None:
        """Drain ``sub``'s queue onto the socket: everything queued goes out as
        one batch of pre-framed bytes in one write, and the next batch waits
        until the socket took this one, so the queue stays the only buffer."""
        queue = sub.queue
        counters = self.broker.counters
        stream = self._stream
        try:
            while True:
                first = await queue.get()
                batch = [first]
                if queue.qsize():
                    batch += queue.drain_nowait()
                sub.inflight = len(batch)
                events = 0
                parts: list[bytes] = []
                for item in batch:
                    if item.__class__ is not bytes:  # an event (live or replayed), shared by all
                        item = item.data  # type: ignore[union-attr]
                        events += 1
                    parts.append(text_header(len(item)))  # type: ignore[arg-type]
                    parts.append(item)  # type: ignore[arg-type]
                if stream is None or stream.closed() or self.ws_connection is None or self.ws_connection.is_closing():
                    break
                pending = _send(stream, b"".join(parts))
                if pending is not None:
                    await pending
                counters.delivered += events
                sub.inflight = 0
        except _CLOSED:
            pass
        finally:
            sub.inflight = 0

    # -- frames from the client -------------------------------------------------

    def on_message(self, message: str | bytes) -> "asyncio.Future[None] | None":
        # The in-memory broker's operations complete without suspending, so
        # the frame is handled right here: no Task per frame, and Tornado goes
        # on to the next buffered frame at once, so the writers later send
        # everything those frames queued in one batch each.  A backend that
        # does suspend (Redis) gets a Task, which Tornado awaits before it
        # reads on, so frames are still handled one at a time, in order.
        pending = run_inline(self._handle_frame(message))
        if pending is None:
            self._inline += 1
            if self._inline < INLINE_BURST:
                return None
            # Buffered frames are read without a loop pass in between: after a
            # burst, give timers, writers and other connections their turn.
            pending = asyncio.ensure_future(asyncio.sleep(0))
        self._inline = 0
        return pending

    async def _handle_frame(self, message: str | bytes) -> None:
        self.last_seen = time.monotonic()
        sub = self.sub
        if sub is None or sub.closed:
            return
        if isinstance(message, bytes):
            self._reply_error(PubSubError(BAD_REQUEST, "binary frames are not supported; send JSON text"), None)
            return
        data: Any = None
        try:
            data = schemas.parse_json(message)
            if not self.budget.take():
                raise PubSubError(
                    LIMIT_EXCEEDED,
                    f"more than {self.config.max_frames_per_second:g} frames per second; frame not processed",
                )
            kind, frame = schemas.validate_frame(data)
            await _OPS[kind](self, sub, frame)
        except PubSubError as exc:
            self._reply_error(exc, schemas.request_id_of(data))
        except Exception:
            log_op(
                "internal",
                logging.ERROR,
                exc_info=True,
                conn_id=sub.id,
                remote=sub.remote,
                request_id=schemas.request_id_of(data),
            )
            self._reply_error(PubSubError(INTERNAL, "internal server error"), schemas.request_id_of(data))

    def on_invalid_text(self) -> None:
        """A text frame that is not UTF-8 (see ``_Protocol``)."""
        self.last_seen = time.monotonic()
        if self.sub is not None and not self.sub.closed:
            self._reply_error(PubSubError(BAD_REQUEST, "invalid JSON: text frame is not valid UTF-8"), None)

    def _reply_error(self, exc: PubSubError, request_id: str | None) -> None:
        """The one place a WebSocket error frame is rendered."""
        sub = self.sub
        assert sub is not None
        self.broker.counters.error(exc.code)
        if exc.code == INTERNAL or self.error_logs.take():
            log_op(
                "error",
                logging.WARNING if exc.code != INTERNAL else logging.ERROR,
                conn_id=sub.id,
                client_id=sub.client_id(),
                remote=sub.remote,
                request_id=request_id,
                code=exc.code,
                detail=exc.message,
                outcome="rejected",
            )
        else:
            self.errors_unlogged += 1
        sub.send(frames.error(exc.code, exc.message, request_id))

    async def _subscribe(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        result = await self.broker.subscribe(
            sub,
            frame["topic"],
            frame["client_id"],
            last_n=frame.get("last_n"),
            since_seq=frame.get("since_seq"),
            epoch=frame.get("epoch"),
            request_id=frame.get("request_id"),
        )
        log_op(
            "subscribe",
            conn_id=sub.id,
            client_id=frame["client_id"],
            topic=result.topic,
            request_id=frame.get("request_id"),
            remote=sub.remote,
            replayed=result.replayed,
            recovered=result.recovered,
            outcome="already_subscribed" if result.already else "ok",
        )

    async def _unsubscribe(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        was = await self.broker.unsubscribe(sub, frame["topic"])
        sub.send(frames.ack(frame["topic"], frame.get("request_id")))
        log_op(
            "unsubscribe",
            conn_id=sub.id,
            client_id=frame["client_id"],
            topic=frame["topic"],
            request_id=frame.get("request_id"),
            remote=sub.remote,
            outcome="ok" if was else "not_subscribed",
        )

    async def _publish(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        message = frame["message"]
        result = await self.broker.publish(frame["topic"], message["payload"], message["id"])
        sub.send(frames.ack(result.topic, frame.get("request_id"), seq=result.seq, duplicate=result.duplicate))
        result.log(conn_id=sub.id, request_id=frame.get("request_id"), remote=sub.remote)

    async def _ping(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        sub.send(frames.pong(frame.get("request_id")))


_OPS: dict[str, Callable[[PubSubSocket, Subscriber, dict[str, Any]], Awaitable[None]]] = {
    "subscribe": PubSubSocket._subscribe,
    "unsubscribe": PubSubSocket._unsubscribe,
    "publish": PubSubSocket._publish,
    "ping": PubSubSocket._ping,
}


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [(rf"{prefix}/ws", PubSubSocket)]
