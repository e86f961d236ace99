"""A minimal raw WebSocket client for tests that need control over the socket.

Real client libraries read continuously, answer pings by themselves and
refuse to send malformed frames; these tests need a peer that can stop
reading (so the server's writes really block on a full TCP window), never
answer a ping, send arbitrary opcodes and bytes, stop half-way through a
handshake, or vanish with a TCP reset.  Only what the tests use is
implemented: the handshake, masked frames out, unmasked frames in.  Reads
happen only when a test asks for a frame, never in the background.
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


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame's bytes, header included."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWs:
    """One raw WebSocket connection on a non-blocking socket driven by the running loop.

    ``connect`` is a peer that upgrades or raises and never answers pings;
    ``open`` is a well-behaved peer that answers pings, may skip the upgrade,
    and records a refused handshake's status and body instead of raising.
    """

    def __init__(self, sock: socket.socket, answer_pings: bool) -> None:
        self.sock = sock
        self.answer_pings = answer_pings
        self.buffer = b""
        self.status: int | None = None
        self.response_body = b""
        self.close_code: int | None = None
        self.last_wire = b""  # the last frame received, header included, exactly as sent
        self._out = bytearray()  # what the kernel has not taken yet, in order
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    async def _socket(cls, port: int, rcvbuf: int | None, answer_pings: bool) -> "RawWs":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # must be set before connect to bound the advertised window
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5)
        return cls(sock, answer_pings)

    @classmethod
    async def connect(
        cls, port: int, path: str = "/ws", rcvbuf: int | None = None, headers: dict[str, str] | None = None
    ) -> "RawWs":
        """Connect and upgrade, or raise ConnectionError; pings are never answered."""
        client = await cls._socket(port, rcvbuf, answer_pings=False)
        if await client.handshake(path, headers, host=f"127.0.0.1:{port}") != 101:
            client.close()
            raise ConnectionError(f"handshake refused: {client.status} {client.response_body!r}")
        return client

    @classmethod
    async def open(
        cls, port: int, path: str = "/ws", headers: dict[str, str] | None = None, upgrade: bool = True
    ) -> "RawWs":
        """Connect (and upgrade unless ``upgrade`` is False); pings are answered."""
        client = await cls._socket(port, None, answer_pings=True)
        if upgrade:
            await client.handshake(path, headers)
        return client

    async def handshake(
        self, path: str = "/ws", headers: dict[str, str] | None = None, host: str = "127.0.0.1", timeout: float = 5.0
    ) -> int:
        """Send the upgrade request; returns the HTTP status (101 on success)."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await self._read_until(b"\r\n\r\n", timeout)
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.response_body = await self._read_exactly(length, timeout)
        return self.status

    # -- writing: in order, never blocking the test; await the result to wait for the kernel

    def send_raw(self, data: bytes) -> "asyncio.Future[None]":
        """Write ``data`` after everything written before; the result completes
        once the kernel took it (awaiting it is optional)."""
        loop = asyncio.get_running_loop()
        if not self._out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the server is gone; the next read will say so
                sent = len(data)
            if sent == len(data):
                done: asyncio.Future[None] = loop.create_future()
                done.set_result(None)
                return done
            data = data[sent:]
            self._drained = loop.create_future()
            loop.add_writer(self.sock.fileno(), self._flush)
        self._out += data
        assert self._drained is not None
        return self._drained

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            sent = len(self._out)
        del self._out[:sent]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self.sock.fileno())
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> "asyncio.Future[None]":
        """Send one masked frame (clients must mask, RFC 6455 section 5.3)."""
        return self.send_raw(client_frame(opcode, payload, fin))

    def send_text(self, text: str | bytes) -> "asyncio.Future[None]":
        return self.send_frame(OP_TEXT, text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))

    def send_json(self, frame: Any) -> "asyncio.Future[None]":
        return self.send_text(json.dumps(frame))

    # -- reading: only when asked ---------------------------------------------------

    async def _fill(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
        if not chunk:
            raise ConnectionError("server closed the TCP connection")
        self.buffer += chunk

    async def _read_until(self, marker: bytes, timeout: float) -> bytes:
        while marker not in self.buffer:
            await self._fill(timeout)
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    async def _read_exactly(self, n: int, timeout: float) -> bytes:
        while len(self.buffer) < n:
            await self._fill(timeout)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame as ``(opcode, payload)``, None once the TCP connection
        ended; records the close code of a close frame.  Pings are answered
        and skipped if this peer answers pings."""
        while True:
            try:
                head = await self._read_exactly(2, timeout)
                n = head[1] & 0x7F
                if n in (126, 127):
                    extended = await self._read_exactly(2 if n == 126 else 8, timeout)
                    head += extended
                    (n,) = struct.unpack("!H" if len(extended) == 2 else "!Q", extended)
                payload = await self._read_exactly(n, timeout)
            except ConnectionError:
                return None
            self.last_wire = head + payload
            opcode = head[0] & 0x0F
            if opcode == OP_PING and self.answer_pings:
                self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            return opcode, payload

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next text frame as a dict (pings skipped); None on a close frame or EOF."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame is None or frame[0] == OP_CLOSE:
                return None
            if frame[0] == OP_TEXT:
                return json.loads(frame[1])

    async def recv_wire(self, timeout: float = 5.0) -> bytes:
        """The next data frame exactly as the server put it on the wire, header
        included (pings skipped)."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame is None:
                raise ConnectionError("server closed the TCP connection")
            if frame[0] != OP_PING:
                return self.last_wire

    async def reply(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next ack/error/pong (info and event frames skipped); None once closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv_json(max(0.01, deadline - loop.time()))
            if frame is None or frame["type"] in ("ack", "error", "pong"):
                return frame

    async def recv_until_close(self, limit: int = 100000, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every text frame up to the server's close frame (at most ``limit`` frames)."""
        frames = []
        for _ in range(limit):
            frame = await self.recv_json(timeout)
            if frame is None:
                return frames
            frames.append(frame)
        raise AssertionError(f"no close frame within {limit} frames")

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the TCP connection (data before EOF is discarded)."""
        loop = asyncio.get_running_loop()
        try:
            while await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout):
                pass
        except ConnectionError:
            pass
        return True

    # -- leaving ------------------------------------------------------------------

    def reset(self) -> None:
        """Vanish: close with a TCP RST, no close frame, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            if self._out:
                asyncio.get_running_loop().remove_writer(self.sock.fileno())
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
