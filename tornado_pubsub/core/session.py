"""One connection's conversation, with no socket: frames in, frames queued out.

A transport (``/ws`` today, SSE next) admits a connection with
``Session.open``, feeds it every inbound frame with ``feed``, and writes what
lands in ``session.sub.queue``, ending the connection when the queue says so
(``outbound.Close``).  Everything the protocol decides happens here, in this
order for each frame: parse, frame-rate budget, validate, authorize, route
to the broker, reply.  The transport decides nothing but the bytes on the
wire.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Coroutine, Protocol

from tornado_pubsub.core import frames, schemas
from tornado_pubsub.core.errors import BAD_REQUEST, FORBIDDEN, INTERNAL, LIMIT_EXCEEDED, PubSubError
from tornado_pubsub.core.hub import Hub, Subscriber
from tornado_pubsub.core.ratelimit import TokenBucket
from tornado_pubsub.logs import log_op

#: Frames one connection may handle back to back before yielding a loop pass.
INLINE_BURST = 32

# Error records one connection may log per second (bursts of as many); the
# rest are counted and reported on its disconnect record, so a client sending
# garbage at full speed cannot turn each bad frame into a log line.
ERROR_LOGS_PER_SECOND = 20.0


class Identity(Protocol):
    """Who is on the other end of a connection, as the session asks it.

    ``allows`` is asked before the topic's existence is checked, so a refused
    client learns nothing about which topics exist.
    """

    user: str | None
    admin: bool

    def allows(self, action: str, topic: str) -> bool:
        """May this identity do ``action`` ("subscribe", "publish", "presence") on ``topic``?"""
        ...


class Anyone:
    """The identity of every connection when no credentials are configured: allowed everything."""

    __slots__ = ()
    user: str | None = None
    admin = False

    def allows(self, action: str, topic: str) -> bool:
        return True


ANYONE = Anyone()

#: A route: handles one validated frame of its type.
Route = Callable[["Session", Subscriber, dict[str, Any]], Awaitable[None]]


def run_inline(coro: Coroutine[Any, Any, None]) -> "asyncio.Future[None] | None":
    """Run ``coro`` until it first suspends: None if it finished, else a Task
    that finishes it as ``asyncio`` would have.

    The in-memory broker's operations never suspend, so a frame costs no Task
    and no loop pass (a measured large share of a small frame's cost)."""
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


class Session:
    """The protocol state of one connection: its ``Subscriber`` (queue and
    subscriptions), identity, frame-rate budget and error-log budget.

    Contract for the transport: frames must be fed one at a time, in the
    order received; ``feed`` returns None when the frame is fully handled,
    else an awaitable to await before feeding the next one.  Every reply,
    event and notice goes into ``sub.queue`` in the order the protocol
    promises; the session never touches a socket.

    Threat: a client that floods (frame budget: over-budget frames are
    answered LIMIT_EXCEEDED unvalidated; error log records are rate-limited
    and the rest counted), lies (every frame is validated, every topic
    authorized) or sends garbage (an error reply, never a crash: a fault in
    a route is INTERNAL and the connection stays usable).
    """

    __slots__ = ("broker", "sub", "identity", "budget", "error_logs", "errors_unlogged", "_inline")

    #: frame type -> route; a new frame type adds its route here and its schema
    #: to ``schemas.FRAME_SCHEMAS``.
    routes: dict[str, Route] = {}

    def __init__(self, broker: Hub, sub: Subscriber, max_frames_per_second: float, identity: Identity = ANYONE) -> None:
        self.broker = broker
        self.sub = sub
        self.identity = identity
        self.budget = TokenBucket(max_frames_per_second)
        self.error_logs = TokenBucket(ERROR_LOGS_PER_SECOND)
        self.errors_unlogged = 0
        self._inline = 0  # frames handled back to back (see feed)

    @classmethod
    def open(cls, broker: Hub, remote: str | None, max_frames_per_second: float, identity: Identity = ANYONE) -> "Session":
        """Admit a connection from ``remote`` and log it; raises the broker's
        PubSubError (LIMIT_EXCEEDED, SHUTTING_DOWN), counted and logged, when
        it is refused."""
        try:
            sub = broker.connect(remote)
        except PubSubError as exc:
            broker.counters.error(exc.code)
            log_op("connect", logging.WARNING, user=identity.user, remote=remote, code=exc.code, outcome="refused")
            raise
        sub.user = identity.user  # presence entries and /connections rows name it
        log_op("connect", conn_id=sub.id, user=identity.user, remote=remote, outcome="ok")
        return cls(broker, sub, max_frames_per_second, identity)

    def end(self, close_code: int | None, reason: str) -> None:
        """The transport is gone: forget its subscriptions and log the disconnect."""
        sub = self.sub
        client_id = sub.client_id()
        removed = self.broker.disconnect(sub) if not sub.closed else 0
        log_op(
            "disconnect",
            conn_id=sub.id,
            user=self.identity.user,
            client_id=client_id,
            remote=sub.remote,
            subscriptions=removed,
            dropped=sub.dropped,
            errors_unlogged=self.errors_unlogged or None,
            close_code=close_code,
            reason=reason,
            outcome="closed",
        )

    # -- frames in ------------------------------------------------------------

    def feed(self, message: str | bytes) -> "asyncio.Future[None] | None":
        """Handle one inbound frame (``bytes``: a binary frame).

        A backend that never suspends (in-memory) handles it right here: no
        Task per frame, and the transport goes on to its next buffered frame,
        so the writer later sends everything those frames queued in one
        batch.  One that does suspend (Redis) gets a Task, which the
        transport awaits before it feeds the next frame, so frames are still
        handled one at a time, in order.
        """
        pending = run_inline(self._handle(message))
        if pending is None:
            self._inline += 1
            if self._inline < INLINE_BURST:
                return None
            # Buffered frames are read without a loop pass in between: after a
            # burst, give timers, writers and other connections their turn.
            pending = asyncio.ensure_future(asyncio.sleep(0))
        self._inline = 0
        return pending

    def feed_invalid_text(self) -> None:
        """A text frame that is not valid UTF-8: answered like any unreadable frame."""
        if not self.sub.closed:
            self.reply_error(PubSubError(BAD_REQUEST, "invalid JSON: text frame is not valid UTF-8"), None)

    async def _handle(self, message: str | bytes) -> None:
        sub = self.sub
        if sub.closed:
            return
        if isinstance(message, bytes):
            self.reply_error(PubSubError(BAD_REQUEST, "binary frames are not supported; send JSON text"), None)
            return
        data: Any = None
        try:
            data = schemas.parse_json(message)
            if not self.budget.take():
                raise PubSubError(LIMIT_EXCEEDED, f"more than {self.budget.rate:g} frames per second; frame not processed")
            kind, frame = schemas.validate_frame(data)
            await self.routes[kind](self, sub, frame)
        except PubSubError as exc:
            self.reply_error(exc, schemas.request_id_of(data))
        except Exception:
            log_op(
                "internal",
                logging.ERROR,
                exc_info=True,
                conn_id=sub.id,
                user=self.identity.user,
                remote=sub.remote,
                request_id=schemas.request_id_of(data),
            )
            self.reply_error(PubSubError(INTERNAL, "internal server error"), schemas.request_id_of(data))

    def reply_error(self, exc: PubSubError, request_id: str | None) -> None:
        """Count, log (within the error-log budget) and queue the error frame for ``exc``."""
        sub = self.sub
        self.broker.counters.error(exc.code)
        if exc.code == INTERNAL or self.error_logs.take():
            log_op(
                "error",
                logging.WARNING if exc.code != INTERNAL else logging.ERROR,
                conn_id=sub.id,
                user=self.identity.user,
                client_id=sub.client_id(),
                remote=sub.remote,
                request_id=request_id,
                code=exc.code,
                detail=exc.message,
                outcome="rejected",
            )
        else:
            self.errors_unlogged += 1
        sub.send(frames.error(exc, request_id))

    def authorize(self, action: str, topic: str) -> None:
        """Raise FORBIDDEN unless the identity may do ``action`` on ``topic``."""
        if not self.identity.allows(action, topic):
            raise PubSubError(FORBIDDEN, f"not allowed to {action} on topic {topic!r}")

    # -- routes -------------------------------------------------------------------

    async def _subscribe(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        self.authorize("subscribe", frame["topic"])
        watch = frame.get("presence", False)
        if watch:
            self.authorize("presence", frame["topic"])
        result = await self.broker.subscribe(  # queues the ack, the gap notice and the replay
            sub,
            frame["topic"],
            frame["client_id"],
            last_n=frame.get("last_n"),
            since_seq=frame.get("since_seq"),
            epoch=frame.get("epoch"),
            request_id=frame.get("request_id"),
        )
        self.broker.watch(sub, result.topic, watch)  # the latest subscribe decides
        log_op(
            "subscribe",
            conn_id=sub.id,
            user=self.identity.user,
            client_id=frame["client_id"],
            topic=result.topic,
            request_id=frame.get("request_id"),
            remote=sub.remote,
            replayed=result.replayed,
            recovered=result.recovered,
            presence=watch or None,
            outcome="already_subscribed" if result.already else "ok",
        )

    async def _unsubscribe(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        was = await self.broker.unsubscribe(sub, frame["topic"])
        sub.send(frames.ack(frame["topic"], frame.get("request_id")))
        log_op(
            "unsubscribe",
            conn_id=sub.id,
            user=self.identity.user,
            client_id=frame["client_id"],
            topic=frame["topic"],
            request_id=frame.get("request_id"),
            remote=sub.remote,
            outcome="ok" if was else "not_subscribed",
        )

    async def _publish(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        self.authorize("publish", frame["topic"])
        message = frame["message"]
        result = await self.broker.publish(frame["topic"], message["payload"], message["id"])
        sub.send(frames.ack(result.topic, frame.get("request_id"), seq=result.seq, duplicate=result.duplicate))
        result.log(conn_id=sub.id, user=self.identity.user, request_id=frame.get("request_id"), remote=sub.remote)

    async def _ping(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        sub.send(frames.pong(frame.get("request_id")))

    async def _presence(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        topic = frame["topic"]
        self.authorize("presence", topic)  # before existence: a refused client learns nothing
        members, truncated = await self.broker.presence(topic)
        sub.send(frames.presence(topic, members, frame.get("request_id"), truncated))
        log_op(
            "presence",
            conn_id=sub.id,
            user=self.identity.user,
            client_id=sub.client_id(),
            topic=topic,
            request_id=frame.get("request_id"),
            remote=sub.remote,
            subscribers=len(members),
            outcome="ok",
        )


Session.routes.update(
    subscribe=Session._subscribe,
    unsubscribe=Session._unsubscribe,
    publish=Session._publish,
    ping=Session._ping,
    presence=Session._presence,
)
