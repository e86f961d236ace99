"""A replay costs a connection no memory of its own: subscribers that replay
large histories and then never read (a background browser tab) pin the
queue's bound plus one write each, not a copy of what they replay.  The
server's RSS is read from /proc; ``/metrics`` shows the stalled replays."""

from __future__ import annotations

import pytest

from tests.kit.clients import Rest
from tests.kit.load import LOAD_TEST_TIMEOUT, publish_many
from tests.kit.procs import ServerProcess
from tests.kit.rawws import RawWs
from tests.kit.support import metric, wait_subscribers

TOPICS = 10
PER_TOPIC = 100
PAYLOAD = "r" * 60_000  # 10 topics x 100 x 60 KB: ~60 MB of shared history
STALLED = 6  # on main each pinned a ~60 MB write of its own (~360 MB)


@pytest.mark.slow
@pytest.mark.timeout(seconds=LOAD_TEST_TIMEOUT)
async def test_never_reading_replayers_pin_no_copy_of_their_replays(ws_at):
    flags = ("--history_max_bytes=8388608", "--log_level=warning", "--max_message_size=131072")
    with ServerProcess(*flags) as server:
        rest = Rest(server.port)
        publisher = await ws_at(server.port)
        for n in range(TOPICS):
            await rest.create(f"t{n}")
            replies = await publish_many(publisher, f"t{n}", PER_TOPIC, payload=PAYLOAD, window=50, prefix=f"t{n}-")
            assert all(r["type"] == "ack" for r in replies), replies[-1]
        baseline = server.rss_kib()
        stalled = []
        try:
            for i in range(STALLED):
                slow = await RawWs.connect(server.port, rcvbuf=4096)  # never reads again
                stalled.append(slow)
                for n in range(TOPICS):
                    await slow.send_json({"type": "subscribe", "topic": f"t{n}", "client_id": f"s{i}", "last_n": PER_TOPIC})
            for n in range(TOPICS):
                await wait_subscribers(rest, f"t{n}", STALLED)
            peak = server.rss_kib()
            growth_mib = (peak - baseline) / 1024
            print(f"RSS baseline {baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB for {STALLED} stalled replays of ~60 MB")
            # Per connection: the queue (1 MiB) plus one write (256 KiB), and
            # allocator slack; a private copy per replay would be ~360 MB.
            assert growth_mib < 24, f"RSS grew {growth_mib:.1f} MiB"

            _, text = await rest.call("GET", "/metrics")
            # The stalled replays show: nearly all of each replay still to send.
            assert metric(text, "pubsub_queued_bytes") > STALLED * TOPICS * PER_TOPIC * 60_000 * 0.8
            # A healthy late subscriber still gets its whole replay, in order.
            healthy = await ws_at(server.port)
            ack = await healthy.subscribe("t0", last_n=PER_TOPIC)
            assert ack["type"] == "ack"
            assert [e["seq"] for e in await healthy.events(PER_TOPIC, timeout=20)] == list(range(1, PER_TOPIC + 1))
        finally:
            for slow in stalled:
                slow.close()
