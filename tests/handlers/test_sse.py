"""Server-sent events (PROTOCOL.md 7): ``GET /topics/{name}/events`` with a raw
HTTP client, against a real server on a loopback port."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.handlers.test_identity_rest import KEY as LOG_KEY
from tests.handlers.test_identity_rest import SECRET as LOG_SECRET
from tests.handlers.test_identity_rest import spellings
from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until
from tornado_pubsub.tokens import issue

KEY = "sse-admin-key"
SECRET = "s" * 40
ORDERS_ONLY = [{"topics": ["orders"], "allow": ["subscribe"]}]


async def publish(rest, topic: str, n: int, start: int = 0) -> list[int]:
    seqs = []
    for i in range(start, start + n):
        status, body = await rest.call("POST", f"/topics/{topic}/messages", {"payload": {"n": i}})
        assert status == 201, body
        seqs.append(body["seq"])
    return seqs


async def test_stream_starts_with_retry_then_frames_each_event_with_its_id(rest, sse_connect, ws_connect):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-accel-buffering"] == "no"
    first = await stream.block()
    assert first == {"retry": "1000"}
    assert stream.raw.startswith(b"retry: 1000\n\n")

    ws = await ws_connect()
    await ws.subscribe("orders")
    await publish(rest, "orders", 2)
    blocks = await stream.events(2)
    ws_events = await ws.events(2)
    status, stats = await rest.call("GET", "/stats")
    epoch = stats["topics"]["orders"]["epoch"]
    for block, ws_event in zip(blocks, ws_events):
        assert set(block) == {"id", "event", "data"}
        assert block["id"] == f"{epoch}:{ws_event['seq']}"
        assert block["event"] == "event"
        assert block.frame() == ws_event  # the event frame exactly as /ws sends it
    # Nothing an SSE client has no use for (the subscribe ack) was written.
    assert b'"type":"ack"' not in stream.raw
    assert b"event: event\ndata: " + json.dumps(ws_events[0], separators=(",", ":")).encode() + b"\n\n" in stream.raw


async def test_stream_counts_as_a_subscriber_with_an_sse_client_id(rest, sse_connect, app):
    await rest.create("orders")
    await sse_connect("/topics/orders/events")
    await sse_connect("/topics/orders/events?client_id=dashboard-7")
    status, topics = await rest.call("GET", "/topics")
    assert topics["topics"] == [{"name": "orders", "subscribers": 2}]
    status, stats = await rest.call("GET", "/stats")
    assert stats["topics"]["orders"]["subscribers"] == 2
    client_ids = sorted(cid for sub in app.pubsub.broker.connections.values() for cid in sub.topics.values())
    assert client_ids[0] == "dashboard-7"
    assert client_ids[1].startswith("sse-c")


async def test_last_n_replays_the_newest_events_then_live(rest, sse_connect):
    await rest.create("orders")
    await publish(rest, "orders", 5)
    stream = await sse_connect("/topics/orders/events?last_n=2")
    replayed = await stream.events(2)
    assert [b.frame()["seq"] for b in replayed] == [4, 5]
    await publish(rest, "orders", 1)
    assert (await stream.next("event")).frame()["seq"] == 6


async def test_last_event_id_resumes_without_gap_or_duplicate_and_wins_over_the_query(rest, sse_connect):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    await publish(rest, "orders", 3)
    seen = await stream.events(3)
    stream.close()  # the client drops; more is published meanwhile
    await publish(rest, "orders", 4)
    resumed = await sse_connect("/topics/orders/events?last_n=100", headers={"Last-Event-ID": seen[1]["id"]})
    blocks = await resumed.events(5)
    assert [b.frame()["seq"] for b in blocks] == [3, 4, 5, 6, 7]
    assert b"history_gap" not in resumed.raw
    await publish(rest, "orders", 1)
    assert (await resumed.next("event")).frame()["seq"] == 8


async def test_since_seq_and_epoch_in_the_query_resume(rest, sse_connect):
    await rest.create("orders")
    await publish(rest, "orders", 4)
    status, stats = await rest.call("GET", "/stats")
    epoch = stats["topics"]["orders"]["epoch"]
    stream = await sse_connect(f"/topics/orders/events?since_seq=2&epoch={epoch}")
    assert [b.frame()["seq"] for b in await stream.events(2)] == [3, 4]


@pytest.mark.pubsub(history_size=3)
async def test_resume_from_beyond_history_reports_history_gap_as_info(rest, sse_connect):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    await publish(rest, "orders", 1)
    first = await stream.next("event")
    stream.close()
    await publish(rest, "orders", 6)  # seqs 2..7; only 5..7 are retained
    resumed = await sse_connect("/topics/orders/events", headers={"Last-Event-ID": first["id"]})
    gap = await resumed.next("info")
    assert gap.frame()["msg"] == "history_gap"
    assert gap.frame()["first_seq"] == 5
    assert [b.frame()["seq"] for b in await resumed.events(3)] == [5, 6, 7]


async def test_resume_from_another_epoch_replays_the_new_incarnation_with_a_gap(rest, sse_connect):
    await rest.create("orders")
    await publish(rest, "orders", 2)
    await rest.call("DELETE", "/topics/orders")
    await rest.create("orders")
    await publish(rest, "orders", 1)
    stream = await sse_connect("/topics/orders/events", headers={"Last-Event-ID": "0123456789abcdef:2"})
    assert (await stream.next("info")).frame()["msg"] == "history_gap"
    event = await stream.next("event")
    status, stats = await rest.call("GET", "/stats")
    assert event["id"] == f"{stats['topics']['orders']['epoch']}:1"


async def test_topic_deleted_is_told_as_info_and_ends_the_stream(rest, sse_connect, app):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    await stream.block()  # retry
    await wait_until(lambda: app.pubsub.broker.subscriptions == 1, what="the stream's subscription")
    await rest.call("DELETE", "/topics/orders")
    rest_of_it = await stream.until_end()
    assert [b.frame()["msg"] for b in rest_of_it if b.get("event") == "info"] == ["topic_deleted"]
    assert stream.ended
    await wait_until(lambda: not app.pubsub.broker.connections, what="the connection to be forgotten")


@pytest.mark.parametrize(
    "query, headers",
    [
        ("?last_n=abc", {}),
        ("?last_n=-1", {}),
        ("?since_seq=1.5", {}),
        ("?last_n=2&since_seq=1", {}),
        ("", {"Last-Event-ID": "no-colon"}),
        ("", {"Last-Event-ID": "epoch:x1"}),
        ("", {"Last-Event-ID": ":5"}),
        ("?client_id=" + "x" * 300, {}),
    ],
)
async def test_malformed_start_point_is_400_json_before_the_stream(rest, sse_connect, app, query, headers):
    await rest.create("orders")
    stream = await sse_connect(f"/topics/orders/events{query}", headers=headers)
    assert stream.status == 400
    assert stream.body["error"]["code"] == "BAD_REQUEST"
    assert not app.pubsub.broker.connections


async def test_missing_topic_is_404_json_and_leaves_no_connection(sse_connect, app):
    stream = await sse_connect("/topics/nowhere/events")
    assert stream.status == 404
    assert stream.body["error"]["code"] == "TOPIC_NOT_FOUND"
    assert not app.pubsub.broker.connections


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
async def test_credentials_admin_key_or_token_else_401_or_403(rest, sse_connect):
    admin = {"X-API-Key": KEY}
    status, _ = await rest.call("POST", "/topics", {"name": "orders"}, headers=admin)
    status, _ = await rest.call("POST", "/topics", {"name": "secret"}, headers=admin)
    token = issue(SECRET, "42", ORDERS_ONLY)
    assert (await sse_connect("/topics/orders/events")).status == 401
    assert (await sse_connect("/topics/orders/events?api_key=wrong")).status == 401
    assert (await sse_connect("/topics/orders/events", headers=admin)).status == 200
    assert (await sse_connect(f"/topics/orders/events?api_key={KEY}")).status == 200
    assert (await sse_connect(f"/topics/orders/events?token={token}")).status == 200
    assert (await sse_connect("/topics/orders/events", headers={"Authorization": f"Bearer {token}"})).status == 200
    refused = await sse_connect(f"/topics/secret/events?token={token}")
    assert (refused.status, refused.body["error"]["code"]) == (403, "FORBIDDEN")
    # Permission before existence: a refused client learns nothing of which topics exist.
    unknown = await sse_connect(f"/topics/nowhere/events?token={token}")
    assert (unknown.status, unknown.body["error"]["code"]) == (403, "FORBIDDEN")


@pytest.mark.pubsub(allowed_hosts=("pubsub.example",))
async def test_host_outside_allowed_hosts_is_403(sse_connect, app):
    stream = await sse_connect("/topics/orders/events")
    assert (stream.status, stream.body["error"]["code"]) == (403, "FORBIDDEN")


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, max_connections_per_user=2)
async def test_a_users_streams_count_toward_max_connections_per_user(rest, sse_connect, ws_connect):
    await rest.call("POST", "/topics", {"name": "orders"}, headers={"X-API-Key": KEY})
    token = issue(SECRET, "42", ORDERS_ONLY)
    await ws_connect(f"/ws?token={token}")
    assert (await sse_connect(f"/topics/orders/events?token={token}")).status == 200
    refused = await sse_connect(f"/topics/orders/events?token={token}")
    assert (refused.status, refused.body["error"]["code"]) == (503, "LIMIT_EXCEEDED"), refused.body
    other = issue(SECRET, "43", ORDERS_ONLY)  # the limit is per user
    assert (await sse_connect(f"/topics/orders/events?token={other}")).status == 200


@pytest.mark.pubsub(max_connections=1)
async def test_connection_limit_is_503_like_a_websocket_handshake(rest, sse_connect):
    await rest.create("orders")
    assert (await sse_connect("/topics/orders/events")).status == 200
    refused = await sse_connect("/topics/orders/events")
    assert (refused.status, refused.body["error"]["code"]) == (503, "LIMIT_EXCEEDED")


@pytest.mark.pubsub(heartbeat_interval=0.2, heartbeat_timeout=5)
async def test_heartbeat_is_a_ping_comment(rest, sse_connect):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    loop_blocks = [await stream.block() for _ in range(3)]
    assert {"comment": "ping"} in loop_blocks
    assert b"\n: ping\n\n" in stream.raw
    assert b'"msg":"ping"' not in stream.raw


async def test_client_that_vanishes_is_forgotten(rest, sse_connect, app):
    await rest.create("orders")
    stream = await sse_connect("/topics/orders/events")
    await wait_until(lambda: app.pubsub.broker.subscriptions == 1, what="the subscription")
    stream.close()
    await wait_until(lambda: not app.pubsub.broker.connections, what="the connection to be forgotten")
    status, topics = await rest.call("GET", "/topics")
    assert topics["topics"] == [{"name": "orders", "subscribers": 0}]


async def test_key_and_token_in_the_stream_query_never_reach_the_log(sse_at):
    token = issue(LOG_SECRET, "42", ORDERS_ONLY)
    quoted_key = urllib.parse.quote(LOG_KEY, safe="")
    flags = (f"--api_key={LOG_KEY}", "--log_level=debug", "--topics=orders")
    with ServerProcess(*flags, env={"PUBSUB_TOKEN_SECRET": LOG_SECRET}) as server:
        for path in (
            f"/topics/orders/events?api_key={quoted_key}",
            f"/topics/orders/events?token={token}",
            f"/topics/orders/events?api%5Fkey={quoted_key}&last_n=1",
            f"/topics/secret/events?token={token}",
            f"/topics/orders/events?token={token}x",
        ):
            stream = await sse_at(server.port, path)
            stream.close()
        server.terminate()
        assert await server.exit_code() == 0
        output = server.log()
    records = server.records()
    assert [r.get("user") for r in records if r.get("event") == "subscribe"] == [None, "42", None]
    for secret in (LOG_KEY, LOG_SECRET, token):
        for form in spellings(secret):
            assert form not in output, f"{form!r} (a form of a secret) is in the server output"
