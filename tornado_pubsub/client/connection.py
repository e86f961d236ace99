"""A Python client for tornado-pubsub that resumes its subscriptions after a reconnect.

Example::

    async with PubSubClient("http://127.0.0.1:8080", api_key=key) as client:
        await client.subscribe("orders", lambda m: print(m.seq, m.payload))
        ack = await client.publish("orders", {"n": 1})   # ack.seq, ack.duplicate

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
import inspect
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

from tornado_pubsub.core.errors import CLOSE_TOO_BIG, SHUTTING_DOWN, UNAUTHORIZED, PubSubError

log = logging.getLogger("tornado_pubsub.client")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0  # seconds a request waits for its reply

# Client-side codes, next to the protocol's own (TOPIC_NOT_FOUND, UNAUTHORIZED, ...).
UNREACHABLE = "UNREACHABLE"  # no server answered at the URL
CONNECTION_LOST = "CONNECTION_LOST"  # the connection dropped before the reply came
TIMEOUT = "TIMEOUT"  # no reply within request_timeout
CLOSED = "CLOSED"  # the client was closed, or gave up reconnecting
BAD_RESPONSE = "BAD_RESPONSE"  # the server's answer was not the JSON the contract promises
TOO_BIG = "TOO_BIG"  # the server closed the connection (1009): a frame exceeded its max_message_size

# A publish that failed for one of these reasons never reached history twice:
# resending the same message id after the reconnect is safe.
_RETRYABLE = (CONNECTION_LOST, SHUTTING_DOWN)


class ClientError(PubSubError):
    """A failed client operation: ``code`` is the protocol error code (e.g.
    ``TOPIC_NOT_FOUND``) or a client-side one (``UNREACHABLE``, ``TIMEOUT``,
    ``CONNECTION_LOST``, ``CLOSED``); ``status`` is the HTTP status if any."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, status)
        self.status = status  # None when no HTTP status was involved


@dataclasses.dataclass(frozen=True)
class Message:
    """One event as the handler sees it; ``seq`` is meaningful with ``epoch``."""

    topic: str
    id: str
    payload: Any
    seq: int | None
    ts: str
    epoch: str | None


@dataclasses.dataclass(frozen=True)
class Gap:
    """Messages the handler will never see.

    ``reason`` is ``epoch_changed`` (the topic was recreated or the server
    restarted: seqs start again), ``evicted`` (seqs ``after_seq+1 ..
    first_seq-1`` left the server's history while disconnected) or
    ``dropped`` (the server dropped them for a slow reader).  The next
    message delivered has seq ``first_seq`` in ``epoch``.
    """

    topic: str
    reason: str
    epoch: str | None
    after_seq: int | None
    first_seq: int


@dataclasses.dataclass(frozen=True)
class PublishAck:
    """The server's answer to a publish: the seq the message took, or already had."""

    topic: str
    id: str
    seq: int | None
    duplicate: bool


Handler = Callable[[Message], Union[None, Awaitable[None]]]
GapHandler = Callable[[Gap], Union[None, Awaitable[None]]]


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


def _loss_error(close_code: int | None, reason: str | None) -> ClientError:
    """Why requests in flight failed when the connection closed under them."""
    if close_code == CLOSE_TOO_BIG:  # resending the same frame would only close the next connection
        return ClientError(TOO_BIG, "the server closed the connection: a frame exceeded its max_message_size")
    detail = f" (close code {close_code}{': ' + reason if reason else ''})" if close_code else ""
    return ClientError(CONNECTION_LOST, f"connection lost before the reply arrived{detail}")


def _error_from_http(exc: Exception, what: str) -> ClientError:
    """A ``ClientError`` from a failed HTTP exchange (REST call or WebSocket handshake)."""
    if isinstance(exc, tornado.httpclient.HTTPClientError) and exc.response is not None and exc.code != 599:
        try:
            error = json.loads(exc.response.body or b"")["error"]
            return ClientError(error["code"], error["message"], exc.code)
        except (ValueError, KeyError, TypeError):
            return ClientError(BAD_RESPONSE, f"{what}: HTTP {exc.code} {exc.message}", exc.code)
    if isinstance(exc, tornado.httpclient.HTTPClientError):  # 599: timeout or connection failure
        return ClientError(UNREACHABLE, f"{what}: {exc.message}")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ClientError(UNREACHABLE, f"{what}: {reason}")


class Subscription:
    """One topic's subscription: position (epoch, last seq) and in-order delivery.

    Frames are sorted here on the reader's side (dedupe, gap detection) and
    handed to a per-subscription task, so a slow or awaiting handler never
    stops the client from reading acks and pongs.  The hand-over queue is
    unbounded: a handler that is slower than the stream for long grows this
    process's memory (the server's own queue stays bounded).
    """

    def __init__(self, topic: str, handler: Handler, on_gap: GapHandler | None, last_n: int | None = None) -> None:
        self.topic = topic
        self.handler = handler
        self.on_gap = on_gap
        self.last_n = last_n  # messages to replay when subscribing without a known position
        self.epoch: str | None = None
        #: seq of the last message queued for the handler (None: not known yet).
        self.last_seq: int | None = None
        self.acked = False
        self.duplicates = 0  # events ignored because their seq was already seen
        self.gaps = 0
        self._resume_from = 0  # since_seq for a resume before the first event arrived
        self._before_resume: tuple[str | None, int | None] = (None, None)
        self._items: asyncio.Queue[Message | Gap | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._deliver())
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- reader side: called synchronously, in frame order -------------------------

    def subscribe_frame(self) -> dict[str, Any]:
        """The subscribe frame: a resume when a position is known, else ``last_n``."""
        frame: dict[str, Any] = {"type": "subscribe", "topic": self.topic}
        if self.epoch is not None or self.last_seq is not None:
            since = self.last_seq if self.last_seq is not None else self._resume_from
            frame["since_seq"] = since
            if self.epoch is not None:
                frame["epoch"] = self.epoch
            self._before_resume = (self.epoch, since)
        elif self.last_n:
            frame["last_n"] = self.last_n
        return frame

    def on_ack(self, frame: dict[str, Any]) -> None:
        resumed = "recovered" in frame
        self.epoch = frame.get("epoch")
        last = frame.get("last_seq")
        if not resumed and isinstance(last, int):
            if self.last_n:  # a replay of up to last_n messages follows; a resume would ask for the same
                self._resume_from = max(0, last - self.last_n)
            else:
                self.last_seq = last
        self.acked = True

    def on_history_gap(self, frame: dict[str, Any]) -> None:
        old_epoch, after = self._before_resume
        epoch = frame.get("epoch")
        first = int(frame.get("first_seq") or 1)
        reason = "epoch_changed" if old_epoch is not None and old_epoch != epoch else "evicted"
        self._gap(Gap(self.topic, reason, epoch, after, first))

    def on_event(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int) and self.last_seq is not None:
            if seq <= self.last_seq:
                self.duplicates += 1
                return
            if seq > self.last_seq + 1:
                self._gap(Gap(self.topic, "dropped", self.epoch, self.last_seq, seq))
        if isinstance(seq, int):
            self.last_seq = seq
        message = frame.get("message") or {}
        self._items.put_nowait(
            Message(self.topic, message.get("id"), message.get("payload"), seq, frame.get("ts", ""), self.epoch)
        )

    def _gap(self, gap: Gap) -> None:
        self.gaps += 1
        self.last_seq = gap.first_seq - 1
        self._items.put_nowait(gap)

    def end(self, reason: str) -> None:
        """Stop delivering after what is already queued; ``ended`` resolves to ``reason``."""
        if not self.ended.done():
            self.ended.set_result(reason)
            self._items.put_nowait(None)

    # -- delivery task -------------------------------------------------------------

    async def _deliver(self) -> None:
        while True:
            item = await self._items.get()
            if item is None:
                return
            if isinstance(item, Gap) and self.on_gap is None:
                log.warning("subscription to %s has a gap: %s", self.topic, item)
                continue
            try:
                result = self.handler(item) if isinstance(item, Message) else self.on_gap(item)  # type: ignore[misc]
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one failing message must not end the subscription
                log.exception("handler for %s failed on %r", self.topic, item)

    async def wait(self) -> str:
        """Wait until the subscription ends and its queued messages were handled; returns why it ended."""
        reason = await self.ended
        await asyncio.shield(self._task)
        return reason

    def cancel(self) -> None:
        self.end("closed")
        self._task.cancel()


class PubSubClient:
    """A tornado-pubsub client: one WebSocket with automatic resume, plus REST calls.

    ``url`` is the server's base URL (``http://host:port``, with the prefix if
    the routes are mounted under one).  ``api_key`` is sent as ``X-API-Key``.
    Every request waits at most ``request_timeout`` seconds for its reply.
    After a lost connection the client retries after ``backoff_min``,
    doubling up to ``backoff_max`` (each delay randomized between half and all
    of it, so many clients do not reconnect in lockstep), forever unless
    ``max_attempts`` is set; a refused API key stops it at once.
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
        self.reconnects = 0  # successful reconnections so far
        self.subscriptions: dict[str, Subscription] = {}
        self._conn: tornado.websocket.WebSocketClientConnection | None = None
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], Callable[[dict[str, Any]], None] | None]] = {}
        self._ids = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key is not None else {}

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
            headers=self._headers(),
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
            raise _error_from_http(exc, f"cannot connect to {self.ws_url}") from None

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
            self._fail_pending(_loss_error(conn.close_code, conn.close_reason))
            if self._closing.is_set() or not self.reconnect:
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
            try:
                await asyncio.wait_for(self._closing.wait(), delay * random.uniform(0.5, 1.0))
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
            asyncio.ensure_future(self._resubscribe_all())
            return conn, "closed"
        return None, "closed"

    async def _resubscribe_all(self) -> None:
        for sub in [s for s in self.subscriptions.values() if s.acked]:
            try:
                await self._subscribe_request(sub)
            except ClientError as exc:
                if exc.code in _RETRYABLE or exc.code == CLOSED:
                    continue  # the next connection resubscribes it again
                # Anything else (TOPIC_NOT_FOUND, LIMIT_EXCEEDED, ...) would leave it
                # silently dead: end it, so its owner hears why.
                log.warning("cannot resume %s: %s", sub.topic, exc.message)
                self.subscriptions.pop(sub.topic, None)
                sub.end(exc.code.lower())

    def _fail_pending(self, error: ClientError) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Close the connection, end every subscription; pending requests fail with ``CLOSED``."""
        self._closing.set()
        if self._conn is not None:
            self._conn.close()
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
            del self.subscriptions[sub.topic]
            sub.end("topic_deleted")
        elif msg == "shutting_down":
            log.info("server at %s is shutting down", self.ws_url)

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
                if exc.code not in _RETRYABLE or not self.reconnect or loop.time() >= deadline:
                    raise
                # Wait for the reader to notice the loss before retrying.
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        last_n: int | None = None,
        *,
        on_gap: GapHandler | None = None,
        since_seq: int | None = None,
        epoch: str | None = None,
    ) -> Subscription:
        """Subscribe ``handler`` (a function or coroutine function taking a ``Message``).

        ``last_n`` replays up to that many retained messages first; ``since_seq``
        (with the ``epoch`` it belongs to) resumes from a stored position.
        ``on_gap`` is told about messages that cannot be delivered (see ``Gap``).
        Raises ``ClientError`` (e.g. ``TOPIC_NOT_FOUND``).
        """
        if topic in self.subscriptions:
            raise ValueError(f"already subscribed to {topic!r}; unsubscribe first")
        if last_n is not None and since_seq is not None:
            raise ValueError("last_n and since_seq cannot be combined")
        sub = Subscription(topic, handler, on_gap, last_n)
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
            sub.end("unsubscribed")
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

    # -- REST ----------------------------------------------------------------------------

    async def rest(self, method: str, path: str, body: Any = None, ok_statuses: tuple[int, ...] = ()) -> Any:
        """One REST call; returns the decoded JSON body or raises ``ClientError``."""
        client = tornado.httpclient.AsyncHTTPClient()
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers(), "Content-Type": "application/json"}
        try:
            response = await client.fetch(
                self.http_url + path,
                method=method,
                body=data,
                headers=headers,
                connect_timeout=self.connect_timeout,
                request_timeout=self.request_timeout,
                raise_error=False,
            )
        except (OSError, StreamClosedError, tornado.httpclient.HTTPClientError) as exc:
            raise _error_from_http(exc, f"cannot reach {self.http_url}") from None
        # Timeouts and connection failures were raised above; response.error is the
        # HTTPClientError for the status (a literal 599 is treated like an unreachable server).
        if response.code == 599:
            raise _error_from_http(response.error, f"cannot reach {self.http_url}")
        if response.code >= 400 and response.code not in ok_statuses:
            raise _error_from_http(response.error, f"{method} {path}")
        try:
            return json.loads(response.body or b"null")
        except ValueError:
            raise ClientError(BAD_RESPONSE, f"{method} {path}: the answer is not JSON", response.code) from None

    async def topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]``."""
        return (await self.rest("GET", "/topics"))["topics"]

    async def create_topic(self, name: str) -> None:
        """Create a topic; raises ``ClientError`` ``TOPIC_EXISTS`` if it exists."""
        await self.rest("POST", "/topics", {"name": name})

    async def delete_topic(self, name: str) -> None:
        """Delete a topic; raises ``ClientError`` ``TOPIC_NOT_FOUND``."""
        await self.rest("DELETE", f"/topics/{name}")

    async def stats(self) -> dict[str, Any]:
        """Per-topic counters (``GET /stats``)."""
        return await self.rest("GET", "/stats")

    async def health(self) -> dict[str, Any]:
        """``GET /health``; a draining server's 503 body is returned, not raised."""
        return await self.rest("GET", "/health", ok_statuses=(503,))
