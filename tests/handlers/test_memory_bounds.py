"""History cannot take the process down: with many topics each holding large
messages, the server's RSS (read from /proc) stays within ``max_retained_bytes``
plus a fixed margin, and ``/stats`` and ``/metrics`` show the bound held."""

from __future__ import annotations

import pytest

from tests.kit.clients import Rest
from tests.kit.load import publish_many
from tests.kit.procs import ServerProcess
from tests.kit.support import metric

BOUND_MIB = 16
TOPICS = 200
PER_TOPIC = 10
PAYLOAD = "x" * 60_000  # 200 topics x 10 x 60 KB: ~120 MB if history kept them all


@pytest.mark.slow
async def test_history_across_many_topics_stays_within_max_retained_bytes(ws_at):
    flags = (f"--max_retained_bytes={BOUND_MIB << 20}", "--log_level=warning", "--max_message_size=131072")
    with ServerProcess(*flags) as server:
        rest = Rest(server.port)
        publisher = await ws_at(server.port)
        for n in range(TOPICS):
            await rest.create(f"t{n}")
        # Warm up the allocator with one round, then measure the rest.
        await publish_many(publisher, "t0", PER_TOPIC, payload=PAYLOAD, window=PER_TOPIC)
        baseline = server.rss_kib()
        peak = baseline
        for n in range(1, TOPICS):
            replies = await publish_many(publisher, f"t{n}", PER_TOPIC, payload=PAYLOAD, window=PER_TOPIC, prefix=f"t{n}-")
            assert all(r["type"] == "ack" for r in replies), replies[-1]  # a bound never fails a publish
            peak = max(peak, server.rss_kib())
        growth_mib = (peak - baseline) / 1024
        print(f"RSS baseline {baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB for ~120 MB published")
        # The bound, plus allocator slack; unbounded history would be ~115 MiB.
        assert growth_mib < BOUND_MIB + 24, f"RSS grew {growth_mib:.1f} MiB"

        status, stats = await rest.call("GET", "/stats")
        assert status == 200
        retained = [t["retained_bytes"] for t in stats["topics"].values()]
        assert 0 < sum(retained) <= BOUND_MIB << 20
        assert stats["topics"]["t0"]["retained_bytes"] == 0  # the oldest went first
        assert stats["topics"][f"t{TOPICS - 1}"]["retained_bytes"] > 0
        status, text = await rest.call("GET", "/metrics")
        assert metric(text, "pubsub_retained_bytes") == sum(retained)
        assert metric(text, "process_resident_memory_bytes") > 0
