"""The broker with no sockets: topics, seq numbers, history, replay, resume,
overflow policies, limits and draining.  A connection is a Subscriber whose
queue the test inspects directly, close instruction included."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any, Iterator

import pytest

from tornado_pubsub.backends.memory import Broker, Subscriber, Topic
from tornado_pubsub.core.errors import (
    LIMIT_EXCEEDED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOPIC_EXISTS,
    TOPIC_NOT_FOUND,
    PubSubError,
)

from tests.kit.support import queued


class Closes:
    """What the broker asked the transport to do, read from the queue: its
    close instruction and the frame queued just before it."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub

    @property
    def calls(self) -> list[tuple[int, str, dict[str, Any] | None]]:
        close = self.sub.queue.closing
        if close is None:
            return []
        items = self.sub.queue.drain_nowait()
        before = items[: next(i for i, item in enumerate(items) if item is close)]
        last = json.loads(before[-1]) if before and isinstance(before[-1], bytes) else None
        return [(close.disconnect.code, close.disconnect.reason, last)]


def connect(broker: Broker) -> tuple[Subscriber, Closes]:
    sub = broker.connect("127.0.0.1")
    return sub, Closes(sub)


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["seq"] for f in frames if f["type"] == "event"]


async def publish_n(broker: Broker, topic: str, n: int) -> list[int]:
    return [(await broker.publish(topic, {"i": i})).seq for i in range(n)]


async def topic_and_connection(broker: Broker, published: int) -> tuple[Topic, Subscriber]:
    """Topic "t" holding ``published`` messages, and a connection not yet subscribed."""
    topic = await broker.create_topic("t")
    await publish_n(broker, "t", published)
    return topic, connect(broker)[0]


async def subscribed(broker: Broker) -> Subscriber:
    """A connection subscribed to a new topic "t", its ack already taken."""
    await broker.create_topic("t")
    sub, _ = connect(broker)
    await broker.subscribe(sub, "t", "c1")
    queued(sub)
    return sub


@contextlib.contextmanager
def refused(code: str, status: int | None = None) -> Iterator[None]:
    """The block must raise PubSubError with ``code`` (and HTTP ``status``)."""
    with pytest.raises(PubSubError) as err:
        yield
    assert err.value.code == code
    assert status is None or err.value.status == status


async def test_create_topic_new_name_starts_at_seq_zero_with_epoch():
    broker = Broker()
    topic = await broker.create_topic("orders")
    assert topic.last_seq == 0 and len(topic.epoch) >= 8
    assert await broker.list_topics() == [{"name": "orders", "subscribers": 0}]


async def test_create_topic_existing_name_raises_topic_exists():
    broker = Broker()
    await broker.create_topic("orders")
    with refused(TOPIC_EXISTS, 409):
        await broker.create_topic("orders")


async def test_create_topic_after_delete_gets_new_epoch_and_seq():
    broker = Broker()
    first = await broker.create_topic("orders")
    await publish_n(broker, "orders", 3)
    await broker.delete_topic("orders")
    second = await broker.create_topic("orders")
    assert second.epoch != first.epoch
    assert (await broker.publish("orders", 1)).seq == 1


async def test_delete_topic_unknown_raises_topic_not_found():
    with refused(TOPIC_NOT_FOUND, 404):
        await Broker().delete_topic("nope")


async def test_delete_topic_with_subscribers_sends_topic_deleted_and_ends_subscription():
    broker = Broker()
    await broker.create_topic("orders")
    sub, _ = connect(broker)
    await broker.subscribe(sub, "orders", "c1")
    queued(sub)
    assert await broker.delete_topic("orders") == 1
    (notice,) = queued(sub)
    assert notice["type"] == "info" and notice["msg"] == "topic_deleted" and notice["topic"] == "orders"
    assert sub.topics == {} and broker.subscriptions == 0


async def test_publish_successive_messages_numbered_from_one():
    broker = Broker()
    await broker.create_topic("orders")
    await broker.create_topic("other")
    assert await publish_n(broker, "orders", 3) == [1, 2, 3]
    assert await publish_n(broker, "other", 2) == [1, 2]  # seq is per topic


async def test_publish_unknown_topic_raises_topic_not_found():
    with refused(TOPIC_NOT_FOUND):
        await Broker().publish("nope", 1)


async def test_history_beyond_size_evicts_oldest():
    broker = Broker(history_size=3)
    await broker.create_topic("t")
    await publish_n(broker, "t", 5)
    assert [e.seq for e in await broker.history_since("t", 0)] == [3, 4, 5]
    assert [e.seq for e in await broker.history_since("t", 3)] == [4, 5]


async def test_publish_repeated_id_in_history_is_duplicate_with_original_seq():
    broker = Broker()
    sub = await subscribed(broker)
    mid = str(uuid.uuid4())
    first = await broker.publish("t", "a", mid)
    await broker.publish("t", "b")
    again = await broker.publish("t", "a", mid.upper())  # UUIDs compare case-insensitively
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert seqs(queued(sub)) == [1, 2]  # not delivered again
    assert (await broker.topic_stats())["t"]["messages"] == 2 and (await broker.publish("t", "c")).seq == 3


async def test_publish_repeated_id_after_eviction_is_published_again():
    broker = Broker(history_size=2)
    await broker.create_topic("t")
    mid = str(uuid.uuid4())
    await broker.publish("t", "a", mid)
    await publish_n(broker, "t", 2)  # evicts seq 1
    again = await broker.publish("t", "a", mid)
    assert (again.seq, again.duplicate) == (4, False)


async def test_publish_history_size_zero_keeps_nothing_and_never_dedups():
    broker = Broker(history_size=0)
    await broker.create_topic("t")
    mid = str(uuid.uuid4())
    await broker.publish("t", "a", mid)
    assert (await broker.publish("t", "a", mid)).duplicate is False
    assert await broker.history_since("t", 0) == []


@pytest.mark.parametrize("last_n, expected", [(None, []), (0, []), (5, [6, 7, 8, 9, 10]), (50, list(range(3, 11)))])
async def test_subscribe_last_n_queues_ack_then_newest_retained_oldest_first(last_n, expected):
    broker = Broker(history_size=8)
    _, sub = await topic_and_connection(broker, 10)
    result = await broker.subscribe(sub, "t", "c1", last_n=last_n, request_id="r1")
    frames = queued(sub)
    assert frames[0]["type"] == "ack" and frames[0]["request_id"] == "r1" and frames[0]["last_seq"] == 10
    assert "recovered" not in frames[0]
    assert seqs(frames[1:]) == expected and len(frames) == 1 + len(expected)
    assert result.replayed == len(expected)


async def test_subscribe_then_publish_live_event_follows_replay_without_gap():
    broker = Broker()
    _, sub = await topic_and_connection(broker, 3)
    await broker.subscribe(sub, "t", "c1", last_n=2)
    await broker.publish("t", "live")
    assert seqs(queued(sub)) == [2, 3, 4]


async def test_resume_since_seq_within_history_recovered_true_replays_after_it():
    broker = Broker(history_size=10)
    topic, sub = await topic_and_connection(broker, 6)
    await broker.subscribe(sub, "t", "c1", since_seq=3, epoch=topic.epoch)
    frames = queued(sub)
    assert frames[0]["type"] == "ack" and frames[0]["recovered"] is True and frames[0]["epoch"] == topic.epoch
    assert seqs(frames[1:]) == [4, 5, 6] and len(frames) == 4


async def test_resume_since_seq_equal_last_seq_recovered_true_replays_nothing():
    broker = Broker()
    _, sub = await topic_and_connection(broker, 4)
    await broker.subscribe(sub, "t", "c1", since_seq=4)
    (ack,) = queued(sub)
    assert ack["recovered"] is True and ack["last_seq"] == 4


async def test_resume_since_seq_evicted_recovered_false_history_gap_before_replay():
    broker = Broker(history_size=3)
    topic, sub = await topic_and_connection(broker, 8)  # retains 6, 7, 8
    await broker.subscribe(sub, "t", "c1", since_seq=2, epoch=topic.epoch)
    ack, gap, *events = queued(sub)
    assert ack["type"] == "ack" and ack["recovered"] is False
    assert gap == {**gap, "type": "info", "msg": "history_gap", "topic": "t", "epoch": topic.epoch, "first_seq": 6}
    assert seqs(events) == [6, 7, 8]


async def test_resume_other_epoch_recovered_false_replays_every_retained():
    broker = Broker(history_size=5)
    topic, sub = await topic_and_connection(broker, 4)
    await broker.subscribe(sub, "t", "c1", since_seq=2, epoch="0123456789abcdef")
    ack, gap, *events = queued(sub)
    assert ack["recovered"] is False and ack["epoch"] == topic.epoch
    assert gap["msg"] == "history_gap" and gap["first_seq"] == 1
    assert seqs(events) == [1, 2, 3, 4]


async def test_resume_since_seq_beyond_last_seq_recovered_false_replays_every_retained():
    broker = Broker()
    _, sub = await topic_and_connection(broker, 2)
    await broker.subscribe(sub, "t", "c1", since_seq=9)
    ack, gap, *events = queued(sub)
    assert ack["recovered"] is False and gap["msg"] == "history_gap" and seqs(events) == [1, 2]


async def test_subscribe_twice_acks_again_without_replay_or_double_delivery():
    broker = Broker()
    _, sub = await topic_and_connection(broker, 2)
    await broker.subscribe(sub, "t", "c1", last_n=2)
    result = await broker.subscribe(sub, "t", "c1", last_n=2)
    await broker.publish("t", "x")
    frames = queued(sub)
    assert result.already and [f["type"] for f in frames] == ["ack", "event", "event", "ack", "event"]
    assert seqs(frames) == [1, 2, 3] and broker.subscriptions == 1


async def test_unsubscribe_not_subscribed_returns_false():
    broker = Broker()
    await broker.create_topic("t")
    sub, _ = connect(broker)
    assert await broker.unsubscribe(sub, "t") is False


async def test_unsubscribe_unknown_topic_raises_topic_not_found():
    sub, _ = connect(broker := Broker())
    with refused(TOPIC_NOT_FOUND):
        await broker.unsubscribe(sub, "nope")


async def test_unsubscribe_subscribed_stops_delivery():
    broker = Broker()
    await broker.create_topic("t")
    sub, _ = connect(broker)
    await broker.subscribe(sub, "t", "c1")
    assert await broker.unsubscribe(sub, "t") is True
    await broker.publish("t", 1)
    assert seqs(queued(sub)) == [] and broker.subscriptions == 0


async def test_disconnect_removes_every_subscription_of_the_connection():
    broker = Broker()
    for name in ("a", "b", "c"):
        await broker.create_topic(name)
    sub, _ = connect(broker)
    other, _ = connect(broker)
    for name in ("a", "b", "c"):
        await broker.subscribe(sub, name, "c1")
    await broker.subscribe(other, "a", "c2")
    assert broker.disconnect(sub) == 3
    assert broker.subscriptions == 1 and sub.id not in broker.connections
    assert {t["name"]: t["subscribers"] for t in await broker.list_topics()} == {"a": 1, "b": 0, "c": 0}


async def test_drop_oldest_full_queue_drops_and_counts_only_events():
    broker = Broker(queue_size=3)
    await broker.create_topic("t")
    sub, closer = connect(broker)
    await broker.subscribe(sub, "t", "c1")  # the ack stays queued: control frames are never dropped
    await publish_n(broker, "t", 5)
    frames = queued(sub)
    assert frames[0]["type"] == "ack" and seqs(frames) == [4, 5]
    assert sub.dropped == 3 and broker.counters.dropped == 3
    assert (await broker.topic_stats())["t"]["dropped"] == 3
    assert closer.calls == []


async def test_drop_oldest_byte_limit_drops_oldest_events():
    broker = Broker(queue_size=1000, queue_max_bytes=600)
    sub = await subscribed(broker)
    for _ in range(10):
        await broker.publish("t", "x" * 200)
    assert sub.queue.nbytes <= 600 and sub.dropped > 0
    assert seqs(queued(sub))[-1] == 10


async def test_drop_oldest_control_only_overflow_disconnects():
    broker = Broker(queue_size=2)
    await broker.create_topic("t")
    sub, closer = connect(broker)
    await broker.subscribe(sub, "t", "c1")
    assert sub.send(b'{"type":"pong"}') is True
    assert sub.send(b'{"type":"pong"}') is False  # a third control frame cannot fit
    ((code, _, last),) = closer.calls
    assert code == 1013 and last["error"]["code"] == SLOW_CONSUMER
    assert sub.closed and broker.subscriptions == 0 and broker.counters.slow_consumers == 1


async def test_disconnect_policy_overflow_evicts_with_slow_consumer_others_unaffected():
    broker = Broker(queue_size=3, overflow_policy="disconnect")
    await broker.create_topic("t")
    slow, slow_closer = connect(broker)
    fast, fast_closer = connect(broker)
    await broker.subscribe(slow, "t", "slow")
    await broker.subscribe(fast, "t", "fast")
    received = []
    for i in range(6):
        result = await broker.publish("t", i)
        assert result.seq == i + 1  # the publisher never notices
        received += seqs(queued(fast))
    ((code, reason, last),) = slow_closer.calls
    assert code == 1013 and last["type"] == "error" and last["error"]["code"] == SLOW_CONSUMER
    assert received == [1, 2, 3, 4, 5, 6] and fast_closer.calls == []
    assert slow.closed and slow.id not in broker.connections
    assert (await broker.list_topics()) == [{"name": "t", "subscribers": 1}]
    assert broker.counters.slow_consumers == 1 and broker.counters.dropped == 0


async def test_subscribe_limit_per_connection_raises_limit_exceeded():
    broker = Broker(max_subscriptions_per_connection=2)
    for name in ("a", "b", "c"):
        await broker.create_topic(name)
    sub, _ = connect(broker)
    await broker.subscribe(sub, "a", "c1")
    await broker.subscribe(sub, "b", "c1")
    await broker.subscribe(sub, "b", "c1")  # re-subscribing is not a new subscription
    with refused(LIMIT_EXCEEDED):
        await broker.subscribe(sub, "c", "c1")


async def test_create_topic_beyond_max_topics_raises_limit_exceeded():
    broker = Broker(max_topics=1)
    await broker.create_topic("a")
    with refused(LIMIT_EXCEEDED):
        await broker.create_topic("b")


async def test_connect_beyond_max_connections_raises_limit_exceeded():
    broker = Broker(max_connections=1)
    connect(broker)
    with refused(LIMIT_EXCEEDED):
        connect(broker)


async def test_begin_shutdown_notifies_everyone_and_refuses_new_operations():
    broker = Broker()
    sub = await subscribed(broker)
    broker.begin_shutdown()
    (notice,) = queued(sub)
    assert notice["type"] == "info" and notice["msg"] == "shutting_down"
    for call in (
        broker.publish("t", 1),
        broker.subscribe(sub, "t", "c1"),
        broker.unsubscribe(sub, "t"),
        broker.create_topic("u"),
    ):
        with refused(SHUTTING_DOWN, 503):
            await call
    with refused(SHUTTING_DOWN):
        connect(broker)
