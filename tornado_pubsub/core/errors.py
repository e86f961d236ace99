"""Protocol errors: one exception type carrying a wire code, and the tables
that map codes to HTTP statuses and WebSocket close codes."""

from __future__ import annotations

import dataclasses
import json

BAD_REQUEST = "BAD_REQUEST"
TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
TOPIC_EXISTS = "TOPIC_EXISTS"
SLOW_CONSUMER = "SLOW_CONSUMER"
UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
SHUTTING_DOWN = "SHUTTING_DOWN"
INTERNAL = "INTERNAL"

#: HTTP status for each code when it ends a REST call or refuses a handshake.
HTTP_STATUS = {
    BAD_REQUEST: 400,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    TOPIC_NOT_FOUND: 404,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    TOPIC_EXISTS: 409,
    LIMIT_EXCEEDED: 429,
    INTERNAL: 500,
    SHUTTING_DOWN: 503,
    SLOW_CONSUMER: 503,
}

# Statuses Tornado (or a host application's code) raises (unknown route, method, malformed request),
# mapped onto protocol codes; any other 5xx is INTERNAL, any other 4xx BAD_REQUEST.
_CODE_FOR_STATUS = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}


def code_for_status(status: int) -> str:
    """The protocol code for an HTTP error Tornado raised with ``status``."""
    return _CODE_FOR_STATUS.get(status, INTERNAL if status >= 500 else BAD_REQUEST)


# WebSocket close codes (RFC 6455 section 7.4.1; 4xxx are ours), PROTOCOL.md 1.3.
CLOSE_NORMAL = 1000  # heartbeat or handshake timeout: the peer stopped answering (reason says which)
CLOSE_GOING_AWAY = 1001  # server shutdown
CLOSE_PROTOCOL_ERROR = 1002  # the peer broke RFC 6455 (the frame reader refuses it: tornado_patches)
CLOSE_TOO_BIG = 1009  # frame over max_message_size (refused by the frame reader: tornado_patches)
CLOSE_TRY_AGAIN_LATER = 1013  # slow consumer under the disconnect policy
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_ADMIN = 4403


@dataclasses.dataclass(frozen=True, slots=True)
class Disconnect:
    """Why the server ends a WebSocket: the close code and the reason sent with it."""

    code: int
    reason: str


HEARTBEAT_TIMEOUT = Disconnect(CLOSE_NORMAL, "heartbeat timeout")
HANDSHAKE_TIMEOUT = Disconnect(CLOSE_NORMAL, "handshake timeout")
#: The peer has not read what it was sent for heartbeat_timeout (PROTOCOL.md 9).
WRITE_TIMEOUT = Disconnect(CLOSE_NORMAL, "write timeout")
SHUTDOWN = Disconnect(CLOSE_GOING_AWAY, "server shutting down")
PROTOCOL_ERROR = Disconnect(CLOSE_PROTOCOL_ERROR, "protocol error")
MESSAGE_TOO_BIG = Disconnect(CLOSE_TOO_BIG, "message too big")
SLOW = Disconnect(CLOSE_TRY_AGAIN_LATER, "slow consumer")
TOKEN_EXPIRED = Disconnect(CLOSE_TOKEN_EXPIRED, "token expired")
ADMIN_DISCONNECT = Disconnect(CLOSE_ADMIN, "disconnected by an administrator")
#: The end of a stream that carried one topic (SSE) once that topic is deleted;
#: SSE has no close codes, so only the reason is used (in the log).
TOPIC_ENDED = Disconnect(CLOSE_NORMAL, "topic deleted")

#: Every close code the server sends, with what it means (PROTOCOL.md 1.3).
CLOSE_CODES: dict[int, str] = {
    CLOSE_NORMAL: "heartbeat or handshake timeout",
    CLOSE_GOING_AWAY: "server shutdown",
    CLOSE_PROTOCOL_ERROR: "protocol error",
    CLOSE_TOO_BIG: "frame too big",
    CLOSE_TRY_AGAIN_LATER: "slow consumer",
    CLOSE_TOKEN_EXPIRED: "token expired",
    CLOSE_ADMIN: "disconnected by an administrator",
}

SHUTDOWN_REASON = SHUTDOWN.reason  # the close reason sent with CLOSE_GOING_AWAY


class PubSubError(Exception):
    """An operation refused with a protocol error code and a human message.

    Raised anywhere in the core or the handlers; rendered in exactly two
    places: the WebSocket error frame (``frames.error``, queued by
    ``Session.reply_error``) and the HTTP error body (``error_body``, sent by
    ``handlers.base.send_error_body``).
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or HTTP_STATUS.get(code, 400)

    def __repr__(self) -> str:
        return f"PubSubError({self.code!r}, {self.message!r})"


def error_body(exc: PubSubError) -> str:
    """The JSON body of every HTTP error, REST replies and refused handshakes:
    the one place it is rendered (its WebSocket twin is ``frames.error``)."""
    # UTF-8 like every frame; messages never hold a lone surrogate (see schemas).
    return json.dumps({"error": {"code": exc.code, "message": exc.message}}, separators=(",", ":"), ensure_ascii=False)


def topic_not_found(name: str) -> PubSubError:
    """TOPIC_NOT_FOUND for ``name``, worded the same by every backend."""
    return PubSubError(TOPIC_NOT_FOUND, f"topic {name!r} does not exist")


def topic_exists(name: str) -> PubSubError:
    """TOPIC_EXISTS for ``name``."""
    return PubSubError(TOPIC_EXISTS, f"topic {name!r} already exists")


def topic_limit(limit: int) -> PubSubError:
    """LIMIT_EXCEEDED: no room for another topic."""
    return PubSubError(LIMIT_EXCEEDED, f"topic limit of {limit} reached")
