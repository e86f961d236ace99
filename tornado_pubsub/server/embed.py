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
    """

    def __init__(self, settings: Settings | None = None, prefix: str = "/pubsub", broker: Node | None = None) -> None:
        self.settings = settings or Settings()
        self.broker = broker or Broker.from_settings(self.settings)
        self.context = make_context(self.broker, self.settings)
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
