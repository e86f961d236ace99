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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives.  Imported on first use (PEP 562), so that
# ``import tornado_pubsub.client`` (the Python client, the ``pubsub`` command)
# does not load the whole server: a CLI call starts in about a third of the time.
_EXPORTS = {
    "Broker": "tornado_pubsub.backends.memory",
    "Identity": "tornado_pubsub.core.identity",
    "PubSub": "tornado_pubsub.server.embed",
    "PubSubError": "tornado_pubsub.core.errors",
    "PublishResult": "tornado_pubsub.backends.memory",
    "Settings": "tornado_pubsub.settings",
    "SettingsError": "tornado_pubsub.settings",
    "SubscribeResult": "tornado_pubsub.backends.memory",
    "load_settings": "tornado_pubsub.settings",
    "make_app": "tornado_pubsub.server.app",
    "routes": "tornado_pubsub.server.app",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from tornado_pubsub.backends.memory import Broker, PublishResult, SubscribeResult
    from tornado_pubsub.core.errors import PubSubError
    from tornado_pubsub.core.identity import Identity
    from tornado_pubsub.server.app import make_app, routes
    from tornado_pubsub.server.embed import PubSub
    from tornado_pubsub.settings import Settings, SettingsError, load_settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
