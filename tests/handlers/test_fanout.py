"""Fan-out under concurrency: exactly once, per-topic order, isolation, and a
replay/live seam with no gap or duplicate while publishers keep going."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clients import new_id

PUBLISHERS, MESSAGES, SUBSCRIBERS = 3, 200, 5


async def publish_all(client, topic: str, tag: str, count: int) -> list[int]:
    """Pipeline ``count`` publishes, then collect their acks; returns the seqs."""
    for i in range(count):
        client.send({"type": "publish", "topic": topic, "message": {"id": new_id(), "payload": {"p": tag, "i": i}}})
    acks = [await client.recv_type("ack") for _ in range(count)]
    return [a["seq"] for a in acks]


async def test_fanout_concurrent_publishers_every_subscriber_gets_each_once_in_seq_order(rest, ws_connect):
    await rest.create("t")
    subs = [await ws_connect() for _ in range(SUBSCRIBERS)]
    for i, sub in enumerate(subs):
        await sub.subscribe("t", client_id=f"s{i}")
    pubs = [await ws_connect() for _ in range(PUBLISHERS)]
    total = PUBLISHERS * MESSAGES

    readers = [asyncio.ensure_future(sub.events(total, timeout=20)) for sub in subs]
    acked = await asyncio.gather(*(publish_all(p, "t", f"p{n}", MESSAGES) for n, p in enumerate(pubs)))
    received = await asyncio.gather(*readers)

    all_seqs = sorted(s for seqs in acked for s in seqs)
    assert all_seqs == list(range(1, total + 1))  # every publish took its own seq
    for events in received:
        assert [e["seq"] for e in events] == list(range(1, total + 1))
        for tag in ("p0", "p1", "p2"):  # each publisher's messages in its publish order
            mine = [e["message"]["payload"]["i"] for e in events if e["message"]["payload"]["p"] == tag]
            assert mine == list(range(MESSAGES))
    for sub in subs:
        assert await sub.nothing_within(0.05)


async def test_fanout_two_topics_subscriber_never_gets_other_topic(rest, ws_connect):
    await rest.create("a")
    await rest.create("b")
    sub_a, sub_b, both = await ws_connect(), await ws_connect(), await ws_connect()
    await sub_a.subscribe("a")
    await sub_b.subscribe("b")
    await both.subscribe("a")
    await both.subscribe("b")
    pub = await ws_connect()
    await asyncio.gather(publish_all(pub, "a", "a", 50), publish_all(await ws_connect(), "b", "b", 30))
    got_a, got_b, got_both = await sub_a.events(50), await sub_b.events(30), await both.events(80)
    assert {e["topic"] for e in got_a} == {"a"} and [e["seq"] for e in got_a] == list(range(1, 51))
    assert {e["topic"] for e in got_b} == {"b"} and [e["seq"] for e in got_b] == list(range(1, 31))
    for topic, count in (("a", 50), ("b", 30)):
        assert [e["seq"] for e in got_both if e["topic"] == topic] == list(range(1, count + 1))
    assert await sub_a.nothing_within(0.05) and await sub_b.nothing_within(0.05)


async def _publish_until(pub, topic: str, count: int) -> None:
    for i in range(count):
        await pub.publish(topic, i)


@pytest.mark.pubsub(history_size=50)
async def test_replay_subscribe_during_publishing_seam_has_no_gap_or_duplicate(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    total = 300
    publishing = asyncio.ensure_future(_publish_until(pub, "t", total))
    late = []
    for _ in range(3):  # join at different moments while the publisher runs
        await asyncio.sleep(0.02)
        client = await ws_connect()
        late.append((client, await client.subscribe("t", last_n=20)))
    await publishing
    assert any(ack["last_seq"] < total for _, ack in late), "every subscriber joined after publishing ended"
    for client, ack in late:
        start = max(1, ack["last_seq"] - 19)
        events = await client.events(total - start + 1, timeout=10)
        assert [e["seq"] for e in events] == list(range(start, total + 1))
        assert await client.nothing_within(0.05)


@pytest.mark.pubsub(history_size=1000)
async def test_resume_during_publishing_seam_has_no_gap_or_duplicate(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    first = await ws_connect()
    epoch = (await first.subscribe("t"))["epoch"]
    total = 300
    publishing = asyncio.ensure_future(_publish_until(pub, "t", total))
    seen = await first.events(40, timeout=10)
    first.close()  # drop mid-stream, then resume from the last seq seen
    again = await ws_connect()
    ack = await again.subscribe("t", since_seq=seen[-1]["seq"], epoch=epoch)
    assert ack["recovered"] is True
    await publishing
    rest_of_it = await again.events(total - 40, timeout=10)
    assert [e["seq"] for e in seen + rest_of_it] == list(range(1, total + 1))
    assert await again.nothing_within(0.05)
