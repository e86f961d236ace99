"""REST for operators: health, stats and Prometheus metrics."""

from __future__ import annotations

import importlib.resources
from typing import Any

from tornado_pubsub.server import metrics

from tornado_pubsub.handlers.base import JsonHandler


class HealthHandler(JsonHandler):
    """``GET /health``: 200 ``ok``; 503 ``draining`` during shutdown or ``degraded``
    while the Redis broker has lost Redis. No key needed."""

    public = True

    async def get(self) -> None:
        body: dict[str, Any] = {"status": "draining" if self.broker.draining else "ok"}
        body.update(await self.broker.health())  # a broker without its store says "degraded"
        self.send_json(body, 200 if body["status"] == "ok" else 503)


class StatsHandler(JsonHandler):
    """``GET /stats``: per-topic messages, subscribers, dropped, last_seq."""

    async def get(self) -> None:
        self.send_json({"topics": await self.broker.topic_stats()})


class MetricsHandler(JsonHandler):
    """``GET /metrics``: Prometheus text format. No key needed."""

    public = True

    def get(self) -> None:
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render(self.context.registry))


#: conf/openapi.json, the REST API's OpenAPI 3 document (tests/test_openapi.py
#: checks the server against it); package data (``tornado_pubsub/conf``).
OPENAPI_PATH = str(importlib.resources.files("tornado_pubsub") / "conf" / "openapi.json")


class OpenApiHandler(JsonHandler):
    """``GET /openapi.json``: the REST API's OpenAPI 3 document. No key needed."""

    public = True
    _document: bytes | None = None

    def get(self) -> None:
        if OpenApiHandler._document is None:  # read once; it ships with the code
            with open(OPENAPI_PATH, "rb") as f:
                OpenApiHandler._document = f.read()
        self.finish(OpenApiHandler._document)


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [
        (rf"{prefix}/health", HealthHandler),
        (rf"{prefix}/stats", StatsHandler),
        (rf"{prefix}/metrics", MetricsHandler),
        (rf"{prefix}/openapi.json", OpenApiHandler),
    ]
