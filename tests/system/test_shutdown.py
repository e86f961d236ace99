"""Graceful shutdown by a real signal to a real server process."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
import tornado.httpclient
import tornado.websocket

from tests.kit.clients import WsClient, new_id
from tests.kit.rawws import RawWs
from tests.kit.procs import ServerProcess

KEY = "shutdown-test-key-42"


@pytest.fixture
def start_server():
    servers: list[ServerProcess] = []

    async def start(*args: str) -> ServerProcess:
        server = ServerProcess(*args).start()  # returns once /health answers
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()  # only the process this test started, by its handle


class KeepAlive:
    """One HTTP/1.1 connection reused for several requests (a load balancer's probe)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "KeepAlive":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
        if key:
            head += f"X-API-Key: {key}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        status_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        headers = dict(
            line.split(": ", 1) for line in status_line.decode().split("\r\n")[1:] if ": " in line
        )
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
        payload = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return int(status_line.split(b" ", 2)[1]), json.loads(payload) if payload else {}

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def ws(ws_at):
    """``await ws(port, key=None)`` -> a WebSocket client sending ``key`` as X-API-Key, closed on teardown."""

    async def connect(port: int, key: str | None = None) -> WsClient:
        return await ws_at(port, headers={"X-API-Key": key} if key else {})

    return connect


async def stuck_with_backlog(server: ServerProcess, ws, count: int = 300) -> tuple[KeepAlive, RawWs, WsClient]:
    """Topic "t" with a subscriber that does not read and a publisher that sent
    ``count`` 16 KiB messages (more than the stuck socket's kernel buffers take),
    so the server holds a backlog.  Returns (HTTP probe, stuck reader, publisher)."""
    probe = await KeepAlive.open(server.port)
    assert (await probe.request("POST", "/topics", {"name": "t"}))[0] == 201
    assert (await probe.request("GET", "/health"))[0] == 200
    stuck = await RawWs.connect(server.port, rcvbuf=4096)
    await stuck.send_json({"type": "subscribe", "topic": "t", "client_id": "stuck"})
    pub = await ws(server.port)
    for i in range(count):
        assert (await pub.publish("t", {"i": i, "pad": "x" * 16384}))["seq"] == i + 1
    return probe, stuck, pub


async def test_sigterm_clients_told_shutting_down_closed_1001_exit_0(io_loop, start_server, ws):
    server = await start_server(f"--api-key={KEY}")
    http = await KeepAlive.open(server.port)
    assert (await http.request("POST", "/topics", {"name": "t"}, key=KEY))[0] == 201
    subs = [await ws(server.port, KEY) for _ in range(3)]
    for sub in subs:
        await sub.subscribe("t")
    server.signal(signal.SIGTERM)
    for sub in subs:
        notice = await sub.recv_type("info")
        assert notice["msg"] == "shutting_down"
        assert await sub.closed(timeout=10) == 1001
    assert await server.exit_code() == 0
    http.close()


async def test_sigint_exits_0_like_sigterm(io_loop, start_server, ws):
    server = await start_server()
    sub = await ws(server.port)
    server.signal(signal.SIGINT)
    assert (await sub.recv_type("info"))["msg"] == "shutting_down"
    assert await sub.closed(timeout=10) == 1001
    assert await server.exit_code() == 0


async def test_sigterm_slow_reader_gets_every_queued_event_while_health_503_and_ops_refused(io_loop, start_server, ws):
    # A queue big enough to hold the backlog, so nothing is dropped before the signal.
    server = await start_server("--queue-size=10000", "--queue-max-bytes=67108864", "--shutdown-timeout=20")
    count = 400
    probe, slow, pub = await stuck_with_backlog(server, ws, count)
    _, stats = await probe.request("GET", "/stats")
    assert stats["topics"]["t"]["dropped"] == 0 and stats["topics"]["t"]["subscribers"] == 1

    server.signal(signal.SIGTERM)
    assert (await pub.recv_type("info"))["msg"] == "shutting_down"
    # The slow reader's backlog keeps the server draining: check what draining means.
    status, health = await probe.request("GET", "/health")
    assert (status, health["status"]) == (503, "draining")
    refused = await pub.publish("t", "late", request_id="late")
    assert refused["type"] == "error" and refused["error"]["code"] == "SHUTTING_DOWN" and refused["request_id"] == "late"
    refused = await pub.subscribe("t")
    assert refused["error"]["code"] == "SHUTTING_DOWN"
    with pytest.raises(ConnectionRefusedError):  # no new connections
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 2)
    assert server.alive()

    frames = await slow.recv_until_close(limit=count + 10, timeout=10)
    assert frames[0]["type"] == "ack"
    assert [f["seq"] for f in frames if f["type"] == "event"] == list(range(1, count + 1))
    assert frames[-1] == {**frames[-1], "type": "info", "msg": "shutting_down"}
    assert slow.close_code == 1001
    assert await pub.closed(timeout=10) == 1001
    assert await server.exit_code() == 0
    probe.close()
    slow.close()


async def test_server_log_is_json_lines_with_operations_and_never_the_key(io_loop, start_server, ws_at):
    server = await start_server(f"--api-key={KEY}")
    http = await KeepAlive.open(server.port)
    await http.request("POST", "/topics", {"name": "t"}, key=KEY)
    client = await ws_at(server.port, f"/ws?api_key={KEY}")
    await client.subscribe("t", client_id="logged-client", request_id="req-1")
    await client.publish("t", 1, new_id())
    client.send("not json")
    await client.recv_type("error")
    with pytest.raises(tornado.httpclient.HTTPClientError):
        await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{server.port}/ws?api_key=guess-{KEY}")
    server.signal(signal.SIGTERM)
    assert await client.closed(timeout=10) == 1001
    assert await server.exit_code() == 0
    http.close()

    assert KEY not in server.log()
    records = server.records()  # every line parses as JSON
    events = {r.get("event") for r in records}
    for name in ("startup", "connect", "subscribe", "publish", "error", "topic_created", "disconnect", "shutdown"):
        assert name in events, f"no {name!r} record"
    subscribe = next(r for r in records if r.get("event") == "subscribe")
    assert subscribe["client_id"] == "logged-client" and subscribe["request_id"] == "req-1" and subscribe["topic"] == "t"
    assert {"ts", "level"} <= set(subscribe) and "remote" in subscribe


async def test_sigterm_reader_that_never_reads_does_not_hold_exit_beyond_timeout(io_loop, start_server, ws):
    server = await start_server("--shutdown-timeout=0.5", "--queue-max-bytes=67108864")
    http, stuck, pub = await stuck_with_backlog(server, ws)
    server.signal(signal.SIGTERM)
    assert await pub.closed(timeout=10) == 1001
    assert await server.exit_code(timeout=15) == 0
    assert "Traceback" not in server.log(), server.log()
    assert not [r for r in server.records() if r["level"] in ("ERROR", "CRITICAL")]
    stuck_gone = [r for r in server.records() if r.get("event") == "disconnect" and r.get("client_id") == "stuck"]
    assert stuck_gone, "the stuck connection was never closed"
    stuck.close()
    http.close()


async def test_second_sigterm_during_drain_exits_0_without_waiting_for_timeout(io_loop, start_server, ws):
    server = await start_server("--shutdown-timeout=600", "--queue-max-bytes=67108864")
    http, stuck, pub = await stuck_with_backlog(server, ws)  # keeps the first shutdown draining
    server.signal(signal.SIGTERM)
    assert (await pub.recv_type("info"))["msg"] == "shutting_down"
    assert (await http.request("GET", "/health"))[0] == 503  # still draining
    server.signal(signal.SIGTERM)
    assert await server.exit_code(timeout=15) == 0  # long before shutdown_timeout
    assert "Traceback" not in server.log(), server.log()[-3000:]
    stuck.close()
    http.close()


async def test_sigterm_tells_an_sse_stream_shutting_down_and_ends_it(start_server, sse_at):
    server = await start_server("--topics=orders")
    stream = await sse_at(server.port, "/topics/orders/events")
    assert stream.status == 200
    server.signal(signal.SIGTERM)
    blocks = await stream.until_end()
    assert [b.frame()["msg"] for b in blocks if b.get("event") == "info"] == ["shutting_down"]
    assert stream.ended
    assert await server.exit_code() == 0
    (disconnect,) = [r for r in server.records() if r.get("event") == "disconnect"]
    assert disconnect["reason"] == "server shutting down"


async def test_sigterm_leaves_every_held_log_record_written(io_loop, start_server, ws_at):
    # Records are written once per loop pass (logs.BufferedHandler): the
    # ones logged during the drain, up to the very last, must still reach
    # the output when the process exits on SIGTERM.
    server = await start_server()
    client = await ws_at(server.port, "/ws")
    assert (await client.request({"type": "ping", "request_id": "p1"}))["type"] == "pong"
    server.signal(signal.SIGTERM)
    assert await client.closed(timeout=10) == 1001
    assert await server.exit_code() == 0
    records = server.records()
    assert [r for r in records if r.get("event") == "disconnect"], "the drain's disconnect record is missing"
    last = records[-1]
    assert (last.get("event"), last.get("outcome")) == ("shutdown", "stopped")
