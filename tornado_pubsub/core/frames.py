"""Outbound frames: the one place server -> client JSON is rendered.

Frames are rendered to UTF-8 ``bytes`` once; the same bytes object is queued
for every subscriber of a message and written as a WebSocket text frame.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tornado_pubsub.core.errors import BAD_REQUEST, PubSubError
from tornado_pubsub.core.jsonenc import compiled

_encode_compact = compiled(json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False))
_encode_ascii = compiled(json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False))


def encode(obj: dict[str, Any]) -> bytes:
    """Serialize one frame to compact UTF-8 JSON (non-ASCII as UTF-8, never
    ``\\u`` escapes, so a frame is at most a little larger than its text).

    Strings holding lone surrogates cannot be UTF-8; clients cannot send them
    (``schemas.parse_json`` refuses them), so only server code could, and
    such a frame falls back to ASCII escapes rather than failing.
    """
    try:
        return _encode_compact(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _encode_ascii(obj).encode("ascii")


def encode_published(obj: dict[str, Any]) -> bytes:
    """``encode`` for what carries a publisher's payload (an event frame, a
    Redis stream record): a payload JSON cannot hold, or one holding a lone
    surrogate (in-process publishing), is the publisher's ``BAD_REQUEST``,
    raised here for every backend."""
    try:
        return _encode_compact(obj).encode("utf-8")
    except UnicodeEncodeError:
        raise PubSubError(BAD_REQUEST, LONE_SURROGATE.format(where="message.payload")) from None
    except (ValueError, TypeError, RecursionError):
        raise PubSubError(BAD_REQUEST, "message.payload cannot be encoded as JSON (nested too deeply?)") from None


#: The BAD_REQUEST message for a string UTF-8 cannot carry.
LONE_SURROGATE = "{where} holds a lone surrogate (a \\ud800-\\udfff escape without its pair); strings must be valid Unicode"


# The rendered second of the last timestamp: strftime(gmtime()) costs more
# than the rest of a small frame's rendering, and a publish stamps three
# things (ack, event, log record) within the same second.
_last_second = -1
_last_prefix = ""


def timestamp(now: float | None = None) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    global _last_second, _last_prefix
    if now is None:
        now = time.time()
    secs, ms = divmod(int(now * 1000), 1000)
    if secs != _last_second:
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _last_second = secs
    return f"{_last_prefix}.{ms:03d}Z"


def _with_request_id(frame: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def ack(topic: str, request_id: str | None = None, **extra: Any) -> bytes:
    """``ack`` for a subscribe, unsubscribe or publish; ``extra`` holds the ext fields."""
    frame: dict[str, Any] = {"type": "ack"}
    _with_request_id(frame, request_id)
    frame.update(topic=topic, status="ok", ts=timestamp())
    frame.update(extra)
    return encode(frame)


def auth_ack(user: str | None, expires_at: float | None, request_id: str | None = None) -> bytes:
    """``ack`` of a successful ``auth`` frame (PROTOCOL.md 5.3): the user and
    when its token expires (null: never); it names no topic."""
    frame: dict[str, Any] = {"type": "ack"}
    _with_request_id(frame, request_id)
    frame.update(
        status="ok",
        user=user,
        expires_at=None if expires_at is None else timestamp(expires_at),
        ts=timestamp(),
    )
    return encode(frame)


def event(topic: str, message_id: str, payload: Any, ts: str, seq: int) -> bytes:
    """``event`` frame shared by every subscriber of one published message."""
    return event_with_seq(event_head(topic, message_id, payload, ts), seq)


def event_head(topic: str, message_id: str, payload: Any, ts: str) -> bytes:
    """The ``event`` frame up to its seq (``seq`` is its last field): what a
    Redis publish renders once, before Redis numbers it, and carries on the
    bus and in the history, so no process parses or renders it again.
    Holds no newline byte (compact JSON escapes control characters)."""
    frame = encode_published({"type": "event", "topic": topic, "message": {"id": message_id, "payload": payload}, "ts": ts})
    return frame[:-1] + b',"seq":'


def event_with_seq(head: bytes, seq: int) -> bytes:
    """The complete ``event`` frame: ``event_head`` with its seq."""
    return b"%s%d}" % (head, seq)


def error(exc: PubSubError, request_id: str | None = None) -> bytes:
    """The WebSocket ``error`` frame for ``exc``: the one place it is rendered
    (its HTTP twin is ``errors.error_body``); ``request_id`` only when it
    could be read from the request."""
    frame: dict[str, Any] = {"type": "error"}
    _with_request_id(frame, request_id)
    frame.update(error={"code": exc.code, "message": exc.message}, ts=timestamp())
    return encode(frame)


def pong(request_id: str | None = None) -> bytes:
    """Reply to a client ``ping``."""
    return encode(_with_request_id({"type": "pong"}, request_id) | {"ts": timestamp()})


_INFO_PREFIX = b'{"type":"info","msg":"'
_TYPE_START = len(b'{"type":"')


def kind(frame: bytes) -> str:
    """What a control frame rendered here is, without parsing it: its
    ``type``, or ``info:<msg>`` for a notice (``info:ping``, ``info:topic_deleted``).

    Relies on this module writing ``type`` first and, in a notice, ``msg``
    second; a transport that frames by kind (SSE) calls it per control frame.
    """
    if frame.startswith(_INFO_PREFIX):
        start = len(_INFO_PREFIX)
        return "info:" + frame[start : frame.index(b'"', start)].decode()
    return frame[_TYPE_START : frame.index(b'"', _TYPE_START)].decode()


def presence(topic: str, subscribers: list[dict[str, Any]], request_id: str | None, truncated: bool) -> bytes:
    """Reply to a ``presence`` frame; ``truncated`` only when the list was cut."""
    frame: dict[str, Any] = {"type": "presence", "topic": topic, "subscribers": subscribers}
    if truncated:
        frame["truncated"] = True
    return encode(_with_request_id(frame, request_id) | {"ts": timestamp()})


def info(msg: str, topic: str | None = None, **extra: Any) -> bytes:
    """Server notice: heartbeat ``ping``, ``topic_deleted``, ``shutting_down``, ``history_gap``,
    ``token_expiring``, ``subscription_revoked``."""
    frame: dict[str, Any] = {"type": "info", "msg": msg}
    if topic is not None:
        frame["topic"] = topic
    frame.update(extra)
    frame["ts"] = timestamp()
    return encode(frame)
