"""A WebSocket client on a raw socket: the bytes exactly as the server sent them."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct


async def raw_ws(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client on a bare socket (optionally with a small receive
    buffer), after the handshake; frames are read and written raw."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def client_frame(text: str) -> bytes:
    """A masked client text frame."""
    data = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    if len(data) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(data))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
    return head + mask + masked


async def raw_frame(reader: asyncio.StreamReader) -> bytes:
    """The next whole data frame, header included, exactly as it came off the
    socket (the server's WebSocket pings are skipped)."""
    while (frame := await _any_frame(reader))[0] & 0x0F == 0x9:
        pass
    return frame


async def _any_frame(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(2), 5)
    size = head[1] & 0x7F
    extra = b""
    if size == 126:
        extra = await reader.readexactly(2)
        size = struct.unpack("!H", extra)[0]
    elif size == 127:
        extra = await reader.readexactly(8)
        size = struct.unpack("!Q", extra)[0]
    return head + extra + await asyncio.wait_for(reader.readexactly(size), 5)
