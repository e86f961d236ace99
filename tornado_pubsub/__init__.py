"""tornado-pubsub: a WebSocket publish/subscribe server for Tornado.

Embedding in an existing application (see ``embed.PubSub``)::

    pubsub = tornado_pubsub.PubSub(tornado_pubsub.Settings(), prefix="/pubsub")
    app = tornado.web.Application(my_handlers + pubsub.routes)
    seq = (await pubsub.publish("orders", {"id": 42})).seq

With the host's own login deciding who may do what (``authenticate``)::

    def who(handler):
        name = handler.get_secure_cookie("user")
        return tornado_pubsub.Identity(user=name.decode(), caps=OWN_TOPIC) if name else None

    pubsub = tornado_pubsub.PubSub(settings, authenticate=who)

A Python client with automatic resume is ``tornado_pubsub.client.PubSubClient``;
the command line is ``python -m tornado_pubsub.client.cli`` (installed as ``pubsub``).
"""

from tornado_pubsub.server.app import make_app, routes
from tornado_pubsub.backends.memory import Broker, PublishResult, SubscribeResult
from tornado_pubsub.server.embed import PubSub
from tornado_pubsub.core.errors import PubSubError
from tornado_pubsub.core.identity import Identity
from tornado_pubsub.settings import Settings, SettingsError, load_settings

__version__ = "0.1.0"
__all__ = [
    "Broker",
    "Identity",
    "PubSub",
    "PubSubError",
    "PublishResult",
    "Settings",
    "SettingsError",
    "SubscribeResult",
    "load_settings",
    "make_app",
    "routes",
]
