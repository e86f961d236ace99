"""Faults: a handler that raises, clients that vanish mid-stream, a
subscriber that stops reading, and thousands of connect/disconnect cycles.
After each, the server keeps serving everyone else and its state and memory
return to where they were."""

from __future__ import annotations

import asyncio
import gc
import random

import pytest

from tornado_pubsub.core.session import Session
from tornado_pubsub.handlers import writer
from tornado_pubsub.handlers import ws as ws_handlers
from tests.kit.load import LOAD_TEST_TIMEOUT, Collector, assert_gapless, publish_many
from tests.kit.rawws import RawWs
from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until


def writer_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "cr_code", None) is writer.write_loop.__code__ and not t.done()]


async def settled(broker, connections: int = 0, timeout: float = 10.0) -> None:
    """Wait (bounded) until the broker holds ``connections`` connections."""
    await wait_until(lambda: len(broker.connections) == connections, timeout, f"the broker to hold {connections} connection(s)")
    await asyncio.sleep(0.05)  # let cancelled writer tasks finish


def assert_broker_empty(broker) -> None:
    """No connection, subscription, queue, writer or heartbeat entry is left behind."""
    assert broker.connections == {}
    assert broker.subscriptions == 0
    for topic in broker.hub.local_topics():
        assert topic.subscribers == {}, topic.name
    assert broker.gauges()["queued_frames"] == 0
    assert writer_tasks() == []


# -- a handler that raises ----------------------------------------------------------


async def test_handler_raising_on_one_frame_answers_internal_and_keeps_the_connection(
    rest, ws_connect, broker, monkeypatch
):
    await rest.create("t")
    real_ping = Session.routes["ping"]

    async def flaky_ping(self, sub, frame):
        if frame.get("request_id") == "boom":
            raise KeyError("internal detail /work/secret.py")
        await real_ping(self, sub, frame)

    monkeypatch.setitem(Session.routes, "ping", flaky_ping)
    client = await ws_connect()
    other = await ws_connect()
    assert (await other.subscribe("t"))["type"] == "ack"

    reply = await client.request({"type": "ping", "request_id": "boom"})
    assert reply["type"] == "error" and reply["request_id"] == "boom"
    assert reply["error"] == {"code": "INTERNAL", "message": "internal server error"}

    # The same connection and the broker carry on.
    assert (await client.request({"type": "ping", "request_id": "fine"}))["type"] == "pong"
    assert (await client.subscribe("t"))["type"] == "ack"
    publisher = await ws_connect()
    assert (await publisher.publish("t", "after"))["seq"] == 1
    for c in (client, other):
        (event,) = await c.events(1)
        assert event["message"]["payload"] == "after"
    assert broker.subscriptions == 2


async def test_broker_raising_mid_publish_loses_nothing_already_acked(rest, ws_connect, broker, monkeypatch):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    pub = await ws_connect()
    assert (await pub.publish("t", 1))["seq"] == 1
    real = broker.publish
    calls = {"n": 0}

    async def once_broken(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk on fire")
        return await real(*args, **kwargs)

    monkeypatch.setattr(broker, "publish", once_broken)
    assert (await pub.publish("t", 2))["error"]["code"] == "INTERNAL"
    assert (await pub.publish("t", 3))["seq"] == 2
    assert [e["seq"] for e in await sub.events(2)] == [1, 2]


# -- clients that vanish -------------------------------------------------------------


@pytest.mark.pubsub(queue_size=1000)
async def test_clients_vanishing_with_tcp_reset_mid_stream_do_not_disturb_the_rest(rest, port, broker, ws_at):
    await rest.create("stream")
    healthy = [Collector(await ws_at(port)) for _ in range(3)]
    for h in healthy:
        assert (await h.subscribe("stream", "healthy"))["type"] == "ack"
    doomed = []
    for _ in range(20):
        raw = await RawWs.open(port)
        raw.send_json({"type": "subscribe", "topic": "stream", "client_id": "doomed"})
        doomed.append(raw)
    for raw in doomed:
        assert (await raw.reply())["type"] == "ack"
    assert broker.subscriptions == 23

    total = 5000
    for seq in range(1, total + 1):
        await broker.publish("stream", {"n": seq, "pad": "x" * 100})
        if seq % 250 == 0:
            # Reset a few mid-stream, some while their queues are full of events.
            for _ in range(4):
                if doomed:
                    doomed.pop(random.randrange(len(doomed))).reset()
            # Pace the publisher to the healthy readers: this test is about
            # vanishing peers, not about overflow.
            while max(len(s.queue._queue) for s in broker.connections.values() if "healthy" in s.topics.values()) > 500:
                await asyncio.sleep(0.001)
    for h in healthy:
        await h.wait_for("stream", total, timeout=60)
        assert_gapless(h.seqs["stream"], 1, total)
    await settled(broker, connections=3)
    assert broker.subscriptions == 3
    assert all(s.dropped == 0 for s in broker.connections.values())
    for h in healthy:
        h.stop()
    await settled(broker, connections=0)
    assert_broker_empty(broker)


# A hang guard, not a timing target (see LOAD_TEST_TIMEOUT).
@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
async def test_connect_subscribe_disconnect_cycles_leave_no_state_behind(rest, port, broker, ws_at):
    """2 000 cycles from 50 concurrent clients, ending in every way a client can leave."""
    for name in ("a", "b", "c"):
        await rest.create(name)
    publisher = await ws_at(port)

    async def client_loop(worker: int, cycles: int) -> None:
        for i in range(cycles):
            raw = await RawWs.open(port)
            for topic in ("a", "b", "c")[: 1 + (i % 3)]:
                raw.send_json({"type": "subscribe", "topic": topic, "client_id": f"w{worker}", "request_id": topic})
                assert (await raw.reply())["type"] == "ack"
            how = (worker + i) % 4
            if how == 0:
                raw.reset()  # vanish
            elif how == 1:
                raw.send_frame(0x8, b"\x03\xe8")  # proper close frame
                await raw.at_eof()
            elif how == 2:
                raw.close()  # FIN without a close frame
            else:
                raw.send_json({"type": "unsubscribe", "topic": "a", "client_id": f"w{worker}"})
                await raw.reply()
                raw.reset()

    async def traffic() -> None:
        n = 0
        while True:
            await publish_many(publisher, ("a", "b", "c")[n % 3], 20, window=20)
            n += 1
            await asyncio.sleep(0.005)

    noise = asyncio.ensure_future(traffic())
    await asyncio.gather(*(client_loop(w, 40) for w in range(50)))
    noise.cancel()
    publisher.close()
    await settled(broker, connections=0, timeout=20)
    assert_broker_empty(broker)
    assert broker.counters.connections_total >= 2001
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, ws_handlers.PubSubSocket) and o.broker is broker] == []


# -- memory, measured on a real server process --------------------------------------------

PAD = "x" * 2000  # 20 000 events of ~2 KB would be ~40 MB if anything buffered them all


@pytest.mark.slow
# A hang guard, not a timing target (see LOAD_TEST_TIMEOUT).
@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
@pytest.mark.parametrize("policy", ["drop_oldest", "disconnect"])
async def test_subscriber_that_stops_reading_costs_bounded_memory(policy, ws_at):
    total = 20_000
    with ServerProcess(f"--overflow_policy={policy}", "--log_level=warning", "--max_frames_per_second=100000") as server:
        from tests.kit.clients import Rest

        await Rest(server.port).create("flood")
        healthy = [Collector(await ws_at(server.port)) for _ in range(2)]
        for h in healthy:
            assert (await h.subscribe("flood", "healthy"))["type"] == "ack"
        stalled = await RawWs.open(server.port)
        stalled.send_json({"type": "subscribe", "topic": "flood", "client_id": "stalled"})
        assert (await stalled.reply())["type"] == "ack"
        # ...and from now on it never reads again.
        publisher = await ws_at(server.port)
        await publish_many(publisher, "flood", 200, payload=PAD, window=100, prefix="warm")
        for h in healthy:
            await h.wait_for("flood", 200, timeout=30)
        baseline = server.rss_kib()

        peak = baseline
        sent = 200
        while sent < total:
            batch = min(500, total - sent)
            replies = await publish_many(publisher, "flood", batch, payload=PAD, window=250, prefix=f"b{sent}-")
            assert all(r["type"] == "ack" for r in replies)
            sent += batch
            for h in healthy:  # healthy readers keep up; the publisher waits for them
                await h.wait_for("flood", sent - 500, timeout=60)
            peak = max(peak, server.rss_kib())
        for h in healthy:
            await h.wait_for("flood", total, timeout=60)
            assert_gapless(h.seqs["flood"], 1, total)
        growth_mib = (peak - baseline) / 1024
        print(f"RSS {policy}: baseline {baseline / 1024:.1f} MiB, peak growth {growth_mib:.1f} MiB")
        # Bounded by one queue (1 MiB) plus the batch in flight and allocator
        # slack; unbounded buffering of the stalled reader would be ~40 MiB.
        assert growth_mib < 16, f"RSS grew {growth_mib:.1f} MiB under {policy}"
        status, stats = await Rest(server.port).call("GET", "/stats")
        flood = stats["topics"]["flood"]
        assert flood["messages"] == total
        if policy == "drop_oldest":
            assert flood["subscribers"] == 3 and flood["dropped"] > 0
        else:
            assert flood["subscribers"] == 2  # the stalled one was evicted
        for h in healthy:
            h.stop()
        publisher.close()
        stalled.reset()


@pytest.mark.slow
# A hang guard, not a timing target (see LOAD_TEST_TIMEOUT).
@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
async def test_connection_churn_returns_memory_near_baseline():
    with ServerProcess("--log_level=warning") as server:
        from tests.kit.clients import Rest

        rest = Rest(server.port)
        await rest.create("churn")

        async def cycles(n: int) -> None:
            for _ in range(n):
                raw = await RawWs.open(server.port)
                raw.send_json({"type": "subscribe", "topic": "churn", "client_id": "c", "request_id": "s"})
                assert (await raw.reply())["type"] == "ack"
                raw.reset()

        # A first round of 2 000 cycles grows the allocator's pools to their
        # working size; a leak would grow RSS again by the same amount in the
        # second round.
        await asyncio.gather(*(cycles(40) for _ in range(50)))
        await asyncio.sleep(0.5)
        baseline = server.rss_kib()
        await asyncio.gather(*(cycles(40) for _ in range(50)))

        async def no_subscribers() -> bool:
            _, health = await rest.call("GET", "/health")
            return health["subscribers"] == 0

        await wait_until(no_subscribers, 20, "every churned subscriber to be gone")
        status, metrics = await rest.call("GET", "/metrics")
        assert "pubsub_connections 0.0" in metrics and "pubsub_queued_frames 0.0" in metrics
        growth_mib = (server.rss_kib() - baseline) / 1024
        print(f"RSS after 2 000 cycles: baseline {baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB")
        # 2 000 leaked handlers with their streams would be tens of MiB.
        assert growth_mib < 4, f"RSS grew {growth_mib:.1f} MiB after 2 000 cycles"
