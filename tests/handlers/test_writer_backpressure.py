"""The writer under a reader that stops: the kernel takes part of a batch,
Tornado buffers the rest, and nothing more is written until that completes.

Whatever the socket did not take must still reach the client intact and in
order once it reads again; what overflowed the bounded queue is dropped
oldest-first and counted, never half-written.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.rawws import RawWs

MESSAGES = 400
PAYLOAD = "p" * 8000  # 400 x 8 KB: far more than the socket buffers and the queue hold


@pytest.mark.pubsub(queue_size=20)
async def test_stalled_reader_gets_whole_frames_in_order_and_drops_are_counted(rest, ws_connect, port):
    await rest.create("stall")
    peer = await RawWs.connect(port, rcvbuf=4096)
    try:
        await peer.send_json({"type": "subscribe", "topic": "stall", "client_id": "slow"})
        assert (await peer.recv_json())["type"] == "ack"

        pub = await ws_connect()
        for n in range(MESSAGES):  # the raw client reads nothing meanwhile
            reply = await pub.publish("stall", PAYLOAD)
            assert reply["type"] == "ack", reply
        status, stats = await rest.call("GET", "/stats")
        dropped = stats["topics"]["stall"]["dropped"]
        assert status == 200 and dropped > 0, stats

        seqs = []
        while not seqs or seqs[-1] < MESSAGES:
            body = await peer.recv_json()
            if body["type"] == "event":
                assert body["message"]["payload"] == PAYLOAD
                seqs.append(body["seq"])
        assert seqs == sorted(set(seqs))  # in order, no duplicate
        assert len(seqs) + dropped == MESSAGES
        await asyncio.sleep(0.1)
        assert (await rest.call("GET", "/stats"))[1]["topics"]["stall"]["dropped"] == dropped
    finally:
        peer.close()
