"""Presence over real sockets (PROTOCOL.md 6): the presence frame and REST
route, join/leave notices for every way a subscription ends, and the
permission checked before the topic's existence."""

from __future__ import annotations

import socket
import urllib.parse

import pytest

from tests.handlers.test_backpressure import PAYLOAD, SMALL_QUEUE, publish_until_overflow
from tests.kit.rawws import RawWs
from tests.kit.support import wait_subscribers
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-presence-tests"
SECRET = "0123456789abcdef-presence-secret-0123456789"
ADMIN = {"X-API-Key": KEY}
SECURED = pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)


def token_path(sub: str, *allow: str, topics: str = "room.*") -> str:
    caps = [{"topics": [topics], "allow": list(allow)}]
    return "/ws?" + urllib.parse.urlencode({"token": issue(SECRET, sub, caps)})


def bearer(sub: str, *allow: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue(SECRET, sub, [{"topics": ["room.*"], "allow": list(allow)}])}


async def next_info(client, msg: str) -> dict:
    """The next ``info <msg>`` (heartbeats and events skipped)."""
    for _ in range(100):
        frame = await client.recv_type("info")
        if frame["msg"] == msg:
            return frame
    raise AssertionError(f"no info {msg}")


async def stalled(port: int, rest, topic: str, subscribers: int, presence: bool = False) -> RawWs:
    """A subscriber (``subscribers``-th on the topic) that is acked and then never reads until told to."""
    slow = await RawWs.connect(port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "topic": topic, "client_id": "slow", "presence": presence})
    await wait_subscribers(rest, topic, subscribers)
    return slow


async def watcher(ws_connect, topic: str, path: str = "/ws"):
    client = await ws_connect(path)
    ack = await client.subscribe(topic, "watcher", presence=True)
    assert ack["type"] == "ack", ack
    return client


async def test_presence_frame_lists_every_subscriber_with_user_null_without_credentials(rest, ws_connect):
    await rest.create("room.a")
    a, b = await ws_connect(), await ws_connect()
    await a.subscribe("room.a", "alpha")
    await b.subscribe("room.a", "beta")
    a.send({"type": "presence", "topic": "room.a", "request_id": "p1"})
    reply = await a.recv_type("presence")
    assert reply["request_id"] == "p1" and reply["topic"] == "room.a" and "ts" in reply
    assert sorted(s["client_id"] for s in reply["subscribers"]) == ["alpha", "beta"]
    assert all(s["user"] is None and s["conn_id"] for s in reply["subscribers"])
    assert "truncated" not in reply


async def test_presence_of_a_missing_topic_is_topic_not_found(ws_connect):
    client = await ws_connect()
    reply = await client.request({"type": "presence", "topic": "nowhere", "request_id": "p"})
    assert reply["type"] == "error" and reply["error"]["code"] == "TOPIC_NOT_FOUND" and reply["request_id"] == "p"


@SECURED
async def test_presence_needs_the_presence_action_before_the_topic_is_looked_up(rest, ws_connect):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    client = await ws_connect(token_path("42", "subscribe"))
    for topic in ("room.a", "room.missing"):  # the missing one is FORBIDDEN too: nothing leaks
        reply = await client.request({"type": "presence", "topic": topic})
        assert reply["error"]["code"] == "FORBIDDEN" and "presence" in reply["error"]["message"], reply
        reply = await client.subscribe(topic, presence=True)
        assert reply["error"]["code"] == "FORBIDDEN" and "presence" in reply["error"]["message"], reply
    assert (await client.subscribe("room.a"))["type"] == "ack"  # without presence: allowed


@SECURED
async def test_a_watcher_is_told_of_others_joining_and_leaving_with_their_user(rest, ws_connect):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    watching = await watcher(ws_connect, "room.a", token_path("7", "subscribe", "presence"))
    other = await ws_connect(token_path("42", "subscribe"))
    await other.subscribe("room.a", "phone")
    join = await next_info(watching, "join")
    assert join["topic"] == "room.a" and join["client_id"] == "phone" and join["user"] == "42" and join["conn_id"]
    await other.unsubscribe("room.a", "phone")
    leave = await next_info(watching, "leave")
    assert {k: leave[k] for k in ("topic", "conn_id", "client_id", "user")} == {k: join[k] for k in ("topic", "conn_id", "client_id", "user")}
    watching.send({"type": "presence", "topic": "room.a"})
    assert [s["user"] for s in (await watching.recv_type("presence"))["subscribers"]] == ["7"]


async def test_a_watchers_own_join_is_not_reported_and_plain_subscribers_get_no_notices(rest, ws_connect):
    await rest.create("room.a")
    plain = await ws_connect()
    await plain.subscribe("room.a", "plain")
    watching = await watcher(ws_connect, "room.a")
    assert await watching.nothing_within(0.3)  # not its own join
    third = await ws_connect()
    await third.subscribe("room.a", "third")
    assert (await next_info(watching, "join"))["client_id"] == "third"
    assert await plain.nothing_within(0.3)


async def test_a_subscription_without_presence_stops_watching(rest, ws_connect):
    await rest.create("room.a")
    watching = await watcher(ws_connect, "room.a")
    assert (await watching.subscribe("room.a", "watcher"))["type"] == "ack"  # the latest subscribe decides
    other = await ws_connect()
    await other.subscribe("room.a", "other")
    assert await watching.nothing_within(0.3)


async def test_an_abrupt_tcp_reset_is_a_leave(rest, ws_connect, port):
    await rest.create("room.a")
    watching = await watcher(ws_connect, "room.a")
    raw = await RawWs.connect(port)
    await raw.send_json({"type": "subscribe", "topic": "room.a", "client_id": "vanishing"})
    assert (await raw.reply())["type"] == "ack"
    assert (await next_info(watching, "join"))["client_id"] == "vanishing"
    raw.reset()
    assert (await next_info(watching, "leave"))["client_id"] == "vanishing"


async def test_a_closed_connection_leaves_every_topic_it_held(rest, ws_connect):
    await rest.create("room.a")
    await rest.create("room.b")
    wa, wb = await watcher(ws_connect, "room.a"), await watcher(ws_connect, "room.b")
    other = await ws_connect()
    await other.subscribe("room.a", "x")
    await other.subscribe("room.b", "x")
    other.close()
    assert (await next_info(wa, "leave"))["topic"] == "room.a"
    assert (await next_info(wb, "leave"))["topic"] == "room.b"


@pytest.mark.pubsub(overflow_policy="disconnect", **SMALL_QUEUE)
@pytest.mark.timeout(seconds=90)
async def test_slow_consumer_eviction_is_a_leave(rest, ws_connect, port):
    await rest.create("room.a")
    watching = await watcher(ws_connect, "room.a")
    slow = await stalled(port, rest, "room.a", 2)
    assert (await next_info(watching, "join"))["client_id"] == "slow"
    publisher = await ws_connect()
    await publish_until_overflow(publisher, rest, "room.a")
    assert (await next_info(watching, "leave"))["client_id"] == "slow"
    slow.close()


@pytest.mark.pubsub(**SMALL_QUEUE)
@pytest.mark.timeout(seconds=90)
async def test_join_and_leave_are_never_dropped_by_drop_oldest(rest, ws_connect, port):
    await rest.create("room.a")
    slow = await stalled(port, rest, "room.a", 1, presence=True)
    publisher = await ws_connect()
    await publish_until_overflow(publisher, rest, "room.a")  # its queue now drops events
    other = await ws_connect()
    await other.subscribe("room.a", "late")
    other.close()
    for i in range(20):  # keep the queue overflowing around the notices
        await publisher.publish("room.a", {"i": i, "pad": PAYLOAD})
    await wait_subscribers(rest, "room.a", 1)  # "late" has left
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    notices = []
    for _ in range(5000):
        frame = await slow.recv_json(10)
        assert frame is not None
        if frame["type"] == "info" and frame["msg"] in ("join", "leave"):
            notices.append((frame["msg"], frame["client_id"]))
            if len(notices) == 2:
                break
    assert notices == [("join", "late"), ("leave", "late")]
    _, stats = await rest.call("GET", "/stats")
    assert stats["topics"]["room.a"]["dropped"] > 0  # events were dropped, the notices were not
    slow.close()


@SECURED
async def test_rest_presence_needs_the_admin_key_or_a_token_allowed_presence(rest):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    status, body = await rest.call("GET", "/topics/room.a/presence", headers=ADMIN)
    assert status == 200 and body == {"topic": "room.a", "subscribers": []}
    status, body = await rest.call("GET", "/topics/room.a/presence", headers=bearer("42", "presence"))
    assert status == 200 and body["subscribers"] == []
    status, body = await rest.call("GET", "/topics/room.missing/presence", headers=bearer("42", "presence"))
    assert status == 404 and body["error"]["code"] == "TOPIC_NOT_FOUND"
    for path in ("/topics/room.a/presence", "/topics/room.missing/presence"):  # 403 before existence
        status, body = await rest.call("GET", path, headers=bearer("42", "subscribe"))
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    status, body = await rest.call("GET", "/topics/room.a/presence")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"


@SECURED
async def test_rest_presence_names_the_users_subscribed(rest, ws_connect):
    await rest.call("POST", "/topics", {"name": "room.a"}, headers=ADMIN)
    client = await ws_connect(token_path("42", "subscribe"))
    await client.subscribe("room.a", "phone")
    status, body = await rest.call("GET", "/topics/room.a/presence", headers=ADMIN)
    assert status == 200
    assert [(s["client_id"], s["user"]) for s in body["subscribers"]] == [("phone", "42")]


@pytest.mark.parametrize("value", ["yes", 1, None, {}])
async def test_presence_flag_must_be_a_json_boolean(rest, ws_connect, value):
    await rest.create("room.a")
    client = await ws_connect()
    reply = await client.subscribe("room.a", presence=value)
    assert reply["type"] == "error" and reply["error"]["code"] == "BAD_REQUEST"
    assert "presence" in reply["error"]["message"] and "true or false" in reply["error"]["message"], reply


async def test_an_event_stream_is_a_subscriber_in_presence_and_in_join_and_leave(rest, ws_connect, sse_connect):
    """PROTOCOL.md 7: an SSE stream counts in presence and join/leave, with client_id sse-<conn_id>."""
    await rest.create("room.sse")
    watching = await watcher(ws_connect, "room.sse")
    stream = await sse_connect("/topics/room.sse/events")
    assert stream.status == 200
    joined = await next_info(watching, "join")
    assert joined["topic"] == "room.sse" and joined["client_id"] == f"sse-{joined['conn_id']}", joined
    watching.send({"type": "presence", "topic": "room.sse"})
    reply = await watching.recv_type("presence")
    assert sorted(s["client_id"] for s in reply["subscribers"]) == sorted(["watcher", joined["client_id"]])
    stream.close()  # the stream's client goes away: the stream's subscription ends
    left = await next_info(watching, "leave")
    assert (left["conn_id"], left["client_id"]) == (joined["conn_id"], joined["client_id"]), left
