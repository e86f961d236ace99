"""The Python client's errors: one exception type carrying a code, the protocol's
(``TOPIC_NOT_FOUND``, ``UNAUTHORIZED``, ...) or one of the client-side codes
below, and how a failed HTTP exchange or a lost connection becomes one."""

from __future__ import annotations

import json

import tornado.httpclient

from tornado_pubsub.core.errors import CLOSE_TOO_BIG, PubSubError

DEFAULT_TIMEOUT = 10.0  # seconds a request waits for its reply

# Client-side codes, next to the protocol's own (TOPIC_NOT_FOUND, UNAUTHORIZED, ...).
UNREACHABLE = "UNREACHABLE"  # no server answered at the URL
CONNECTION_LOST = "CONNECTION_LOST"  # the connection dropped before the reply came
TIMEOUT = "TIMEOUT"  # no reply within request_timeout
CLOSED = "CLOSED"  # the client was closed, or gave up reconnecting
BAD_RESPONSE = "BAD_RESPONSE"  # the server's answer was not the JSON the contract promises
TOO_BIG = "TOO_BIG"  # the server closed the connection (1009): a frame exceeded its max_message_size
TOKEN_FAILED = "TOKEN_FAILED"  # the token function raised: retried on reconnect, like an unreachable server


class ClientError(PubSubError):
    """A failed client operation: ``code`` is the protocol error code (e.g.
    ``TOPIC_NOT_FOUND``) or a client-side one (``UNREACHABLE``, ``TIMEOUT``,
    ``CONNECTION_LOST``, ``CLOSED``); ``status`` is the HTTP status if any."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, status)
        self.status = status  # None when no HTTP status was involved

    def __str__(self) -> str:  # "TOPIC_NOT_FOUND: topic 'x' does not exist", as a log line or traceback shows it
        return f"{self.code}: {self.message}"


def loss_error(close_code: int | None, reason: str | None) -> ClientError:
    """Why requests in flight failed when the connection closed under them."""
    if close_code == CLOSE_TOO_BIG:  # resending the same frame would only close the next connection
        return ClientError(TOO_BIG, "the server closed the connection: a frame exceeded its max_message_size")
    detail = f" (close code {close_code}{': ' + reason if reason else ''})" if close_code else ""
    return ClientError(CONNECTION_LOST, f"connection lost before the reply arrived{detail}")


def error_from_http(exc: Exception, what: str) -> ClientError:
    """A ``ClientError`` from a failed HTTP exchange (REST call or WebSocket handshake)."""
    if isinstance(exc, tornado.httpclient.HTTPClientError) and exc.response is not None and exc.code != 599:
        try:
            error = json.loads(exc.response.body or b"")["error"]
            return ClientError(error["code"], error["message"], exc.code)
        except (ValueError, KeyError, TypeError):
            return ClientError(BAD_RESPONSE, f"{what}: HTTP {exc.code} {exc.message}", exc.code)
    if isinstance(exc, tornado.httpclient.HTTPClientError):  # 599: timeout or connection failure
        return ClientError(UNREACHABLE, f"{what}: {exc.message}")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ClientError(UNREACHABLE, f"{what}: {reason}")
