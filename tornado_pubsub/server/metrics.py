"""Prometheus exposition of the broker's counters and gauges.

Values are read from the broker at scrape time, so the hot path only bumps
plain integers.  No per-topic labels: topic names are unbounded.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tornado_pubsub.core.node import Node
from tornado_pubsub.core.errors import (
    BAD_REQUEST,
    INTERNAL,
    LIMIT_EXCEEDED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    TOPIC_NOT_FOUND,
    UNAUTHORIZED,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Always exported, so a dashboard sees 0 rather than a missing series.
_KNOWN_CODES = (BAD_REQUEST, TOPIC_NOT_FOUND, SLOW_CONSUMER, UNAUTHORIZED, LIMIT_EXCEEDED, SHUTTING_DOWN, INTERNAL)


class BrokerCollector:
    """A custom collector that reads one broker's figures."""

    def __init__(self, broker: Node) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        gauges = b.gauges()
        c = b.counters
        yield GaugeMetricFamily("pubsub_connections", "Open WebSocket connections", value=gauges["connections"])
        yield GaugeMetricFamily(
            "pubsub_subscriptions", "Subscriptions (connection x topic)", value=gauges["subscriptions"]
        )
        yield GaugeMetricFamily("pubsub_topics", "Existing topics", value=gauges["topics"])
        yield GaugeMetricFamily("pubsub_queued_frames", "Frames waiting in outbound queues", value=gauges["queued_frames"])
        yield GaugeMetricFamily(
            "pubsub_queued_bytes",
            "Bytes waiting for subscribers: queued frames plus what replays have still to send (a stalled replay shows here)",
            value=gauges["queued_bytes"],
        )
        yield GaugeMetricFamily(
            "pubsub_retained_bytes",
            "Bytes of history this process holds across all topics (bounded by max_retained_bytes; 0 with Redis)",
            value=gauges.get("retained_bytes", 0),
        )
        yield GaugeMetricFamily("pubsub_draining", "1 while shutting down", value=1 if b.draining else 0)
        yield CounterMetricFamily("pubsub_connections_accepted", "WebSocket connections accepted", value=c.connections_total)
        yield CounterMetricFamily("pubsub_messages_published", "Messages published", value=c.published)
        yield CounterMetricFamily("pubsub_events_delivered", "Events written to subscribers", value=c.delivered)
        yield CounterMetricFamily("pubsub_events_dropped", "Events dropped by drop_oldest overflow", value=c.dropped)
        yield CounterMetricFamily(
            "pubsub_slow_consumer_disconnects", "Connections closed as slow consumers", value=c.slow_consumers
        )
        errors = CounterMetricFamily("pubsub_errors", "Error replies by protocol code", labels=["code"])
        for code in sorted(set(_KNOWN_CODES) | set(c.errors)):
            errors.add_metric([code], c.errors.get(code, 0))
        yield errors


def registry_for(broker: Node) -> CollectorRegistry:
    """A registry holding ``broker``'s metrics and the process's own (one per
    app, no globals): ``process_resident_memory_bytes`` is what the memory
    bounds are judged by (read from /proc, so Linux only)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
