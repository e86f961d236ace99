"""The client side: ``PubSubClient`` (Python, with automatic reconnect and
resume; in ``connection``) and the ``pubsub`` command line (``cli``)."""

from tornado_pubsub.client.connection import (
    BAD_RESPONSE,
    CLOSED,
    CONNECTION_LOST,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    TIMEOUT,
    TOO_BIG,
    UNREACHABLE,
    ClientError,
    Gap,
    Message,
    PubSubClient,
    PublishAck,
    Subscription,
    SubscriptionEnded,
    endpoints,
)

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
