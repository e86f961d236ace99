"""Security: constant-time key comparison, no internals in any response, and
log lines an attacker can neither forge nor read a key from.  The key on every
protected route and on the WebSocket handshake, and origin checks, are in
test_auth."""

from __future__ import annotations

import json
import logging
import urllib.parse

import pytest

from tests.kit.clients import Rest, new_id

from tests.kit.procs import ServerProcess
from tests.kit.clients import handshake_status
from tests.kit.wait import wait_until
from tornado_pubsub.core import auth

KEY = "s3cret-Key_0123456789"
LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages", "tornado_pubsub")


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
    with ServerProcess(f"--api_key={KEY}", "--log_level=debug") as server:
        yield server


async def test_log_records_stay_one_json_line_and_never_show_the_key(logged_server, ws_at):
    port = logged_server.port
    hostile = 'evil"\n{"event":"forged","level":"CRITICAL"}\r\n\\'
    topic = "logs"
    keyed = Rest(port, {"X-API-Key": KEY})
    await keyed.create(topic)
    client = await ws_at(port, f"/ws?api_key={urllib.parse.quote(KEY)}")
    frames = [
        {"type": "subscribe", "topic": topic, "client_id": hostile, "request_id": hostile},
        {"type": "subscribe", "topic": "no\nsuch", "client_id": hostile, "request_id": "r2"},
        {"type": "subscribe", "topic": KEY, "client_id": KEY, "request_id": KEY},  # the key as data
        {"type": "publish", "topic": topic, "message": {"id": new_id(), "payload": hostile}, "request_id": hostile},
    ]
    for frame in frames:
        assert (await client.request(frame))["type"] in ("ack", "error")
    client.close()
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
    await wait_until(lambda: not broker.connections, 2, "the closed connection to be forgotten")
    records = [r for r in caplog.records if getattr(r, "conn_id", None) == conn_id]
    logged = [r for r in records if r.getMessage() == "error"]
    (closed,) = [r for r in records if r.getMessage() == "disconnect"]
    assert len(logged) < 100, len(logged)
    assert len(logged) + closed.errors_unlogged == total
