"""Backpressure with a subscriber that really stops reading: a raw socket with a
tiny receive buffer, so the server's writes block on a full TCP window and its
queue overflows.  The publisher and the other subscribers must not notice."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from tests.kit.load import Collector
from tests.kit.rawws import RawWs
from tests.kit.support import metric, wait_subscribers

PAYLOAD = "x" * 16384
# The kernel lets a sender's buffer grow to tcp_wmem's maximum (4 MiB here)
# before a stalled reader blocks it, so publish until the overflow shows.
MAX_MESSAGES = 1500
SMALL_QUEUE = {"queue_size": 5, "queue_max_bytes": 65536}


async def stalled_subscriber(port: int, rest, topic: str) -> RawWs:
    """A subscriber that is acked and then never reads until told to."""
    slow = await RawWs.connect(port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "topic": topic, "client_id": "slow"})
    await wait_subscribers(rest, topic, 1)
    return slow


async def publish_until_overflow(pub, rest, topic: str) -> int:
    """Publish until the stalled subscriber overflowed (dropped or evicted); returns how many."""
    _, stats = await rest.call("GET", "/stats")
    subscribers = stats["topics"][topic]["subscribers"]
    for i in range(MAX_MESSAGES):
        ack = await pub.publish(topic, {"i": i, "pad": PAYLOAD})
        assert ack["type"] == "ack" and ack["seq"] == i + 1, ack
        if i % 25 == 24:
            _, stats = await rest.call("GET", "/stats")
            if stats["topics"][topic]["dropped"] or stats["topics"][topic]["subscribers"] < subscribers:
                return i + 1
    raise AssertionError(f"no overflow after {MAX_MESSAGES} messages")


async def metrics_text(rest) -> str:
    status, text = await rest.call("GET", "/metrics")
    assert status == 200
    return text


async def overflow_beside_fast_reader(rest, ws_connect, port) -> tuple[RawWs, Any, int]:
    """On a new topic "t": a stalled subscriber, a fast one and a publisher that
    publishes until the stalled one overflows; checks the fast one got every
    message in order.  Returns (stalled, publisher, messages published)."""
    await rest.create("t")
    slow = await stalled_subscriber(port, rest, "t")
    fast = await ws_connect()
    await fast.subscribe("t", client_id="fast")
    pub = await ws_connect()
    collector = Collector(fast)
    published = await publish_until_overflow(pub, rest, "t")
    try:
        await collector.wait_for("t", published, 20)
    finally:
        collector.task.cancel()  # not stop(): the fast subscriber stays connected
    assert collector.seqs["t"] == list(range(1, published + 1))
    return slow, pub, published


@pytest.mark.pubsub(overflow_policy="drop_oldest", **SMALL_QUEUE)
async def test_drop_oldest_stalled_reader_loses_oldest_others_get_everything(rest, ws_connect, port):
    slow, pub, published = await overflow_beside_fast_reader(rest, ws_connect, port)
    try:

        _, stats = await rest.call("GET", "/stats")
        dropped = stats["topics"]["t"]["dropped"]
        assert dropped > 0 and stats["topics"]["t"]["subscribers"] == 2  # dropped, not disconnected
        text = await metrics_text(rest)
        assert metric(text, "pubsub_events_dropped_total") == dropped
        assert metric(text, "pubsub_slow_consumer_disconnects_total") == 0
        assert metric(text, "pubsub_queued_frames") <= SMALL_QUEUE["queue_size"] + 1

        # Reading again: seqs still ascend, the gap shows, and the newest arrives.
        frames = [await slow.recv_json() for _ in range(published + 1 - dropped)]
        seqs = [f["seq"] for f in frames if f["type"] == "event"]
        assert frames[0]["type"] == "ack" and seqs == sorted(set(seqs))
        assert len(seqs) == published - dropped and seqs[-1] == published
        assert (await pub.request({"type": "ping"}))["type"] == "pong"
    finally:
        slow.close()


@pytest.mark.pubsub(overflow_policy="disconnect", **SMALL_QUEUE)
async def test_disconnect_stalled_reader_gets_slow_consumer_and_1013_others_get_everything(rest, ws_connect, port):
    slow, pub, published = await overflow_beside_fast_reader(rest, ws_connect, port)
    try:

        await wait_subscribers(rest, "t", 1)  # the slow one was evicted
        text = await metrics_text(rest)
        assert metric(text, "pubsub_slow_consumer_disconnects_total") == 1
        assert metric(text, "pubsub_events_dropped_total") == 0
        assert 'pubsub_errors_total{code="SLOW_CONSUMER"} 1.0' in text

        frames = await slow.recv_until_close(limit=published + 10)
        assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "SLOW_CONSUMER"
        assert slow.close_code == 1013
        seqs = [f["seq"] for f in frames if f["type"] == "event"]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < published  # in order, nothing dropped
    finally:
        slow.close()


@pytest.mark.pubsub(overflow_policy="drop_oldest", **SMALL_QUEUE)
async def test_drop_oldest_queue_full_of_control_frames_disconnects_1013(rest, ws_connect, port):
    # Control frames are never dropped: once replies alone fill the queue of a
    # peer that does not read, it is treated as under the disconnect policy.
    await rest.create("t")
    slow = await stalled_subscriber(port, rest, "t")
    try:
        pub = await ws_connect()
        await publish_until_overflow(pub, rest, "t")  # the socket is now blocked
        for i in range(SMALL_QUEUE["queue_size"] + 2):
            await slow.send_json({"type": "ping", "request_id": f"ping-{i}"})
        await wait_subscribers(rest, "t", 0)
        text = await metrics_text(rest)
        assert metric(text, "pubsub_slow_consumer_disconnects_total") == 1
        frames = await slow.recv_until_close(limit=MAX_MESSAGES + 20)
        assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "SLOW_CONSUMER"
        assert slow.close_code == 1013
        pongs = [f["request_id"] for f in frames if f["type"] == "pong"]
        assert pongs == [f"ping-{i}" for i in range(len(pongs))]  # every pong queued before eviction, in order
        assert (await pub.request({"type": "ping"}))["type"] == "pong"  # the publisher is unaffected
    finally:
        slow.close()


@pytest.mark.pubsub(overflow_policy="disconnect", **SMALL_QUEUE)
async def test_disconnect_evicted_reader_vanishing_leaves_no_error_log(rest, ws_connect, port, caplog):
    # Writes still pending for a peer that then resets its connection fail;
    # that is expected and must not surface as "Task exception was never retrieved".
    await rest.create("t")
    slow = await stalled_subscriber(port, rest, "t")
    pub = await ws_connect()
    with caplog.at_level(logging.WARNING):
        await publish_until_overflow(pub, rest, "t")
        await wait_subscribers(rest, "t", 0)
        slow.reset()  # RST: the server's pending writes fail at once
        assert (await pub.request({"type": "ping"}))["type"] == "pong"
        await asyncio.sleep(0.1)
        gc.collect()  # "never retrieved" is reported when the failed task is collected
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
