"""One connection's conversation, with no socket: frames in, frames queued out.

A transport (``/ws``, or the SSE stream) admits a connection with
``Session.open``, feeds it every inbound frame with ``feed``, and writes what
lands in ``session.sub.queue``, ending the connection when the queue says so
(``outbound.Close``).  Everything the protocol decides happens here, in this
order for each frame: parse, frame-rate budget (none for the admin key),
validate, the auth gate (a connection still waiting for its ``auth`` frame
may send only that and ``ping``), authorize, route to the broker, reply.
The transport decides nothing but the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable, Callable, Protocol

from tornado_pubsub.core import frames, schemas
from tornado_pubsub.core.errors import (
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL,
    LIMIT_EXCEEDED,
    UNAUTHORIZED,
    Disconnect,
    PubSubError,
)
from tornado_pubsub.core.hub import Hub, Subscriber
from tornado_pubsub.core.identity import PENDING_IDENTITY, Credentials
from tornado_pubsub.core.inline import run_inline, settled
from tornado_pubsub.core.ratelimit import TokenBucket, frame_cost
from tornado_pubsub.core.token_life import TokenLife
from tornado_pubsub.logs import log_op

#: Frames one connection may handle back to back before yielding a loop pass.
INLINE_BURST = 32

# Error records one connection may log per second (bursts of as many); the
# rest are counted and reported on its disconnect record, so a client sending
# garbage at full speed cannot turn each bad frame into a log line.
ERROR_LOGS_PER_SECOND = 20.0

#: Publishes one connection may have in flight at once (a broker that
#: suspends, i.e. Redis), and their frames' lengths at most (characters of a
#: text frame: counted without encoding it again, and a str holds at most
#: 4 bytes per character); past either, the transport stops reading the
#: connection until the oldest is acked.
PIPELINE_MAX = 64
PIPELINE_MAX_BYTES = 1 << 20

#: What a connection still waiting for its ``auth`` frame may send.
UNGATED = frozenset({"auth", "ping"})


class Identity(Protocol):
    """Who is on the other end of a connection, as the session asks it.

    ``allows`` is asked before the topic's existence is checked, so a refused
    client learns nothing about which topics exist.
    """

    user: str | None
    admin: bool
    #: The token's ``exp`` (Unix seconds), None when nothing expires (an
    #: identity without the attribute never expires either).
    expires_at: float | None

    def allows(self, action: str, topic: str) -> bool:
        """May this identity do ``action`` ("subscribe", "publish", "presence") on ``topic``?"""
        ...


class Anyone:
    """The identity of every connection when no credentials are configured: allowed everything."""

    __slots__ = ()
    user: str | None = None
    admin = False
    expires_at: float | None = None

    def allows(self, action: str, topic: str) -> bool:
        return True


ANYONE = Anyone()

#: A route: handles one validated frame of its type, called with
#: ``(session, subscriber, frame)``; ``publish``'s also with the publish fed
#: before it, still in flight or None (see ``Session.feed``).
Route = Callable[..., Awaitable[None]]


class Session(TokenLife):
    """The protocol state of one connection: its ``Subscriber`` (queue and
    subscriptions), identity, frame-rate budget and error-log budget.

    Contract for the transport: frames must be fed one at a time, in the
    order received; ``feed`` returns None when the frame is fully handled,
    else an awaitable to await before feeding the next one.  Every reply,
    event and notice goes into ``sub.queue`` in the order the protocol
    promises; the session never touches a socket.

    Threat: a client that floods (frame budget: over-budget frames are
    answered LIMIT_EXCEEDED unvalidated; error log records are rate-limited
    and the rest counted; at most PIPELINE_MAX publishes, PIPELINE_MAX_BYTES
    of frames, in flight, then the connection is not read), lies (every frame is validated, every topic
    authorized) or sends garbage (an error reply, never a crash: a fault in
    a route is INTERNAL and the connection stays usable).

    Identity (PROTOCOL.md 5.3): ``auth`` frames set or refresh it; a token's
    ``exp`` is watched by one timer (``_arm_expiry``) that warns, then closes
    the connection with 4401 through its queue.
    """

    __slots__ = (
        "broker",
        "sub",
        "identity",
        "credentials",
        "budget",
        "error_logs",
        "errors_unlogged",
        "_inline",
        "_expiry",
        "_auth_budget",
        "_in_flight",
        "_in_flight_bytes",
        "_pipelined",
    )

    #: frame type -> route; a new frame type adds its route here and its schema
    #: to ``schemas.FRAME_SCHEMAS``.
    routes: dict[str, Route] = {}

    def __init__(
        self,
        broker: Hub,
        sub: Subscriber,
        max_frames_per_second: float,
        identity: Identity = ANYONE,
        credentials: Credentials | None = None,
    ) -> None:
        self.broker = broker
        self.sub = sub
        self.identity = identity
        self.credentials = credentials  # verifies auth frames; None: this server takes no tokens
        # The admin key's connections (trusted backends) have no frame budget
        # (PROTOCOL.md 5.1); an auth frame never makes a connection admin.
        self.budget = None if identity.admin else TokenBucket(max_frames_per_second)
        self.error_logs = TokenBucket(ERROR_LOGS_PER_SECOND)
        self.errors_unlogged = 0
        self._inline = 0  # frames handled back to back (see feed)
        self._expiry: object | None = None  # the one timer of the token's expiry (see _arm_expiry)
        self._auth_budget: TokenBucket | None = None  # made at the first auth frame (see TokenLife._auth)
        # Publishes handed to a broker that suspended, oldest first, with
        # their frames' sizes (see feed); None until the first one.
        self._in_flight: collections.deque[tuple[asyncio.Future[None], int]] | None = None
        self._in_flight_bytes = 0
        self._pipelined = False  # set by _publish when its frame may run beside the next ones

    @classmethod
    def open(
        cls,
        broker: Hub,
        remote: str | None,
        max_frames_per_second: float,
        identity: Identity = ANYONE,
        credentials: Credentials | None = None,
    ) -> "Session":
        """Admit a connection from ``remote`` and log it; raises the broker's
        PubSubError (LIMIT_EXCEEDED, also per user; SHUTTING_DOWN), counted
        and logged, when it is refused.  A token's expiry is watched from
        here on (``info token_expiring``, then close 4401)."""
        try:
            sub = broker.connect(remote, identity.user)
        except PubSubError as exc:
            broker.counters.error(exc.code)
            log_op("connect", logging.WARNING, user=identity.user, remote=remote, code=exc.code, outcome="refused")
            raise
        log_op("connect", conn_id=sub.id, user=identity.user, remote=remote, outcome="ok")
        session = cls(broker, sub, max_frames_per_second, identity, credentials)
        session._arm_expiry()
        return session

    @property
    def awaiting_auth(self) -> bool:
        """True while the connection upgraded with no credential must still send
        a successful ``auth`` frame (the transport closes it at handshake_timeout)."""
        return self.identity is PENDING_IDENTITY

    def end(self, close_code: int | None, reason: str) -> None:
        """The transport is gone: forget its subscriptions and log the disconnect."""
        self._cancel_expiry()
        sub = self.sub
        who = self._who()  # (before the subscriptions, which name the client_id, are gone)
        removed = self.broker.disconnect(sub) if not sub.closed else 0
        log_op(
            "disconnect",
            **who,
            subscriptions=removed,
            dropped=sub.dropped,
            errors_unlogged=self.errors_unlogged or None,
            close_code=close_code,
            reason=reason,
            outcome="closed",
        )

    def refused(self, disconnect: Disconnect, problem: str) -> None:
        """The transport refused a frame it could not take (RFC 6455: 1002,
        1009): log why, with this connection's context, and close with
        ``disconnect`` once the replies already queued are written."""
        log_op("ws_protocol", **self._who(), detail=problem, outcome=f"closed_{disconnect.code}")
        self.sub.queue.close(disconnect)

    def _who(self) -> dict[str, Any]:
        """The context every record about this connection carries."""
        sub = self.sub
        return {"conn_id": sub.id, "user": self.identity.user, "client_id": sub.client_id(), "remote": sub.remote}

    # -- frames in ------------------------------------------------------------

    def feed(self, message: str | bytes) -> "asyncio.Future[None] | None":
        """Handle one inbound frame (``bytes``: a binary frame).

        A backend that never suspends (in-memory) handles it right here: no
        Task per frame, and the transport goes on to its next buffered frame,
        so the writer later sends everything those frames queued in one
        batch.  One that does suspend (Redis) finishes it later, stepped by
        ``inline.run_inline`` (still no Task), and the returned future says
        when.  A publish runs beside the frames after it (up to PIPELINE_MAX
        publishes and PIPELINE_MAX_BYTES): the broker numbers them in the
        order they were fed, and each one's reply waits for the reply of the
        frame before it, so replies keep the frames' order.  Any other frame
        waits for the publishes before it and is awaited by the transport
        before it feeds the next frame.
        """
        before = self._last_in_flight()
        self._pipelined = False
        pending = run_inline(self._handle(message, before))
        if pending is None:
            self._inline += 1
            if self._inline < INLINE_BURST:
                return None
            # Buffered frames are read without a loop pass in between: after a
            # burst, give timers, writers and other connections their turn.
            pending = asyncio.ensure_future(asyncio.sleep(0))
        elif self._pipelined:
            return self._pipeline(pending, len(message))
        self._inline = 0
        return pending

    def _last_in_flight(self) -> "asyncio.Future[None] | None":
        """The newest publish still in flight (every older one is too), after
        forgetting those that finished."""
        in_flight = self._in_flight
        if not in_flight:
            return None
        while in_flight and in_flight[0][0].done():
            self._in_flight_bytes -= in_flight.popleft()[1]
        return in_flight[-1][0] if in_flight else None

    def _pipeline(self, pending: "asyncio.Future[None]", size: int) -> "asyncio.Future[None] | None":
        if self._in_flight is None:
            self._in_flight = collections.deque()
        self._in_flight.append((pending, size))
        self._in_flight_bytes += size
        if len(self._in_flight) >= PIPELINE_MAX or self._in_flight_bytes >= PIPELINE_MAX_BYTES:
            # Full: read nothing more until the oldest is acked.
            self._inline = 0
            return self._in_flight[0][0]
        self._inline += 1
        if self._inline < INLINE_BURST:
            return None
        # A burst is over: one loop pass for the others, and the broker
        # sends this burst's publishes while the next one is read.
        self._inline = 0
        return asyncio.ensure_future(asyncio.sleep(0))

    async def request(self, data: dict[str, Any]) -> None:
        """Handle one frame a transport built itself (SSE: its query as a
        ``subscribe``): validated, authorized and routed like a fed frame,
        but a refusal is raised as its ``PubSubError`` rather than queued,
        so the transport can answer it before its stream starts.  Replies
        and events are queued as usual."""
        kind, frame = schemas.validate_frame(data)
        await self.routes[kind](self, self.sub, frame)

    def feed_invalid_text(self) -> None:
        """A text frame that is not valid UTF-8: answered like any unreadable frame."""
        if not self.sub.closed:
            self.reply_error(PubSubError(BAD_REQUEST, "invalid JSON: text frame is not valid UTF-8"), None)

    async def _handle(self, message: str | bytes, before: "asyncio.Future[None] | None" = None) -> None:
        # ``before``: the publish fed just before this frame, still in flight.
        # Nothing this frame replies may overtake that publish's reply.
        sub = self.sub
        if sub.closed or sub.queue.closing is not None:  # e.g. its token expired: nothing more is done
            return
        # Charged before anything is parsed, in frames and bytes: a flood of
        # large junk costs a length check and one scan for its request_id.
        # The admin key's connections have none (PROTOCOL.md 5.1).
        budget = self.budget
        if budget is not None and not budget.take(frame_cost(message)):
            refused = PubSubError(LIMIT_EXCEEDED, f"more than {budget.rate:g} frames per second; frame not processed")
            if before is not None:
                await settled(before)
            self.reply_error(refused, schemas.peek_request_id(message))
            return
        if isinstance(message, bytes):
            if before is not None:
                await settled(before)
            self.reply_error(PubSubError(BAD_REQUEST, "binary frames are not supported; send JSON text"), None)
            return
        data: Any = None
        try:
            data = schemas.parse_json(message)
            kind, frame = schemas.validate_frame(data)
            if self.identity is PENDING_IDENTITY and kind not in UNGATED:
                raise PubSubError(UNAUTHORIZED, "not authenticated: send an auth frame with a token first")
            route = self.routes[kind]
            if kind == "publish":  # the one route that may run beside the frames after it (see feed)
                await route(self, sub, frame, before)
            else:
                if before is not None:
                    await settled(before)
                await route(self, sub, frame)
        except PubSubError as exc:
            if before is not None:
                await settled(before)
            self.reply_error(exc, schemas.request_id_of(data))
        except Exception:
            if before is not None:
                await settled(before)
            if self.error_logs.take():  # a fault a client can trigger at will must not flood the log
                log_op("internal", logging.ERROR, exc_info=True, **self._who(), request_id=schemas.request_id_of(data))
            else:
                self.errors_unlogged += 1
            self.reply_error(PubSubError(INTERNAL, "internal server error"), schemas.request_id_of(data))

    def reply_error(self, exc: PubSubError, request_id: str | None) -> None:
        """Count, log (within the error-log budget, INTERNAL included) and
        queue the error frame for ``exc``."""
        self.broker.counters.error(exc.code)
        if self.error_logs.take():
            log_op(
                "error",
                logging.WARNING if exc.code != INTERNAL else logging.ERROR,
                **self._who(),
                request_id=request_id,
                code=exc.code,
                detail=exc.message,
                outcome="rejected",
            )
        else:
            self.errors_unlogged += 1
        self.sub.send(frames.error(exc, request_id))

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

    async def _publish(self, sub: Subscriber, frame: dict[str, Any], before: "asyncio.Future[None] | None" = None) -> None:
        self.authorize("publish", frame["topic"])
        message = frame["message"]
        # The broker takes the publish in the order frames are fed (Redis:
        # into its ordered publish lane) before it first suspends; from there
        # on, the frames after this one may be fed (see feed), unless the
        # topic may have to be auto-created first (see Node.may_pipeline).
        self._pipelined = self.broker.may_pipeline(frame["topic"])
        result = await self.broker.publish(frame["topic"], message["payload"], message["id"])
        if before is not None:
            await settled(before)
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
    auth=Session._auth,
    presence=Session._presence,
)
