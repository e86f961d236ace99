"""On Redis a replay is read page by page as its writer has room (a page is
at most one write), so a replay larger than many writes still arrives whole
and in order, and a reader that never reads pins one page, not the snapshot."""

from __future__ import annotations

import pytest

from tests.kit.clients import Rest
from tests.kit.load import LOAD_TEST_TIMEOUT, publish_many
from tests.kit.rawws import RawWs
from tests.kit.support import wait_subscribers

PAYLOAD = "r" * 60_000  # 100 of them: ~6 MB, about 24 writes of 256 KiB


@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
async def test_large_replay_on_redis_arrives_whole_in_order_page_by_page(cluster, ws_at):
    (proc,) = cluster(1, "--max_message_size=131072")
    rest = Rest(proc.port)
    await rest.create("big")
    pub = await ws_at(proc.port)
    assert all(r["type"] == "ack" for r in await publish_many(pub, "big", 100, payload=PAYLOAD, window=20))

    stalled = [await RawWs.connect(proc.port, rcvbuf=4096) for _ in range(4)]
    try:
        for n, slow in enumerate(stalled):  # never read: each holds one page, not ~6 MB
            await slow.send_json({"type": "subscribe", "topic": "big", "client_id": f"slow{n}", "last_n": 100})
        await wait_subscribers(rest, "big", 4)
        sub = await ws_at(proc.port)
        ack = await sub.subscribe("big", last_n=100)
        assert ack["type"] == "ack" and ack["last_seq"] == 100
        await pub.publish("big", "live")  # after the seam: follows the replay
        events = await sub.events(101, timeout=30)
        assert [e["seq"] for e in events] == list(range(1, 102))
        assert all(len(e["message"]["payload"]) == 60_000 for e in events[:100])
        assert events[100]["message"]["payload"] == "live"
        assert [r for r in proc.records() if r.get("level") == "ERROR"] == []
    finally:
        for slow in stalled:
            slow.close()
