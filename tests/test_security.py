"""Security: the API key on every protected route and on the WebSocket
handshake, constant-time comparison, origin checks, no internals in any
response, and log lines an attacker can neither forge nor read a key from."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse

import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import Rest, new_id
from tests.servers import ProcServer
from tests.support import handshake_status
from tornado_pubsub import auth

KEY = "s3cret-Key_0123456789"
LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages", "tornado_pubsub")

PROTECTED = [
    ("GET", "/topics", None),
    ("POST", "/topics", {"name": "secured"}),
    ("POST", "/topics/secured/messages", {"payload": 1}),
    ("GET", "/stats", None),
    ("DELETE", "/topics/secured", None),
]
BAD_KEYS = {"missing": None, "wrong": KEY + "x", "empty": "", "prefix": KEY[:-1], "case": KEY.upper()}


@pytest.mark.pubsub(api_key=KEY)
@pytest.mark.parametrize("method,path,body", PROTECTED)
@pytest.mark.parametrize("which", sorted(BAD_KEYS))
async def test_protected_route_without_the_right_key_is_401(rest, method, path, body, which):
    key = BAD_KEYS[which]
    headers = {} if key is None else {"X-API-Key": key}
    status, reply = await rest.call(method, path, body, headers=headers)
    assert status == 401, (status, reply)
    assert reply["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.pubsub(api_key=KEY)
async def test_rest_key_in_the_query_string_is_not_accepted(rest):
    # The query parameter is for browsers' WebSocket handshakes only.
    status, _ = await rest.call("GET", "/topics?api_key=" + urllib.parse.quote(KEY))
    assert status == 401


@pytest.mark.pubsub(api_key=KEY)
async def test_protected_routes_work_with_the_key_and_public_ones_without(port):
    keyed = Rest(port, {"X-API-Key": KEY})
    for method, path, body in PROTECTED:
        status, reply = await keyed.call(method, path, body)
        assert status in (200, 201), (method, path, status, reply)
    anonymous = Rest(port)
    assert (await anonymous.call("GET", "/health"))[0] == 200
    assert (await anonymous.call("GET", "/metrics"))[0] == 200


@pytest.mark.pubsub(api_key=KEY)
@pytest.mark.parametrize("which", sorted(BAD_KEYS))
@pytest.mark.parametrize("where", ["header", "query"])
async def test_ws_handshake_without_the_right_key_is_401(port, broker, which, where):
    key = BAD_KEYS[which]
    if where == "header":
        status, body = await handshake_status(port, headers={} if key is None else {"X-API-Key": key})
    else:
        query = "" if key is None else "?api_key=" + urllib.parse.quote(key)
        status, body = await handshake_status(port, "/ws" + query)
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", (status, body)
    assert not broker.connections


@pytest.mark.pubsub(api_key=KEY)
async def test_ws_handshake_with_the_key_in_header_or_query_upgrades(port):
    assert (await handshake_status(port, headers={"X-API-Key": KEY}))[0] == 101
    assert (await handshake_status(port, "/ws?api_key=" + urllib.parse.quote(KEY)))[0] == 101
    # Either source is enough: a right query parameter beside a wrong header passes.
    assert (await handshake_status(port, "/ws?api_key=" + urllib.parse.quote(KEY), {"X-API-Key": "nope"}))[0] == 101


@pytest.mark.pubsub(api_key=KEY)
async def test_keys_are_compared_with_a_constant_time_function(rest, port, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    await rest.call("GET", "/topics", headers={"X-API-Key": "guess"})
    assert calls and calls[-1][1] == b"guess"
    await handshake_status(port, headers={"X-API-Key": "guess2"})
    assert calls[-1][1] == b"guess2"


def _origin_case(origin: str, allowed: tuple[str, ...], ok: bool):
    return pytest.param(origin, ok, marks=pytest.mark.pubsub(allowed_origins=allowed), id=f"{origin}-{allowed}")


@pytest.mark.parametrize(
    "origin,ok",
    [
        _origin_case("http://evil.example", (), False),
        _origin_case("null", (), False),
        _origin_case("http://127.0.0.1.evil.example", (), False),
        _origin_case("http://app.example", ("http://app.example",), True),
        _origin_case("HTTP://APP.EXAMPLE/", ("http://app.example",), True),
        # Settings built in code (embedding) skip the loader's normalizing.
        _origin_case("http://app.example", (" HTTP://App.Example/",), True),
        _origin_case("http://other.example", ("http://app.example",), False),
        _origin_case("https://app.example", ("http://app.example",), False),
        _origin_case("http://anything.example", ("*",), True),
    ],
)
async def test_cross_origin_handshake_is_refused_unless_allowed(port, broker, origin, ok):
    status, _ = await handshake_status(port, headers={"Origin": origin})
    assert (status == 101) is ok, (origin, status)
    if not ok:
        assert status == 403 and not broker.connections


async def test_same_origin_handshake_is_accepted(port):
    status, _ = await handshake_status(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 101


@pytest.mark.parametrize(
    "method,path,raw,headers",
    [
        ("POST", "/topics", b"{", {}),
        ("POST", "/topics", b"\xff\xfe", {"Content-Type": "text/plain"}),
        ("POST", "/topics", b"[1,2]", {}),
        ("POST", "/topics", b'{"name": "a\\nb"}', {}),
        ("POST", "/topics", b"[" * 5000 + b"]" * 5000, {}),
        ("PATCH", "/topics", b"{}", {}),
        ("GET", "/nope/../../etc/passwd", None, {}),
        ("GET", "/topics/%00", None, {}),
        ("DELETE", "/topics/" + "a" * 300, None, {}),
        ("DELETE", "/topics/%E2%82%AC", None, {}),
        ("POST", "/topics/x/messages", b'{"payload": 1e999}', {}),
        ("GET", "/ws", None, {}),
    ],
)
async def test_bad_requests_get_json_errors_without_internals(rest, method, path, raw, headers):
    status, body = await rest.call(method, path, raw=raw, headers=headers)
    assert 400 <= status < 500, (status, body)
    text = json.dumps(body)
    assert not any(leak in text for leak in LEAKS), text
    assert set(body["error"]) == {"code", "message"}, body


# -- logs (a real process, so the real JSON log configuration) ----------------------


@pytest.fixture
def logged_server():
    with ProcServer(f"--api_key={KEY}", "--log_level=debug") as server:
        yield server


async def test_log_records_stay_one_json_line_and_never_show_the_key(logged_server):
    port = logged_server.port
    hostile = 'evil"\n{"event":"forged","level":"CRITICAL"}\r\n\\'
    topic = "logs"
    keyed = Rest(port, {"X-API-Key": KEY})
    await keyed.create(topic)
    conn = await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{port}/ws?api_key={urllib.parse.quote(KEY)}")
    )
    frames = [
        {"type": "subscribe", "topic": topic, "client_id": hostile, "request_id": hostile},
        {"type": "subscribe", "topic": "no\nsuch", "client_id": hostile, "request_id": "r2"},
        {"type": "subscribe", "topic": KEY, "client_id": KEY, "request_id": KEY},  # the key as data
        {"type": "publish", "topic": topic, "message": {"id": new_id(), "payload": hostile}, "request_id": hostile},
    ]
    for frame in frames:
        conn.write_message(json.dumps(frame))
        reply = json.loads(await conn.read_message())
        while reply["type"] not in ("ack", "error"):
            reply = json.loads(await conn.read_message())
    conn.close()
    await Rest(port, {"X-API-Key": KEY + "wrong"}).call("GET", "/topics")
    await Rest(port).call("GET", f"/topics?api_key={KEY}")
    await keyed.call("DELETE", f"/topics/{topic}")

    logged_server.terminate()
    assert logged_server.wait(15) == 0
    logged_server.kill()  # joins the reader: every line is in
    lines = [line for line in logged_server.lines if line.strip()]
    records = [json.loads(line) for line in lines]  # each line is one whole JSON record
    assert all(isinstance(r, dict) and {"ts", "level", "message"} <= set(r) for r in records), lines
    assert not any(r.get("event") == "forged" for r in records)
    assert any(r.get("client_id") == hostile for r in records), "the hostile client_id is logged verbatim, escaped"
    assert not any(KEY in line for line in lines), [line for line in lines if KEY in line]


async def test_a_flood_of_bad_frames_is_answered_in_full_but_logged_in_moderation(ws_connect, broker, caplog):
    caplog.set_level(logging.INFO, logger="tornado_pubsub")
    client = await ws_connect()
    total = 300
    for i in range(total):
        client.send(b"\x00binary garbage")
    replies = [await client.recv() for _ in range(total)]
    assert all(r["type"] == "error" and r["error"]["code"] == "BAD_REQUEST" for r in replies)
    (conn_id,) = broker.connections
    client.close()
    for _ in range(200):
        if not broker.connections:
            break
        await asyncio.sleep(0.01)
    records = [r for r in caplog.records if getattr(r, "conn_id", None) == conn_id]
    logged = [r for r in records if r.getMessage() == "error"]
    (closed,) = [r for r in records if r.getMessage() == "disconnect"]
    assert len(logged) < 100, len(logged)
    assert len(logged) + closed.errors_unlogged == total
