"""What every handler is given: the broker, the settings and the per-app parts."""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import CollectorRegistry

from tornado_pubsub.core.identity import Credentials
from tornado_pubsub.core.node import Node
from tornado_pubsub.settings import Settings


@dataclasses.dataclass(frozen=True)
class Context:
    """Shared by all handlers of one application (passed via ``initialize``)."""

    broker: Node  # the in-memory or the Redis backend, behind one interface
    settings: Settings
    registry: CollectorRegistry
    heartbeat: Any  # handlers.heartbeat.Heartbeat; typed loosely so the server imports no handler here
    credentials: Credentials  # turns what a request presents into an Identity (every transport)
    # server.accept.HalfOpen of the standalone server (None when embedded): a
    # long-lived HTTP response (SSE) leaves it, as an upgraded WebSocket does.
    half_open: Any = None
