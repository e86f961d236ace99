"""The test kit's fixtures, loaded for every test by the root conftest.py:
a real tornado-pubsub server on a loopback port (in this process, on
pytest-tornasync's loop), WebSocket clients that are closed on teardown, a
JSON REST helper, and real redis-server / tornado-pubsub processes.

Per-test settings: ``@pytest.mark.pubsub(queue_size=5, overflow_policy="disconnect")``.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import tornado.httpserver

from tests.kit import hypothesis_profiles  # noqa: F401  (registers ci/long before the plugin reads --hypothesis-profile)
from tests.kit.clients import Rest, WsClients
from tests.kit.procs import Redis, ServerProcess
from tests.kit.sse import SseStreams
from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.server.app import make_app, server_options
from tornado_pubsub.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse ``@pytest.mark.timeout(N)``: pytest-tornasync reads only
    ``timeout(seconds=N)`` and silently ignores a positional limit."""
    for item in items:
        for mark in item.iter_markers("timeout"):
            if mark.args or set(mark.kwargs) - {"seconds"}:
                raise pytest.UsageError(f"{item.nodeid}: write @pytest.mark.timeout(seconds=N), not {mark.args or mark.kwargs}")


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


@pytest.fixture
def ws_at() -> Iterator[WsClients]:
    """``await ws_at(port, path="/ws", headers=None, source=None)`` -> WsClient
    to a server on any port; every client is closed on teardown."""
    clients = WsClients()
    yield clients
    clients.close_all()


@pytest.fixture
def ws_connect(port: int, ws_at: WsClients) -> Callable[..., Any]:
    """``await ws_connect(path="/ws", headers=None)`` -> WsClient to this test's
    server: ``ws_at`` bound to its port (``port`` first, so the clients close
    before the server stops)."""
    return functools.partial(ws_at, port)


@pytest.fixture
def sse_at() -> Iterator[SseStreams]:
    """``await sse_at(port, path, headers=None)`` -> SseStream (raw SSE over
    HTTP/1.1) to a server on any port; every stream is closed on teardown."""
    streams = SseStreams()
    yield streams
    streams.close_all()


@pytest.fixture
def sse_connect(port: int, sse_at: SseStreams) -> Callable[..., Any]:
    """``await sse_connect(path, headers=None)``: ``sse_at`` bound to this test's server."""
    return functools.partial(sse_at, port)


@pytest.fixture
def rest(port: int) -> Rest:
    return Rest(port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A fresh redis-server (persistent: AOF, fsync always) for this test."""
    server = Redis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: Redis) -> Iterator[Callable[..., list[ServerProcess]]]:
    """``cluster(n, *flags)`` -> n tornado-pubsub processes on ``redis_server``, stopped on teardown."""
    started: list[ServerProcess] = []

    def start(n: int, *flags: str) -> list[ServerProcess]:
        procs = [
            ServerProcess("--broker=redis", f"--redis-url={redis_server.url}", *flags, tmp=tmp_path) for _ in range(n)
        ]
        for proc in procs:
            started.append(proc.start())
        return procs

    yield start
    for proc in started:
        proc.stop()
