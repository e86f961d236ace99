"""History bounded in bytes: per topic (``history_max_bytes``) and across all
topics (``max_retained_bytes``), oldest evicted first, never failing a publish.
Broker-level, no sockets (the RSS test over a real socket is in
test_memory_bounds.py)."""

from __future__ import annotations

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.history import EVENT_OVERHEAD, Event, History, Retention, retained_cost

from tests.kit.clients import new_id
from tests.kit.support import queued

FRAME = 1000  # bytes of payload per message in these tests


def cost(broker: Broker, topic: str) -> int:
    """What one message of FRAME bytes published to ``topic`` is counted as."""
    return retained_cost(broker.backend.topics_by_name[topic].history.last(1)[0])


async def fill(broker: Broker, topic: str, count: int) -> None:
    for _ in range(count):
        await broker.publish(topic, "x" * FRAME, new_id())


def retained_seqs(broker: Broker, topic: str) -> list[int]:
    return [e.seq for e in broker.backend.topics_by_name[topic].history.after(0)]


async def test_history_max_bytes_keeps_the_newest_that_fit():
    broker = Broker(history_size=100, history_max_bytes=10_000)
    await broker.create_topic("t")
    await fill(broker, "t", 30)
    one = cost(broker, "t")
    kept = 10_000 // one
    assert retained_seqs(broker, "t") == list(range(31 - kept, 31))
    assert (await broker.topic_stats())["t"]["retained_bytes"] == kept * one <= 10_000


async def test_max_retained_bytes_evicts_the_oldest_across_topics_first():
    broker = Broker(history_size=100, max_retained_bytes=20_000)
    for name in ("a", "b", "c"):
        await broker.create_topic(name)
    await fill(broker, "a", 5)  # the oldest
    await fill(broker, "b", 5)
    one = cost(broker, "a")
    budget = 20_000 // one  # messages that fit in total
    await fill(broker, "c", budget - 5)  # pushes out exactly the five of "a"
    assert retained_seqs(broker, "a") == []
    assert retained_seqs(broker, "b") == [1, 2, 3, 4, 5]
    assert len(retained_seqs(broker, "c")) == budget - 5
    await fill(broker, "c", 2)  # now the two oldest of "b" go, not those of "c"
    assert retained_seqs(broker, "b") == [3, 4, 5]
    stats = await broker.topic_stats()
    assert sum(s["retained_bytes"] for s in stats.values()) == broker.backend.retention.bytes <= 20_000
    assert broker.gauges()["retained_bytes"] == broker.backend.retention.bytes


async def test_resume_from_before_an_evicted_message_reports_history_gap():
    broker = Broker(history_size=100, max_retained_bytes=8 * (FRAME + EVENT_OVERHEAD + 200))
    await broker.create_topic("old")
    await broker.create_topic("new")
    await fill(broker, "old", 3)
    await fill(broker, "new", 20)  # evicts everything "old" held
    sub = broker.connect("test")
    epoch = broker.backend.topics_by_name["old"].epoch
    await broker.subscribe(sub, "old", "c", since_seq=1, epoch=epoch)
    frames = queued(sub)
    assert frames[0]["type"] == "ack" and frames[0]["recovered"] is False
    assert frames[1]["msg"] == "history_gap" and frames[1]["first_seq"] == 4


async def test_deleting_a_topic_frees_its_share():
    broker = Broker(history_size=100)
    await broker.create_topic("t")
    await fill(broker, "t", 10)
    assert broker.backend.retention.bytes > 0
    await broker.delete_topic("t")
    assert broker.backend.retention.bytes == 0


async def test_a_message_larger_than_the_bound_is_published_but_not_retained():
    broker = Broker(history_size=100, history_max_bytes=FRAME)
    await broker.create_topic("t")
    result = await broker.publish("t", "x" * (2 * FRAME), new_id())
    assert result.seq == 1  # never fails a publish
    assert retained_seqs(broker, "t") == [] and broker.backend.retention.bytes == 0


def test_eviction_unlinks_the_event_so_a_queued_copy_pins_nothing_else():
    retention = Retention(max_bytes=3 * (10 + EVENT_OVERHEAD))
    history = History(size=100, retention=retention)
    events = [Event(n, new_id(), b"x" * 10, None) for n in range(1, 6)]
    for event in events:
        history.append(event)
    assert [e.seq for e in history.after(0)] == [3, 4, 5]
    for evicted in events[:2]:
        assert evicted.home is evicted.older is evicted.newer is None
    assert events[2].older is None and events[2].newer is events[3]


@pytest.mark.parametrize("topics", [1, 50])
async def test_many_topics_stay_within_the_budget(topics):
    # Each publish past the budget evicts about one older message, wherever it is.
    broker = Broker(history_size=100, max_retained_bytes=10 * (FRAME + EVENT_OVERHEAD + 200))
    for n in range(topics):
        await broker.create_topic(f"t{n}")
    for n in range(500):
        await broker.publish(f"t{n % topics}", "x" * FRAME, new_id())
    assert broker.backend.retention.bytes <= broker.backend.retention.max_bytes
    assert broker.backend.retention.evicted >= 490 - 10
