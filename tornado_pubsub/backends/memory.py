"""The in-memory broker: topics, history, sequence numbers and counters for
one process.  It knows nothing of HTTP or WebSockets; connections, their
queues and fan-out into them live in ``hub.Hub``, shared with the Redis
backend.

Every operation runs on the IOLoop thread.  The public operations are
coroutines so another backend (``redis_broker.RedisBroker``) can sit behind
the same interface; this one completes them without suspending, which is what
makes "register the subscription, then queue the ack and the replay" atomic
with respect to publishes.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import topic_exists, topic_limit, topic_not_found
from tornado_pubsub.core.history import Event, History, Retention
from tornado_pubsub.core.hub import Counters, Hub, PublishResult, Subscriber, Subscribers, SubscribeResult, plan_resume
from tornado_pubsub.settings import Settings

__all__ = ["Broker", "Counters", "PublishResult", "SubscribeResult", "Subscriber", "Topic"]


class Topic:
    """One incarnation of a topic: its epoch, seq counter, history and subscribers."""

    __slots__ = ("name", "epoch", "last_seq", "dropped", "history", "subscribers")

    def __init__(self, name: str, history: History) -> None:
        self.name = name
        self.epoch = secrets.token_hex(8)  # a seq means something only with its epoch
        self.last_seq = 0  # also the count of messages published: seqs start at 1, no gaps
        self.dropped = 0
        self.history = history
        # Subscriber -> client_id; a dict keeps fan-out in subscription order.
        self.subscribers: Subscribers = {}


class Broker(Hub):
    """In-memory topics, history and fan-out for one process.

    Guarantees, for every subscriber of a topic: each message published after
    its subscription is queued exactly once, in seq order; a replay or resume
    is queued after the subscribe ack and before any live event, with no gap
    or duplicate at the seam.  Under ``drop_oldest`` a full queue loses its
    oldest events (counted); under ``disconnect`` the subscriber is evicted.
    """

    def __init__(self, *, history_max_bytes: int = 1048576, max_retained_bytes: int = 268435456, **options: Any) -> None:
        """Takes ``Hub``'s keyword arguments (history_size, queue_size, ...) and
        the history byte bounds (see ``history.Retention``)."""
        super().__init__(**options)
        self._topics: dict[str, Topic] = {}
        self.history_max_bytes = history_max_bytes
        self.retention = Retention(max_retained_bytes)  # shared by every topic's history

    @staticmethod
    def options(settings: Settings) -> dict[str, Any]:
        """``Hub.options`` plus the history byte bounds."""
        return Hub.options(settings) | {
            "history_max_bytes": settings.history_max_bytes,
            "max_retained_bytes": settings.max_retained_bytes,
        }

    def gauges(self) -> dict[str, int]:
        """``Hub.gauges`` plus ``retained_bytes``, the history held across all topics."""
        return super().gauges() | {"retained_bytes": self.retention.bytes}

    def _subscribers_of(self, name: str) -> Subscribers | None:
        topic = self._topics.get(name)
        return None if topic is None else topic.subscribers

    def topic_count(self) -> int:
        return len(self._topics)

    # -- topics --------------------------------------------------------------

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise topic_not_found(name)
        return topic

    async def create_topic(self, name: str) -> Topic:
        """Create a topic with a fresh epoch; raises TOPIC_EXISTS or LIMIT_EXCEEDED."""
        self._check_open()
        if name in self._topics:
            raise topic_exists(name)
        if self.max_topics and len(self._topics) >= self.max_topics:
            raise topic_limit(self.max_topics)
        history = History(self.history_size, self.history_max_bytes, self.retention)
        topic = self._topics[name] = Topic(name, history)
        return topic

    async def delete_topic(self, name: str) -> int:
        """Delete a topic, telling each subscriber ``topic_deleted``; returns how many."""
        topic = self._topic(name)
        del self._topics[name]
        topic.history.clear()  # frees its share of max_retained_bytes
        return self.end_topic(name, topic.subscribers)

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
        data = frames.event(topic.name, message_id, payload, frames.timestamp(), seq)
        topic.last_seq = seq
        self.counters.published += 1
        event = Event(seq, message_id, data, topic)
        topic.history.append(event)
        self.fan_out(topic.subscribers, event)
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
        self._check_room(sub, topic.name)
        history = topic.history
        recovered: bool | None = None
        replay: list[Event] = []
        if sub in topic.subscribers:
            recovered = True if since_seq is not None else None
        elif since_seq is not None:
            recovered, after = plan_resume(topic.epoch, topic.last_seq, history.first_seq, since_seq, epoch)
            replay = history.after(after)
        elif last_n:
            replay = history.last(last_n)
        return self.admit(
            sub,
            topic.subscribers,
            topic.name,
            client_id,
            epoch=topic.epoch,
            last_seq=topic.last_seq,
            first_seq=history.first_seq,
            replay=replay,
            recovered=recovered,
            request_id=request_id,
        )

    async def unsubscribe(self, sub: Subscriber, topic_name: str) -> bool:
        """End ``sub``'s subscription; acked even if there was none (returns False then)."""
        self._check_open()
        self._topic(topic_name)
        return self._detach(sub, topic_name)

    async def history_since(self, topic_name: str, seq: int) -> list[Event]:
        """Retained events of a topic with a seq above ``seq``."""
        return self._topic(topic_name).history.after(seq)

    # -- introspection -----------------------------------------------------------

    async def list_topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]`` sorted by name."""
        return [{"name": t.name, "subscribers": len(t.subscribers)} for _, t in sorted(self._topics.items())]

    async def topic_stats(self) -> dict[str, dict[str, Any]]:
        """Per-topic counters: messages, subscribers, dropped, last_seq, epoch, retained_bytes."""
        return {
            name: {
                "messages": t.last_seq,
                "subscribers": len(t.subscribers),
                "dropped": t.dropped,
                "last_seq": t.last_seq,
                "epoch": t.epoch,
                "retained_bytes": t.history.bytes,
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
