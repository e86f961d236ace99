"""The administrator's view of users (PROTOCOL.md 5.4) over real sockets:
``GET /connections`` and ``POST /users/{sub}/disconnect`` (close 4403)."""

from __future__ import annotations

import pytest

from tests.handlers.test_presence import ADMIN, KEY, SECRET, SECURED, bearer, next_info, token_path, watcher


@SECURED
async def test_connections_lists_each_connection_with_its_user_topics_and_queue(rest, ws_connect):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    client = await ws_connect(token_path("42", "subscribe"))
    await client.subscribe("room.a", "phone")
    admin = await ws_connect("/ws", {"X-API-Key": KEY})
    assert (await admin.request({"type": "ping"}))["type"] == "pong"
    status, body = await rest.call("GET", "/connections", headers=ADMIN)
    assert status == 200
    rows = {row["user"]: row for row in body["connections"]}
    assert set(rows) == {"42", None}
    row = rows["42"]
    assert row["topics"] == ["room.a"] and row["remote"] == "127.0.0.1"
    assert row["queued"] >= 0 and row["dropped"] == 0 and row["conn_id"]
    assert row["connected_at"].endswith("Z") and "T" in row["connected_at"]
    assert rows[None]["topics"] == []


@SECURED
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/connections"), ("POST", "/users/42/disconnect")]
)
async def test_admin_routes_are_401_without_a_credential_and_403_for_a_user_token(rest, method, path):
    for headers, status, code in (
        ({}, 401, "UNAUTHORIZED"),
        ({"X-API-Key": "wrong"}, 401, "UNAUTHORIZED"),
        (bearer("42", "subscribe", "publish", "presence"), 403, "FORBIDDEN"),
    ):
        got, body = await rest.call(method, path, headers=headers)
        assert (got, body["error"]["code"]) == (status, code), (headers, body)


@SECURED
async def test_disconnecting_a_user_closes_each_of_its_connections_with_4403_and_nobody_elses(rest, ws_connect):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    watching = await watcher(ws_connect, "room.a", token_path("7", "subscribe", "presence"))
    first = await ws_connect(token_path("42", "subscribe"))
    second = await ws_connect(token_path("42", "subscribe"))
    await first.subscribe("room.a", "first")
    assert (await next_info(watching, "join"))["user"] == "42"
    status, body = await rest.call("POST", "/users/42/disconnect", headers=ADMIN)
    assert status == 200 and body == {"status": "disconnected", "user": "42", "connections": 2}
    assert await first.closed() == 4403 and await second.closed() == 4403
    leave = await next_info(watching, "leave")
    assert (leave["user"], leave["client_id"]) == ("42", "first")
    assert (await watching.request({"type": "ping"}))["type"] == "pong"  # user 7 is still here
    _, listed = await rest.call("GET", "/connections", headers=ADMIN)
    assert [row["user"] for row in listed["connections"]] == ["7"]


@SECURED
async def test_disconnecting_a_user_with_no_connections_is_200_with_zero(rest):
    status, body = await rest.call("POST", "/users/nobody/disconnect", headers=ADMIN)
    assert status == 200 and body == {"status": "disconnected", "user": "nobody", "connections": 0}


async def test_without_credentials_configured_connections_have_no_user(rest, ws_connect):
    client = await ws_connect()
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    status, body = await rest.call("GET", "/connections")
    assert status == 200 and [row["user"] for row in body["connections"]] == [None]
