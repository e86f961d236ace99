"""Server-to-client WebSocket text framing for the writer's batch path.

The bytes are exactly those Tornado's ``WebSocketProtocol13`` writes for
``write_message(data)`` on a server connection without per-message
compression (FIN + opcode 1, unmasked, 7/16/64-bit length), so a writer can
frame a whole batch itself and hand it to the stream in one write instead of
one write, one Future and one Task per frame.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN | opcode 1 (text)
_SHORT = tuple(bytes((_TEXT, n)) for n in range(126))
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def text_header(size: int) -> bytes:
    """The frame header of a ``size``-byte text message."""
    if size < 126:
        return _SHORT[size]
    if size <= 0xFFFF:
        return _MEDIUM(_TEXT, 126, size)
    return _LONG(_TEXT, 127, size)
