"""A replay or resume arrives whole, whatever the queue's bounds: the contract
promises the last N (or everything after S) with no gap, and the bounds are
there for live traffic a slow reader has not taken yet."""

from __future__ import annotations

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.outbound import Replay

from tests.kit.clients import new_id


async def publish_many(ws_connect, topic: str, count: int, payload: str = "x") -> None:
    pub = await ws_connect()
    for _ in range(count):
        reply = await pub.publish(topic, payload)
        assert reply["type"] == "ack", reply


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param("drop_oldest", marks=pytest.mark.pubsub(queue_size=10)),
        pytest.param("disconnect", marks=pytest.mark.pubsub(queue_size=10, overflow_policy="disconnect")),
    ],
)
async def test_last_n_larger_than_queue_size_replays_every_message(rest, ws_connect, policy):
    await rest.create("r")
    await publish_many(ws_connect, "r", 50)
    sub = await ws_connect()
    ack = await sub.subscribe("r", last_n=50, request_id="s")
    assert ack["type"] == "ack" and ack["request_id"] == "s"
    assert [e["seq"] for e in await sub.events(50)] == list(range(1, 51))
    assert (await sub.request({"type": "ping", "request_id": "alive"}))["type"] == "pong"  # still connected
    assert (await rest.call("GET", "/stats"))[1]["topics"]["r"]["dropped"] == 0


@pytest.mark.pubsub(history_max_bytes=8 << 20)  # the default 1 MiB per topic would keep ~17 of them
async def test_resume_larger_than_queue_max_bytes_is_recovered_whole(rest, ws_connect):
    # 100 retained messages of ~60 KB: about 6 MB, six times queue_max_bytes.
    await rest.create("big")
    await publish_many(ws_connect, "big", 100, "p" * 60000)
    epoch = (await rest.call("GET", "/stats"))[1]["topics"]["big"]["epoch"]
    sub = await ws_connect()
    ack = await sub.subscribe("big", since_seq=0, epoch=epoch)
    assert ack["recovered"] is True
    events = await sub.events(100)
    assert [e["seq"] for e in events] == list(range(1, 101))
    assert all(len(e["message"]["payload"]) == 60000 for e in events)
    assert (await rest.call("GET", "/stats"))[1]["topics"]["big"]["dropped"] == 0


async def test_live_overflow_behind_a_replay_drops_live_events_only():
    broker = Broker(history_size=40, queue_size=5)
    sub = broker.connect("test")
    await broker.create_topic("t")
    for n in range(20):
        await broker.publish("t", n, new_id())
    await broker.subscribe(sub, "t", "c", last_n=20)
    for n in range(20, 30):  # nobody reads: live events overflow a 5-frame queue
        await broker.publish("t", n, new_id())
    parked = [i for i in sub.queue._queue if isinstance(i, Replay)]
    assert len(parked) == 1 and (parked[0].after, parked[0].upto) == (0, 20)  # a position, not 20 copies
    items = sub.queue.drain_nowait()
    events = [i.seq for i in items if not isinstance(i, bytes)]
    # The whole replay in order, then the live events: the unread ack holds
    # one of the five bounded slots, the newest four live events fill the
    # rest, the six before them were dropped.
    assert events == list(range(1, 21)) + list(range(27, 31))
    assert sub.dropped == 6 and sub.queue.closing is None
