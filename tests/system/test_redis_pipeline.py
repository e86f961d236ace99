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

from tests.kit.clients import Rest, WsClient, new_id
from tests.kit.load import publish_frame
from tests.kit.procs import Redis, ServerProcess, http_status
from tests.kit.rawws import RawWs
from tests.kit.wait import wait_until

#: Seconds one reply or event may take (generous: a shared, loaded machine).
WAIT = 20.0


async def subscribed(ws_at: Any, port: int, topic: str, **extra: Any) -> WsClient:
    client = await ws_at(port)
    ack = await client.subscribe(topic, **extra)
    assert ack["type"] == "ack", ack
    return client


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


def indexes(events: list[dict[str, Any]]) -> list[int]:
    return [e["message"]["payload"]["i"] for e in events]


def faults(proc: ServerProcess) -> list[str]:
    """Lines of the server's output that show a fault: ERROR records,
    tracebacks, and asyncio's complaints about lost tasks or errors."""
    bad = []
    for line in proc.lines:
        if '"level": "ERROR"' in line or '"level":"ERROR"' in line:
            bad.append(line)
        elif any(sign in line for sign in ("Traceback", "CancelledError", "never retrieved", "was destroyed but it is pending")):
            bad.append(line)
    return bad


async def last_seq(port: int, topic: str) -> int:
    status, stats = await Rest(port).call("GET", "/stats")
    assert status == 200, stats
    return stats["topics"][topic]["last_seq"]


# -- 1. many in flight, one topic ------------------------------------------------------------


@pytest.mark.timeout(60)
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
        pub("secret", f"{r}b"),
        pub("ghost", f"{r}c"),
        json.dumps({"type": "publish", "topic": "orders", "message": {"id": "not-a-uuid", "payload": 1}, "request_id": f"{r}d"}),
        "{not json",
        pub("orders", f"{r}e", i + 1),
        json.dumps({"type": "ping", "request_id": f"{r}f"}),
        json.dumps({"type": "subscribe", "topic": "orders", "client_id": "mixed", "request_id": f"{r}g"}),
        pub("orders", f"{r}h", i + 2),
        pub("ghost", f"{r}i"),
        json.dumps({"type": "unsubscribe", "topic": "orders", "client_id": "mixed", "request_id": f"{r}j"}),
        pub("orders", f"{r}k", i + 3),
        json.dumps({"type": "ping", "request_id": f"{r}l"}),
    ]
    expected = [
        ("ack", f"{r}a", i + 1),
        ("error", f"{r}b", "FORBIDDEN"),
        ("error", f"{r}c", "TOPIC_NOT_FOUND"),
        ("error", f"{r}d", "BAD_REQUEST"),
        ("error", None, "BAD_REQUEST"),
        ("ack", f"{r}e", i + 2),
        ("pong", f"{r}f", None),
        ("ack", f"{r}g", i + 2),  # subscribe: last_seq, every publish before it is done
        ("ack", f"{r}h", i + 3),
        ("error", f"{r}i", "TOPIC_NOT_FOUND"),
        ("ack", f"{r}j", None),
        ("ack", f"{r}k", i + 4),
        ("pong", f"{r}l", None),
    ]
    return frames, expected


def summary(frame: dict[str, Any]) -> tuple[Any, ...]:
    if frame["type"] == "error":
        return ("error", frame.get("request_id"), frame["error"]["code"])
    if frame["type"] == "ack":
        return ("ack", frame["request_id"], frame.get("seq", frame.get("last_seq")))
    return (frame["type"], frame.get("request_id"), None)


@pytest.mark.timeout(60)
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
            frames, answers = mixed_round(r, 4 * r)
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
    # Subscribed between each round's 2nd and 3rd publish to orders, unsubscribed
    # before its 4th: exactly the 3rd of each round arrives here, live, and
    # none from before the subscribe.
    assert [e["seq"] for e in events] == [4 * r + 3 for r in range(rounds)]
    assert indexes(events) == [4 * r + 2 for r in range(rounds)]
    # A subscriber on another connection gets every accepted publish, in order.
    everything = await watcher.events(4 * rounds, timeout=WAIT)
    assert [e["seq"] for e in everything] == list(range(1, 4 * rounds + 1))
    assert indexes(everything) == list(range(4 * rounds))
    assert await watcher.nothing_within(0.3)


# -- 3. auto-create under a burst ----------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_bursts_to_missing_topics_with_auto_create_are_numbered_in_the_order_sent(cluster, ws_at):
    # Each publisher bursts to its own missing topic: the publishes of its
    # first batches find the topic missing, wait for the one shared create
    # and are sent again.  The retries must keep the frames' order, and the
    # frames sent after them must not overtake them.  Ten at once, so the
    # publish lane's batches and the creates interleave in Redis.
    a, b = cluster(2, "--auto_create_topics=true", "--history_size=500")
    topics, count = [f"fresh{k}" for k in range(10)], 150
    publishers = [await RawWs.connect(a.port) for _ in topics]
    try:
        for raw, topic in zip(publishers, topics):
            burst(raw, topic, range(count), f"{topic}-")
        acks = [await replies(raw, count) for raw in publishers]
    finally:
        for raw in publishers:
            raw.close()
    for topic, mine in zip(topics, acks):
        assert [(r["type"], r["request_id"]) for r in mine] == [("ack", f"{topic}-{n}") for n in range(count)]
    misnumbered = {topic: [r["seq"] for r in mine] for topic, mine in zip(topics, acks)}
    misnumbered = {topic: seqs[:40] for topic, seqs in misnumbered.items() if seqs != list(range(1, count + 1))}
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
