"""API key on REST and the WebSocket handshake, origin checks, and the key
never reaching a log line."""

from __future__ import annotations

import json
import logging

import pytest
import tornado.httpclient

from .rawws import RawWs, raw_http

KEY = "s3cret-Key-0123"
WITH_KEY = pytest.mark.pubsub(api_key=KEY)

# (method, path, body) for every REST route that needs the key.
PROTECTED = [
    ("GET", "/topics", None),
    ("POST", "/topics", {"name": "fresh"}),
    ("DELETE", "/topics/t", None),
    ("GET", "/stats", None),
    ("POST", "/topics/t/messages", {"payload": 1}),
]
PROTECTED_IDS = [f"{m} {p}" for m, p, _ in PROTECTED]


async def create_with_key(rest, name: str = "t") -> None:
    status, body = await rest.call("POST", "/topics", {"name": name}, headers={"X-API-Key": KEY})
    assert status == 201, body


@WITH_KEY
@pytest.mark.parametrize("method, path, body", PROTECTED, ids=PROTECTED_IDS)
@pytest.mark.parametrize("given", [None, "", "wrong", KEY + "x", KEY.lower()], ids=["missing", "empty", "wrong", "longer", "case"])
async def test_rest_protected_route_bad_key_401_unauthorized(rest, method, path, body, given):
    await create_with_key(rest)
    headers = {} if given is None else {"X-API-Key": given}
    status, reply = await rest.call(method, path, body, headers=headers)
    assert status == 401 and reply["error"]["code"] == "UNAUTHORIZED"
    assert (await rest.call("GET", "/topics", headers={"X-API-Key": KEY}))[1]["topics"] == [{"name": "t", "subscribers": 0}]


@WITH_KEY
@pytest.mark.parametrize("method, path, body", PROTECTED, ids=PROTECTED_IDS)
async def test_rest_protected_route_right_key_succeeds(rest, method, path, body):
    await create_with_key(rest)
    status, _ = await rest.call(method, path, body, headers={"X-API-Key": KEY})
    assert status in (200, 201)


@pytest.mark.parametrize("method, path, body", PROTECTED, ids=PROTECTED_IDS)
async def test_rest_no_key_configured_needs_no_header(rest, method, path, body):
    await rest.create("t")
    status, _ = await rest.call(method, path, body)
    assert status in (200, 201)


@WITH_KEY
@pytest.mark.parametrize("path", ["/health", "/metrics"])
async def test_rest_public_route_without_key_200(rest, path):
    status, _ = await rest.call("GET", path)
    assert status == 200


@WITH_KEY
async def test_ws_handshake_with_header_key_accepted(ws_connect):
    client = await ws_connect(headers={"X-API-Key": KEY})
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@WITH_KEY
async def test_ws_handshake_with_query_key_accepted(ws_connect):
    client = await ws_connect(f"/ws?api_key={KEY}")
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@WITH_KEY
@pytest.mark.parametrize(
    "path, headers",
    [
        ("/ws", {}),
        ("/ws?api_key=", {}),
        ("/ws?api_key=wrong", {}),
        ("/ws", {"X-API-Key": ""}),
        ("/ws", {"X-API-Key": "wrong"}),
        (f"/ws?api_key={KEY}x", {"X-API-Key": "wrong"}),
    ],
    ids=["missing", "empty_query", "wrong_query", "empty_header", "wrong_header", "both_wrong"],
)
async def test_ws_handshake_bad_key_401_before_upgrade(ws_connect, path, headers):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await ws_connect(path, headers=headers)
    assert err.value.code == 401
    assert json.loads(err.value.response.body)["error"]["code"] == "UNAUTHORIZED"


@WITH_KEY
async def test_ws_handshake_bad_key_raw_response_is_json_401_not_101(port):
    status, raw = await raw_http(
        port,
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert status == 401 and b"UNAUTHORIZED" in raw and b"Sec-WebSocket-Accept" not in raw


async def test_ws_handshake_no_key_configured_accepted_without_key(ws_connect):
    client = await ws_connect()
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_ws_handshake_cross_origin_refused_403_json(port):
    status, raw = await raw_http(
        port,
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Origin: http://evil.example\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN" and "origin" in body["error"]["message"]


async def test_ws_handshake_same_origin_accepted(port):
    client = await RawWs.connect(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    client.close()


@pytest.mark.pubsub(allowed_origins=("http://good.example",))
async def test_ws_handshake_listed_origin_accepted_others_refused(port):
    client = await RawWs.connect(port, headers={"Origin": "http://good.example"})
    client.close()
    with pytest.raises(ConnectionError):
        await RawWs.connect(port, headers={"Origin": "http://good.example.evil.example"})


@WITH_KEY
async def test_api_key_never_in_log_records(rest, ws_connect, port, caplog):
    caplog.set_level(logging.DEBUG)
    await create_with_key(rest)
    client = await ws_connect(f"/ws?api_key={KEY}&x=1")
    await client.subscribe("t")
    client.send("not json")  # an error record on a connection opened with the key
    await client.recv()
    for path in ("/ws?api_key=WRONG-guess-777", f"/ws?api_key={KEY}&api_key=WRONG-guess-777"):
        try:
            await ws_connect(path, headers={"X-API-Key": "WRONG-guess-777"})
        except tornado.httpclient.HTTPClientError:
            pass
    await rest.call("GET", f"/nope?api_key={KEY}")
    await rest.call("GET", f"/topics?api_key={KEY}")
    await rest.call("GET", "/stats", headers={"X-API-Key": "WRONG-guess-777"})
    client.close()
    assert caplog.records, "nothing was logged"
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(f"{k}={v!r}" for k, v in vars(record).items())
        assert KEY not in text and "WRONG-guess-777" not in text, text
    assert any("[REDACTED]" in str(getattr(r, "path", "")) for r in caplog.records)


@pytest.mark.pubsub(allowed_origins=("*",))
async def test_ws_handshake_wildcard_origin_accepts_any(port):
    client = await RawWs.connect(port, headers={"Origin": "http://anywhere.example"})
    client.close()


@pytest.mark.pubsub(allowed_origins=("http://good.example",), api_key=KEY)
async def test_ws_handshake_listed_origin_still_needs_key(port):
    with pytest.raises(ConnectionError) as err:
        await RawWs.connect(port, headers={"Origin": "http://good.example"})
    assert "401" in str(err.value)
    client = await RawWs.connect(port, headers={"Origin": "http://good.example", "X-API-Key": KEY})
    client.close()
