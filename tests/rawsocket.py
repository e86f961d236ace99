"""A deliberately minimal WebSocket client over a raw TCP socket, for tests
that must misbehave in ways a real client library refuses to: arbitrary
opcodes and bytes, half-finished handshakes, vanishing with a TCP reset."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawWs:
    """One raw connection; ``open`` performs the upgrade unless told not to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status: int | None = None
        self.response_body = b""
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls, port: int, path: str = "/ws", headers: dict[str, str] | None = None, upgrade: bool = True
    ) -> "RawWs":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ws = cls(reader, writer)
        if upgrade:
            await ws.handshake(path, headers)
        return ws

    async def handshake(self, path: str = "/ws", headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
        """Send the upgrade request; returns the HTTP status (101 on success)."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.response_body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return self.status

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Write one masked frame as a client must."""
        header = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        header += mask
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes(header) + masked)

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(TEXT, text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))

    def send_json(self, frame: Any) -> None:
        self.send_text(json.dumps(frame))

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame (opcode, payload); pings are answered and skipped; None at EOF."""
        while True:
            try:
                head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
            if opcode == PING:
                self.send_frame(PONG, payload)
                continue
            if opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            return opcode, payload

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next text frame decoded; None once the server closed."""
        frame = await self.recv_frame(timeout)
        if frame is None or frame[0] == CLOSE:
            return None
        return json.loads(frame[1])

    async def reply(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next ack/error/pong (info and event frames skipped); None once closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv_json(max(0.01, deadline - loop.time()))
            if frame is None or frame["type"] in ("ack", "error", "pong"):
                return frame

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection (data before EOF is discarded)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            pass
        return True

    def reset(self) -> None:
        """Vanish: close with a TCP RST, no close frame, no FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()
