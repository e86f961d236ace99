"""What each patch relies on, checked once at import against the installed
Tornado; ``ENABLED`` holds the results."""

from __future__ import annotations

import collections
import inspect
from typing import Any

import tornado.web
import tornado.websocket
from tornado.http1connection import HTTP1Connection
from tornado.iostream import BaseIOStream, IOStream
from tornado.locks import Event as _LockEvent
from tornado.queues import Queue

_WS13 = tornado.websocket.WebSocketProtocol13


def _params(func: Any) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _has_init_attrs(cls: type, *names: str) -> bool:
    """True if ``cls.__init__`` assigns every ``self.<name>`` (read from its source)."""
    try:
        source = inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return False
    return all(f"self.{name}" in source for name in names)


def _check_queue_standins() -> bool:
    queue: Queue[Any] = Queue(maxsize=1)
    return (
        isinstance(getattr(queue, "_getters", None), collections.deque)
        and isinstance(getattr(queue, "_putters", None), collections.deque)
        and isinstance(getattr(queue, "_finished", None), _LockEvent)
    )


def _check_frame_loop() -> bool:
    loop = getattr(_WS13, "_receive_frame_loop", None)
    return (
        inspect.iscoroutinefunction(loop)
        and _params(loop) == ["self"]
        and _params(_WS13.__init__) == ["self", "handler", "mask_outgoing", "params"]
        and _params(getattr(tornado.websocket.WebSocketHandler, "on_ws_connection_close", None))
        == ["self", "close_code", "close_reason"]
    )


def _check_utf8() -> bool:
    return (
        _params(getattr(_WS13, "_handle_message", None)) == ["self", "opcode", "data"]
        and _params(getattr(_WS13, "_run_callback", None)) == ["self", "callback", "args", "kwargs"]
        and _has_init_attrs(_WS13, "_frame_compressed", "_message_bytes_in")
    )


def _check_linger() -> bool:
    return (
        _params(getattr(_WS13, "_abort", None)) == ["self"]
        and _params(_WS13.close) == ["self", "code", "reason"]
        and _has_init_attrs(tornado.websocket.WebSocketProtocol, "server_terminated", "client_terminated", "stream")
    )


def _check_one_pass_read() -> bool:
    return (
        _params(_WS13._receive_frame) == ["self"]
        and _params(getattr(_WS13, "_handle_message", None)) == ["self", "opcode", "data"]
        and callable(getattr(tornado.websocket, "_websocket_mask", None))
        and _has_init_attrs(_WS13, "_decompressor", "_fragmented_message_buffer", "_wire_bytes_in", "params")
        and _params(getattr(IOStream, "_consume", None)) == ["self", "loc"]
        and _has_init_attrs(BaseIOStream, "_read_buffer = bytearray()", "_read_buffer_size", "_read_future", "_user_read_buffer")
    )


def _in_order(source: str, *parts: str) -> bool:
    """True if each of ``parts`` occurs in ``source``, in this order."""
    at = -1
    for part in parts:
        at = source.find(part, at + 1)
        if at < 0:
            return False
    return True


def _check_strict_frames() -> bool:
    source = inspect.getsource(_WS13._receive_frame)
    return (
        inspect.iscoroutinefunction(_WS13._receive_frame)
        and _params(_WS13._receive_frame) == ["self"]
        and _params(getattr(_WS13, "_read_bytes", None)) == ["self", "n"]
        # the frame header is the first thing it reads; then, for a data
        # frame, the 16- or 64-bit length, both before the size check,
        # which counts the fragments
        and _in_order(
            source,
            "self._read_bytes(2)",
            "mask_payloadlen & 0x80",
            "opcode_is_control and payloadlen >= 126",
            "self._read_bytes(2)",
            "self._read_bytes(8)",
            "len(self._fragmented_message_buffer)",
            "max_message_size",
        )
        and _params(getattr(_WS13, "_handle_message", None)) == ["self", "opcode", "data"]
        and _params(_WS13.close) == ["self", "code", "reason"]
        and _has_init_attrs(tornado.websocket.WebSocketProtocol, "client_terminated", "stream")
        and _has_init_attrs(_WS13, "_decompressor", "_fragmented_message_buffer", "params")
    )


def _check_handshake_state() -> bool:
    return _has_init_attrs(tornado.web.RequestHandler, "clear()") and "self._headers = " in inspect.getsource(
        tornado.web.RequestHandler.clear
    )


def _check_connection_headers() -> bool:
    return _has_init_attrs(HTTP1Connection, "_request_headers")

#: Patch name -> whether the installed Tornado passed its check.
ENABLED: dict[str, bool] = {
    "queue_standins": _check_queue_standins(),
    "frame_loop_task": _check_frame_loop(),
    "invalid_utf8_reply": _check_utf8(),
    "linger_after_1009": _check_linger(),
    "release_headers": _check_handshake_state(),
    "release_connection_headers": _check_connection_headers(),
    "strict_frames": _check_strict_frames(),
    "one_pass_read": _check_one_pass_read(),
}
# Tornado < 6.5 keeps its read buffer's start at an offset; later ones at 0.
_BUFFER_POS = _has_init_attrs(BaseIOStream, "_read_buffer_pos")


def disabled() -> list[str]:
    """The patches left out on this Tornado (for the startup record)."""
    return [name for name, ok in ENABLED.items() if not ok]
