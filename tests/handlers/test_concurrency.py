"""No loss, no duplicates under concurrency: many publishers, many
subscribers, several topics, and subscribers resuming with since_seq while
the publishers are in full flow."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clients import Rest
from tests.kit.load import LOAD_TEST_TIMEOUT, Collector, assert_gapless, publish_many
from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until

TOPICS = [f"topic{i}" for i in range(5)]


async def run_scenario(ws_at, publishers: int, per_publisher: int, subscribers: int, joiners: int) -> None:
    # Queues large enough that nobody drops: this test is about the broker's
    # ordering and bookkeeping, not backpressure (dropped must stay 0), and a
    # history that holds every message, so a late joiner always recovers however
    # fast the publishers are.
    flags = ["--queue_size=100000", "--queue_max_bytes=268435456", "--history_size=10000", "--history_max_bytes=268435456", "--log_level=warning"]
    with ServerProcess(*flags) as server:
        rest = Rest(server.port)
        for topic in TOPICS:
            await rest.create(topic)

        # Initial subscribers: subscriber i takes topics i, i+1, i+2 (mod 5).
        early: list[tuple[Collector, list[str]]] = []
        for i in range(subscribers):
            collector = Collector(await ws_at(server.port))
            topics = [TOPICS[(i + k) % len(TOPICS)] for k in range(3)]
            for topic in topics:
                ack = await collector.subscribe(topic, f"s{i}")
                assert ack["type"] == "ack" and ack["last_seq"] == 0
            early.append((collector, topics))

        # Publisher p publishes to topic p mod 5: the first half now, the
        # second half once the joiners are in, so messages surely keep coming
        # after they resumed however fast the first half went.
        pubs = [await ws_at(server.port) for _ in range(publishers)]
        first_half = per_publisher // 2

        def publish(part: str, count: int) -> list[asyncio.Future[list[dict]]]:
            return [
                asyncio.ensure_future(publish_many(pub, TOPICS[p % len(TOPICS)], count, window=50, prefix=f"p{p}{part}-"))
                for p, pub in enumerate(pubs)
            ]

        jobs = publish("a", first_half)

        # Mid-way, joiners resume every topic from a point shortly behind its head.
        late: list[tuple[Collector, dict[str, int]]] = []
        heads_at_join: list[int] = []

        async def a_third_published() -> bool:
            if all(job.done() for job in jobs):
                return True
            _, stats = await rest.call("GET", "/stats")
            return min(t["last_seq"] for t in stats["topics"].values()) >= first_half // 3

        await wait_until(a_third_published, 60, "publishers to make progress")
        for j in range(joiners):
            collector = Collector(await ws_at(server.port))
            starts: dict[str, int] = {}
            status, stats = await rest.call("GET", "/stats")
            for topic in TOPICS:
                info = stats["topics"][topic]
                since = max(0, info["last_seq"] - 40 - 10 * j)
                ack = await collector.subscribe(topic, f"late{j}", since_seq=since, epoch=info["epoch"])
                assert ack["type"] == "ack" and ack["recovered"] is True, ack
                starts[topic] = since
                heads_at_join.append(info["last_seq"])
            late.append((collector, starts))

        await asyncio.gather(*jobs)  # a publisher's connection carries one publish_many at a time
        jobs += publish("b", per_publisher - first_half)
        replies = [r for job in await asyncio.gather(*jobs) for r in job]
        assert all(r["type"] == "ack" and r["duplicate"] is False for r in replies), [
            r for r in replies if r["type"] != "ack"
        ][:3]
        status, stats = await rest.call("GET", "/stats")
        totals = {t: stats["topics"][t]["last_seq"] for t in TOPICS}
        assert sum(totals.values()) == publishers * per_publisher
        # Acked seqs per topic are exactly 1..N: no seq taken twice, none skipped.
        acked: dict[str, list[int]] = {}
        for r in replies:
            acked.setdefault(r["topic"], []).append(r["seq"])
        for topic, seqs in acked.items():
            assert sorted(seqs) == list(range(1, totals[topic] + 1)), topic
        # The joiners really joined mid-flow: messages kept coming after they resumed.
        assert any(head < totals[t] for head, t in zip(heads_at_join, TOPICS * joiners))

        for collector, topics in early:
            for topic in topics:
                await collector.wait_for(topic, totals[topic], timeout=120)
                assert_gapless(collector.seqs[topic], 1, totals[topic])
        for collector, starts in late:
            for topic, since in starts.items():
                await collector.wait_for(topic, totals[topic] - since, timeout=120)
                assert_gapless(collector.seqs[topic], since + 1, totals[topic])

        # /stats agrees with what the clients saw.
        status, stats = await rest.call("GET", "/stats")
        for topic in TOPICS:
            info = stats["topics"][topic]
            subscribed = sum(topic in topics for _, topics in early) + len(late)
            assert info["messages"] == info["last_seq"] == totals[topic]
            assert info["subscribers"] == subscribed
            assert info["dropped"] == 0
            seen = sum(c.count(topic) for c, topics in early if topic in topics)
            assert seen == totals[topic] * sum(topic in topics for _, topics in early)
        for collector, _ in early + late:
            assert await _no_more_events(collector)
            collector.stop()
        for pub in pubs:
            pub.close()


async def _no_more_events(collector: Collector) -> bool:
    before = {t: collector.count(t) for t in collector.seqs}
    await asyncio.sleep(0.2)
    return before == {t: collector.count(t) for t in collector.seqs}


async def test_publishers_and_resuming_subscribers_lose_and_duplicate_nothing(ws_at):
    await run_scenario(ws_at, publishers=5, per_publisher=200, subscribers=6, joiners=2)


@pytest.mark.slow
# A hang guard, not a timing target (see LOAD_TEST_TIMEOUT).
@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
async def test_ten_publishers_twenty_subscribers_five_topics_lose_and_duplicate_nothing(ws_at):
    await run_scenario(ws_at, publishers=10, per_publisher=500, subscribers=16, joiners=4)
