"""The node: the one broker object handlers, the embedding API, metrics and
tests call.  It composes this process's hub (``core.hub.Hub``: connections,
queues, local fan-out) with a backend (``backends.base.Backend``: topics,
seq numbers, history, figures) and holds what both backends share: the
subscribe seam, replay planning, input bounds and the shapes of /topics,
/stats and /health.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Sequence

from tornado_pubsub.backends.base import NOTHING, Backend, Snapshot, TopicInfo, Wanted
from tornado_pubsub.core.errors import TOPIC_EXISTS, TOPIC_NOT_FOUND, PubSubError, topic_not_found
from tornado_pubsub.core.history import EventList
from tornado_pubsub.core.outbound import EventSource
from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.core.hub import Counters, Hub, Subscriber, plan_resume
from tornado_pubsub.core.presence import CONNECTIONS_LIMIT, PRESENCE_LIMIT, Entry
from tornado_pubsub.core.results import PublishResult, SubscribeResult
from tornado_pubsub.logs import log_op
from tornado_pubsub.settings import Settings


#: No seq ever exceeds this (Redis counts seqs in a signed 64-bit integer);
#: a larger ``since_seq`` means the same as this one: "beyond the last seq".
SEQ_MAX = 2**63 - 1


class Node:
    """One process's broker: a hub composed with a backend.

    Guarantees, for every subscriber of a topic (on any process sharing the
    backend): each message published after its subscription is queued
    exactly once, in seq order; a replay or resume is queued after the
    subscribe ack and before any live event, with no gap or duplicate at the
    seam.  Under ``drop_oldest`` a full queue loses its oldest events
    (counted); under ``disconnect`` the subscriber is evicted.

    Every operation raises ``PubSubError`` only.  With the in-memory backend
    no operation suspends, so "register the subscription, then queue the ack
    and the replay" is atomic with respect to publishes; with a backend that
    suspends, the hub's join keeps the seam (see ``subscribe``).

    Topics from settings (PROTOCOL.md 8): ``topics`` are created by ``start``
    when missing; with ``auto_create_topics`` a subscribe or publish that
    meets a missing topic creates it, here and only here, for every
    transport.  The caller has authorized the operation first, so a client
    can create only topics it may use, and ``max_topics`` bounds them all.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        queue_size: int = 1000,
        queue_max_bytes: int = 1048576,
        overflow_policy: str = "drop_oldest",
        max_subscriptions_per_connection: int = 1000,
        max_connections: int = 0,
        max_connections_per_user: int = 0,
        topics: Sequence[str] = (),
        auto_create_topics: bool = False,
    ) -> None:
        self.backend = backend
        self.topics = tuple(topics)
        self.auto_create_topics = auto_create_topics
        # Auto-creates in progress, one per topic name (see _auto_create).
        self._creating: dict[str, asyncio.Future[None]] = {}
        self.hub = Hub(
            queue_size=queue_size,
            queue_max_bytes=queue_max_bytes,
            overflow_policy=overflow_policy,
            max_subscriptions_per_connection=max_subscriptions_per_connection,
            max_connections=max_connections,
            max_connections_per_user=max_connections_per_user,
            on_change=backend.local_changed,
        )
        self.hub.presence.share = backend.share
        backend.attach(self.hub)

    @staticmethod
    def options(settings: Settings) -> dict[str, Any]:
        """The node's keyword arguments (the hub's bounds), from ``settings``."""
        return {
            "queue_size": settings.queue_size,
            "queue_max_bytes": settings.queue_max_bytes,
            "overflow_policy": settings.overflow_policy,
            "max_subscriptions_per_connection": settings.max_subscriptions_per_connection,
            "max_connections": settings.max_connections,
            "max_connections_per_user": settings.max_connections_per_user,
            "topics": settings.topics,
            "auto_create_topics": settings.auto_create_topics,
        }

    # -- the hub's state, read by handlers, metrics and tests -----------------------

    @property
    def connections(self) -> dict[str, Subscriber]:
        """Open connections by conn_id."""
        return self.hub.connections

    @property
    def subscriptions(self) -> int:
        """Local subscriptions (connection x topic)."""
        return self.hub.subscriptions

    @property
    def counters(self) -> Counters:
        """Process-wide totals behind /metrics."""
        return self.hub.counters

    @property
    def draining(self) -> bool:
        """True once ``begin_shutdown`` was called."""
        return self.hub.draining

    @property
    def started(self) -> float:
        """``time.monotonic()`` when the node was made."""
        return self.hub.started

    # -- connections and lifecycle (the hub's) ----------------------------------------

    def check_admission(self, user: str | None = None) -> None:
        """Raise SHUTTING_DOWN or LIMIT_EXCEEDED if a new connection (of ``user``) would be refused."""
        self.hub.check_admission(user)

    def connect(self, remote: str | None, user: str | None = None) -> Subscriber:
        """Admit a connection of ``user`` (a token's sub, or None); raises LIMIT_EXCEEDED or SHUTTING_DOWN."""
        return self.hub.connect(remote, user)

    def set_user(self, sub: Subscriber, user: str) -> None:
        """``sub`` authenticated as ``user`` (see ``Hub.set_user``); raises LIMIT_EXCEEDED."""
        self.hub.set_user(sub, user)

    def disconnect(self, sub: Subscriber) -> int:
        """Forget a connection and every subscription it held; returns how many."""
        return self.hub.disconnect(sub)

    def evict_slow(self, sub: Subscriber) -> None:
        """Disconnect a consumer whose queue overflowed: SLOW_CONSUMER, then close 1013."""
        self.hub.evict_slow(sub)

    def begin_shutdown(self) -> None:
        """Refuse new operations and tell every connection ``shutting_down``."""
        self.hub.begin_shutdown()

    def idle(self) -> bool:
        """True when every connection's queue is flushed."""
        return self.hub.idle()

    def close_all(self, disconnect: Disconnect) -> None:
        """Close every connection with ``disconnect`` (see ``Hub.close_all``)."""
        self.hub.close_all(disconnect)

    def gauges(self) -> dict[str, int]:
        """Point-in-time figures for /metrics."""
        return {
            "connections": len(self.hub.connections),
            "subscriptions": self.hub.subscriptions,
            "topics": self.backend.topic_count(),
            "queued_frames": self.hub.queued_frames(),
            "queued_bytes": self.hub.queued_bytes(),
            "retained_bytes": getattr(getattr(self.backend, "retention", None), "bytes", 0),
        }

    async def start(self) -> None:
        """Connect to whatever the backend needs (nothing for the in-memory
        one), then create the ``topics`` that are missing."""
        await self.backend.start()
        await self.ensure_topics(self.topics)

    async def ensure_topics(self, names: Sequence[str]) -> list[str]:
        """Create each of ``names`` that does not exist; returns those created here.

        With a shared backend every process asks and the backend's atomic
        create lets one of them make each topic (the others meet
        TOPIC_EXISTS, which is what they wanted).  A failure (the store is
        unreachable, ``max_topics``) is logged, not raised: the server still
        starts, and the topic can be created later.
        """
        created = []
        for name in names:
            try:
                info = await self.backend.create(name)
            except PubSubError as exc:
                if exc.code != TOPIC_EXISTS:
                    log_op("topic_created", logging.WARNING, topic=name, via="settings", code=exc.code, detail=exc.message, outcome="failed")
                continue
            created.append(name)
            log_op("topic_created", topic=name, epoch=info.epoch, via="settings", outcome="ok")
        return created

    async def stop(self) -> None:
        """Release what ``start`` acquired."""
        await self.backend.stop()

    # -- topics -------------------------------------------------------------------

    async def create_topic(self, name: str) -> TopicInfo:
        """Create a topic with a fresh epoch; raises TOPIC_EXISTS or LIMIT_EXCEEDED."""
        self.hub.check_open()
        return await self.backend.create(name)

    async def delete_topic(self, name: str) -> int:
        """Delete a topic, telling each subscriber ``topic_deleted``; returns
        how many were told on this process."""
        return await self.backend.delete(name)

    # -- publish / subscribe ---------------------------------------------------------

    async def publish(self, topic_name: str, payload: Any, message_id: str | None = None) -> PublishResult:
        """Number, retain and fan out one message; returns once it is in the
        queues of this process's subscribers.

        A ``message_id`` still held in the topic's history is not published
        again: the result carries the original seq and ``duplicate=True``.
        """
        self.hub.check_open()
        if message_id is None:
            message_id = str(uuid.uuid4())
        try:
            done = await self.backend.publish(topic_name, message_id, payload)
        except PubSubError as exc:
            await self._auto_create(topic_name, exc)
            done = await self.backend.publish(topic_name, message_id, payload)
        if not done.duplicate:
            self.hub.counters.published += 1
        return PublishResult(topic_name, message_id, done.seq, done.duplicate)

    async def subscribe(
        self,
        sub: Subscriber,
        topic_name: str,
        client_id: str,
        *,
        last_n: int | None = None,
        since_seq: int | None = None,
        epoch: str | None = None,
        request_id: str | None = None,
    ) -> SubscribeResult:
        """Subscribe ``sub`` and queue, in order: the ack, a ``history_gap`` notice
        when a resume cannot be complete, the replayed events, then live events.

        Subscribing again to a topic already held is acked and replays nothing.
        A resume without ``epoch`` is taken to mean the current epoch.  The
        seam: live events that reach the hub while the backend reads the
        history are kept in a join and queued after the replay, those at or
        below the snapshot's last seq skipped, so none is lost or doubled.
        """
        hub = self.hub
        hub.check_open()
        hub.check_room(sub, topic_name)
        already = topic_name in sub.topics
        join = hub.open_join(topic_name, counted=not already)
        try:
            wanted = self._wanted(already, last_n, since_seq, epoch)
            try:
                snap = await self.backend.snapshot(topic_name, wanted)
            except PubSubError as exc:
                await self._auto_create(topic_name, exc)
                snap = await self.backend.snapshot(topic_name, wanted)
        finally:
            hub.close_join(join)
        if sub.closed:  # it went away while we read
            return SubscribeResult(topic_name, snap.epoch, snap.last_seq, 0, None, False)
        lt = hub.incarnation(topic_name, snap.epoch, max(snap.last_seq, join.newest(snap.epoch)))
        already = sub in lt.subscribers
        recovered, replay = self._plan(already, snap, last_n, since_seq, epoch)
        result = hub.admit(
            sub,
            lt,
            client_id,
            last_seq=snap.last_seq,
            first_seq=snap.first_seq,
            replay=replay,
            recovered=recovered,
            request_id=request_id,
        )
        if not already and sub in lt.subscribers:
            hub.flush(sub, lt, join, snap.last_seq)
        return result

    def may_pipeline(self, topic_name: str) -> bool:
        """Whether a publish to ``topic_name`` may run beside the frames fed
        after it (``Session.feed``), without suspending.

        Not when ``auto_create_topics`` may have to create the topic first:
        the publishes sent behind one that finds it missing can reach Redis
        after the create and before that one's retry, and take lower seqs
        than the frame sent before them.  So a publish to a topic this
        process does not know runs alone; once it exists, the rest pipeline.
        """
        return not self.auto_create_topics or self.backend.knows(topic_name)

    async def _auto_create(self, name: str, exc: PubSubError) -> None:
        """Re-raise ``exc`` unless it is a missing topic and ``auto_create_topics``
        is on; then create ``name`` (a create that another caller won meanwhile
        is just as good) so the caller tries once more.  Only on the error
        path: a publish to an existing topic pays nothing for it.

        Order: callers that found ``name`` missing share one create and
        resume in the order they found it so, so pipelined publishes of one
        connection are retried in the order they were sent."""
        if exc.code != TOPIC_NOT_FOUND or not self.auto_create_topics:
            raise exc
        creating = self._creating.get(name)
        if creating is not None:
            await asyncio.wait((creating,))
            return creating.result()  # the create's own error, if it failed
        creating = self._creating[name] = asyncio.get_running_loop().create_future()
        try:
            info = await self.backend.create(name)
            log_op("topic_created", topic=name, epoch=info.epoch, via="auto_create", outcome="ok")
        except PubSubError as created:
            if created.code != TOPIC_EXISTS:
                creating.set_exception(created)
                creating.exception()  # retrieved: the waiters re-raise it, no "never retrieved" warning
                raise
        finally:
            del self._creating[name]
            if not creating.done():
                creating.set_result(None)

    def _wanted(self, already: bool, last_n: int | None, since_seq: int | None, epoch: str | None) -> Wanted:
        """What to read from the history, within bounds every store accepts:
        ``last_n`` beyond the history size means the whole history, a
        ``since_seq`` beyond any seq means "beyond the last one"."""
        if already:
            return NOTHING
        if since_seq is not None:
            return Wanted("after", min(since_seq, SEQ_MAX), epoch)
        if last_n:
            return Wanted("last", min(last_n, self.backend.history_size), epoch)
        return NOTHING

    def _plan(
        self, already: bool, snap: Snapshot, last_n: int | None, since_seq: int | None, epoch: str | None
    ) -> tuple[bool | None, tuple[EventSource, int] | None]:
        """``(recovered, (source, replay the seqs after this)) or None)`` for a
        subscribe that read ``snap``: a position to read from, never a copy."""
        if already:
            return (True if since_seq is not None else None), None
        source = snap.source if snap.source is not None else EventList(snap.events)
        if since_seq is not None:
            recovered, after = plan_resume(snap.epoch, snap.last_seq, snap.first_seq, min(since_seq, SEQ_MAX), epoch)
            return recovered, (source, after)
        if last_n:
            return None, (source, max(0, snap.last_seq - min(last_n, self.backend.history_size)))
        return None, None

    async def unsubscribe(self, sub: Subscriber, topic_name: str) -> bool:
        """End ``sub``'s subscription; acked even if there was none (returns False then)."""
        self.hub.check_open()
        if topic_name in sub.topics:
            self.hub.detach(sub, topic_name)
            await self.backend.counted(topic_name)
            return True
        if not await self.backend.exists(topic_name):
            raise topic_not_found(topic_name)
        return False

    # -- who is here (PROTOCOL.md 5.4, 6) ----------------------------------------------

    def watch(self, sub: Subscriber, topic_name: str, on: bool) -> None:
        """``sub``'s subscription to ``topic_name`` gets join/leave notices (``on``) or no longer."""
        if topic_name in sub.topics or not on:
            self.hub.presence.watch(sub, topic_name, on)

    async def presence(self, topic_name: str) -> tuple[list[Entry], bool]:
        """``(entries, truncated)``: the topic's subscribers on every process,
        at most ``PRESENCE_LIMIT`` of them; TOPIC_NOT_FOUND.  The caller has
        already checked the permission."""
        if not await self.backend.exists(topic_name):
            raise topic_not_found(topic_name)
        found = self.hub.presence.members(topic_name)
        for reply in await self.backend.gather("presence", topic_name):
            if len(found) > PRESENCE_LIMIT:
                break
            found.extend(reply[: PRESENCE_LIMIT + 1])
        return found[:PRESENCE_LIMIT], len(found) > PRESENCE_LIMIT

    async def connection_rows(self) -> tuple[list[dict[str, Any]], bool]:
        """``(rows, truncated)``: every process's connections, at most ``CONNECTIONS_LIMIT``."""
        rows = self.hub.presence.rows()
        for reply in await self.backend.gather("connections", ""):
            if len(rows) > CONNECTIONS_LIMIT:
                break
            rows.extend(reply[: CONNECTIONS_LIMIT + 1])
        return rows[:CONNECTIONS_LIMIT], len(rows) > CONNECTIONS_LIMIT

    async def disconnect_user(self, user: str) -> int:
        """Close every connection of ``user`` on every process with 4403; returns how many."""
        closed = self.hub.presence.disconnect_user(user)
        return closed + sum(n for n in await self.backend.gather("disconnect", user) if isinstance(n, int))

    # -- introspection ---------------------------------------------------------------

    async def list_topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]`` over every process, sorted by name."""
        return [{"name": t.name, "subscribers": t.subscribers} for t in await self.backend.topics()]

    async def topic_stats(self) -> dict[str, dict[str, Any]]:
        """Per-topic counters over every process: messages, subscribers, dropped, last_seq, epoch."""
        return {
            t.name: {
                "messages": t.last_seq,  # seqs start at 1 with no gaps
                "subscribers": t.subscribers,
                "dropped": t.dropped,
                "last_seq": t.last_seq,
                "epoch": t.epoch,
                **({} if t.retained_bytes is None else {"retained_bytes": t.retained_bytes}),
            }
            for t in await self.backend.topics()
        }

    async def health(self) -> dict[str, Any]:
        """Uptime, topic and subscription counts (over every process);
        ``status: degraded`` with this process's own counts when the backend's
        store is unreachable."""
        body: dict[str, Any] = {"uptime_sec": int(time.monotonic() - self.hub.started)}
        try:
            totals = await self.backend.totals()
        except PubSubError:
            body.update(status="degraded", topics=self.backend.topic_count(), subscribers=self.hub.subscriptions)
        else:
            body.update(topics=totals.topics, subscribers=totals.subscribers)
            if totals.processes is not None:
                body["processes"] = totals.processes
        body.update(self.backend.identity())
        return body
