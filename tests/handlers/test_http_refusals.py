"""Finding 12: a handshake or request the server refuses is answered in JSON
with its status, never plain text or a silent close: bad upgrades 400/426,
oversized headers 431 (the real server process, whose streams answer it)."""

from __future__ import annotations

import json

import pytest

from tests.kit.procs import ServerProcess
from tests.kit.rawws import raw_http

UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def without(header: str) -> bytes:
    lines = [line for line in UPGRADE.split("\r\n") if line and not line.startswith(header)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def body_of(response: bytes) -> dict:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    return json.loads(body)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (without("Connection"), 400),
        (without("Sec-WebSocket-Key"), 400),
        (UPGRADE.replace("Version: 13", "Version: 99").encode() + b"\r\n", 426),
    ],
    ids=["no-connection-upgrade", "no-key", "bad-version"],
)
async def test_bad_upgrade_is_refused_in_json(port, request_bytes, status):
    got, response = await raw_http(port, request_bytes)
    assert got == status, response
    assert body_of(response)["error"]["code"] == "BAD_REQUEST"
    if status == 426:
        assert b"sec-websocket-version: 7, 8, 13" in response.lower()


async def test_huge_header_gets_431_json_not_a_silent_close():
    with ServerProcess("--log_level=warning") as server:
        request = UPGRADE.encode() + b"X-Padding: " + b"p" * (70 * 1024) + b"\r\n\r\n"
        got, response = await raw_http(server.port, request)
        assert got == 431, response[:200]
        assert body_of(response)["error"]["code"] == "BAD_REQUEST"
        # The server goes on serving.
        status, _ = await raw_http(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 200
