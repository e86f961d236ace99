"""The client side: ``PubSubClient`` (Python, with automatic reconnect and
resume; in ``connection``, its subscriptions in ``subscription``, its errors
in ``errors``) and the ``pubsub`` command line (``cli``)."""

from tornado_pubsub.client.connection import DEFAULT_URL, PubSubClient, PublishAck, endpoints
from tornado_pubsub.client.errors import (
    BAD_RESPONSE,
    CLOSED,
    CONNECTION_LOST,
    DEFAULT_TIMEOUT,
    TIMEOUT,
    TOO_BIG,
    UNREACHABLE,
    ClientError,
)
from tornado_pubsub.client.subscription import Gap, Message, Subscription, SubscriptionEnded

__all__ = [
    "BAD_RESPONSE",
    "CLOSED",
    "CONNECTION_LOST",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "TIMEOUT",
    "TOO_BIG",
    "UNREACHABLE",
    "ClientError",
    "Gap",
    "Message",
    "PubSubClient",
    "PublishAck",
    "Subscription",
    "SubscriptionEnded",
    "endpoints",
]
