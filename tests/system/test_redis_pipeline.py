"""Pipelined publishes on the Redis broker, against real processes.

A connection on the Redis broker may have up to ``PIPELINE_MAX`` publishes in
flight (``core.session``), the store runs them through one lane
(``backends.redis.store``), and auto-creates share one create
(``core.node``).  These tests attack that from real sockets: clients that
send hundreds of frames without waiting, mix in frames that fail before or
after Redis, flood without reading, vanish mid-pipeline, or meet a stalled
Redis.  Every ordering assertion compares against the exact expected list,
so a reversed or shuffled order fails it.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from tests.kit.clients import Rest, WsClient
from tests.kit.load import publish_frame
from tests.kit.procs import Redis, ServerProcess, http_status
from tests.kit.rawws import OP_TEXT, RawWs, client_frame
from tests.kit.support import metric
from tests.kit.wait import wait_until
from tests.system.test_redis import subscribed

#: Seconds one reply or event may take (generous: a shared, loaded machine).
WAIT = 20.0


def burst(raw: RawWs, topic: str, indexes: range, prefix: str, **payload: Any) -> None:
    """Send one publish per index, back to back, without reading anything."""
    for n in indexes:
        raw.send_text(publish_frame(topic, {**payload, "i": n}, f"{prefix}{n}"))


async def replies(raw: RawWs, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
    """The next ``count`` ack/error/pong frames (events and notices skipped)."""
    got = []
    for _ in range(count):
        reply = await raw.reply(timeout)
        assert reply is not None, f"connection closed after {len(got)} of {count} replies"
        got.append(reply)
    return got


async def quiet(raw: RawWs, seconds: float, limit: int = 1000) -> list[dict[str, Any]]:
    """Every frame that arrives until none has for ``seconds`` (at most ``limit``)."""
    frames = []
    for _ in range(limit):
        try:
            frame = await raw.recv_json(seconds)
        except asyncio.TimeoutError:
            return frames
        if frame is None:
            return frames
        frames.append(frame)
    raise AssertionError(f"still receiving after {limit} frames")


async def quiet_events(client: WsClient, seconds: float, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every event that arrives until none has for ``seconds`` (at most ``limit``)."""
    events = []
    for _ in range(limit):
        try:
            events.append(await client.recv_type("event", seconds))
        except asyncio.TimeoutError:
            return events
    raise AssertionError(f"still receiving after {limit} events")


def indexes(events: list[dict[str, Any]]) -> list[int]:
    return [e["message"]["payload"]["i"] for e in events]


#: What the server prints only when something went wrong inside it.
CRASH_SIGNS = ("Traceback", "CancelledError", "never retrieved", "was destroyed but it is pending")


def crashes(proc: ServerProcess) -> list[str]:
    """Lines of the server's output with tracebacks or asyncio's complaints
    about lost tasks and errors nobody retrieved."""
    return [line for line in proc.lines if any(sign in line for sign in CRASH_SIGNS)]


def faults(proc: ServerProcess) -> list[str]:
    """``crashes`` and every ERROR record."""
    return crashes(proc) + [line for line in proc.lines if '"level": "ERROR"' in line or '"level":"ERROR"' in line]


async def last_seq(port: int, topic: str) -> int:
    status, stats = await Rest(port).call("GET", "/stats")
    assert status == 200, stats
    return stats["topics"][topic]["last_seq"]


# -- 1. many in flight, one topic ------------------------------------------------------------


@pytest.mark.timeout(seconds=90)
async def test_500_back_to_back_publishes_are_acked_and_delivered_in_the_order_sent(cluster, ws_at):
    a, b = cluster(2)
    await Rest(a.port).create("orders")
    here = await subscribed(ws_at, a.port, "orders", client_id="here")
    there = await subscribed(ws_at, b.port, "orders", client_id="there")  # another process, same Redis
    publisher = await RawWs.connect(a.port)
    try:
        burst(publisher, "orders", range(500), "p")
        acks = await replies(publisher, 500)
    finally:
        publisher.close()

    assert [(r["type"], r["request_id"]) for r in acks] == [("ack", f"p{n}") for n in range(500)]
    assert [r["seq"] for r in acks] == list(range(1, 501))  # numbered in the order sent
    assert not any(r["duplicate"] for r in acks)
    for sub in (here, there):
        events = await sub.events(500, timeout=WAIT)
        assert [e["seq"] for e in events] == list(range(1, 501))
        assert indexes(events) == list(range(500))  # seq n carries the n-th frame sent
        assert await sub.nothing_within(0.3)  # and nothing twice


# -- 2. every kind of reply in one burst -------------------------------------------------------

ADMIN = "pipeline-admin-key"
#: No credential may publish and subscribe on ``orders`` and on the missing
#: ``ghost`` (so it reaches TOPIC_NOT_FOUND), nothing on ``secret``.
GUEST_CAPS = json.dumps([{"topics": ["orders", "ghost"], "allow": ["publish", "subscribe"]}])
#: Publishes to ``orders`` that each round of ``mixed_round`` makes.
PER_ROUND = 5


def mixed_round(r: int, first_index: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One round of frames and the reply each must get, in order.

    Refusals decided before Redis (FORBIDDEN, BAD_REQUEST) sit between
    publishes that suspend on Redis, and TOPIC_NOT_FOUND comes back from it.
    ``first_index``: the index (seq - 1) of the round's first publish to ``orders``.
    """
    i = first_index

    def pub(topic: str, rid: str, n: int | None = None) -> str:
        return publish_frame(topic, {"i": n}, rid)

    frames = [
        pub("orders", f"{r}a", i),
        pub("orders", f"{r}a2", i + 1),
        pub("secret", f"{r}b"),
        pub("ghost", f"{r}c"),
        json.dumps({"type": "publish", "topic": "orders", "message": {"id": "not-a-uuid", "payload": 1}, "request_id": f"{r}d"}),
        "{not json",
        pub("orders", f"{r}e", i + 2),
        json.dumps({"type": "ping", "request_id": f"{r}f"}),
        json.dumps({"type": "subscribe", "topic": "orders", "client_id": "mixed", "request_id": f"{r}g"}),
        pub("orders", f"{r}h", i + 3),
        pub("ghost", f"{r}i"),
        json.dumps({"type": "unsubscribe", "topic": "orders", "client_id": "mixed", "request_id": f"{r}j"}),
        pub("orders", f"{r}k", i + 4),
        json.dumps({"type": "ping", "request_id": f"{r}l"}),
    ]
    expected = [
        ("ack", f"{r}a", i + 1),
        ("ack", f"{r}a2", i + 2),
        ("error", f"{r}b", "FORBIDDEN"),
        ("error", f"{r}c", "TOPIC_NOT_FOUND"),
        ("error", f"{r}d", "BAD_REQUEST"),
        ("error", None, "BAD_REQUEST"),
        ("ack", f"{r}e", i + 3),
        ("pong", f"{r}f", None),
        ("ack", f"{r}g", i + 3),  # subscribe: last_seq, every publish before it is done
        ("ack", f"{r}h", i + 4),
        ("error", f"{r}i", "TOPIC_NOT_FOUND"),
        ("ack", f"{r}j", None),
        ("ack", f"{r}k", i + 5),
        ("pong", f"{r}l", None),
    ]
    return frames, expected


def summary(frame: dict[str, Any]) -> tuple[Any, ...]:
    if frame["type"] == "error":
        return ("error", frame.get("request_id"), frame["error"]["code"])
    if frame["type"] == "ack":
        return ("ack", frame["request_id"], frame.get("seq", frame.get("last_seq")))
    return (frame["type"], frame.get("request_id"), None)


@pytest.mark.timeout(seconds=90)
async def test_a_burst_of_mixed_frames_is_answered_in_frame_order_and_a_late_subscribe_sees_only_later_events(
    cluster, ws_at
):
    (proc,) = cluster(1, f"--api_key={ADMIN}", f"--anonymous_caps={GUEST_CAPS}")
    admin = Rest(proc.port, headers={"X-API-Key": ADMIN})
    await admin.create("orders")
    await admin.create("secret")
    watcher = await subscribed(ws_at, proc.port, "orders", client_id="watcher")
    rounds = 10
    client = await RawWs.connect(proc.port)  # no credential: GUEST_CAPS
    try:
        expected: list[tuple[Any, ...]] = []
        for r in range(rounds):  # all sent before any reply is read
            frames, answers = mixed_round(r, PER_ROUND * r)
            for text in frames:
                client.send_text(text)
            expected += answers
        got: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for _ in range(len(expected) * 2):  # bounded: the replies, plus at most one event per publish
            if len(got) == len(expected):
                break
            frame = await client.recv_json(WAIT)
            assert frame is not None, f"closed after {len(got)} replies"
            (events if frame["type"] == "event" else got).append(frame)
        events += await quiet(client, 0.3)  # anything that would come after the last reply
    finally:
        client.close()

    assert [summary(f) for f in got] == expected
    # Subscribed between each round's 3rd and 4th publish to orders,
    # unsubscribed before its 5th: exactly the 4th of each round arrives
    # here, live, and none from before the subscribe.
    assert [e["seq"] for e in events] == [PER_ROUND * r + 4 for r in range(rounds)]
    assert indexes(events) == [PER_ROUND * r + 3 for r in range(rounds)]
    # A subscriber on another connection gets every accepted publish, in order.
    everything = await watcher.events(PER_ROUND * rounds, timeout=WAIT)
    assert [e["seq"] for e in everything] == list(range(1, PER_ROUND * rounds + 1))
    assert indexes(everything) == list(range(PER_ROUND * rounds))
    assert await watcher.nothing_within(0.3)


# -- 3. auto-create under a burst ----------------------------------------------------------------


@pytest.mark.timeout(seconds=90)
async def test_bursts_to_missing_topics_with_auto_create_are_numbered_in_the_order_sent(cluster, ws_at):
    # Each publisher bursts to its own missing topic: the publishes of its
    # first batches find the topic missing, wait for the one shared create
    # and are sent again.  The retries must keep the frames' order, and the
    # frames sent after them must not overtake them.  Ten at once, so the
    # publish lane's batches and the creates interleave in Redis, three
    # times (each round misnumbered a topic in most runs before the fix).
    a, b = cluster(2, "--auto_create_topics=true", "--history_size=500")
    count = 150
    topics: list[str] = []
    misnumbered: dict[str, list[int]] = {}
    for round_ in range(3):
        mine = [f"fresh{round_}-{k}" for k in range(10)]
        topics += mine
        publishers = [await RawWs.connect(a.port) for _ in mine]
        try:
            for raw, topic in zip(publishers, mine):
                burst(raw, topic, range(count), f"{topic}/")
            acks = [await replies(raw, count) for raw in publishers]
        finally:
            for raw in publishers:
                raw.close()
        for topic, got in zip(mine, acks):
            assert [(r["type"], r["request_id"]) for r in got] == [("ack", f"{topic}/{n}") for n in range(count)]
            seqs = [r["seq"] for r in got]
            if seqs != list(range(1, count + 1)):
                misnumbered[topic] = seqs[:40]
    assert not misnumbered, f"frame n did not get seq n + 1 on {len(misnumbered)} topic(s), first 40 seqs: {misnumbered}"

    created = sorted(r["topic"] for p in (a, b) for r in p.records() if r.get("event") == "topic_created")
    assert created == sorted(topics)  # one create each, shared by every retry
    # What Redis retained, read from the other process: seq n holds frame n - 1.
    reader = await ws_at(b.port)
    for topic in topics:
        ack = await reader.subscribe(topic, last_n=count)
        assert (ack["type"], ack["last_seq"]) == ("ack", count), ack
        events = await reader.events(count, timeout=WAIT)
        assert [e["seq"] for e in events] == list(range(1, count + 1))
        assert indexes(events) == list(range(count))
    assert await reader.nothing_within(0.3)


# -- 4. a flood that never reads ------------------------------------------------------------------

#: ~1 KB per frame: 20 000 of them are ~21 MB the server must not hold at once.
PAD = "f" * 1000
#: The server's RSS may grow by at most this while it takes the flood.  What a
#: connection may pin by design is a pipeline of 1 MiB of frames
#: (PIPELINE_MAX_BYTES), its queue (queue_max_bytes, 1 MiB) and one write of
#: 256 KiB; the rest is allocator slack on a busy machine.  A server that
#: read on while Redis does not answer would hold the whole flood, ~10 MB of
#: frames plus a Task and a parsed frame each: several times this bound.
FLOOD_GROWTH_MIB = 12
#: Seconds Redis is stopped at the start of the flood: below the Redis
#: client's 5 s timeout, so nothing fails, but long enough for a server
#: without a pipeline bound to read the whole flood meanwhile.
STALL = 3.0


@pytest.mark.timeout(seconds=180)
async def test_a_flood_that_never_reads_costs_bounded_memory_and_leaves_others_served(
    cluster, ws_at, redis_server: Redis
):
    # Without a stall the server is slower than Redis and never has much in
    # flight anyway; with Redis stopped, only the pipeline bound stops it
    # reading the flood into memory.  The frame budget is lifted so the flood
    # meets that bound, not the budget (test_flood_fairness covers that).
    (proc,) = cluster(1, "--max_frames_per_second=100000")
    await Rest(proc.port).create("orders")
    other = await ws_at(proc.port)
    for n in range(200):  # warm the allocator and the Redis connections
        assert (await other.publish("orders", PAD))["type"] == "ack"
    baseline = peak = proc.rss_kib()

    total = 10_000
    # Masked beforehand (masking is slow in Python), so the flood leaves at
    # the kernel's pace, not this test's.
    wire = b"".join(client_frame(OP_TEXT, publish_frame("orders", {"i": n, "pad": PAD}, f"f{n}").encode()) for n in range(total))
    flooder = await RawWs.connect(proc.port)
    loop = asyncio.get_running_loop()
    redis_server.send_signal(signal.SIGSTOP)
    try:
        flooded = flooder.send_raw(wire)  # as fast as the kernel takes it; the rest waits in this client
        stall_ends = loop.time() + STALL
        pongs = 0
        while loop.time() < stall_ends:  # bounded by STALL
            await asyncio.sleep(0.05)
            peak = max(peak, proc.rss_kib())
            pong = await other.request({"type": "ping", "request_id": f"s{pongs}"}, timeout=WAIT)
            assert (pong["type"], pong["request_id"]) == ("pong", f"s{pongs}")  # no Redis needed: served
            pongs += 1
    finally:
        redis_server.send_signal(signal.SIGCONT)
    stalled_mib = (peak - baseline) / 1024
    assert stalled_mib < FLOOD_GROWTH_MIB, f"RSS grew {stalled_mib:.1f} MiB while Redis was stopped"
    assert not flooded.done(), "the whole flood was read while Redis was stopped"
    served_during_flood = 0
    try:
        for k in range(3000):  # bounded: 3000 x 50 ms
            if flooded.done():
                break
            await asyncio.sleep(0.05)
            peak = max(peak, proc.rss_kib())
            if k % 10 == 0:  # another connection's round trips, while the flood is being read
                pong = await other.request({"type": "ping", "request_id": f"k{k}"}, timeout=WAIT)
                ack = await other.publish("orders", "between", request_id=f"o{k}")
                assert (pong["type"], pong["request_id"]) == ("pong", f"k{k}")
                assert (ack["type"], ack["request_id"]) == ("ack", f"o{k}"), ack
                served_during_flood += not flooded.done()
        assert flooded.done(), "the server stopped reading the flood"
        assert served_during_flood >= 2, "the flood was taken before another client could be served"

        # What actually happens: the connection is kept and read at Redis's
        # pace; every frame is answered, in order, once the client reads.
        # (The kernel still held some of the flood: RSS is watched until the end.)
        got: list[dict[str, Any]] = []
        while len(got) < total:
            got += await replies(flooder, 1000, timeout=WAIT)
            peak = max(peak, proc.rss_kib())
    finally:
        flooder.close()
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < FLOOD_GROWTH_MIB, f"RSS grew {growth_mib:.1f} MiB taking the flood"
    assert [(r["type"], r["request_id"]) for r in got] == [("ack", f"f{n}") for n in range(total)]
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(set(seqs))  # increasing; the other client's publishes fall between
    assert flooder.close_code is None
    assert faults(proc) == []


# -- 5. a publisher that vanishes mid-pipeline ------------------------------------------------------


@pytest.mark.timeout(seconds=90)
async def test_publishers_that_vanish_mid_pipeline_leave_a_prefix_in_order_and_a_healthy_server(cluster, ws_at):
    (proc,) = cluster(1)
    await Rest(proc.port).create("orders")
    sub = await subscribed(ws_at, proc.port, "orders")
    quitters = [await RawWs.connect(proc.port) for _ in range(3)]
    for q, raw in enumerate(quitters):
        burst(raw, "orders", range(300), f"q{q}-", q=q)
    for raw in quitters:  # each has publishes in flight: vanish with a TCP reset, reading nothing more
        assert (await raw.reply(WAIT))["type"] == "ack"
        raw.reset()

    # Another publisher goes on; whatever of the vanished ones landed is
    # numbered before or after it, never twice.
    after = await ws_at(proc.port)
    marker = await after.publish("orders", {"q": "after", "i": 0})
    assert marker["type"] == "ack", marker

    events = await quiet_events(sub, 0.5)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))  # in order, no gap, no duplicate
    assert await last_seq(proc.port, "orders") == len(events)  # nothing landed unseen
    assert events[marker["seq"] - 1]["message"]["payload"] == {"q": "after", "i": 0}
    for q in range(3):  # what landed of each is a prefix of what it sent, in order
        mine = [e["message"]["payload"]["i"] for e in events if e["message"]["payload"]["q"] == q]
        assert mine[:1] == [0] and mine == list(range(len(mine))), (q, mine[:20])

    assert http_status(proc.base + "/health") == 200
    await wait_until(lambda: sum(r.get("event") == "disconnect" for r in proc.records()) >= 3, 5, "3 disconnect records")
    assert faults(proc) == []


# -- 6. Redis stalls mid-pipeline --------------------------------------------------------------------


@pytest.mark.timeout(seconds=90)
async def test_a_redis_stall_mid_pipeline_answers_every_frame_in_order_and_recovers(cluster, ws_at, redis_server: Redis):
    (proc,) = cluster(1)
    await Rest(proc.port).create("orders")
    sub = await subscribed(ws_at, proc.port, "orders")
    publisher = await RawWs.connect(proc.port)
    try:
        burst(publisher, "orders", range(20), "p")
        first = await replies(publisher, 20)
        assert [r["seq"] for r in first] == list(range(1, 21))

        # Stopped past the Redis client's 5 s socket timeout, then woken: the
        # batches in flight fail, those after them may be acked.
        redis_server.send_signal(signal.SIGSTOP)
        wake = asyncio.get_running_loop().call_later(7.0, redis_server.send_signal, signal.SIGCONT)
        try:
            burst(publisher, "orders", range(20, 120), "p")
            stalled = await asyncio.wait_for(replies(publisher, 100, timeout=30), 60)
        finally:
            wake.cancel()
            redis_server.send_signal(signal.SIGCONT)

        assert [r["request_id"] for r in stalled] == [f"p{n}" for n in range(20, 120)]  # every frame, in order
        failed = [r for r in stalled if r["type"] == "error"]
        assert failed, "no publish met the stall"
        assert all(r["error"]["code"] == "INTERNAL" and "redis" in r["error"]["message"] for r in failed), failed[:3]
        acked = [r["seq"] for r in stalled if r["type"] == "ack"]
        assert acked == sorted(set(acked)) and (not acked or acked[0] > 20)

        # The same connection is usable; once Redis is back, publishes are acked.
        publisher.send_json({"type": "ping", "request_id": "alive"})
        assert (await publisher.reply(WAIT))["type"] == "pong"
        await wait_until(lambda: http_status(proc.base + "/health") == 200, 15, "reconnect to redis", proc)
        for attempt in range(50):  # bounded: the first may still meet the reconnect
            burst(publisher, "orders", range(1000 + attempt, 1001 + attempt), "again")
            reply = await publisher.reply(WAIT)
            assert reply is not None, "the publisher was closed"
            if reply["type"] == "ack":
                break
            assert reply["error"]["code"] == "INTERNAL", reply
            await asyncio.sleep(0.1)
        assert reply["type"] == "ack", reply
        burst(publisher, "orders", range(2000, 2050), "after")
        recovered = await replies(publisher, 50)
    finally:
        publisher.close()
    assert [(r["type"], r["seq"]) for r in recovered] == [("ack", reply["seq"] + 1 + n) for n in range(50)]

    # The subscriber: in order, no duplicate, every acked publish among them.
    # (A publish answered INTERNAL may still have run once Redis woke.)
    last = recovered[-1]["seq"]
    seqs: list[int] = []
    for _ in range(last):
        if seqs and seqs[-1] == last:
            break
        seqs.append((await sub.recv_type("event", WAIT))["seq"])
    assert seqs == list(range(1, last + 1))
    assert await sub.nothing_within(0.3)
    assert crashes(proc) == []  # the stall itself is logged as an ERROR, nothing else went wrong


@pytest.mark.timeout(seconds=120)
async def test_a_publisher_that_never_reads_its_acks_is_a_slow_consumer_and_its_acked_publishes_are_delivered(cluster, ws_at):
    # A pipelining publisher that never reads: its acks fill its socket (the
    # server's send buffer, about 3 MB on loopback, and a 4 KB receive
    # window) and then its queue (64 KB here).  Acks are never dropped, so
    # the connection is closed SLOW_CONSUMER / 1013, with publishes of its
    # still in flight to Redis: they finish without an error, and every
    # publish Redis numbered reaches the subscriber once, in order, whether
    # or not its ack could be sent.
    (proc,) = cluster(1, "--max_frames_per_second=100000", "--queue_max_bytes=65536")
    rest = Rest(proc.port)
    await rest.create("orders")
    watcher = await subscribed(ws_at, proc.port, "orders")
    flooder = await RawWs.connect(proc.port, rcvbuf=4096)
    total = 16_000
    long_id = "r" * 120  # request_ids of up to 125 characters: each ack is ~230 bytes
    wire = b"".join(client_frame(OP_TEXT, publish_frame("orders", {"i": n}, f"{long_id}{n}").encode()) for n in range(total))
    flooder.send_raw(wire)

    async def evicted() -> bool:
        status, text = await rest.call("GET", "/metrics")
        return status == 200 and metric(text, "pubsub_slow_consumer_disconnects_total") == 1

    await wait_until(evicted, 60, "the publisher that never reads to be evicted")
    frames = await flooder.recv_until_close(limit=total + 10, timeout=WAIT)
    assert flooder.close_code == 1013
    *acks, last = frames
    assert last["type"] == "error" and last["error"]["code"] == "SLOW_CONSUMER", last
    assert 0 < len(acks) < total, f"{len(acks)} acks reached a reader that never read"
    assert [a["request_id"] for a in acks] == [f"{long_id}{n}" for n in range(len(acks))]
    assert [a["seq"] for a in acks] == list(range(1, len(acks) + 1))

    # Another client is served; its publish is numbered after everything the
    # flood got numbered, and the subscriber gets all of it, once, in order.
    marker = await (await ws_at(proc.port)).publish("orders", "marker")
    assert marker["type"] == "ack" and marker["seq"] > len(acks)
    events = await watcher.events(marker["seq"], timeout=WAIT)
    assert [e["seq"] for e in events] == list(range(1, marker["seq"] + 1))
    assert [e["message"]["payload"]["i"] for e in events[:-1]] == list(range(marker["seq"] - 1))
    assert events[-1]["message"]["payload"] == "marker"
    assert faults(proc) == []
