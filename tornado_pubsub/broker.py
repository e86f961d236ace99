"""The in-memory broker: topics, subscriptions, history, sequence numbers,
fan-out and counters.  It knows nothing of HTTP or WebSockets.

A connection is represented here by a ``Subscriber``: its bounded outbound
queue, its subscriptions and a ``closer`` callback the transport supplies.
The transport drains the queue; the broker only ever fills it, never waits
on it, so one slow reader cannot slow a publisher or any other reader.

Every operation runs on the IOLoop thread.  The public operations are
coroutines so another backend (e.g. one backed by Redis) can sit behind the
same interface; this one completes them without suspending, which is what
makes "register the subscription, then queue the ack and the replay" atomic
with respect to publishes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
import time
import uuid
from typing import Any, Callable

from . import frames
from .errors import (
    BAD_REQUEST,
    CLOSE_TRY_AGAIN_LATER,
    LIMIT_EXCEEDED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOPIC_EXISTS,
    TOPIC_NOT_FOUND,
    PubSubError,
)
from .history import Event, History
from .logs import log_op
from .outbound import OutboundQueue
from .settings import Settings

#: closer(code, reason, last_frame): the transport closes the connection with
#: ``code``, writing ``last_frame`` first when given.
Closer = Callable[[int, str, "bytes | None"], None]


class Topic:
    """One incarnation of a topic: its epoch, seq counter, history and subscribers."""

    __slots__ = ("name", "epoch", "last_seq", "messages", "dropped", "history", "subscribers", "created")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        self.epoch = secrets.token_hex(8)  # a seq means something only with its epoch
        self.last_seq = 0
        self.messages = 0
        self.dropped = 0
        self.history = History(history_size)
        # Subscriber -> client_id; a dict keeps fan-out in subscription order.
        self.subscribers: dict[Subscriber, str] = {}
        self.created = time.time()


class Subscriber:
    """One connection as the broker sees it: queue, subscriptions, counters."""

    __slots__ = ("id", "remote", "queue", "topics", "closer", "closed", "dropped", "inflight", "_broker")

    def __init__(self, broker: "Broker", conn_id: str, remote: str | None, closer: Closer) -> None:
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


class Broker:
    """In-memory topics, history and fan-out for one process.

    Guarantees, for every subscriber of a topic: each message published after
    its subscription is queued exactly once, in seq order; a replay or resume
    is queued after the subscribe ack and before any live event, with no gap
    or duplicate at the seam.  Under ``drop_oldest`` a full queue loses its
    oldest events (counted); under ``disconnect`` the subscriber is evicted.
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
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.drop_oldest = overflow_policy == "drop_oldest"
        self.max_subscriptions = max_subscriptions_per_connection
        self.max_topics = max_topics
        self.max_connections = max_connections
        self.started = time.monotonic()
        self.draining = False
        self.counters = Counters()
        self.subscriptions = 0
        self._topics: dict[str, Topic] = {}
        self.connections: dict[str, Subscriber] = {}
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Broker":
        """A broker configured from ``Settings``."""
        return cls(
            history_size=settings.history_size,
            queue_size=settings.queue_size,
            queue_max_bytes=settings.queue_max_bytes,
            overflow_policy=settings.overflow_policy,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            max_topics=settings.max_topics,
            max_connections=settings.max_connections,
        )

    # -- connections -------------------------------------------------------

    def _check_open(self) -> None:
        if self.draining:
            raise PubSubError(SHUTTING_DOWN, "the server is shutting down")

    def connect(self, remote: str | None, closer: Closer) -> Subscriber:
        """Admit a connection; raises LIMIT_EXCEEDED or SHUTTING_DOWN."""
        self._check_open()
        if self.max_connections and len(self.connections) >= self.max_connections:
            raise PubSubError(LIMIT_EXCEEDED, f"connection limit of {self.max_connections} reached")
        sub = Subscriber(self, f"c{next(self._ids)}", remote, closer)
        self.connections[sub.id] = sub
        self.counters.connections_total += 1
        return sub

    def disconnect(self, sub: Subscriber) -> int:
        """Forget a connection and every subscription it held; returns how many."""
        sub.closed = True
        removed = len(sub.topics)
        for name in sub.topics:
            topic = self._topics.get(name)
            if topic is not None and topic.subscribers.pop(sub, None) is not None:
                self.subscriptions -= 1
        sub.topics.clear()
        sub.queue.clear()
        self.connections.pop(sub.id, None)
        return removed

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

    # -- topics --------------------------------------------------------------

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise PubSubError(TOPIC_NOT_FOUND, f"topic {name!r} does not exist")
        return topic

    async def create_topic(self, name: str) -> Topic:
        """Create a topic with a fresh epoch; raises TOPIC_EXISTS or LIMIT_EXCEEDED."""
        self._check_open()
        if name in self._topics:
            raise PubSubError(TOPIC_EXISTS, f"topic {name!r} already exists")
        if self.max_topics and len(self._topics) >= self.max_topics:
            raise PubSubError(LIMIT_EXCEEDED, f"topic limit of {self.max_topics} reached")
        topic = self._topics[name] = Topic(name, self.history_size)
        return topic

    async def delete_topic(self, name: str) -> int:
        """Delete a topic, telling each subscriber ``topic_deleted``; returns how many."""
        topic = self._topic(name)
        del self._topics[name]
        notice = frames.info("topic_deleted", topic=name)
        subscribers = list(topic.subscribers)
        topic.subscribers.clear()
        self.subscriptions -= len(subscribers)
        for sub in subscribers:
            sub.topics.pop(name, None)
            sub.send(notice)
        return len(subscribers)

    def has_topic(self, name: str) -> bool:
        """True if ``name`` currently exists."""
        return name in self._topics

    # -- publish / subscribe ---------------------------------------------------

    async def publish(self, topic_name: str, payload: Any, message_id: str | None = None) -> PublishResult:
        """Number, retain and fan out one message; returns once it is in every queue.

        A ``message_id`` still held in the topic's history is not published
        again: the result carries the original seq and ``duplicate=True``.
        """
        self._check_open()
        topic = self._topic(topic_name)
        if message_id is None:
            message_id = str(uuid.uuid4())
        else:
            earlier = topic.history.find(message_id)
            if earlier is not None:
                return PublishResult(topic.name, earlier.id, earlier.seq, True)
        seq = topic.last_seq + 1
        try:
            data = frames.event(topic.name, message_id, payload, frames.timestamp(), seq)
        except (ValueError, TypeError, RecursionError):
            raise PubSubError(BAD_REQUEST, "message.payload cannot be encoded as JSON (nested too deeply?)") from None
        topic.last_seq = seq
        topic.messages += 1
        self.counters.published += 1
        event = Event(seq, message_id, data, topic)
        topic.history.append(event)
        slow = None
        for sub in topic.subscribers:
            if not sub.queue.offer(event):
                slow = slow or []
                slow.append(sub)
        if slow:  # evicting mutates topic.subscribers, so never inside the loop
            for sub in slow:
                self.evict_slow(sub)
        return PublishResult(topic.name, message_id, seq, False)

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
        when a resume cannot be complete, the replayed events.

        Subscribing again to a topic already held is acked and replays nothing.
        A resume without ``epoch`` is taken to mean the current epoch.
        """
        self._check_open()
        topic = self._topic(topic_name)
        already = sub in topic.subscribers
        if not already and len(sub.topics) >= self.max_subscriptions:
            raise PubSubError(
                LIMIT_EXCEEDED, f"subscription limit of {self.max_subscriptions} per connection reached"
            )

        recovered: bool | None = None
        if already:
            replay: list[Event] = []
            recovered = True if since_seq is not None else None
        elif since_seq is not None:
            recovered, replay = self._resume(topic, since_seq, epoch)
        elif last_n:
            replay = topic.history.last(last_n)
        else:
            replay = []

        extra: dict[str, Any] = {"epoch": topic.epoch, "last_seq": topic.last_seq}
        if since_seq is not None:
            extra["recovered"] = recovered
        if not sub.send(frames.ack(topic.name, request_id, **extra)):
            # Evicted: its queue was full of control frames it never read.
            return SubscribeResult(topic.name, topic.epoch, topic.last_seq, 0, recovered, already)
        if recovered is False:
            first = topic.history.first_seq
            sub.send(
                frames.info(
                    "history_gap",
                    topic=topic.name,
                    epoch=topic.epoch,
                    first_seq=first if first is not None else topic.last_seq + 1,
                )
            )
        if not already:
            topic.subscribers[sub] = client_id
            sub.topics[topic.name] = client_id
            self.subscriptions += 1
        for event in replay:
            if not sub.queue.offer(event):
                self.evict_slow(sub)
                break
        return SubscribeResult(topic.name, topic.epoch, topic.last_seq, len(replay), recovered, already)

    @staticmethod
    def _resume(topic: Topic, since_seq: int, epoch: str | None) -> tuple[bool, list[Event]]:
        history = topic.history
        if (epoch is not None and epoch != topic.epoch) or since_seq > topic.last_seq:
            # Another incarnation's position: replay everything we still hold.
            return False, list(history)
        if since_seq == topic.last_seq:
            return True, []
        first = history.first_seq
        complete = first is not None and first <= since_seq + 1
        return complete, history.after(since_seq)

    async def unsubscribe(self, sub: Subscriber, topic_name: str) -> bool:
        """End ``sub``'s subscription; acked even if there was none (returns False then)."""
        self._check_open()
        topic = self._topic(topic_name)
        if topic.subscribers.pop(sub, None) is None:
            return False
        sub.topics.pop(topic_name, None)
        self.subscriptions -= 1
        return True

    async def history_since(self, topic_name: str, seq: int) -> list[Event]:
        """Retained events of a topic with a seq above ``seq``."""
        return self._topic(topic_name).history.after(seq)

    # -- introspection -----------------------------------------------------------

    async def list_topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]`` sorted by name."""
        return [{"name": t.name, "subscribers": len(t.subscribers)} for _, t in sorted(self._topics.items())]

    async def topic_stats(self) -> dict[str, dict[str, Any]]:
        """Per-topic counters: messages, subscribers, dropped, last_seq, epoch."""
        return {
            name: {
                "messages": t.messages,
                "subscribers": len(t.subscribers),
                "dropped": t.dropped,
                "last_seq": t.last_seq,
                "epoch": t.epoch,
            }
            for name, t in sorted(self._topics.items())
        }

    async def health(self) -> dict[str, Any]:
        """Uptime, topic and subscription counts."""
        return {
            "uptime_sec": int(time.monotonic() - self.started),
            "topics": len(self._topics),
            "subscribers": self.subscriptions,
        }

    def gauges(self) -> dict[str, int]:
        """Point-in-time figures for /metrics."""
        return {
            "connections": len(self.connections),
            "subscriptions": self.subscriptions,
            "topics": len(self._topics),
            "queued_frames": sum(s.queue.qsize() for s in self.connections.values()),
        }

    # -- lifecycle ---------------------------------------------------------------

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
