"""The write-progress deadline (PROTOCOL.md 9): a peer that has not read
what it was sent for ``heartbeat_timeout`` is closed, even while it keeps
talking (pongs, frames), and the peers that do read are unaffected."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.rawws import OP_PONG, RawWs
from tests.kit.support import wait_subscribers

PAYLOAD = "w" * 60_000


async def chatter(slow: RawWs, stop: asyncio.Event) -> int:
    """Keep talking and never read: a pong and a ping frame every 0.1 s (bounded)."""
    sent = 0
    for n in range(300):
        if stop.is_set():
            break
        slow.send_frame(OP_PONG, b"alive")
        slow.send_json({"type": "ping", "request_id": f"p{n}"})
        sent += 1
        await asyncio.sleep(0.1)
    return sent


@pytest.mark.timeout(seconds=90)
@pytest.mark.pubsub(heartbeat_interval=0.3, heartbeat_timeout=1.0)
async def test_peer_that_talks_but_never_reads_is_closed(rest, ws_connect, port):
    await rest.create("t")
    slow = await RawWs.connect(port, rcvbuf=4096)
    stop = asyncio.Event()
    talking = asyncio.ensure_future(chatter(slow, stop))
    try:
        await slow.send_json({"type": "subscribe", "topic": "t", "client_id": "slow"})
        reader = await ws_connect()
        await reader.subscribe("t", client_id="reader")
        await wait_subscribers(rest, "t", 2)
        pub = await ws_connect()
        # Enough to fill the kernel's buffers both ways: the server's write
        # to the slow peer then waits for a read that never comes.
        published = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            ack = await pub.publish("t", PAYLOAD)
            assert ack["type"] == "ack"
            published += 1
            assert len(await reader.events(1)) == 1  # the reader keeps up
            if published % 20 == 0:
                _, stats = await rest.call("GET", "/stats")
                if stats["topics"]["t"]["subscribers"] == 1:
                    break
        else:
            raise AssertionError("the peer that never reads was never closed")
        assert not talking.done()  # it was still talking when it was closed
        assert await slow.at_eof()
        assert (await pub.request({"type": "ping"}))["type"] == "pong"
    finally:
        stop.set()
        await talking
        slow.close()
