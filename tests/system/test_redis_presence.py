"""Presence, join/leave, /connections and a user's disconnect across
processes on one real redis-server (PROTOCOL.md 5.4, 6), including a
process killed with SIGKILL."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from tests.handlers.test_presence import next_info
from tests.kit.clients import Rest
from tests.kit.wait import wait_until
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-cluster-presence"
SECRET = "0123456789abcdef-cluster-presence-secret"
ADMIN = {"X-API-Key": KEY}
FLAGS = (f"--api_key={KEY}", f"--token_secret={SECRET}")
CAPS = [{"topics": ["room.*"], "allow": ["subscribe", "presence"]}]


def as_user(sub: str) -> str:
    return "/ws?" + urllib.parse.urlencode({"token": issue(SECRET, sub, CAPS)})


async def two_processes(cluster: Any, topic: str, *flags: str) -> tuple[Any, Any]:
    """Two processes on one Redis, both in the node set, and ``topic`` created (201)."""
    a, b = cluster(2, *FLAGS, *flags)
    await both_registered(a, b)
    assert (await Rest(a.port).call("POST", "/topics", {"name": topic}, headers=ADMIN))[0] == 201
    return a, b


async def both_registered(*procs) -> None:
    """Each process counts the others in its cluster (it registers once it reached Redis)."""

    async def registered() -> bool:
        for proc in procs:
            _, health = await Rest(proc.port).call("GET", "/health")
            if health.get("processes") != len(procs):
                return False
        return True

    await wait_until(registered, 20, "every process registered")


async def presence_on(port: int, topic: str) -> list[tuple[str, str | None]]:
    status, body = await Rest(port).call("GET", f"/topics/{topic}/presence", headers=ADMIN)
    assert status == 200, body
    return sorted((s["client_id"], s["user"]) for s in body["subscribers"])


@pytest.mark.timeout(seconds=90)
async def test_presence_and_join_leave_span_processes(cluster, ws_at):
    a, b = await two_processes(cluster, "room.a")
    watcher = await ws_at(a.port, as_user("7"))
    assert (await watcher.subscribe("room.a", "watcher", presence=True))["type"] == "ack"
    remote = await ws_at(b.port, as_user("42"))
    assert (await remote.subscribe("room.a", "phone"))["type"] == "ack"

    join = await next_info(watcher, "join")
    assert (join["topic"], join["client_id"], join["user"]) == ("room.a", "phone", "42")
    watcher.send({"type": "presence", "topic": "room.a", "request_id": "p"})
    reply = await watcher.recv_type("presence")
    assert sorted((s["client_id"], s["user"]) for s in reply["subscribers"]) == [("phone", "42"), ("watcher", "7")]
    assert len({s["conn_id"] for s in reply["subscribers"]}) == 2  # conn_ids are unique across processes
    for port in (a.port, b.port):
        assert await presence_on(port, "room.a") == [("phone", "42"), ("watcher", "7")]

    await remote.unsubscribe("room.a", "phone")
    leave = await next_info(watcher, "leave")
    assert (leave["client_id"], leave["user"], leave["conn_id"]) == ("phone", "42", join["conn_id"])
    assert await presence_on(b.port, "room.a") == [("watcher", "7")]


@pytest.mark.timeout(seconds=90)
async def test_connections_and_a_users_disconnect_span_processes(cluster, ws_at):
    a, b = await two_processes(cluster, "room.a")
    here = await ws_at(a.port, as_user("42"))
    there = await ws_at(b.port, as_user("42"))
    other = await ws_at(b.port, as_user("7"))
    assert (await there.subscribe("room.a", "phone"))["type"] == "ack"
    for client in (here, other):
        assert (await client.request({"type": "ping"}))["type"] == "pong"

    status, body = await Rest(a.port).call("GET", "/connections", headers=ADMIN)
    assert status == 200
    rows = sorted((row["user"], tuple(row["topics"])) for row in body["connections"])
    assert rows == [("42", ()), ("42", ("room.a",)), ("7", ())]

    status, body = await Rest(a.port).call("POST", "/users/42/disconnect", headers=ADMIN)
    assert status == 200 and body == {"status": "disconnected", "user": "42", "connections": 2}
    assert await here.closed() == 4403 and await there.closed() == 4403
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    _, body = await Rest(b.port).call("GET", "/connections", headers=ADMIN)
    assert [row["user"] for row in body["connections"]] == ["7"]


@pytest.mark.timeout(seconds=90)
async def test_a_killed_process_entries_vanish(cluster, ws_at):
    a, b = await two_processes(cluster, "room.a", "--heartbeat_interval=1", "--heartbeat_timeout=3")
    doomed = await ws_at(b.port, as_user("42"))
    assert (await doomed.subscribe("room.a", "doomed"))["type"] == "ack"
    survivor = await ws_at(a.port, as_user("7"))
    assert (await survivor.subscribe("room.a", "survivor"))["type"] == "ack"
    assert await presence_on(a.port, "room.a") == [("doomed", "42"), ("survivor", "7")]

    b.kill()

    async def gone() -> bool:
        if await presence_on(a.port, "room.a") != [("survivor", "7")]:
            return False
        _, body = await Rest(a.port).call("GET", "/connections", headers=ADMIN)
        return [row["user"] for row in body["connections"]] == ["7"]

    await wait_until(gone, 3, "the killed process's entries gone within heartbeat_timeout")


@pytest.mark.timeout(seconds=90)
async def test_watchers_hear_the_leaves_a_killed_process_could_not_send(cluster, ws_at):
    a, b = await two_processes(cluster, "room.k")
    watcher = await ws_at(a.port, as_user("7"))
    assert (await watcher.subscribe("room.k", "watcher", presence=True))["type"] == "ack"
    doomed = await ws_at(b.port, as_user("42"))
    assert (await doomed.subscribe("room.k", "doomed"))["type"] == "ack"
    joined = await next_info(watcher, "join")
    assert (joined["client_id"], joined["user"]) == ("doomed", "42"), joined

    b.kill()  # SIGKILL: no leave is ever sent by b
    # b drops out of the node set within NODE_TTL (15 s); a reaps every 5 s.
    left = await watcher.recv_type("info", timeout=40)
    while left["msg"] == "ping":  # a heartbeat may come first
        left = await watcher.recv_type("info", timeout=40)
    assert left["msg"] == "leave", left
    assert (left["conn_id"], left["client_id"], left["user"]) == (joined["conn_id"], "doomed", "42"), left
