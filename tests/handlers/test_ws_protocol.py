"""Every frame type and field of the WebSocket protocol over a real socket."""

from __future__ import annotations

import pytest
import tornado.httpclient

from tests.kit.clients import new_id
from tests.kit.rawws import RawWs
from tests.kit.support import TS_RE, subscriber_count, wait_subscribers


async def test_subscribe_existing_topic_ack_carries_every_field(rest, ws_connect):
    await rest.create("orders")
    client = await ws_connect()
    ack = await client.subscribe("orders", request_id="r-1")
    assert ack["type"] == "ack" and ack["request_id"] == "r-1" and ack["topic"] == "orders"
    assert ack["status"] == "ok" and TS_RE.match(ack["ts"])
    assert isinstance(ack["epoch"], str) and ack["epoch"] and ack["last_seq"] == 0
    assert "recovered" not in ack


async def test_subscribe_ack_last_seq_is_newest_seq(rest, ws_connect):
    await rest.create("orders")
    client = await ws_connect()
    for i in range(3):
        await client.publish("orders", i)
    ack = await client.subscribe("orders")
    assert ack["last_seq"] == 3


async def test_publish_ack_carries_seq_duplicate_and_ts(rest, ws_connect):
    await rest.create("orders")
    client = await ws_connect()
    ack = await client.publish("orders", {"a": 1}, request_id="p-1")
    assert ack == {**ack, "type": "ack", "request_id": "p-1", "topic": "orders", "status": "ok", "seq": 1, "duplicate": False}
    assert TS_RE.match(ack["ts"])


async def test_publish_repeated_id_acked_duplicate_and_not_delivered_again(rest, ws_connect):
    await rest.create("orders")
    sub = await ws_connect()
    await sub.subscribe("orders")
    pub = await ws_connect()
    mid = new_id()
    assert (await pub.publish("orders", "first", mid))["seq"] == 1
    again = await pub.publish("orders", "second", mid)
    assert again["seq"] == 1 and again["duplicate"] is True
    await pub.publish("orders", "next")
    events = await sub.events(2)
    assert [e["seq"] for e in events] == [1, 2] and events[0]["message"]["payload"] == "first"


async def test_event_has_every_field_and_same_ts_for_all_subscribers(rest, ws_connect):
    await rest.create("orders")
    subs = [await ws_connect() for _ in range(3)]
    for sub in subs:
        await sub.subscribe("orders")
    pub = await ws_connect()
    mid = new_id()
    ack = await pub.publish("orders", {"n": [1, 2]}, mid)
    events = [(await sub.events(1))[0] for sub in subs]
    first = events[0]
    assert first == {
        "type": "event",
        "topic": "orders",
        "message": {"id": mid, "payload": {"n": [1, 2]}},
        "ts": first["ts"],
        "seq": ack["seq"],
    }
    assert TS_RE.match(first["ts"]) and all(e == first for e in events)


@pytest.mark.parametrize("payload", [None, 0, -1.5, "text", [1, "a", None], {"deep": {"er": [True, False]}}, "é☃\U0001f600"])
async def test_publish_any_json_payload_delivered_verbatim(rest, ws_connect, payload):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    pub = await ws_connect()
    await pub.publish("t", payload)
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == payload


async def test_publish_subscribed_publisher_gets_event_before_ack(rest, ws_connect):
    # The ack is sent only after the message is in every subscriber's queue,
    # the publisher's own included, and one queue keeps its order.
    await rest.create("t")
    client = await ws_connect()
    await client.subscribe("t")
    client.send({"type": "publish", "topic": "t", "message": {"id": new_id(), "payload": 1}, "request_id": "p"})
    first, second = await client.recv(), await client.recv()
    assert first["type"] == "event" and second["type"] == "ack" and second["request_id"] == "p"


async def test_ping_with_request_id_gets_pong_echoing_it(ws_connect):
    client = await ws_connect()
    pong = await client.request({"type": "ping", "request_id": "x"})
    assert pong["type"] == "pong" and pong["request_id"] == "x" and TS_RE.match(pong["ts"])


async def test_ping_without_request_id_gets_pong_without_it(ws_connect):
    client = await ws_connect()
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong" and "request_id" not in pong


async def test_frame_with_unknown_extra_fields_is_accepted(rest, ws_connect):
    await rest.create("t")
    client = await ws_connect()
    ack = await client.subscribe("t", request_id="r", color="blue", nested={"x": 1})
    assert ack["type"] == "ack"


async def test_request_id_echoed_on_every_reply_kind(rest, ws_connect):
    await rest.create("t")
    client = await ws_connect()
    replies = [
        await client.subscribe("t", request_id="a"),
        await client.publish("t", 1, request_id="b"),
        await client.unsubscribe("t", client_id="c", request_id="c"),
        await client.request({"type": "ping", "request_id": "d"}),
        await client.subscribe("missing", request_id="e"),
        await client.request({"type": "bogus", "request_id": "f"}),
    ]
    assert [r["request_id"] for r in replies] == ["a", "b", "c", "d", "e", "f"]
    assert [r["type"] for r in replies] == ["ack", "ack", "ack", "pong", "error", "error"]


async def test_subscribe_last_n_replays_after_ack_then_live(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    for i in range(8):
        await pub.publish("t", i)
    sub = await ws_connect()
    sub.send({"type": "subscribe", "topic": "t", "client_id": "c", "last_n": 5})
    ack = await sub.recv()
    assert ack["type"] == "ack" and ack["last_seq"] == 8
    await pub.publish("t", "live")
    assert [e["seq"] for e in await sub.events(6)] == [4, 5, 6, 7, 8, 9]


@pytest.mark.pubsub(history_size=4)
async def test_subscribe_last_n_above_history_replays_whole_history(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    for i in range(6):
        await pub.publish("t", i)
    sub = await ws_connect()
    await sub.subscribe("t", last_n=1000)
    assert [e["seq"] for e in await sub.events(4)] == [3, 4, 5, 6]
    assert await sub.nothing_within(0.1)


async def test_subscribe_last_n_zero_replays_nothing(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    await pub.publish("t", 0)
    sub = await ws_connect()
    await sub.subscribe("t", last_n=0)
    assert await sub.nothing_within(0.1)


async def test_resume_within_history_recovered_true_replays_missed(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    sub = await ws_connect()
    epoch = (await sub.subscribe("t"))["epoch"]
    for i in range(5):
        await pub.publish("t", i)
    await sub.events(2)
    sub.close()
    again = await ws_connect()
    ack = await again.subscribe("t", since_seq=2, epoch=epoch)
    assert ack["recovered"] is True and ack["epoch"] == epoch
    assert [e["seq"] for e in await again.events(3)] == [3, 4, 5]


@pytest.mark.pubsub(history_size=2)
async def test_resume_past_history_recovered_false_gap_notice_before_replay(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    epoch = (await pub.subscribe("t"))["epoch"]
    for i in range(5):
        await pub.publish("t", i)
    sub = await ws_connect()
    sub.send({"type": "subscribe", "topic": "t", "client_id": "c", "since_seq": 1, "epoch": epoch, "request_id": "r"})
    ack, gap, e1, e2 = [await sub.recv() for _ in range(4)]
    assert ack["type"] == "ack" and ack["recovered"] is False
    assert gap == {"type": "info", "topic": "t", "msg": "history_gap", "epoch": epoch, "first_seq": 4, "ts": gap["ts"]}
    assert (e1["seq"], e2["seq"]) == (4, 5)


async def test_resume_other_epoch_recovered_false_replays_all(rest, ws_connect):
    await rest.create("t")
    pub = await ws_connect()
    for i in range(3):
        await pub.publish("t", i)
    sub = await ws_connect()
    ack = await sub.subscribe("t", since_seq=3, epoch="not-this-epoch")
    gap = await sub.recv_type("info")
    assert ack["recovered"] is False and gap["msg"] == "history_gap"
    assert [e["seq"] for e in await sub.events(3)] == [1, 2, 3]


@pytest.mark.pubsub(heartbeat_interval=0.2, heartbeat_timeout=5)
async def test_heartbeat_interval_sends_info_ping(ws_connect):
    client = await ws_connect()
    notice = await client.recv_type("info", timeout=3)
    assert notice["msg"] == "ping" and TS_RE.match(notice["ts"])


@pytest.mark.pubsub(heartbeat_interval=0.1, heartbeat_timeout=0.4)
async def test_heartbeat_peer_answering_pings_stays_connected(ws_connect):
    client = await ws_connect()
    for _ in range(8):  # several reaps pass; tornado's client answers WebSocket pings while it reads
        await client.recv_type("info", timeout=3)
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.pubsub(heartbeat_interval=0.2, heartbeat_timeout=0.3)
async def test_heartbeat_silent_peer_closed_and_subscriptions_removed(rest, port):
    await rest.create("t")
    peer = await RawWs.connect(port)
    try:
        await peer.send_json({"type": "subscribe", "topic": "t", "client_id": "silent"})
        await wait_subscribers(rest, "t", 1)
        # The peer never reads and never answers a WebSocket ping.
        await wait_subscribers(rest, "t", 0, timeout=3)
        frames = await peer.recv_until_close(timeout=3)
        assert peer.close_code == 1000 and frames[0]["type"] == "ack"
    finally:
        peer.close()


async def test_delete_topic_subscriber_gets_topic_deleted_and_no_more_events(rest, ws_connect):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    status, _ = await rest.call("DELETE", "/topics/t")
    assert status == 200
    notice = await sub.recv_type("info")
    assert notice["msg"] == "topic_deleted" and notice["topic"] == "t" and TS_RE.match(notice["ts"])
    await rest.create("t")
    pub = await ws_connect()
    await pub.publish("t", "after")  # the old subscription ended with the old topic
    assert await sub.nothing_within(0.1)


async def test_close_connection_removes_its_subscriptions(rest, ws_connect):
    for name in ("a", "b"):
        await rest.create(name)
    client = await ws_connect()
    await client.subscribe("a")
    await client.subscribe("b")
    assert await subscriber_count(rest, "a") == 1
    client.close()
    await wait_subscribers(rest, "a", 0)
    assert await subscriber_count(rest, "b") == 0


async def test_subscribe_twice_acked_twice_delivered_once(rest, ws_connect):
    await rest.create("t")
    sub = await ws_connect()
    assert (await sub.subscribe("t", request_id="1"))["type"] == "ack"
    assert (await sub.subscribe("t", request_id="2"))["type"] == "ack"
    assert await subscriber_count(rest, "t") == 1
    pub = await ws_connect()
    await pub.publish("t", "once")
    await sub.events(1)
    assert await sub.nothing_within(0.1)


async def test_unsubscribe_subscribed_acked_and_delivery_stops(rest, ws_connect):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    ack = await sub.unsubscribe("t", client_id="c", request_id="u")
    assert ack == {**ack, "type": "ack", "topic": "t", "status": "ok", "request_id": "u"} and TS_RE.match(ack["ts"])
    pub = await ws_connect()
    await pub.publish("t", 1)
    assert await sub.nothing_within(0.1)
    assert await subscriber_count(rest, "t") == 0


async def test_unsubscribe_not_subscribed_acked(rest, ws_connect):
    await rest.create("t")
    client = await ws_connect()
    ack = await client.unsubscribe("t", client_id="c")
    assert ack["type"] == "ack" and ack["topic"] == "t" and ack["status"] == "ok"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe", "topic": "nope", "client_id": "c"},
        {"type": "unsubscribe", "topic": "nope", "client_id": "c"},
        {"type": "publish", "topic": "nope", "message": {"id": "6f1c2a6e-1d7b-4b7e-9a55-0c1d2e3f4a5b", "payload": 1}},
    ],
    ids=["subscribe", "unsubscribe", "publish"],
)
async def test_operation_unknown_topic_topic_not_found_and_connection_usable(ws_connect, frame):
    client = await ws_connect()
    error = await client.request({**frame, "request_id": "r"})
    assert error["type"] == "error" and error["request_id"] == "r" and TS_RE.match(error["ts"])
    assert error["error"]["code"] == "TOPIC_NOT_FOUND" and "nope" in error["error"]["message"]
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.pubsub(max_subscriptions_per_connection=1)
async def test_subscribe_beyond_per_connection_limit_limit_exceeded(rest, ws_connect):
    await rest.create("a")
    await rest.create("b")
    client = await ws_connect()
    await client.subscribe("a")
    error = await client.subscribe("b", request_id="r")
    assert error["type"] == "error" and error["error"]["code"] == "LIMIT_EXCEEDED" and error["request_id"] == "r"
    assert (await client.subscribe("a"))["type"] == "ack"  # the connection is still usable


@pytest.mark.pubsub(max_connections=1)
async def test_handshake_beyond_max_connections_refused_limit_exceeded(ws_connect):
    await ws_connect()
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await ws_connect()
    assert err.value.code in (429, 503) and b"LIMIT_EXCEEDED" in err.value.response.body


@pytest.mark.pubsub(max_topics=1)
async def test_create_topic_beyond_max_topics_limit_exceeded(rest):
    await rest.create("a")
    status, body = await rest.call("POST", "/topics", {"name": "b"})
    assert status == 429 and body["error"]["code"] == "LIMIT_EXCEEDED"



async def test_replayed_event_identical_to_live_one_including_ts(rest, ws_connect):
    await rest.create("t")
    live = await ws_connect()
    await live.subscribe("t")
    pub = await ws_connect()
    await pub.publish("t", {"k": "v"})
    (original,) = await live.events(1)
    late = await ws_connect()
    await late.subscribe("t", last_n=1)
    (replayed,) = await late.events(1)
    assert replayed == original  # ts is the publish time, not the replay time
