"""``topics`` (PROTOCOL.md 8) across a real restart of a memory-broker server:
the topic exists again at once, so a subscribed Python client resumes on its
own and reports the lost history as a gap instead of ending."""

from __future__ import annotations

import asyncio

from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until
from tests.system.test_client_lifecycle import WAIT, collect
from tornado_pubsub.client import Gap, Message, PubSubClient, SubscriptionEnded


async def test_memory_restart_with_topics_setting_resumes_the_client_with_the_gap_reported():
    server = ServerProcess("--topics=orders,billing").start()
    client = PubSubClient(server.url, backoff_min=0.05, backoff_max=0.3)
    try:
        await client.connect()
        gaps: list[Gap] = []
        ends: list[SubscriptionEnded] = []
        sub = await client.subscribe("orders", on_gap=gaps.append, on_end=ends.append)  # exists from start-up
        got: list[Message] = []
        loop = asyncio.ensure_future(collect(sub, got))
        for n in range(3):
            await client.publish("orders", f"old {n}")
        await wait_until(lambda: len(got) == 3, WAIT, "the first three")

        server.kill()
        server.start()  # same port; the memory broker lost everything but the configured topics
        await wait_until(lambda: gaps, WAIT, "the client to report the gap after resuming")
        await client.publish("orders", "new 0")
        await wait_until(lambda: len(got) == 4, WAIT, "the new incarnation's first message")

        assert [(m.seq, m.payload) for m in got] == [(1, "old 0"), (2, "old 1"), (3, "old 2"), (1, "new 0")]
        (gap,) = gaps
        assert (gap.reason, gap.after_seq) == ("epoch_changed", 3) and gap.epoch == got[-1].epoch
        assert not ends and not loop.done()  # the subscription never ended
        # Both starts created both topics (the log accumulates over restarts).
        created = [r["topic"] for r in server.records() if r.get("event") == "topic_created" and r.get("via") == "settings"]
        assert created == ["orders", "billing", "orders", "billing"]
    finally:
        await client.close()
        server.kill()


async def test_with_redis_each_configured_topic_is_created_once_cluster_wide(cluster):
    servers = cluster(2, "--topics=orders,billing")
    created = [
        r["topic"] for s in servers for r in s.records() if r.get("event") == "topic_created" and r.get("outcome") == "ok"
    ]
    assert sorted(created) == ["billing", "orders"]  # one process made each; the other found it there
    client = PubSubClient(servers[1].url)
    try:
        await client.connect()
        assert (await client.publish("orders", "x")).seq == 1
    finally:
        await client.close()
