"""The in-memory backend: topics, history and sequence numbers for one
process, and ``Broker``, the node built on it (the default).

It knows nothing of HTTP or WebSockets, nor of connections: those live in
the hub (``core.hub.Hub``) it hands each event to.  Every operation runs on
the IOLoop thread and completes without suspending, which is what makes
"register the subscription, then queue the ack and the replay" atomic with
respect to publishes.
"""

from __future__ import annotations

import secrets
from typing import Any

from tornado_pubsub.backends.base import Published, Snapshot, TopicFigures, TopicInfo, Totals, Wanted
from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import topic_exists, topic_limit, topic_not_found
from tornado_pubsub.core.history import Event, History, Retention
from tornado_pubsub.core.hub import Counters, Hub, PublishResult, Subscriber, SubscribeResult
from tornado_pubsub.core.node import Node
from tornado_pubsub.settings import Settings

__all__ = [
    "Broker",
    "Counters",
    "MemoryBackend",
    "PublishResult",
    "SubscribeResult",
    "Subscriber",
    "Topic",
]


class Topic:
    """One incarnation of a topic: its epoch, seq counter and history."""

    __slots__ = ("name", "epoch", "last_seq", "history")

    def __init__(self, name: str, history: History) -> None:
        self.name = name
        self.epoch = secrets.token_hex(8)  # a seq means something only with its epoch
        self.last_seq = 0  # also the count of messages published: seqs start at 1, no gaps
        self.history = history


class MemoryBackend:
    """``backends.base.Backend`` for one process: a dict of topics.

    Nothing here suspends or fails for want of a store; a publish is numbered,
    retained and handed to the hub in one step.
    """

    def __init__(
        self,
        *,
        history_size: int = 100,
        max_topics: int = 0,
        history_max_bytes: int = 1048576,
        max_retained_bytes: int = 268435456,
    ) -> None:
        self.history_size = history_size
        self.max_topics = max_topics
        self.history_max_bytes = history_max_bytes
        self.retention = Retention(max_retained_bytes)  # shared by every topic's history (PROTOCOL.md 9)
        self.topics_by_name: dict[str, Topic] = {}
        self._hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        self._hub = hub

    def local_changed(self, name: str) -> None:
        """Nothing to do: the figures are read from the hub when asked."""

    def share(self, msg: str, name: str, entry: dict[str, Any]) -> None:
        """One process: the hub already told its own watchers."""

    async def gather(self, kind: str, arg: str) -> list[Any]:
        """One process: no other answers."""
        return []

    async def start(self) -> None:
        """Nothing to acquire."""

    async def stop(self) -> None:
        """Nothing to release."""

    def topic(self, name: str) -> Topic:
        """The topic ``name``; raises TOPIC_NOT_FOUND."""
        topic = self.topics_by_name.get(name)
        if topic is None:
            raise topic_not_found(name)
        return topic

    async def create(self, name: str) -> TopicInfo:
        if name in self.topics_by_name:
            raise topic_exists(name)
        if self.max_topics and len(self.topics_by_name) >= self.max_topics:
            raise topic_limit(self.max_topics)
        history = History(self.history_size, self.history_max_bytes, self.retention)
        topic = self.topics_by_name[name] = Topic(name, history)
        return TopicInfo(name, topic.epoch)

    async def delete(self, name: str) -> int:
        topic = self.topic(name)
        del self.topics_by_name[name]
        topic.history.clear()  # frees its share of max_retained_bytes
        assert self._hub is not None
        return self._hub.ended(name, topic.epoch)

    async def publish(self, name: str, message_id: str, payload: Any) -> Published:
        topic = self.topic(name)
        earlier = topic.history.find(message_id)
        if earlier is not None:
            return Published(topic.epoch, earlier.seq, True)
        seq = topic.last_seq + 1
        data = frames.event(name, message_id, payload, frames.timestamp(), seq)
        topic.last_seq = seq  # only once the payload rendered: a bad payload takes no seq
        event = Event(seq, message_id, data, None)
        topic.history.append(event)
        hub = self._hub
        assert hub is not None
        if hub.wants(name, topic.epoch, seq):
            hub.deliver(name, topic.epoch, event)
        return Published(topic.epoch, seq, False)

    async def snapshot(self, name: str, wanted: Wanted) -> Snapshot:
        # Nothing is copied: a replay reads the history itself, as its
        # writer has room (PROTOCOL.md 9); the node says from which seq.
        topic = self.topic(name)
        history = topic.history
        return Snapshot(topic.epoch, topic.last_seq, history.first_seq, (), history)

    async def exists(self, name: str) -> bool:
        return name in self.topics_by_name

    async def counted(self, name: str) -> None:
        """The figures are the hub's own: always current."""

    def topic_count(self) -> int:
        return len(self.topics_by_name)

    def knows(self, name: str) -> bool:
        return name in self.topics_by_name

    async def topics(self) -> list[TopicFigures]:
        assert self._hub is not None
        figures = self._hub.local_figures
        rows = []
        for name, topic in sorted(self.topics_by_name.items()):
            subscribers, dropped = figures(name)
            rows.append(TopicFigures(name, topic.epoch, topic.last_seq, subscribers, dropped, topic.history.bytes))
        return rows

    async def totals(self) -> Totals:
        assert self._hub is not None
        return Totals(len(self.topics_by_name), self._hub.subscriptions)

    def identity(self) -> dict[str, Any]:
        return {}

    def history_since(self, name: str, seq: int) -> list[Event]:
        """Retained events of ``name`` with a seq above ``seq``."""
        return self.topic(name).history.after(seq)


_BACKEND_OPTIONS = ("history_size", "max_topics", "history_max_bytes", "max_retained_bytes")


class Broker(Node):
    """The node on the in-memory backend: topics, history and fan-out for one process.

    Takes the backend's ``history_size`` and ``max_topics`` and the node's
    keyword arguments (queue_size, queue_max_bytes, overflow_policy, ...).
    """

    def __init__(self, **options: Any) -> None:
        # MemoryBackend's own keywords (history_size, max_topics, history_max_bytes,
        # max_retained_bytes) go to it; the rest to the node.
        own = {k: options.pop(k) for k in _BACKEND_OPTIONS if k in options}
        super().__init__(MemoryBackend(**own), **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Broker":
        """A broker configured from ``Settings``."""
        return cls(
            history_size=settings.history_size,
            max_topics=settings.max_topics,
            history_max_bytes=settings.history_max_bytes,
            max_retained_bytes=settings.max_retained_bytes,
            **cls.options(settings),
        )

    async def history_since(self, topic_name: str, seq: int) -> list[Event]:
        """Retained events of a topic with a seq above ``seq``."""
        assert isinstance(self.backend, MemoryBackend)
        return self.backend.history_since(topic_name, seq)
