"""API key on REST and the WebSocket handshake, origin checks, and the key
never reaching a log line."""

from __future__ import annotations

import logging
import urllib.parse

import pytest
import tornado.httpclient

from tests.kit.rawws import RawWs, raw_http
from tests.kit.clients import handshake_status

KEY = "s3cret-Key-0123"
WITH_KEY = pytest.mark.pubsub(api_key=KEY)

# (method, path, body) for every REST route that needs the key; "absent" is
# never created: the key is checked before the topic is looked up.
PROTECTED = [
    ("GET", "/topics", None),
    ("POST", "/topics", {"name": "fresh"}),
    ("DELETE", "/topics/t", None),
    ("DELETE", "/topics/absent", None),
    ("GET", "/stats", None),
    ("POST", "/topics/t/messages", {"payload": 1}),
    ("POST", "/topics/absent/messages", {"payload": 1}),
]
PROTECTED_IDS = [f"{m} {p}" for m, p, _ in PROTECTED]
BAD_KEYS = {
    "missing": None,
    "empty": "",
    "wrong": "wrong",
    "longer": KEY + "x",
    "prefix": KEY[:-1],
    "lower": KEY.lower(),
    "upper": KEY.upper(),
}


def _ws_bad_key_cases() -> list:
    cases = [pytest.param("/ws", {}, id="missing")]
    for which, key in BAD_KEYS.items():
        if key is not None:
            cases.append(pytest.param("/ws?api_key=" + urllib.parse.quote(key), {}, id=f"{which}_query"))
            cases.append(pytest.param("/ws", {"X-API-Key": key}, id=f"{which}_header"))
    cases.append(pytest.param(f"/ws?api_key={KEY}x", {"X-API-Key": "wrong"}, id="both_wrong"))
    return cases


async def create_with_key(rest, name: str = "t") -> None:
    status, body = await rest.call("POST", "/topics", {"name": name}, headers={"X-API-Key": KEY})
    assert status == 201, body


@WITH_KEY
@pytest.mark.parametrize("method, path, body", PROTECTED, ids=PROTECTED_IDS)
@pytest.mark.parametrize("which", list(BAD_KEYS))
async def test_rest_protected_route_bad_key_401_unauthorized(rest, method, path, body, which):
    await create_with_key(rest)
    key = BAD_KEYS[which]
    headers = {} if key is None else {"X-API-Key": key}
    status, reply = await rest.call(method, path, body, headers=headers)
    assert status == 401 and reply["error"]["code"] == "UNAUTHORIZED", (status, reply)
    assert (await rest.call("GET", "/topics", headers={"X-API-Key": KEY}))[1]["topics"] == [{"name": "t", "subscribers": 0}]


@WITH_KEY
async def test_rest_key_in_the_query_string_is_not_accepted(rest):
    # The query parameter is for browsers' WebSocket handshakes only.
    status, _ = await rest.call("GET", "/topics?api_key=" + urllib.parse.quote(KEY))
    assert status == 401


@WITH_KEY
@pytest.mark.parametrize("method, path, body", [r for r in PROTECTED if "absent" not in r[1]], ids=[i for i in PROTECTED_IDS if "absent" not in i])
async def test_rest_protected_route_right_key_succeeds(rest, method, path, body):
    await create_with_key(rest)
    status, reply = await rest.call(method, path, body, headers={"X-API-Key": KEY})
    assert status in (200, 201), (method, path, status, reply)


@pytest.mark.parametrize("method, path, body", [r for r in PROTECTED if "absent" not in r[1]], ids=[i for i in PROTECTED_IDS if "absent" not in i])
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
@pytest.mark.parametrize(
    "path, headers",
    [
        ("/ws", {"X-API-Key": KEY}),
        (f"/ws?api_key={KEY}", {}),
        # Either source is enough: a right query parameter beside a wrong header passes.
        (f"/ws?api_key={KEY}", {"X-API-Key": "nope"}),
    ],
    ids=["header", "query", "query_beside_wrong_header"],
)
async def test_ws_handshake_with_the_key_upgrades(ws_connect, path, headers):
    client = await ws_connect(path, headers=headers)
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@WITH_KEY
@pytest.mark.parametrize("path, headers", _ws_bad_key_cases())
async def test_ws_handshake_bad_key_401_before_upgrade(port, broker, path, headers):
    status, body = await handshake_status(port, path, headers)
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", (status, body)
    assert not broker.connections


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
        _origin_case("http://good.example", ("http://good.example",), True),
        _origin_case("http://good.example.evil.example", ("http://good.example",), False),
        _origin_case("http://anything.example", ("*",), True),
        _origin_case("http://anywhere.example", ("*",), True),
    ],
)
async def test_cross_origin_handshake_is_refused_403_json_unless_allowed(port, broker, origin, ok):
    status, body = await handshake_status(port, headers={"Origin": origin})
    assert (status == 101) is ok, (origin, status)
    if not ok:
        assert status == 403 and not broker.connections
        assert body["error"]["code"] == "FORBIDDEN" and "origin" in body["error"]["message"], body


async def test_ws_handshake_same_origin_accepted(port):
    client = await RawWs.connect(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    client.close()
    status, _ = await handshake_status(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 101


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


@pytest.mark.pubsub(allowed_origins=("http://good.example",), api_key=KEY)
async def test_ws_handshake_listed_origin_still_needs_key(port):
    with pytest.raises(ConnectionError) as err:
        await RawWs.connect(port, headers={"Origin": "http://good.example"})
    assert "401" in str(err.value)
    client = await RawWs.connect(port, headers={"Origin": "http://good.example", "X-API-Key": KEY})
    client.close()
