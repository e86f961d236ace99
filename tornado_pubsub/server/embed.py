"""Pub/sub inside an existing Tornado application: no second server, one IOLoop.

The host application appends ``PubSub.routes`` to its own handlers and
publishes from its own code with ``await pubsub.publish(topic, payload)``;
WebSocket subscribers connected to ``<prefix>/ws`` receive those messages
like any other.  Everything runs on the host's IOLoop thread, which is the
only thread the broker may be used from.

What stays the host's business: its access log (Tornado's default prints the
full URI, so a browser's ``api_key`` query parameter would be logged; use
``tornado_pubsub.logs.redact_uri`` in a ``log_function`` to avoid that), its
404 page for paths outside ``prefix``, its own process lifecycle (call
``close()`` when it shuts down), and which ``Host`` names it serves: unless
``Settings.allowed_hosts`` is given, embedded routes accept any host (the
standalone server's loopback default would refuse the names the host
application is reached by).  Cross-site writes are refused either way.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from tornado_pubsub.server.app import _bind, make_context
from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.hub import PublishResult
from tornado_pubsub.core.identity import Authenticate
from tornado_pubsub.core.node import Node
from tornado_pubsub.core.errors import SHUTDOWN, TOPIC_EXISTS, PubSubError
from tornado_pubsub.logs import log_op
from tornado_pubsub.settings import Settings


class PubSub:
    """One broker, its routes under ``prefix``, and in-process publishing.

    Example::

        pubsub = PubSub(Settings(history_size=500), prefix="/pubsub")
        app = tornado.web.Application(my_handlers + pubsub.routes)
        await pubsub.create_topic("orders", exist_ok=True)
        seq = (await pubsub.publish("orders", {"id": 42})).seq

    ``settings`` supplies the pub/sub limits (queues, history, heartbeat,
    message size, API key); the host's ``Application`` settings do not affect
    them.  Server-only settings (port, address, log format) are ignored.

    ``authenticate`` lets the host's own login decide who a caller is, with
    no tokens: it receives the Tornado ``RequestHandler`` of every ``/ws``
    handshake and REST call (it runs inside the host's ``Application``, so
    ``handler.get_secure_cookie`` reads the host's cookies) and returns an
    ``Identity`` (``Identity(user="alice", caps=[...])``, or
    ``Identity("admin")`` for staff) or None, and may be a coroutine
    function.  None falls back to the key, a token or ``anonymous_caps``; a
    caller nothing recognises is refused (401), since with a hook the routes
    are no longer open to everyone.  The caps are exactly those returned
    (``default_caps`` apply to tokens only).  It runs once per handshake or
    request, before the upgrade, on the IOLoop: keep it quick, or make it a
    coroutine.  An exception in it refuses the caller with 500 ``INTERNAL``
    and one log record (``connect`` or ``error``) whose ``cause`` names the
    exception, no traceback; raise
    ``PubSubError(UNAUTHORIZED, ...)`` (or ``HTTPError(401/403)``) to refuse
    on purpose.

    Threat: a cookie is sent by the browser on any page's request, so a
    hostile page could open the WebSocket with the visitor's cookie
    (cross-site WebSocket hijacking).  The handshake's ``Origin`` check
    refuses other origins unless ``Settings.allowed_origins`` lists them, and
    cross-site REST writes are refused likewise; keep ``allowed_origins``
    to origins you trust.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        prefix: str = "/pubsub",
        broker: Node | None = None,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.broker = broker or Broker.from_settings(self.settings)
        self.context = make_context(self.broker, self.settings, authenticate=authenticate)
        #: URL specs to append to the host's handler list.
        self.routes: list[tornado.web.URLSpec] = _bind(self.context, prefix)

    async def publish(self, topic: str, payload: Any, id: str | None = None) -> PublishResult:
        """Publish from the host's code; the result carries ``seq`` and ``duplicate``.

        Same semantics as a WebSocket publish (and the same ``publish`` log
        record, with ``via="inprocess"``); raises ``PubSubError`` with
        ``TOPIC_NOT_FOUND`` or ``BAD_REQUEST`` (payload not JSON-encodable).
        """
        result = await self.broker.publish(topic, payload, id)
        result.log(via="inprocess")
        return result

    async def create_topic(self, name: str, exist_ok: bool = False) -> bool:
        """Create ``name``; returns False if it already existed and ``exist_ok``."""
        try:
            topic = await self.broker.create_topic(name)
        except PubSubError as exc:
            if exist_ok and exc.code == TOPIC_EXISTS:
                return False
            raise
        log_op("topic_created", topic=name, epoch=topic.epoch, via="inprocess", outcome="ok")
        return True

    async def delete_topic(self, name: str) -> int:
        """Delete ``name`` (its subscribers get ``topic_deleted``); returns how many there were."""
        notified = await self.broker.delete_topic(name)
        log_op("topic_deleted", topic=name, subscribers=notified, via="inprocess", outcome="ok")
        return notified

    def close(self) -> None:
        """Refuse new work, close every pub/sub socket with 1001 and stop the heartbeat timer."""
        self.broker.begin_shutdown()
        self.broker.close_all(SHUTDOWN)
        self.context.heartbeat.stop()
        log_op("shutdown", connections=len(self.broker.connections), via="inprocess", outcome="stopped")
