"""HTTP: requests too large to read, and what an upgraded handshake leaves behind."""

from __future__ import annotations

import logging
import sys
from types import MappingProxyType
from typing import Any, Mapping

import tornado.websocket
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream, UnsatisfiableReadError

from tornado_pubsub.core.errors import BAD_REQUEST, PubSubError, error_body
from tornado_pubsub.logs import log_op
from tornado_pubsub.server.tornado_patches.checks import ENABLED

_TOO_LARGE_BODY = error_body(PubSubError(BAD_REQUEST, "request header fields too large", 431)).encode()
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json; charset=UTF-8\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class AnsweringStream(IOStream):
    """The server's ``IOStream``: a request whose headers exceed
    ``max_header_size`` gets a JSON 431 before the connection closes, where
    Tornado closes it without a word (its header read fails with
    ``UnsatisfiableReadError`` and the stream closes itself).  Public API
    only (``close(exc_info)``, ``socket``, ``writing``): the answer is one
    best-effort ``send`` of a few hundred bytes on the socket, never waited for.
    """

    def close(self, exc_info: Any = False) -> None:
        if exc_info and not self.closed() and not self.writing():
            error = exc_info if isinstance(exc_info, BaseException) else (
                exc_info[1] if isinstance(exc_info, tuple) else sys.exc_info()[1]
            )
            if isinstance(error, UnsatisfiableReadError):
                try:
                    self.socket.send(_TOO_LARGE)
                except OSError:
                    pass
                log_op("http", logging.INFO, status=431, outcome="refused", detail="request header fields too large")
        super().close(exc_info)


# -- the handshake's leftovers ------------------------------------------------------

_NO_HEADERS = HTTPHeaders()
_NO_ARGUMENTS: Mapping[str, Any] = MappingProxyType({})


def release_handshake_state(handler: tornado.websocket.WebSocketHandler) -> None:
    """Gain: ~2 KB per idle connection, and up to ``max_header_size`` (64 KB)
    for a client that pads its handshake.  Drop what only the HTTP upgrade
    needed and Tornado keeps until close: request and response headers (the
    handler's and the HTTP/1 connection's copy, which only a later response
    on that connection would read, and an upgraded one has none), template
    namespace, URL arguments (nothing reads them once the socket is open).
    Relies on: the response headers living in ``_headers``, the connection's
    copy of the request headers in ``HTTP1Connection._request_headers`` (the
    rest is public attributes, released always)."""
    handler.ui = None  # type: ignore[assignment]
    if ENABLED["release_headers"]:
        handler._headers = _NO_HEADERS
    connection = handler.request.connection
    if ENABLED["release_connection_headers"] and connection.__class__ is HTTP1Connection:
        connection._request_headers = _NO_HEADERS  # type: ignore[attr-defined]
    handler.path_args = handler.open_args = ()  # type: ignore[assignment]
    handler.path_kwargs = handler.open_kwargs = _NO_ARGUMENTS  # type: ignore[assignment]
    request = handler.request
    request.headers = _NO_HEADERS
    request.arguments = request.query_arguments = request.body_arguments = _NO_ARGUMENTS  # type: ignore[assignment]
    request.files = _NO_ARGUMENTS  # type: ignore[assignment]
