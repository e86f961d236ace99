"""tornado-pubsub: a WebSocket publish/subscribe server for Tornado.

Embedding in an existing application::

    broker = tornado_pubsub.Broker.from_settings(tornado_pubsub.Settings())
    app = tornado.web.Application(my_handlers + tornado_pubsub.routes(broker, prefix="/pubsub"))
    seq = (await broker.publish("orders", {"id": 42})).seq
"""

from .app import make_app, routes
from .broker import Broker, PublishResult, SubscribeResult
from .errors import PubSubError
from .settings import Settings, SettingsError, load_settings

__version__ = "0.1.0"
__all__ = [
    "Broker",
    "PubSubError",
    "PublishResult",
    "Settings",
    "SettingsError",
    "SubscribeResult",
    "load_settings",
    "make_app",
    "routes",
]
