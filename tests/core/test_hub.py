"""The local hub both brokers share, exercised through the in-memory broker
with no socket: what lands in a subscriber's queue, in which order."""

from __future__ import annotations

import asyncio

import pytest

from tornado_pubsub.backends.memory import Broker, MemoryBackend
from tornado_pubsub.core.hub import plan_resume
from tornado_pubsub.core.node import Node

from tests.kit.support import queued


@pytest.mark.parametrize(
    ("since_seq", "given_epoch", "first_seq", "expected"),
    [
        (5, "e1", 3, (True, 5)),  # everything after 5 is retained
        (1, "e1", 3, (False, 1)),  # 2 was evicted
        (2, "e1", 3, (True, 2)),  # 3 is the oldest retained and the next wanted
        (8, "e1", 3, (True, 8)),  # nothing new
        (9, "e1", 3, (False, 0)),  # a seq this incarnation never reached
        (5, "e0", 3, (False, 0)),  # another incarnation: replay everything
        (5, None, 3, (True, 5)),  # no epoch: taken as the current one
        (5, "e1", None, (False, 5)),  # history empty (size 0) yet messages after 5
    ],
)
def test_plan_resume(since_seq, given_epoch, first_seq, expected):
    assert plan_resume("e1", 8, first_seq, since_seq, given_epoch) == expected


async def test_subscribe_queues_ack_then_replay_then_live_events():
    broker = Broker(history_size=4)
    await broker.create_topic("t")
    for n in range(5):
        await broker.publish("t", n)
    sub = broker.connect("127.0.0.1")
    await broker.subscribe(sub, "t", "c", last_n=3, request_id="r")
    await broker.publish("t", 5)
    frames = queued(sub)
    assert frames[0]["type"] == "ack" and frames[0]["request_id"] == "r" and frames[0]["last_seq"] == 5
    assert [f["seq"] for f in frames[1:]] == [3, 4, 5, 6]


async def test_replay_evicted_before_it_is_read_goes_on_after_a_history_gap():
    # The replay is a position in the history, not a copy: what the history
    # evicts before the writer gets there is announced, then skipped.
    broker = Broker(history_size=3)
    topic = await broker.create_topic("t")
    for n in range(5):
        await broker.publish("t", n)
    sub = broker.connect("127.0.0.1")
    await broker.subscribe(sub, "t", "c", last_n=10)  # seqs 3, 4, 5
    await broker.publish("t", 5)  # evicts seq 3 before anyone read it
    frames = queued(sub)
    gap = {k: v for k, v in frames[1].items() if k != "ts"}
    assert gap == {"type": "info", "msg": "history_gap", "topic": "t", "epoch": topic.epoch, "first_seq": 4}
    assert [f["seq"] for f in frames[2:]] == [4, 5, 6]


async def test_resume_with_evicted_history_sends_history_gap_before_the_replay():
    broker = Broker(history_size=2)
    topic = await broker.create_topic("t")
    for n in range(4):
        await broker.publish("t", n)
    sub = broker.connect(None)
    result = await broker.subscribe(sub, "t", "c", since_seq=1, epoch=topic.epoch)
    assert result.recovered is False and result.replayed == 2
    ack, gap, *events = queued(sub)
    assert ack["recovered"] is False
    assert (gap["msg"], gap["first_seq"], gap["epoch"]) == ("history_gap", 3, topic.epoch)
    assert [e["seq"] for e in events] == [3, 4]


async def test_delete_and_disconnect_release_every_subscription():
    broker = Broker()
    await broker.create_topic("a")
    await broker.create_topic("b")
    one = broker.connect(None)
    two = broker.connect(None)
    for sub in (one, two):
        await broker.subscribe(sub, "a", "c")
        await broker.subscribe(sub, "b", "c")
    assert broker.subscriptions == 4
    queued(one)
    assert await broker.delete_topic("a") == 2
    assert [f["msg"] for f in queued(one)] == ["topic_deleted"]
    assert broker.subscriptions == 2 and list(one.topics) == ["b"]
    assert broker.disconnect(two) == 1
    assert broker.subscriptions == 1 and two.id not in broker.connections


class SlowMemory(MemoryBackend):
    """The memory backend with a snapshot that suspends after its read, as a
    backend on a network store does: the node's seam must hold anyway."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.read = asyncio.Event()
        self.answer = asyncio.Event()

    async def snapshot(self, name, wanted):
        snap = await super().snapshot(name, wanted)
        self.read.set()
        await self.answer.wait()
        return snap


async def subscribe_during(backend: SlowMemory, node: Node, meanwhile):
    """Subscribe a new connection to "t" with last_n=10, run ``meanwhile()``
    while the backend is between its read and its answer: (the connection, its queued frames)."""
    sub = node.connect(None)
    joining = asyncio.ensure_future(node.subscribe(sub, "t", "c", last_n=10))
    await asyncio.wait_for(backend.read.wait(), 5)
    await meanwhile()
    backend.answer.set()
    await asyncio.wait_for(joining, 5)
    return sub, queued(sub)


async def test_events_published_while_a_subscribe_reads_follow_its_replay_once_in_order():
    backend = SlowMemory(history_size=10)
    node = Node(backend)
    await node.create_topic("t")
    for n in range(3):
        await node.publish("t", n)

    async def publish_two():
        for n in range(3, 5):
            await node.publish("t", n)

    sub, frames = await subscribe_during(backend, node, publish_two)
    await node.publish("t", 5)
    ack, *events = frames + queued(sub)
    assert ack["type"] == "ack" and ack["last_seq"] == 3
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]


async def test_a_topic_deleted_while_a_subscribe_reads_ends_the_new_subscription():
    backend = SlowMemory(history_size=10)
    node = Node(backend)
    await node.create_topic("t")
    await node.publish("t", 0)

    async def delete():
        assert await node.delete_topic("t") == 0  # nobody is subscribed yet

    sub, frames = await subscribe_during(backend, node, delete)
    # The replay reads the history the deletion freed: nothing of it is sent.
    assert [f["type"] for f in frames] == ["ack", "info"]
    assert frames[-1]["msg"] == "topic_deleted"
    assert sub.topics == {} and node.subscriptions == 0
