"""The local side every broker backend shares: connections, their queues,
local subscriptions and fan-out into queues.

A backend (in-memory ``broker.Broker``, ``redis_broker.RedisBroker``)
decides *what* is published and in which order; the hub puts each event into
the queues of this process's subscribers, never waiting on any of them.  The
transport drains each queue; one slow reader cannot slow a publisher or any
other reader.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any, Callable, Iterable, Self

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import CLOSE_TRY_AGAIN_LATER, LIMIT_EXCEEDED, SHUTTING_DOWN, SLOW_CONSUMER, PubSubError
from tornado_pubsub.core.history import Event
from tornado_pubsub.logs import log_op
from tornado_pubsub.core.outbound import OutboundQueue
from tornado_pubsub.settings import Settings

#: closer(code, reason, last_frame): the transport closes the connection with
#: ``code``, writing ``last_frame`` first when given.
Closer = Callable[[int, str, "bytes | None"], None]

#: A topic's local subscribers: Subscriber -> client_id, in subscription order.
Subscribers = dict["Subscriber", str]


class Subscriber:
    """One connection as the broker sees it: queue, subscriptions, counters."""

    __slots__ = ("id", "remote", "queue", "topics", "closer", "closed", "dropped", "inflight", "_broker")

    def __init__(self, broker: "Hub", conn_id: str, remote: str | None, closer: Closer) -> None:
        self._broker = broker
        self.id = conn_id
        self.remote = remote
        self.closer = closer
        self.closed = False
        self.dropped = 0
        self.inflight = 0  # frames handed to the socket and not yet flushed
        self.topics: dict[str, str] = {}  # topic name -> client_id
        self.queue = OutboundQueue(
            broker.queue_size, broker.queue_max_bytes, broker.drop_oldest, self._count_drop
        )

    def _count_drop(self, event: Event) -> None:
        self.dropped += 1
        event.owner.dropped += 1
        self._broker.counters.dropped += 1

    def send(self, frame: bytes) -> bool:
        """Queue a control frame for this connection; False if it was evicted instead."""
        if self.closed:
            return False
        if self.queue.offer(frame):
            return True
        self._broker.evict_slow(self)
        return False

    def idle(self) -> bool:
        """True when nothing is queued or being written."""
        return not self.queue.qsize() and not self.inflight

    def client_id(self) -> str | None:
        """A label for logs: the client_id of the first subscription, if any."""
        return next(iter(self.topics.values()), None)

    def __repr__(self) -> str:
        return f"Subscriber({self.id!r}, topics={len(self.topics)})"


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What a publish did: the seq it took (or already had) and whether it was a repeat."""

    topic: str
    id: str
    seq: int
    duplicate: bool

    def log(self, **context: Any) -> None:
        """Emit the one ``publish`` record; ``context`` says who asked and how (conn_id, remote, via, ...)."""
        log_op(
            "publish",
            topic=self.topic,
            message_id=self.id,
            seq=self.seq,
            duplicate=self.duplicate,
            outcome="ok",
            **context,
        )


@dataclasses.dataclass(frozen=True)
class SubscribeResult:
    """What a subscribe did, for the caller's log record."""

    topic: str
    epoch: str
    last_seq: int
    replayed: int
    recovered: bool | None
    already: bool


@dataclasses.dataclass
class Counters:
    """Process-wide totals behind /metrics (monotonic, never reset)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    slow_consumers: int = 0
    connections_total: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)

    def error(self, code: str) -> None:
        """Count one error reply with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1


def plan_resume(epoch: str, last_seq: int, first_seq: int | None, since_seq: int, given_epoch: str | None) -> tuple[bool, int]:
    """Decide a ``since_seq`` resume: ``(recovered, replay every retained seq above this)``.

    Another incarnation's position (other epoch, or a seq the topic never
    reached) replays everything retained; a resume without an epoch is taken
    to mean the current one.
    """
    if (given_epoch is not None and given_epoch != epoch) or since_seq > last_seq:
        return False, 0
    if since_seq == last_seq:
        return True, last_seq
    return first_seq is not None and first_seq <= since_seq + 1, since_seq


class Hub:
    """Connections and local fan-out for one process; backends subclass it.

    A subclass supplies ``_subscribers_of(name)`` (the local subscribers of a
    topic, or None) and ``topic_count()``, and implements the public
    coroutines (create_topic, delete_topic, publish, subscribe, unsubscribe,
    list_topics, topic_stats, health).
    """

    def __init__(
        self,
        *,
        history_size: int = 100,
        queue_size: int = 1000,
        queue_max_bytes: int = 1048576,
        overflow_policy: str = "drop_oldest",
        max_subscriptions_per_connection: int = 1000,
        max_topics: int = 0,
        max_connections: int = 0,
    ) -> None:
        self.history_size = history_size
        self.max_topics = max_topics
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.drop_oldest = overflow_policy == "drop_oldest"
        self.max_subscriptions = max_subscriptions_per_connection
        self.max_connections = max_connections
        self.started = time.monotonic()
        self.draining = False
        self.counters = Counters()
        self.subscriptions = 0
        self.connections: dict[str, Subscriber] = {}
        self._ids = itertools.count(1)
        #: Prepended to every conn_id: a worker's own (``w2-``) under ``--processes``,
        #: so ids stay unique across the workers sharing a port and a Redis.
        self.id_prefix = ""

    @staticmethod
    def options(settings: Settings) -> dict[str, Any]:
        """The constructor arguments every backend takes, from ``settings``."""
        return {
            "history_size": settings.history_size,
            "queue_size": settings.queue_size,
            "queue_max_bytes": settings.queue_max_bytes,
            "overflow_policy": settings.overflow_policy,
            "max_subscriptions_per_connection": settings.max_subscriptions_per_connection,
            "max_topics": settings.max_topics,
            "max_connections": settings.max_connections,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """A broker configured from ``Settings``."""
        return cls(**cls.options(settings))

    # -- backend hooks -----------------------------------------------------------

    def _subscribers_of(self, name: str) -> Subscribers | None:
        raise NotImplementedError

    def _subscriptions_changed(self, name: str) -> None:
        """Called after a local subscription to ``name`` was added or removed."""

    def topic_count(self) -> int:
        """Topics this process knows of (for /metrics)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect to whatever the backend needs (nothing for the in-memory one)."""

    async def stop(self) -> None:
        """Release what ``start`` acquired."""

    # -- connections -------------------------------------------------------

    def _check_open(self) -> None:
        if self.draining:
            raise PubSubError(SHUTTING_DOWN, "the server is shutting down")

    def check_admission(self) -> None:
        """Raise SHUTTING_DOWN or LIMIT_EXCEEDED if a new connection would be refused
        (the transport asks before its handshake, ``connect`` again after it)."""
        self._check_open()
        if self.max_connections and len(self.connections) >= self.max_connections:
            raise PubSubError(LIMIT_EXCEEDED, f"connection limit of {self.max_connections} reached")

    def connect(self, remote: str | None, closer: Closer) -> Subscriber:
        """Admit a connection; raises LIMIT_EXCEEDED or SHUTTING_DOWN."""
        self.check_admission()
        sub = Subscriber(self, f"{self.id_prefix}c{next(self._ids)}", remote, closer)
        self.connections[sub.id] = sub
        self.counters.connections_total += 1
        return sub

    def disconnect(self, sub: Subscriber) -> int:
        """Forget a connection and every subscription it held; returns how many."""
        sub.closed = True
        names = list(sub.topics)
        for name in names:
            self._detach(sub, name)
        sub.queue.clear()
        self.connections.pop(sub.id, None)
        return len(names)

    def evict_slow(self, sub: Subscriber) -> None:
        """Disconnect a consumer whose queue overflowed: SLOW_CONSUMER, then close 1013."""
        if sub.closed:
            return
        client_id = sub.client_id()
        topics = list(sub.topics)
        self.disconnect(sub)
        self.counters.slow_consumers += 1
        self.counters.error(SLOW_CONSUMER)
        log_op(
            "slow_consumer",
            logging.WARNING,
            conn_id=sub.id,
            client_id=client_id,
            remote=sub.remote,
            topics=topics,
            outcome="disconnected",
        )
        last = frames.error(SLOW_CONSUMER, "outbound queue overflowed; disconnecting")
        sub.closer(CLOSE_TRY_AGAIN_LATER, "slow consumer", last)

    # -- local subscriptions and fan-out -------------------------------------------

    def _check_room(self, sub: Subscriber, name: str) -> None:
        if name not in sub.topics and len(sub.topics) >= self.max_subscriptions:
            raise PubSubError(
                LIMIT_EXCEEDED, f"subscription limit of {self.max_subscriptions} per connection reached"
            )

    def _detach(self, sub: Subscriber, name: str) -> bool:
        """End ``sub``'s local subscription to ``name``; False if it had none."""
        sub.topics.pop(name, None)
        subscribers = self._subscribers_of(name)
        if subscribers is None or subscribers.pop(sub, None) is None:
            return False
        self.subscriptions -= 1
        self._subscriptions_changed(name)
        return True

    def fan_out(self, subscribers: Subscribers, event: Event) -> None:
        """Put ``event`` in every subscriber's queue, evicting those that overflow."""
        slow = None
        size = len(event.data)
        for sub in subscribers:
            if not sub.queue.offer(event, size):
                slow = slow or []
                slow.append(sub)
        if slow:  # evicting mutates ``subscribers``, so never inside the loop
            for sub in slow:
                self.evict_slow(sub)

    def end_topic(self, name: str, subscribers: Subscribers) -> int:
        """Tell each local subscriber ``topic_deleted`` and drop them; returns how many."""
        notice = frames.info("topic_deleted", topic=name)
        ended = list(subscribers)
        subscribers.clear()
        self.subscriptions -= len(ended)
        for sub in ended:
            sub.topics.pop(name, None)
            sub.send(notice)
        if ended:
            self._subscriptions_changed(name)
        return len(ended)

    def admit(
        self,
        sub: Subscriber,
        subscribers: Subscribers,
        name: str,
        client_id: str,
        *,
        epoch: str,
        last_seq: int,
        first_seq: int | None,
        replay: Iterable[Event],
        recovered: bool | None,
        request_id: str | None,
    ) -> SubscribeResult:
        """Queue, in order, the subscribe ack, a ``history_gap`` notice when
        ``recovered`` is False, and ``replay``; then register the subscription.

        The caller guarantees that no live event of the topic is fanned out
        between reading ``replay`` and this call, so the seam has no gap and
        no duplicate.
        """
        already = sub in subscribers
        extra: dict[str, Any] = {"epoch": epoch, "last_seq": last_seq}
        if recovered is not None:
            extra["recovered"] = recovered
        if not sub.send(frames.ack(name, request_id, **extra)):
            # Evicted: its queue was full of control frames it never read.
            return SubscribeResult(name, epoch, last_seq, 0, recovered, already)
        if recovered is False:
            sub.send(self.gap_notice(name, epoch, first_seq, last_seq))
        if not already:
            subscribers[sub] = client_id
            sub.topics[name] = client_id
            self.subscriptions += 1
            self._subscriptions_changed(name)
        replayed = 0
        for event in replay:  # the whole replay, whatever the queue's bounds
            sub.queue.offer_replay(event)
            replayed += 1
        return SubscribeResult(name, epoch, last_seq, replayed, recovered, already)

    @staticmethod
    def gap_notice(name: str, epoch: str, first_seq: int | None, last_seq: int) -> bytes:
        """``info history_gap``: events before ``first_seq`` are gone."""
        first = first_seq if first_seq is not None else last_seq + 1
        return frames.info("history_gap", topic=name, epoch=epoch, first_seq=first)

    # -- introspection and lifecycle -----------------------------------------------

    def gauges(self) -> dict[str, int]:
        """Point-in-time figures for /metrics."""
        return {
            "connections": len(self.connections),
            "subscriptions": self.subscriptions,
            "topics": self.topic_count(),
            "queued_frames": sum(s.queue.qsize() for s in self.connections.values()),
        }

    def begin_shutdown(self) -> None:
        """Refuse new operations and tell every connection ``shutting_down``."""
        if self.draining:
            return
        self.draining = True
        notice = frames.info("shutting_down")
        for sub in list(self.connections.values()):
            sub.send(notice)

    def idle(self) -> bool:
        """True when every connection's queue is flushed."""
        return all(sub.idle() for sub in self.connections.values())

    def close_all(self, code: int, reason: str) -> None:
        """Ask the transport to close every connection with ``code``."""
        for sub in list(self.connections.values()):
            sub.closer(code, reason, None)
