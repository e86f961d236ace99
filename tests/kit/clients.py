"""Real clients for a server on 127.0.0.1: WebSocket (``WsClient``, opened only
through ``WsClients``, which closes every client it opened) and JSON over HTTP
(``Rest``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import tornado.httpclient
import tornado.websocket

RECV_TIMEOUT = 5.0
#: What a test client accepts in one frame: big enough for any replay a test provokes.
MAX_MESSAGE_SIZE = 1 << 24


def new_id() -> str:
    return str(uuid.uuid4())


class WsClient:
    """A real WebSocket client speaking JSON frames, with timeouts on every read."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn

    def send(self, frame: Any) -> None:
        self.conn.write_message(frame if isinstance(frame, (str, bytes)) else json.dumps(frame), binary=isinstance(frame, bytes))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any] | None:
        """The next frame as a dict; None once the server closed the connection."""
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if raw is None else json.loads(raw)

    async def recv_type(self, kind: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Skip heartbeats and other frames until one of type ``kind`` arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            assert frame is not None, f"connection closed while waiting for {kind}"
            if frame["type"] == kind:
                return frame

    async def nothing_within(self, seconds: float) -> bool:
        """True if no frame arrives within ``seconds``."""
        try:
            frame = await asyncio.wait_for(self.conn.read_message(), seconds)
        except asyncio.TimeoutError:
            return True
        raise AssertionError(f"unexpected frame: {frame!r}")

    async def request(self, frame: dict[str, Any], timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Send ``frame`` and return the next ack/error/pong reply."""
        self.send(frame)
        return await self.reply(timeout)

    async def reply(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next ack/error/pong (other frames skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await self.recv(max(0.01, deadline - loop.time()))
            assert reply is not None, "connection closed while waiting for a reply"
            if reply["type"] in ("ack", "error", "pong"):
                return reply

    async def subscribe(self, topic: str, client_id: str = "tester", **extra: Any) -> dict[str, Any]:
        return await self.request({"type": "subscribe", "topic": topic, "client_id": client_id, **extra})

    async def unsubscribe(self, topic: str, client_id: str = "tester", **extra: Any) -> dict[str, Any]:
        return await self.request({"type": "unsubscribe", "topic": topic, "client_id": client_id, **extra})

    async def publish(self, topic: str, payload: Any, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
        message = {"id": message_id or new_id(), "payload": payload}
        return await self.request({"type": "publish", "topic": topic, "message": message, **extra})

    async def events(self, count: int, timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        """The next ``count`` event frames (other frames skipped)."""
        return [await self.recv_type("event", timeout) for _ in range(count)]

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    async def closed(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Read until the server closes; return the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await asyncio.wait_for(self.conn.read_message(), max(0.01, deadline - loop.time())) is not None:
            pass
        return self.conn.close_code

    def close(self) -> None:
        self.conn.close()


class WsClients:
    """The one way tests open WebSocket clients: ``await ws(port, path="/ws",
    headers=None, source=None, **kw)`` -> ``WsClient`` to 127.0.0.1:port.

    ``source`` is the local address to connect from; ``kw`` goes to
    ``websocket_connect``.  Every client opened is closed by ``close_all``
    (the ``ws_at``/``ws_connect`` fixtures call it at teardown), so no test
    leaves a socket, or its reader task, behind for a later test.
    """

    def __init__(self) -> None:
        self.opened: list[WsClient] = []

    async def __call__(
        self,
        port: int,
        path: str = "/ws",
        headers: dict[str, str] | None = None,
        source: str | None = None,
        **kw: Any,
    ) -> WsClient:
        request = tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{port}{path}", headers=headers or {}, network_interface=source
        )
        kw.setdefault("max_message_size", MAX_MESSAGE_SIZE)
        client = WsClient(await tornado.websocket.websocket_connect(request, **kw))
        self.opened.append(client)
        return client

    def close_all(self) -> None:
        for client in self.opened:
            client.close()
        self.opened.clear()


class Rest:
    """JSON over HTTP against the test server; never raises on error statuses."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = headers or {}
        self.client = tornado.httpclient.AsyncHTTPClient()

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        response = await self.client.fetch(
            self.base + path,
            method=method,
            body=data,
            headers={**self.headers, **(headers or {})},
            raise_error=False,
            allow_nonstandard_methods=True,
        )
        text = response.body.decode() if response.body else ""
        try:
            return response.code, json.loads(text) if text else None
        except ValueError:
            return response.code, text

    async def create(self, name: str) -> None:
        status, body = await self.call("POST", "/topics", {"name": name})
        assert status == 201, body


async def handshake_status(port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """101 (and None) if the WebSocket handshake upgraded, else (status, JSON body)."""
    request = tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        conn = await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as exc:
        assert exc.response is not None
        body = exc.response.body.decode()
        return exc.code, json.loads(body) if body.startswith("{") else body
    conn.close()
    return 101, None
