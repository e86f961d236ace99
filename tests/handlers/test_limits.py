"""Configured limits and abuse: each limit is answered with LIMIT_EXCEEDED
(503 at the handshake for connections), and clients that connect and then
stall are dropped instead of exhausting the server."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clients import new_id

from tests.kit.rawws import RawWs
from tests.kit.procs import ServerProcess
from tests.kit.clients import handshake_status
from tests.kit.wait import wait_until


@pytest.mark.pubsub(max_connections=2)
async def test_connection_over_max_connections_is_refused_503_until_one_leaves(ws_connect, port, broker):
    first = await ws_connect()
    second = await ws_connect()
    status, body = await handshake_status(port)
    assert status == 503 and body["error"]["code"] == "LIMIT_EXCEEDED", body
    assert (await second.request({"type": "ping", "request_id": "still"}))["type"] == "pong"

    first.close()
    # The server notices the close within a few loop turns.
    await wait_until(lambda: len(broker.connections) < 2, 2, "the closed connection to be forgotten")
    third = await ws_connect()
    assert (await third.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.pubsub(max_subscriptions_per_connection=2)
async def test_subscription_over_the_per_connection_limit_is_limit_exceeded(rest, ws_connect):
    for name in ("a", "b", "c"):
        await rest.create(name)
    client = await ws_connect()
    assert (await client.subscribe("a"))["type"] == "ack"
    assert (await client.subscribe("b"))["type"] == "ack"
    refused = await client.subscribe("c", request_id="third")
    assert refused["type"] == "error" and refused["error"]["code"] == "LIMIT_EXCEEDED"
    assert refused["request_id"] == "third"
    # Idempotent re-subscribe is not a new subscription; another connection has its own budget.
    assert (await client.subscribe("a"))["type"] == "ack"
    other = await ws_connect()
    assert (await other.subscribe("c"))["type"] == "ack"
    # Freeing a slot makes room again, and the refused topic delivers nothing meanwhile.
    await client.unsubscribe("b")
    assert (await client.subscribe("c"))["type"] == "ack"
    await other.publish("c", "after")
    (event,) = await client.events(1)
    assert event["topic"] == "c" and event["message"]["payload"] == "after"


@pytest.mark.pubsub(max_topics=2)
async def test_topic_over_max_topics_is_limit_exceeded_until_one_is_deleted(rest):
    await rest.create("t1")
    await rest.create("t2")
    status, body = await rest.call("POST", "/topics", {"name": "t3"})
    assert status == 429 and body["error"]["code"] == "LIMIT_EXCEEDED", body
    status, _ = await rest.call("DELETE", "/topics/t1")
    assert status == 200
    await rest.create("t3")


@pytest.mark.pubsub(max_frames_per_second=5)
async def test_frames_over_the_rate_limit_get_limit_exceeded_and_are_not_processed(rest, ws_connect):
    await rest.create("rated")
    client = await ws_connect()
    total = 30
    for i in range(total):
        client.send({"type": "publish", "topic": "rated", "request_id": f"r{i}", "message": {"id": new_id(), "payload": i}})
    replies = [await client.reply() for _ in range(total)]
    acks = [r for r in replies if r["type"] == "ack"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(acks) + len(refused) == total
    assert refused, "30 frames at once must exceed a budget of 5 per second"
    assert all(r["error"]["code"] == "LIMIT_EXCEEDED" for r in refused)
    assert {r["request_id"] for r in replies} == {f"r{i}" for i in range(total)}
    # Refused frames were not processed: the topic holds only the acked messages.
    status, stats = await rest.call("GET", "/stats")
    assert stats["topics"]["rated"]["messages"] == len(acks) == stats["topics"]["rated"]["last_seq"]
    # The bucket refills: after a pause the same connection is served again.
    await asyncio.sleep(1.2)
    assert (await client.request({"type": "ping", "request_id": "later"}))["type"] == "pong"


@pytest.mark.pubsub(handshake_timeout=0.5)
async def test_connection_that_never_sends_its_handshake_is_dropped(port):
    silent = await RawWs.open(port, upgrade=False)
    partial = await RawWs.open(port, upgrade=False)
    partial.send_raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    assert await silent.at_eof(timeout=10)
    assert await partial.at_eof(timeout=10)


@pytest.mark.pubsub(handshake_timeout=0.5)
async def test_upgraded_socket_that_never_answers_is_closed_and_forgotten(port, broker):
    mute = await RawWs.open(port)  # upgrades, then neither reads nor writes
    assert mute.status == 101
    assert len(broker.connections) == 1
    assert await mute.at_eof(timeout=10)
    await wait_until(lambda: not broker.connections, 2, "the mute connection to be forgotten")
    assert not broker.connections


@pytest.mark.pubsub(handshake_timeout=1.0)
async def test_idle_client_that_answers_pings_is_kept(ws_connect):
    # Every WebSocket client answers pings by itself; such a client may take
    # its time before its first frame.
    client = await ws_connect()
    await asyncio.sleep(2.0)
    assert (await client.request({"type": "ping", "request_id": "late"}))["request_id"] == "late"


@pytest.mark.pubsub(handshake_timeout=0.5, max_connections=50)
async def test_stalled_connections_do_not_exhaust_the_server(port, broker, ws_connect):
    stalled = [await RawWs.open(port, upgrade=False) for _ in range(30)]
    mute = [await RawWs.open(port) for _ in range(30)]
    # While 30 of 50 slots are held by mute sockets, a good client still gets in...
    client = await ws_connect()
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    # ...and once they are reaped the slots are free again.
    for raw in stalled + mute:
        assert await raw.at_eof(timeout=10)
    await wait_until(lambda: len(broker.connections) == 1, 2, "the stalled connections to be reaped")
    assert len(broker.connections) == 1
    extra = [await ws_connect() for _ in range(40)]
    assert (await extra[-1].request({"type": "ping"}))["type"] == "pong"


async def test_running_out_of_file_descriptors_neither_spins_nor_floods_the_log(ws_at):
    # 64 descriptors, 100 connections that never send a request: the oldest
    # half-open ones are closed before accept() can fail with EMFILE (see
    # test_half_open.py); if it fails anyway, the accept loop pauses.
    with ServerProcess("--handshake_timeout=1", "--log_level=warning", nofile=64) as server:
        hogs = []
        for _ in range(100):
            hogs.append(await RawWs.open(server.port, upgrade=False))
        await asyncio.sleep(2.0)
        coping = [r for r in server.records() if r.get("event") in ("accept", "half_open_shed")]
        assert coping and all(r.get("error") == "EMFILE" or r["event"] == "half_open_shed" for r in coping)
        # One warning per 0.1 s pause at most; Tornado alone logged thousands
        # of tracebacks a second here while spinning.
        assert len(server.lines) < 100, len(server.lines)
        for hog in hogs:
            hog.close()
        client = await ws_at(server.port)
        assert (await client.request({"type": "ping", "request_id": "alive"}))["type"] == "pong"
        client.close()


async def test_standalone_server_raises_its_descriptor_limit_for_max_connections():
    with ServerProcess("--max_connections=1000", nofile=(64, 4096)) as server:
        assert server.descriptor_limit() == 1000 + 256


async def test_standalone_server_warns_when_max_connections_cannot_fit():
    with ServerProcess("--max_connections=20000", "--log_level=warning", nofile=64) as server:
        assert server.descriptor_limit() == 64
        # The warning is written before the port opens; the reader may lag.
        warnings = await wait_until(
            lambda: [r for r in server.records() if r.get("event") == "descriptor_limit" and r.get("level") == "WARNING"],
            2,
            "the descriptor_limit warning",
        )
        (warning,) = warnings
        assert warning["descriptor_limit"] == 64 and warning["max_connections"] == 20000
