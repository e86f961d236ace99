"""A Python client for tornado-pubsub that resumes its subscriptions after a reconnect.

Example::

    async with PubSubClient("http://127.0.0.1:8080", api_key=key) as client:
        await client.subscribe("orders", lambda m: print(m.seq, m.payload))
        ack = await client.publish("orders", {"n": 1})   # ack.seq, ack.duplicate

        async for message in await client.subscribe("orders", last_n=10):
            print(message.seq, message.payload)           # SubscriptionEnded if the topic is deleted

Guarantee: for each subscription the handler sees messages in seq order, each
at most once, with no silent gap.  When the connection drops, the client
reconnects with exponential backoff and jitter and re-subscribes with
``since_seq`` and ``epoch``; the server replays what was missed.  When it
cannot (the messages left the server's history, the server restarted, or the
server dropped events for a slow reader), ``on_gap`` receives a ``Gap`` in
stream order, just before the first message after it.

Everything runs on the caller's asyncio (Tornado) event loop; one client is
one WebSocket connection plus plain HTTP calls for the REST endpoints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import random
import uuid
from typing import Any, Awaitable, Callable, Union
from urllib.parse import urlsplit, urlunsplit

import tornado.httpclient
import tornado.websocket
from tornado.iostream import StreamClosedError

from tornado_pubsub.client.auth import TokenAuth, TokenSource
from tornado_pubsub.client.errors import BAD_RESPONSE, CLOSED, CONNECTION_LOST, DEFAULT_TIMEOUT, TIMEOUT
from tornado_pubsub.client.errors import ClientError
from tornado_pubsub.client.errors import error_from_http, loss_error
from tornado_pubsub.client.recovery import RETRYABLE, Recovery
from tornado_pubsub.client.rest import RestCalls
from tornado_pubsub.client.subscription import Gap, Message  # noqa: F401  (re-exported: their home before the split)
from tornado_pubsub.client.subscription import (
    DEFAULT_MAX_BUFFERED,
    REVOKED,
    TOPIC_DELETED,
    UNSUBSCRIBED,
    EndHandler,
    GapHandler,
    Handler,
    Subscription,
    call_back,
)
from tornado_pubsub.core.errors import CLOSE_NORMAL, UNAUTHORIZED

log = logging.getLogger("tornado_pubsub.client")

DEFAULT_URL = "http://127.0.0.1:8080"

StateHandler = Callable[..., Union[None, Awaitable[None]]]


@dataclasses.dataclass(frozen=True)
class PublishAck:
    """The server's answer to a publish: the seq the message took, or already had."""

    topic: str
    id: str
    seq: int | None
    duplicate: bool


def endpoints(url: str) -> tuple[str, str]:
    """``(http_base, ws_url)`` for a server URL given as ``http(s)://host:port[/prefix]``
    or ``ws(s)://host:port[/prefix]/ws``."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    secure = parts.scheme in ("https", "wss")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected http://host:port)")
    path = parts.path.rstrip("/")
    if parts.scheme.startswith("ws") and path.endswith("/ws"):
        path = path[: -len("/ws")]
    http = urlunsplit(("https" if secure else "http", parts.netloc, path, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, path + "/ws", "", ""))
    return http, ws


class PubSubClient(TokenAuth, Recovery, RestCalls):
    """A tornado-pubsub client: one WebSocket with automatic resume, plus REST calls.

    ``url`` is the server's base URL (``http://host:port``, with the prefix if
    the routes are mounted under one).  ``api_key`` is sent as ``X-API-Key``.
    Every request waits at most ``request_timeout`` seconds for its reply.
    After a lost connection the client retries after ``backoff_min``,
    doubling up to ``backoff_max`` (each delay randomized between half and all
    of it, so many clients do not reconnect in lockstep), forever unless
    ``max_attempts`` is set; a refused API key stops it at once.

    ``token`` (a string, or a function or coroutine function returning one,
    called for every handshake) is sent as ``Authorization: Bearer``; when the
    server warns ``token_expiring`` the function is called again (after half
    the time left, at most 15 s: see ``client.auth.refresh_delay``) and the
    new token sent in an ``auth`` frame on the same connection, so
    subscriptions carry on with no reconnect.  A subscription the new token
    no longer allows ends with reason ``revoked``.  Neither the token nor the
    key is ever logged.

    Connection-state callbacks (plain or coroutine functions; a failure is
    logged): ``on_connected(reconnect: bool)`` after every successful
    handshake, ``on_disconnected(error: ClientError)`` when an open
    connection is lost (``error.code`` ``CONNECTION_LOST`` or ``TOO_BIG``),
    ``on_reconnecting(attempt: int, delay: float)`` before each reconnect
    attempt.  They run in the order of the events.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        client_id: str | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_min: float = 0.1,
        backoff_max: float = 10.0,
        max_attempts: int | None = None,
        keepalive: float = 20.0,
        token: TokenSource | None = None,
        on_connected: StateHandler | None = None,
        on_disconnected: StateHandler | None = None,
        on_reconnecting: StateHandler | None = None,
    ) -> None:
        self.http_url, self.ws_url = endpoints(url)
        self.api_key = api_key
        self.client_id = client_id or f"py-{uuid.uuid4().hex[:8]}"
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self.keepalive = keepalive
        self.token = token
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_reconnecting = on_reconnecting
        self.reconnects = 0  # successful reconnections so far
        self.subscriptions: dict[str, Subscription] = {}
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], Callable[[dict[str, Any]], None] | None]] = {}
        self._ids = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
        # State callbacks run one after another on this task chain, so they are
        # seen in the order the events happened even when they await.
        self._notified: asyncio.Future[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None  # the pending token refresh, if any

    def _notify(self, callback: StateHandler | None, *args: Any) -> None:
        if callback is None:
            return
        previous = self._notified

        async def run() -> None:
            if previous is not None:
                await previous
            await call_back(callback, *args)

        self._notified = asyncio.ensure_future(run())

    # -- connection ----------------------------------------------------------------

    async def connect(self) -> "PubSubClient":
        """Open the WebSocket; raises ``ClientError`` (``UNREACHABLE``, ``UNAUTHORIZED``, ...).

        Only the first connection is the caller's to retry; after that the
        client reconnects by itself.
        """
        if self._runner is not None:
            return self
        self._conn = await self._open()
        self._connected.set()
        self._notify(self.on_connected, False)
        self._runner = asyncio.ensure_future(self._run())
        return self

    async def __aenter__(self) -> "PubSubClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a WebSocket is open."""
        return self._connected.is_set()

    async def _open(self) -> tornado.websocket.WebSocketClientConnection:
        request = tornado.httpclient.HTTPRequest(
            self.ws_url,
            headers=await self._headers(),
            connect_timeout=self.connect_timeout,
            request_timeout=self.connect_timeout,
        )
        try:
            return await tornado.websocket.websocket_connect(
                request, ping_interval=self.keepalive, ping_timeout=self.keepalive
            )
        except (
            tornado.httpclient.HTTPClientError,
            tornado.websocket.WebSocketError,
            OSError,
            StreamClosedError,
            asyncio.TimeoutError,
        ) as exc:
            raise error_from_http(exc, f"cannot connect to {self.ws_url}") from None

    async def _run(self) -> None:
        """Read frames; after a loss, reconnect and resume until closed."""
        reason = "closed"
        conn = self._conn
        while conn is not None:
            while True:
                raw = await conn.read_message()
                if raw is None:
                    break
                self._on_raw(raw)
            self._connected.clear()
            self._cancel_refresh()  # the next handshake presents a fresh token anyway
            loss = loss_error(conn.close_code, conn.close_reason)
            self._fail_pending(loss)
            if self._closing.is_set():
                break
            self._notify(self.on_disconnected, loss)
            if not self.reconnect:
                break
            log.info("connection to %s lost (code %s); reconnecting", self.ws_url, conn.close_code)
            conn, reason = await self._reconnect()
        for sub in list(self.subscriptions.values()):
            sub.end(reason)
        self.subscriptions.clear()

    async def _reconnect(self) -> tuple[tornado.websocket.WebSocketClientConnection | None, str]:
        attempt = 0
        while not self._closing.is_set():
            delay = min(self.backoff_max, self.backoff_min * 2**attempt)
            attempt += 1
            delay *= random.uniform(0.5, 1.0)
            self._notify(self.on_reconnecting, attempt, delay)
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
                break  # closed while waiting
            except asyncio.TimeoutError:
                pass
            try:
                conn = await self._open()
            except ClientError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc.message)
                if exc.code == UNAUTHORIZED:
                    return None, "unauthorized"
                if self.max_attempts and attempt >= self.max_attempts:
                    return None, "gave_up"
                continue
            self._conn = conn
            self.reconnects += 1
            log.info(
                "reconnected to %s after %d attempt(s); resuming %d subscription(s)",
                self.ws_url,
                attempt,
                len(self.subscriptions),
            )
            self._connected.set()
            self._notify(self.on_connected, True)
            asyncio.ensure_future(self._resubscribe_all())
            return conn, "closed"
        return None, "closed"

    def _fail_pending(self, error: ClientError) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Close the connection, end every subscription; pending requests fail with ``CLOSED``."""
        self._closing.set()
        self._cancel_refresh()
        if self._conn is not None:
            self._conn.close(CLOSE_NORMAL, "client closed")  # the server logs a clean close, not a lost connection
        if self._runner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), 2.0)
            except asyncio.TimeoutError:
                self._runner.cancel()
        self._fail_pending(ClientError(CLOSED, "client closed"))
        for sub in list(self.subscriptions.values()):
            sub.cancel()
        self.subscriptions.clear()
        self._connected.clear()

    # -- frames from the server ------------------------------------------------------

    def _on_raw(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("ignoring a frame that is not JSON: %.80r", raw)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "event":
            sub = self.subscriptions.get(frame.get("topic"))  # type: ignore[arg-type]
            if sub is not None:
                sub.on_event(frame)
        elif kind in ("ack", "error", "pong"):
            entry = self._pending.get(frame.get("request_id"))  # type: ignore[arg-type]
            if entry is None:
                if kind == "error":
                    log.warning("server error: %s", frame.get("error"))
                return
            future, on_ack = entry
            if future.done():  # timed out or failed already
                return
            if kind == "ack" and on_ack is not None:
                on_ack(frame)  # now, so the frames that follow the ack see its effect
            future.set_result(frame)
        elif kind == "info":
            self._on_info(frame)

    def _on_info(self, frame: dict[str, Any]) -> None:
        msg = frame.get("msg")
        sub = self.subscriptions.get(frame.get("topic"))  # type: ignore[arg-type]
        if msg == "history_gap" and sub is not None:
            sub.on_history_gap(frame)
        elif msg == "topic_deleted" and sub is not None:
            if sub.wait_for_topic:
                self._await_topic(sub)
            else:
                self._end(sub, TOPIC_DELETED)
        elif msg == "shutting_down":
            log.info("server at %s is shutting down", self.ws_url)
        elif msg == "subscription_revoked" and sub is not None:
            self._end(sub, REVOKED)
        elif msg == "token_expiring":
            self._on_token_expiring(frame)

    # -- requests ----------------------------------------------------------------------

    async def _request(
        self,
        frame: dict[str, Any],
        on_ack: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send ``frame`` with a fresh request_id and return its ack or pong; raises ``ClientError``."""
        if self._runner is None:
            raise ClientError(CLOSED, "not connected: call connect() first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.request_timeout if timeout is None else timeout)
        if self._closing.is_set():
            raise ClientError(CLOSED, "client closed")
        try:
            await asyncio.wait_for(self._connected.wait(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ClientError(TIMEOUT, f"not connected to {self.ws_url} (reconnecting)") from None
        conn = self._conn
        assert conn is not None
        request_id = f"r{next(self._ids)}"
        frame["request_id"] = request_id
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = (future, on_ack)
        try:
            try:
                await conn.write_message(json.dumps(frame, separators=(",", ":")))
            except (tornado.websocket.WebSocketClosedError, StreamClosedError):
                raise ClientError(CONNECTION_LOST, "connection lost before the request was sent") from None
            try:
                reply = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ClientError(TIMEOUT, f"no reply to {frame['type']} within the request timeout") from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            error = reply.get("error") or {}
            raise ClientError(error.get("code", BAD_RESPONSE), error.get("message", "error without a message"))
        return reply

    async def _retrying(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``make()`` again after a reconnect when it failed with a retryable code,
        until ``request_timeout`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            try:
                return await make()
            except ClientError as exc:
                if exc.code not in RETRYABLE or not self.reconnect or loop.time() >= deadline:
                    raise
                # Wait for the reader to notice the loss before retrying.
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    async def subscribe(
        self,
        topic: str,
        handler: Handler | None = None,
        last_n: int | None = None,
        *,
        on_gap: GapHandler | None = None,
        on_end: EndHandler | None = None,
        since_seq: int | None = None,
        epoch: str | None = None,
        wait_for_topic: bool = False,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> Subscription:
        """Subscribe ``handler`` (a function or coroutine function taking a ``Message``),
        or, without one, return a subscription to consume with ``async for``.

        ``last_n`` replays up to that many retained messages first; ``since_seq``
        (with the ``epoch`` it belongs to) resumes from a stored position.
        ``on_gap`` is told about messages that cannot be delivered (see ``Gap``).
        ``on_end`` receives a ``SubscriptionEnded`` when the subscription ends,
        whatever the reason (``async for`` raises it, except after
        ``unsubscribe()``).  With ``wait_for_topic`` a topic that is deleted,
        or missing after a reconnect (a restarted server), does not end the
        subscription: the client subscribes again, with backoff, until the
        topic exists, and ``on_gap`` reports an ``epoch_changed`` gap.
        ``max_buffered`` bounds the messages buffered for a consumer that
        falls behind (see ``Subscription``).
        Raises ``ClientError`` (e.g. ``TOPIC_NOT_FOUND``: the first subscribe
        never waits for a topic; create it with ``create_topic(name, exist_ok=True)``).
        """
        if topic in self.subscriptions:
            raise ValueError(f"already subscribed to {topic!r}; unsubscribe first")
        if last_n is not None and since_seq is not None:
            raise ValueError("last_n and since_seq cannot be combined")
        sub = Subscription(
            topic, handler, on_gap, last_n, on_end=on_end, max_buffered=max_buffered, wait_for_topic=wait_for_topic
        )
        if since_seq is not None:
            sub.last_seq, sub.epoch = since_seq, epoch
        self.subscriptions[topic] = sub
        try:
            await self._retrying(lambda: self._subscribe_request(sub))
        except BaseException:
            if self.subscriptions.get(topic) is sub:
                del self.subscriptions[topic]
            sub.cancel()
            raise
        return sub

    async def _subscribe_request(self, sub: Subscription) -> dict[str, Any]:
        frame = sub.subscribe_frame()
        frame["client_id"] = self.client_id
        return await self._request(frame, sub.on_ack)

    async def unsubscribe(self, topic: str) -> None:
        """End the subscription to ``topic``; events already queued are still handled."""
        sub = self.subscriptions.pop(topic, None)
        if sub is not None:
            sub.end(UNSUBSCRIBED)
        await self._request({"type": "unsubscribe", "topic": topic, "client_id": self.client_id})

    async def publish(self, topic: str, payload: Any, id: str | None = None) -> PublishAck:
        """Publish and wait for the ack.

        If the connection drops before the ack, the same message id is sent
        again after the reconnect: the server acks a repeat with
        ``duplicate=True`` instead of storing it twice (as long as the first
        copy is still in the topic's history).  So ``duplicate=True`` may also
        mean that the lost attempt of this very call had landed.
        """
        message_id = id or str(uuid.uuid4())
        frame = {"type": "publish", "topic": topic, "message": {"id": message_id, "payload": payload}}
        reply = await self._retrying(lambda: self._request(dict(frame)))
        return PublishAck(reply.get("topic", topic), message_id, reply.get("seq"), bool(reply.get("duplicate")))

    async def ping(self) -> float:
        """Round trip to the server and back, in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._request({"type": "ping"})
        return loop.time() - started
