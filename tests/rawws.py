"""A minimal raw WebSocket client for tests that need control over the socket.

Tornado's client reads and answers pings on its own; these tests need a peer
that does not: one that stops reading (so the server's writes really block
on a full TCP window) or never answers a ping.  Only what the tests use is
implemented: the handshake, masked text/close frames out, unmasked frames in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawWs:
    """One raw WebSocket connection on a non-blocking socket driven by the running loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.close_code: int | None = None
        self.last_wire = b""  # the last frame received, header included, exactly as sent

    @classmethod
    async def connect(
        cls, port: int, path: str = "/ws", rcvbuf: int | None = None, headers: dict[str, str] | None = None
    ) -> "RawWs":
        """Connect and complete the handshake; ``rcvbuf`` shrinks the kernel receive buffer."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # must be set before connect to bound the advertised window
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
        client = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await client._read_until(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            sock.close()
            raise ConnectionError(f"handshake refused: {status!r}")
        return client

    async def _fill(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
        if not chunk:
            raise ConnectionError("server closed the TCP connection")
        self.buffer += chunk

    async def _read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        while marker not in self.buffer:
            await self._fill(timeout)
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    async def _read_exactly(self, n: int, timeout: float) -> bytes:
        while len(self.buffer) < n:
            await self._fill(timeout)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (clients must mask, RFC 6455 section 5.3)."""
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send_json(self, frame: Any) -> None:
        await self.send_frame(OP_TEXT, json.dumps(frame).encode())

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame as ``(opcode, payload)``; records the close code of a close frame."""
        head = await self._read_exactly(2, timeout)
        n = head[1] & 0x7F
        if n in (126, 127):
            extended = await self._read_exactly(2 if n == 126 else 8, timeout)
            head += extended
            (n,) = struct.unpack("!H" if len(extended) == 2 else "!Q", extended)
        payload = await self._read_exactly(n, timeout)
        self.last_wire = head + payload
        opcode = head[0] & 0x0F
        if opcode == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        return opcode, payload

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next text frame as a dict (pings skipped, not answered); None on a close frame."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == OP_CLOSE:
                return None
            if opcode == OP_TEXT:
                return json.loads(payload)

    async def recv_wire(self, timeout: float = 5.0) -> bytes:
        """The next data frame exactly as the server put it on the wire, header
        included (pings skipped, not answered)."""
        while (await self.recv_frame(timeout))[0] == OP_PING:
            pass
        return self.last_wire

    async def recv_until_close(self, limit: int = 100000, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every text frame up to the server's close frame (at most ``limit`` frames)."""
        frames = []
        for _ in range(limit):
            frame = await self.recv_json(timeout)
            if frame is None:
                return frames
            frames.append(frame)
        raise AssertionError(f"no close frame within {limit} frames")

    def close(self) -> None:
        self.sock.close()


async def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one raw HTTP request on a new connection; return (status, whole response)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()
    return int(data.split(b" ", 2)[1]), data
