"""A real nginx, configured from conf/nginx.conf, in front of real servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import tornado.httpclient

from tests.kit.clients import Rest, new_id
from tests.kit.procs import Nginx, ServerProcess

# A loopback address other than 127.0.0.1: what nginx sees and forwards.
CLIENT_ADDRESS = "127.0.0.2"
KEY = "k3y-that-must-never-be-logged"


@pytest.fixture
def stack(tmp_path: Path):
    """``stack(*server_flags, read_timeout=None)`` -> (nginx, server), both stopped on teardown."""
    started = []

    def start(*flags: str, read_timeout: str | None = None) -> tuple[Nginx, ServerProcess]:
        server = ServerProcess("--behind-proxy", *flags, tmp=tmp_path).start()
        started.append(server)
        nginx = Nginx(tmp_path, [server.port], read_timeout).start()
        started.append(nginx)
        return nginx, server

    yield start
    for proc in reversed(started):
        proc.stop()


async def fetch_from(source: str, url: str, **kw) -> tornado.httpclient.HTTPResponse:
    request = tornado.httpclient.HTTPRequest(url, network_interface=source, **kw)
    return await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)


async def test_subscribe_publish_and_replay_through_nginx(stack, ws_at):
    nginx, _ = stack()
    rest = Rest(nginx.port)
    await rest.create("orders")
    pub = await ws_at(nginx.port)
    for n in range(1, 4):
        assert (await pub.publish("orders", n))["seq"] == n

    sub = await ws_at(nginx.port)
    ack = await sub.subscribe("orders", last_n=2, request_id="r1")
    assert (ack["type"], ack["request_id"], ack["last_seq"]) == ("ack", "r1", 3)
    assert [e["message"]["payload"] for e in await sub.events(2)] == [2, 3]
    await pub.publish("orders", 4)
    (event,) = await sub.events(1)
    assert (event["seq"], event["message"]["payload"]) == (4, 4)
    assert (await sub.request({"type": "ping", "request_id": "p"}))["type"] == "pong"


async def test_sse_events_arrive_through_nginx_while_the_stream_is_open(stack, sse_at):
    nginx, _ = stack()
    rest = Rest(nginx.port)
    await rest.create("orders")
    await rest.call("POST", "/topics/orders/messages", {"payload": 0})
    stream = await sse_at(nginx.port, "/topics/orders/events")
    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    await rest.call("POST", "/topics/orders/messages", {"payload": 1})
    # A buffering proxy would hold this small event until the response ends.
    block = await stream.next("event")
    assert (block.frame()["seq"], block.frame()["message"]["payload"]) == (2, 1)
    assert not stream.ended
    # EventSource's reconnect through nginx: Last-Event-ID reaches the server.
    resumed = await sse_at(nginx.port, "/topics/orders/events", headers={"Last-Event-ID": block["id"].replace(":2", ":0")})
    assert [b.frame()["seq"] for b in await resumed.events(2)] == [1, 2]


async def test_rest_through_nginx(stack):
    nginx, _ = stack()
    rest = Rest(nginx.port)
    assert await rest.call("POST", "/topics", {"name": "orders"}) == (201, {"status": "created", "topic": "orders"})
    status, body = await rest.call("POST", "/topics", {"name": "orders"})
    assert (status, body["error"]["code"]) == (409, "TOPIC_EXISTS")
    status, body = await rest.call("POST", "/topics/orders/messages", {"id": new_id(), "payload": {"a": 1}})
    assert (status, body["seq"], body["duplicate"]) == (201, 1, False)
    assert await rest.call("GET", "/topics") == (200, {"topics": [{"name": "orders", "subscribers": 0}]})
    status, stats = await rest.call("GET", "/stats")
    assert status == 200 and stats["topics"]["orders"]["messages"] == 1
    status, health = await rest.call("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, body = await rest.call("GET", "/no/such/route")
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    assert await rest.call("DELETE", "/topics/orders") == (200, {"status": "deleted", "topic": "orders"})


async def test_origin_check_works_through_nginx(stack, ws_at):
    nginx, _ = stack()
    same = await ws_at(nginx.port, headers={"Origin": f"http://127.0.0.1:{nginx.port}"})
    assert (await same.request({"type": "ping"}))["type"] == "pong"
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await ws_at(nginx.port, headers={"Origin": "http://evil.example"})
    assert refused.value.code == 403


async def test_server_logs_the_client_address_nginx_forwarded(stack, ws_at):
    nginx, server = stack()
    # A forged X-Real-IP from the client is replaced by nginx.
    client = await ws_at(nginx.port, headers={"X-Real-IP": "203.0.113.9"}, source=CLIENT_ADDRESS)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    response = await fetch_from(CLIENT_ADDRESS, nginx.base + "/health")
    assert response.code == 200
    client.close()
    server.stop()  # flushes the log

    records = server.records()
    connects = [r for r in records if r.get("event") == "connect"]
    http = [r for r in records if r.get("event") == "http" and r.get("path") == "/health"]
    assert connects and all(r["remote"] == CLIENT_ADDRESS for r in connects), connects
    assert http and http[-1]["remote"] == CLIENT_ADDRESS
    assert "203.0.113.9" not in server.output()
    assert CLIENT_ADDRESS in nginx.access_log()


async def test_forwarded_headers_are_ignored_without_behind_proxy(tmp_path: Path, ws_at):
    server = ServerProcess(tmp=tmp_path).start()
    try:
        client = await ws_at(server.port, headers={"X-Real-IP": "203.0.113.9", "X-Forwarded-For": "203.0.113.10"})
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        client.close()
    finally:
        server.stop()
    connects = [r for r in server.records() if r.get("event") == "connect"]
    assert connects and connects[0]["remote"] == "127.0.0.1"


async def test_idle_subscriber_outlives_a_short_proxy_read_timeout_because_heartbeats_flow(stack, ws_at):
    beating, _ = stack("--heartbeat_interval=0.3", "--heartbeat_timeout=5", read_timeout="1s")
    silent, _ = stack("--heartbeat_interval=60", "--heartbeat_timeout=120", read_timeout="1s")
    for nginx in (beating, silent):
        await Rest(nginx.port).create("orders")
    kept = await ws_at(beating.port)
    await kept.subscribe("orders")
    dropped = await ws_at(silent.port)
    await dropped.subscribe("orders")

    # Without heartbeats nginx cuts the idle socket after proxy_read_timeout...
    await dropped.closed(timeout=10)  # raises TimeoutError if nginx kept it open
    # ...while the subscriber with heartbeats, idle just as long, still gets events.
    await asyncio.sleep(1.5)
    pings = 0
    while True:
        try:
            frame = await kept.recv(timeout=0.05)
        except asyncio.TimeoutError:
            break
        assert frame is not None, "the heartbeat subscriber was disconnected"
        pings += frame["msg"] == "ping"
    assert pings >= 3
    await (await ws_at(beating.port)).publish("orders", "still there?")
    (event,) = await kept.events(1)
    assert event["message"]["payload"] == "still there?"


async def test_api_key_never_appears_in_nginx_or_server_logs(stack, ws_at):
    nginx, server = stack(f"--api_key={KEY}")
    client = await ws_at(nginx.port, path=f"/ws?api_key={KEY}")
    rest = Rest(nginx.port, headers={"X-API-Key": KEY})
    await rest.create("orders")
    await client.subscribe("orders")
    status, _ = await rest.call("POST", "/topics/orders/messages", {"payload": 1})
    assert status == 201
    await client.events(1)
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await ws_at(nginx.port, path="/ws?api_key=wrong-key-also-secret")
    assert refused.value.code == 401
    assert (await rest.call("GET", f"/health?api_key={KEY}"))[0] == 200
    assert (await Rest(nginx.port).call("GET", f"/stats?api_key={KEY}"))[0] == 401
    client.close()
    server.stop()
    nginx.stop()

    assert "/ws" in nginx.access_log() and "/health" in nginx.access_log()
    assert [r for r in server.records() if r.get("event") == "connect"]
    for where, text in (("nginx", nginx.logs()), ("server", server.output())):
        assert KEY not in text, f"api key in the {where} log"
        assert "wrong-key-also-secret" not in text, f"rejected key in the {where} log"


async def test_nginx_upstream_spreads_clients_over_redis_processes(tmp_path: Path, cluster, ws_at):
    servers = cluster(2, "--behind-proxy")
    nginx = Nginx(tmp_path, [s.port for s in servers]).start()
    try:
        await Rest(nginx.port).create("orders")
        subs = []
        for _ in range(4):
            client = await ws_at(nginx.port)
            await client.subscribe("orders")
            subs.append(client)
        status, health = await Rest(nginx.port).call("GET", "/health")
        assert (health["processes"], health["subscribers"]) == (2, 4)
        pub = await ws_at(nginx.port)
        for n in range(5):
            await pub.publish("orders", n)
        for client in subs:
            assert [e["seq"] for e in await client.events(5)] == [1, 2, 3, 4, 5]
        per_process = [len([r for r in s.records() if r.get("event") == "subscribe"]) for s in servers]
        assert all(per_process) and sum(per_process) == 4, per_process
    finally:
        nginx.stop()
