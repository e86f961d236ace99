"""Building the Tornado application: routes, and Tornado's own knobs derived
from our settings in one place."""

from __future__ import annotations

import logging
import re
from typing import Any

import tornado.web

from tornado_pubsub.handlers import dashboard, ops, sse, topics, ws
from tornado_pubsub.handlers.heartbeat import Heartbeat
from tornado_pubsub.handlers.base import NotFoundHandler

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.auth import default_allowed_hosts
from tornado_pubsub.core.identity import Authenticate
from tornado_pubsub.core.node import Node
from tornado_pubsub.server.context import Context
from tornado_pubsub.logs import log_op, redact_uri
from tornado_pubsub.server.metrics import registry_for
from tornado_pubsub.settings import Settings
from tornado_pubsub.tokens import credentials_for


def make_broker(settings: Settings) -> Node:
    """The node on the backend ``settings.broker`` names (the caller awaits its ``start()``)."""
    if settings.broker == "redis":
        # Imported here so the in-memory default needs no redis package.
        from tornado_pubsub.backends.redis.backend import RedisBackend

        return Node(RedisBackend.from_settings(settings), **Node.options(settings))
    return Broker.from_settings(settings)


def make_context(
    broker: Node, settings: Settings, *, half_open: Any = None, authenticate: Authenticate | None = None
) -> Context:
    """The object every handler of one application shares (``half_open``: see
    ``server.accept``; ``authenticate``: see ``embed.PubSub``)."""
    return Context(
        half_open=half_open,
        broker=broker,
        settings=settings,
        registry=registry_for(broker),
        heartbeat=Heartbeat(settings.heartbeat_interval, settings.heartbeat_timeout),
        credentials=credentials_for(settings, authenticate),
    )


def routes(broker: Node, settings: Settings | None = None, prefix: str = "") -> list[tornado.web.URLSpec]:
    """Every pub/sub route under ``prefix``, bound to ``broker``.

    Append them to your own ``tornado.web.Application`` handlers to embed
    pub/sub in an existing service.  ``embed.PubSub`` wraps this and adds
    logged in-process publishing and a ``close()`` for the heartbeat timer.
    """
    return _bind(make_context(broker, settings or Settings()), prefix)


def url_prefix(prefix: str) -> str:
    """``prefix`` as a regex-safe path prefix: ``""`` or ``/a/b`` (no trailing slash)."""
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"prefix must start with '/', got {prefix!r}")
    return re.escape(prefix)  # a "." in a prefix must not match any character


def _bind(context: Context, prefix: str = "") -> list[tornado.web.URLSpec]:
    prefix = url_prefix(prefix)
    specs = ws.routes(prefix) + topics.routes(prefix) + sse.routes(prefix) + ops.routes(prefix) + dashboard.routes(prefix)
    return [tornado.web.url(pattern, handler, {"context": context}) for pattern, handler in specs]


def _access_log(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    identity = getattr(handler, "identity", None)  # JsonHandler's caller, once resolved
    log_op(
        "http",
        level,
        method=request.method,
        path=redact_uri(request.uri or ""),
        status=status,
        duration_ms=round(request.request_time() * 1000, 2),
        remote=request.remote_ip,
        user=identity.user if identity is not None else None,
    )


def tornado_settings(context: Context) -> dict[str, Any]:
    """Tornado ``Application`` settings derived from ours, each with its reason."""
    return {
        # WebSocket limits and pings are set by PubSubSocket itself (see there),
        # so they also hold when the routes are embedded in another application.
        # Tornado's access log prints the full URI, api_key included.
        "log_function": _access_log,
        # JSON 404s for unknown paths, like every other error.
        "default_handler_class": NotFoundHandler,
        "default_handler_args": {"context": context},
        "compress_response": False,
    }


def server_options(settings: Settings) -> dict[str, Any]:
    """``HTTPServer`` keyword arguments derived from our settings."""
    return {
        # X-Real-IP / X-Forwarded-For are only trusted behind our own proxy.
        "xheaders": settings.behind_proxy,
        # Backstop for bodies no handler streams; JsonHandler answers 413 itself.
        "max_body_size": settings.max_body_size,
        # Tornado uses this as the deadline for a request's headers, so a client
        # that connects and never finishes its handshake is dropped; idle
        # keep-alive connections go the same way. WebSockets are not affected.
        "idle_connection_timeout": settings.handshake_timeout,
        # A body trickled in slower than this is abandoned (slowloris).
        "body_timeout": max(settings.handshake_timeout, 30.0),
    }


def make_app(settings: Settings, broker: Node | None = None, half_open: Any = None) -> tornado.web.Application:
    """The standalone tornado-pubsub application (the tests use this too).

    Unset ``allowed_hosts`` becomes the loopback names when listening on
    loopback without ``behind_proxy`` (``auth.default_allowed_hosts``);
    embedded routes (``routes``, ``embed.PubSub``) keep it unset: any host.
    """
    if settings.allowed_hosts is None:
        settings = settings.replace(allowed_hosts=default_allowed_hosts(settings.address, settings.behind_proxy))
    broker = broker or make_broker(settings)
    context = make_context(broker, settings, half_open=half_open)
    app = tornado.web.Application(_bind(context), **tornado_settings(context))
    app.pubsub = context  # type: ignore[attr-defined]
    return app
