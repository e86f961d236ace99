"""A raw server-sent-events client for tests: one HTTP/1.1 GET over a plain
socket, the response's chunked body decoded by hand, SSE blocks parsed as
the spec says (``id``, ``event``, ``data``, comments).  Raw on purpose: the
tests assert the exact bytes on the wire, and the moment the stream ends.

Open it through the ``sse_at`` fixture (``tests.kit.plugin``), which closes
every stream on teardown.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from tests.kit.clients import RECV_TIMEOUT


class Block(dict):
    """One SSE block: ``id``, ``event``, ``data`` (str) and ``comment`` when present."""

    def frame(self) -> dict[str, Any]:
        """``data`` decoded as the JSON frame it carries."""
        return json.loads(self["data"])


class SseStream:
    """A GET of an event stream.  ``status``/``headers`` once open; for a
    refused request ``body`` (parsed JSON); for a stream, ``block()``.

    Reads happen only when a test asks for something, never in the
    background, so a test can stop reading and the server's writes really
    block on a full TCP window (as ``rawws.RawWs`` does for WebSockets)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: Any = None
        self.raw = b""  # every decoded body byte so far, for framing asserts
        self._buffer = b""  # bytes received, not yet decoded
        self._pending = b""  # decoded body bytes, not yet parsed into blocks
        self.ended = False  # the server ended the response (last chunk, or closed)

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str] | None = None, rcvbuf: int | None = None) -> "SseStream":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, to bound the advertised window
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), RECV_TIMEOUT)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        return cls(sock)

    async def _fill(self, timeout: float) -> bool:
        """Receive more bytes; False once the server closed the connection."""
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        except ConnectionError:  # reset: the server aborted the connection
            return False
        self._buffer += data
        return bool(data)

    async def _until(self, marker: bytes, timeout: float) -> bytes | None:
        deadline = asyncio.get_running_loop().time() + timeout
        while marker not in self._buffer:
            if not await self._fill(max(0.01, deadline - asyncio.get_running_loop().time())):
                return None
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    async def _exactly(self, size: int, timeout: float) -> bytes | None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self._buffer) < size:
            if not await self._fill(max(0.01, deadline - asyncio.get_running_loop().time())):
                return None
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def start(self) -> "SseStream":
        """Read the status line and headers (and a refusal's JSON body)."""
        head = await self._until(b"\r\n\r\n", RECV_TIMEOUT)
        assert head is not None, "connection closed before the response"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        if "content-length" in self.headers:
            body = await self._exactly(int(self.headers["content-length"]), RECV_TIMEOUT)
            self.body = json.loads(body) if body else None
        return self

    async def _chunk(self, timeout: float) -> bool:
        """Decode the next chunk into ``_pending``; False once the body ended."""
        if self.ended:
            return False
        size_line = await self._until(b"\r\n", timeout)
        size = int(size_line.split(b";")[0], 16) if size_line else 0
        data = await self._exactly(size + 2, timeout) if size else None
        if data is None:
            self.ended = True
            return False
        self.raw += data[:-2]
        self._pending += data[:-2]
        return True

    async def block(self, timeout: float = RECV_TIMEOUT) -> Block | None:
        """The next SSE block (comments included); None once the stream ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while b"\n\n" not in self._pending:
            if not await self._chunk(max(0.01, deadline - loop.time())):
                return None
        text, _, self._pending = self._pending.partition(b"\n\n")
        block = Block()
        for line in text.decode("utf-8").split("\n"):
            if line.startswith(":"):
                block["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            block[name] = block[name] + "\n" + value if name == "data" and name in block else value
        return block

    async def next(self, event: str, timeout: float = RECV_TIMEOUT) -> Block:
        """Skip other blocks (pings, notices) until one with ``event: <event>``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            block = await self.block(max(0.01, deadline - loop.time()))
            assert block is not None, f"stream ended while waiting for event {event!r}"
            if block.get("event") == event:
                return block

    async def events(self, count: int, timeout: float = RECV_TIMEOUT) -> list[Block]:
        """The next ``count`` blocks with ``event: event``."""
        return [await self.next("event", timeout) for _ in range(count)]

    async def until_end(self, timeout: float = RECV_TIMEOUT) -> list[Block]:
        """Every block left, once the server ends the stream (fails if it does not)."""
        blocks = []
        while (block := await self.block(timeout)) is not None:
            blocks.append(block)
        return blocks

    def close(self) -> None:
        self.sock.close()


class SseStreams:
    """``await sse_at(port, path, headers=None, rcvbuf=None, start=True)``: an
    ``SseStream``, started (status and headers read) unless ``start=False``;
    every one is closed by ``close_all``."""

    def __init__(self) -> None:
        self.opened: list[SseStream] = []

    async def __call__(
        self, port: int, path: str, headers: dict[str, str] | None = None, rcvbuf: int | None = None, start: bool = True
    ) -> SseStream:
        stream = await SseStream.open(port, path, headers, rcvbuf)
        self.opened.append(stream)
        return await stream.start() if start else stream

    def close_all(self) -> None:
        for stream in self.opened:
            stream.close()
