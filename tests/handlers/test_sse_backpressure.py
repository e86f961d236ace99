"""SSE under backpressure: a stream whose reader stops reading (a raw socket
with a tiny receive buffer) costs the queue's bounds and gets the overflow
policy a WebSocket subscriber gets; the publisher and others do not notice."""

from __future__ import annotations

import pytest

from tests.handlers.test_backpressure import SMALL_QUEUE, metric, metrics_text, publish_until_overflow
from tests.kit.support import wait_subscribers


async def stalled_stream(sse_connect, rest, topic: str):
    """An SSE stream that started (headers read) and is then not read until told to."""
    stream = await sse_connect(f"/topics/{topic}/events", rcvbuf=4096)
    assert stream.status == 200
    await wait_subscribers(rest, topic, 1)
    return stream


@pytest.mark.pubsub(overflow_policy="disconnect", **SMALL_QUEUE)
async def test_disconnect_policy_ends_a_stalled_stream_with_slow_consumer_error(rest, ws_connect, sse_connect):
    await rest.create("t")
    slow = await stalled_stream(sse_connect, rest, "t")
    pub = await ws_connect()
    published = await publish_until_overflow(pub, rest, "t")
    await wait_subscribers(rest, "t", 0)  # evicted
    text = await metrics_text(rest)
    assert metric(text, "pubsub_slow_consumer_disconnects_total") == 1

    blocks = await slow.until_end()
    events = [b.frame()["seq"] for b in blocks if b.get("event") == "event"]
    assert events == list(range(1, len(events) + 1)) and len(events) < published  # in order, nothing dropped
    last = blocks[-1]
    assert last["event"] == "error" and last.frame()["error"]["code"] == "SLOW_CONSUMER"
    assert (await pub.request({"type": "ping"}))["type"] == "pong"  # the publisher is unaffected


@pytest.mark.pubsub(overflow_policy="drop_oldest", **SMALL_QUEUE)
async def test_drop_oldest_stalled_stream_is_bounded_by_the_queue_and_loses_oldest(rest, ws_connect, sse_connect, app):
    await rest.create("t")
    slow = await stalled_stream(sse_connect, rest, "t")
    pub = await ws_connect()
    published = await publish_until_overflow(pub, rest, "t")
    (sub,) = [c for c in app.pubsub.broker.connections.values() if c.topics]  # the stream (the publisher holds none)
    # What the server holds for the stalled reader: at most the queue's bounds.
    assert sub.queue.nbytes <= SMALL_QUEUE["queue_max_bytes"]
    assert sub.queue.qsize() <= SMALL_QUEUE["queue_size"]
    text = await metrics_text(rest)
    dropped = metric(text, "pubsub_events_dropped_total")
    assert dropped > 0 and metric(text, "pubsub_slow_consumer_disconnects_total") == 0
    await wait_subscribers(rest, "t", 1)  # dropped from, not disconnected

    # Reading again: seqs still ascend, the gap shows, and the newest arrives.
    seqs: list[int] = []
    while not seqs or seqs[-1] < published:
        block = await slow.next("event")
        seqs.append(block.frame()["seq"])
    assert seqs == sorted(set(seqs)) and len(seqs) == published - dropped


@pytest.mark.pubsub(heartbeat_interval=0.2, heartbeat_timeout=0.5)
async def test_stream_whose_writes_do_not_go_out_for_heartbeat_timeout_is_dropped(rest, ws_connect, sse_connect, app):
    await rest.create("t")
    slow = await stalled_stream(sse_connect, rest, "t")
    pub = await ws_connect()
    await publish_until_overflow(pub, rest, "t")  # the default queue drops; the socket stays blocked
    await wait_subscribers(rest, "t", 0, timeout=10)
    assert not [c for c in app.pubsub.broker.connections.values() if c.topics]
    slow.close()


@pytest.mark.pubsub(heartbeat_interval=0.1, heartbeat_timeout=0.3)
async def test_idle_stream_that_reads_outlives_many_heartbeat_timeouts(rest, sse_connect):
    await rest.create("t")
    stream = await sse_connect("/topics/t/events")
    pings = 0
    while pings < 12:  # about four heartbeat timeouts of nothing but pings
        block = await stream.block()
        assert block is not None, "the server dropped a stream whose reader reads"
        pings += block.get("comment") == "ping"
    await wait_subscribers(rest, "t", 1)
