"""Fixtures: a real tornado-pubsub server on a loopback port, real WebSocket
clients that are closed on teardown, and a small JSON REST helper.

Per-test settings: ``@pytest.mark.pubsub(queue_size=5, overflow_policy="disconnect")``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.websocket

from tests.kit import hypothesis_profiles  # noqa: F401  (registers ci/long before the plugin reads --hypothesis-profile)
from tornado_pubsub.server.app import make_app, server_options
from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.settings import Settings

RECV_TIMEOUT = 5.0


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    marker = request.node.get_closest_marker("pubsub")
    overrides = dict(marker.kwargs) if marker else {}
    return Settings(port=0, **overrides)


@pytest.fixture
def broker(settings: Settings) -> Broker:
    return Broker.from_settings(settings)


@pytest.fixture
def app(settings: Settings, broker: Broker):
    application = make_app(settings, broker)
    yield application
    application.pubsub.heartbeat.stop()


@pytest.fixture
def http_server(io_loop, http_server_port, app, settings):
    """pytest-tornasync's server, but built with the production ``server_options``
    (max_body_size, xheaders, ...) so tests see what users see."""
    server = tornado.httpserver.HTTPServer(app, **server_options(settings))
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)
    io_loop.run_sync(lambda: close_websockets(app), timeout=10)


async def close_websockets(app) -> None:
    """Close the WebSockets a test left open, as the server's shutdown would.

    ``close_all_connections`` does not reach upgraded connections.  Left open
    when pytest-tornasync closes the loop, their pending tasks are collected
    during some later test, and asyncio's "Task was destroyed but it is
    pending!" lands in that test's logs.
    """
    left = app.pubsub.heartbeat.abort_all("test teardown", 1001, "server stopped")
    for _ in range(5 if left else 0):  # loop passes for their tasks to see the close and end
        await asyncio.sleep(0)


@pytest.fixture
def port(http_server, http_server_port) -> int:
    return http_server_port[1]


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


@pytest.fixture
def ws_connect(port):
    """``await ws_connect(path="/ws", headers=None)`` -> WsClient, closed on teardown."""
    clients: list[WsClient] = []

    async def connect(path: str = "/ws", headers: dict[str, str] | None = None, **kw: Any) -> WsClient:
        request = tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{port}{path}", headers=headers or {})
        conn = await tornado.websocket.websocket_connect(request, **kw)
        client = WsClient(conn)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


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


@pytest.fixture
def rest(port) -> Rest:
    return Rest(port)
