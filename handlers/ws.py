"""The WebSocket endpoint ``/ws``: a thin translator around ``core.session``.

Handshake checks -> open a ``Session`` -> feed it each frame -> run the
writer (``handlers.writer``) that drains the session's queue onto the
socket.  The protocol lives in the session; this module only turns
WebSocket frames into calls and queued frames into WebSocket frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import tornado.websocket
from tornado.httputil import responses
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from tornado_pubsub.core import frames
from tornado_pubsub.core.auth import host_allowed, host_refused, origin_allowed
from tornado_pubsub.core.errors import (
    BAD_REQUEST,
    CLOSE_TRY_AGAIN_LATER,
    FORBIDDEN,
    HANDSHAKE_TIMEOUT,
    UNAUTHORIZED,
    Disconnect,
    PubSubError,
    code_for_status,
)
from tornado_pubsub.core.session import ANYONE, Session
from tornado_pubsub.handlers.base import send_error_body
from tornado_pubsub.handlers.writer import CLOSED_ERRORS, framing, retrieve_error, send_direct, start_writer
from tornado_pubsub.handlers.wsframe import text_header
from tornado_pubsub.server import tornado_patches
from tornado_pubsub.server.context import Context


class PubSubSocket(tornado.websocket.WebSocketHandler):
    """One client connection speaking the tornado-pubsub protocol: the
    transport of one ``Session`` (see ``handlers.writer.Transport``)."""

    # Our own attributes live in slots.  Tornado's handler already sets ~27
    # attributes; with ours on top the instance dict passes CPython's 30-key
    # limit for shared-key (split) dicts and becomes a 64-slot table of its own
    # (~1.6 KB per connection); in slots ours cost 8 bytes each.
    __slots__ = (
        "context",
        "broker",
        "config",
        "session",
        "last_seen",
        "close_cause",
        "_writer",
        "_stream",
        "_greeting",
        "_identity",
    )

    #: Framing for the writer: each item as one WebSocket text frame.
    frame = staticmethod(framing(text_header))

    def initialize(self, context: Context) -> None:
        self.context = context
        self.broker = context.broker
        self.config = context.settings
        self.session: Session | None = None
        self.last_seen = time.monotonic()
        self.close_cause: str | None = None
        self._writer: asyncio.Future[None] | None = None
        self._stream: IOStream | None = None  # kept: close() forgets ws_connection
        self._greeting: object | None = None
        self._identity: Any = ANYONE  # set by check_credentials, handed to the session

    @property
    def identity(self) -> Any:
        """Who is on the other end (``send_error_body`` logs its user)."""
        return self.session.identity if self.session is not None else self._identity

    # -- handshake ---------------------------------------------------------

    async def prepare(self) -> None:
        # Checked here rather than in an overridden get(): Tornado's get()
        # coroutine stays suspended for the connection's whole life, and a
        # wrapper around it would keep a second coroutine frame (~800 bytes)
        # alive per idle connection.  Finishing here skips get() entirely;
        # this coroutine (async for the host's authenticate hook) ends before get().
        try:
            self.check_host()  # every method, like every other route
            if self.request.method != "GET":
                return  # Tornado answers other methods with 405 (see write_error)
            await self.check_handshake()
        except PubSubError as exc:
            level = logging.WARNING if exc.status < 500 else logging.ERROR
            send_error_body(self, exc, event="connect", outcome="refused", level=level)

    async def check_handshake(self) -> None:
        """Every check a handshake must pass before the upgrade, in order;
        each raises the PubSubError its refusal is answered with."""
        self.check_upgrade()
        await self.check_credentials()
        self.check_origin_header()
        self.check_admission()

    def check_host(self) -> None:
        # DNS rebinding (PROTOCOL.md 10): a Host outside allowed_hosts is refused.
        if not host_allowed(self.request.host, self.config.allowed_hosts):
            raise PubSubError(FORBIDDEN, host_refused(self.request.host), 403)

    def check_upgrade(self) -> None:
        # Every refusal Tornado's own upgrade would answer in plain text,
        # checked first so errors stay JSON (the same checks as RFC 6455 4.2.1).
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise PubSubError(BAD_REQUEST, 'this endpoint speaks WebSocket only ("Upgrade: websocket" missing)', 400)
        tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        if "upgrade" not in tokens:
            raise PubSubError(BAD_REQUEST, '"Connection: Upgrade" missing from the WebSocket handshake', 400)
        if not headers.get("Sec-WebSocket-Key"):
            raise PubSubError(BAD_REQUEST, "Sec-WebSocket-Key missing from the WebSocket handshake", 400)
        if headers.get("Sec-WebSocket-Version") not in ("7", "8", "13"):
            self.set_header("Sec-WebSocket-Version", "7, 8, 13")
            raise PubSubError(BAD_REQUEST, "unsupported Sec-WebSocket-Version; this server speaks 13", 426)

    async def check_credentials(self) -> None:
        """PROTOCOL.md 5.1 at the handshake: the host application's
        ``authenticate`` hook when embedded, the admin key (header or ``api_key``
        query), a user token (``Authorization: Bearer`` or ``token`` query), or
        none (then ``anonymous_caps``).  A refused key or token is 401 before the
        upgrade, with the reason.

        With no credential and no ``anonymous_caps``, a server with a token key
        upgrades and waits for an ``auth`` frame (the session allows nothing
        else meanwhile; ``_check_greeted`` closes it at ``handshake_timeout``);
        a server with only ``api_key`` refuses with 401, as part 3 says.
        """
        credentials = self.context.credentials
        identity = await credentials.resolve_for(self, query=True)
        if identity is None:
            identity = credentials.upgrade_without_credential()
        if identity is None:
            raise PubSubError(
                UNAUTHORIZED,
                "missing credential: the API key (X-API-Key header or api_key parameter) "
                "or a token (Authorization: Bearer or token parameter)",
                401,
            )
        self._identity = identity

    def check_origin_header(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            # Refused here rather than by Tornado, whose 403 body is plain text.
            raise PubSubError(FORBIDDEN, f"cross-origin handshake from origin {origin[:200]!r} not allowed", 403)

    def check_admission(self) -> None:
        try:
            self.broker.check_admission(self._identity.user)
        except PubSubError as exc:  # draining, or a connection limit (also per user): 503 at the handshake
            raise PubSubError(exc.code, exc.message, 503) from None

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
        exc = PubSubError(code_for_status(status_code), responses.get(status_code, "Unknown"), status_code)
        send_error_body(self, exc, event="connect", outcome="refused", level=logging.WARNING)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        return tornado_patches.patched_protocol(self, super().get_websocket_protocol())

    def check_origin(self, origin: str) -> bool:
        """Allow same-origin handshakes and those from ``allowed_origins``; see ``auth.origin_allowed``."""
        return origin_allowed(origin, self.request.headers.get("Host", ""), self.config.allowed_origins)

    # -- lifecycle ---------------------------------------------------------

    def open(self, *args: Any, **kwargs: Any) -> None:
        try:
            session = self.session = Session.open(
                self.broker,
                self.request.remote_ip,
                self.config.max_frames_per_second,
                self._identity,
                self.context.credentials,
            )
            self._identity = ANYONE  # the session holds it now
        except PubSubError as exc:  # limit reached while the upgrade was in flight
            self.close_cause = exc.code
            self._write_now(frames.error(exc))
            self.close(CLOSE_TRY_AGAIN_LATER, exc.message)
            return
        self.set_nodelay(True)  # small frames must not wait for Nagle's algorithm
        tornado_patches.release_handshake_state(self)
        self._stream = getattr(self.ws_connection, "stream", None)
        self._writer = start_writer(session.sub.queue, self, self.broker.counters)
        self.context.heartbeat.add(self)
        # A peer must show it is alive within handshake_timeout: any frame, or
        # the pong every WebSocket client sends for this ping by itself.  A
        # socket that upgraded and went silent would otherwise hold a
        # connection slot until the first heartbeat timeout.  One that
        # upgraded with no credential must also have authenticated by then.
        opened = self.last_seen = time.monotonic()
        self._ping_quietly()
        self._greeting = IOLoop.current().call_later(self.config.handshake_timeout, self._check_greeted, opened)

    def _check_greeted(self, opened: float) -> None:
        self._greeting = None
        if self.last_seen <= opened or (self.session is not None and self.session.awaiting_auth):
            self.abort(HANDSHAKE_TIMEOUT.reason, HANDSHAKE_TIMEOUT.code, HANDSHAKE_TIMEOUT.reason)

    def on_close(self) -> None:
        self.context.heartbeat.discard(self)
        if self._greeting is not None:
            IOLoop.current().remove_timeout(self._greeting)
            self._greeting = None
        if self._writer is not None:
            self._writer.cancel()
        if self.session is not None:
            reason = self.close_cause or self.close_reason or ("client closed" if self.close_code else "connection lost")
            self.session.end(self.close_code, reason)

    def on_pong(self, data: bytes) -> None:
        self.last_seen = time.monotonic()

    def write_waiting_since(self) -> float | None:
        """Since when a write waits for this peer to read (see ``Heartbeat``)."""
        return None if self.session is None else self.session.sub.queue.waiting_since

    def heartbeat(self, notice: bytes) -> None:
        """Queue the ``info ping`` and send a WebSocket ping (called by ``Heartbeat``)."""
        if self.session is None or self.session.sub.closed:
            return
        self.session.sub.send(notice)
        self._ping_quietly()

    def _ping_quietly(self) -> None:
        try:
            self.ping(b"")
        except CLOSED_ERRORS:
            pass

    def abort(self, cause: str, code: int, reason: str) -> None:
        """Send a close frame (unless one was sent) and drop the TCP connection
        at once, without waiting for the peer's close reply (Tornado waits 5 s)."""
        self.close_cause = self.close_cause or cause
        self.close(code, reason)
        if self._stream is not None:
            self._stream.close()  # on_close runs from the stream's close callback

    def _write_now(self, data: bytes) -> None:
        try:
            self.write_message(data).add_done_callback(retrieve_error)
        except CLOSED_ERRORS:
            pass

    # -- the writer's transport ------------------------------------------------

    def writable(self) -> bool:
        stream = self._stream
        return not (stream is None or stream.closed() or self.ws_connection is None or self.ws_connection.is_closing())

    def send(self, data: bytes) -> "asyncio.Future[None] | None":
        # Valid because this handler never negotiates per-message compression
        # (see ``wsframe``): the bytes are what Tornado would write.
        connection = self.ws_connection  # (None once closed; its stream is self._stream)
        if connection is None or connection.is_closing():
            raise StreamClosedError()
        return send_direct(self._stream, data)  # type: ignore[arg-type]

    def end(self, disconnect: Disconnect, abort: bool) -> None:
        if abort:
            self.abort(disconnect.reason, disconnect.code, disconnect.reason)
        else:
            self.close_cause = self.close_cause or disconnect.reason
            self.close(disconnect.code, disconnect.reason)

    # -- frames from the client -------------------------------------------------

    def on_message(self, message: str | bytes) -> "asyncio.Future[None] | None":
        self.last_seen = time.monotonic()
        if self.session is None:
            return None
        return self.session.feed(message)

    def on_refused_frame(self, disconnect: Disconnect, problem: str) -> bool:
        """The frame reader refused a frame (``tornado_patches``): the session
        logs it and closes with ``disconnect`` once the replies queued so far
        are written.  False when there is no session to do so."""
        if self.session is None:
            return False
        self.session.refused(disconnect, problem)
        return True

    def on_invalid_text(self) -> None:
        """A text frame that is not UTF-8 (see ``tornado_patches``)."""
        self.last_seen = time.monotonic()
        if self.session is not None:
            self.session.feed_invalid_text()


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [(rf"{prefix}/ws", PubSubSocket)]
