"""``pubsub bench``'s measurement: one publisher and N subscribers on their
own connections, all in this process, against a real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator

from tornado_pubsub.client.connection import PubSubClient
from tornado_pubsub.client.errors import ClientError
from tornado_pubsub.client.publishing import publish_windowed
from tornado_pubsub.client.subscription import Message


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure_fanout(
    client: PubSubClient, topic: str | None, subscribers: int, messages: int, size: int, wait: float
) -> dict[str, Any]:
    """Publish ``messages`` payloads of ``size`` bytes to a fresh topic (deleted
    afterwards) with ``subscribers`` subscribed; the rates and latencies seen,
    and whether every delivery arrived within ``wait`` seconds."""
    topic = topic or f"bench-{uuid.uuid4().hex[:8]}"
    await client.create_topic(topic)
    subs: list[PubSubClient] = []
    latencies: list[float] = []
    remaining = subscribers * messages
    all_in = asyncio.Event()
    pad = "x" * size

    def on_message(message: Message) -> None:
        nonlocal remaining
        latencies.append(time.perf_counter() - message.payload["t"])
        remaining -= 1
        if remaining <= 0:
            all_in.set()

    async def payloads() -> AsyncIterator[dict[str, Any]]:
        for _ in range(messages):
            yield {"t": time.perf_counter(), "pad": pad}  # stamped when it is sent, not before

    try:
        for n in range(subscribers):
            sub = PubSubClient(client.http_url, api_key=client.api_key, client_id=f"bench-{n}", reconnect=False)
            subs.append(sub)
            await sub.connect()
            await sub.subscribe(topic, on_message)
        await client.connect()
        started = time.perf_counter()
        await publish_windowed(client, topic, payloads(), lambda ack: None)
        published = time.perf_counter() - started
        try:
            await asyncio.wait_for(all_in.wait(), wait)
        except asyncio.TimeoutError:
            pass
        elapsed = time.perf_counter() - started
    finally:
        for sub in subs:
            await sub.close()
        try:
            await client.delete_topic(topic)
        except ClientError:
            pass
    latencies.sort()
    deliveries = len(latencies)
    return {
        "subscribers": subscribers,
        "messages": messages,
        "payload_bytes": size,
        "deliveries": deliveries,
        "complete": deliveries == subscribers * messages,
        "seconds": round(elapsed, 3),
        "publish_rate": round(messages / published, 1),
        "delivery_rate": round(deliveries / elapsed, 1),
        "latency_ms": {q: round(_percentile(latencies, p) * 1000, 2) for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
    }
