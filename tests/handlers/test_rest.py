"""Every REST row of the contract: exact status codes, bodies and JSON errors."""

from __future__ import annotations

import re

import pytest

from tests.kit.clients import new_id
from tests.kit.rawws import raw_http


def error_code(body) -> str:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return body["error"]["code"]


async def test_post_topics_new_name_201_created(rest):
    status, body = await rest.call("POST", "/topics", {"name": "orders"})
    assert (status, body) == (201, {"status": "created", "topic": "orders"})


async def test_post_topics_existing_name_409_topic_exists(rest):
    await rest.create("orders")
    status, body = await rest.call("POST", "/topics", {"name": "orders"})
    assert status == 409 and error_code(body) == "TOPIC_EXISTS"


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"", "body"),
        (b"{oops", "JSON"),
        (b"[]", "object"),
        (b'"orders"', "object"),
        (b"{}", "name"),
        (b'{"name": 5}', "name"),
        (b'{"name": null}', "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "a/b"}', "name"),
        (b'{"name": "has space"}', "name"),
        (b'{"name": "' + b"a" * 129 + b'"}', "name"),
        (b'{"name": "t\\n"}', "name"),
        (b'{"name": "x", "n": NaN}', "NaN"),
    ],
    ids=["empty", "not_json", "array", "string", "no_name", "int", "null", "blank", "slash", "space", "129", "newline", "nan"],
)
async def test_post_topics_bad_body_400_bad_request_naming_field(rest, raw, field):
    status, body = await rest.call("POST", "/topics", raw=raw, headers={"Content-Type": "application/json"})
    assert status == 400 and error_code(body) == "BAD_REQUEST" and field in body["error"]["message"]


async def test_post_topics_128_char_name_accepted(rest):
    name = "a" + "b._:-9" * 21 + "c"
    assert len(name) == 128
    status, _ = await rest.call("POST", "/topics", {"name": name})
    assert status == 201


async def test_delete_topic_existing_200_deleted(rest):
    await rest.create("orders")
    status, body = await rest.call("DELETE", "/topics/orders")
    assert (status, body) == (200, {"status": "deleted", "topic": "orders"})
    assert (await rest.call("GET", "/topics"))[1] == {"topics": []}


@pytest.mark.parametrize("name", ["nope", "bad%20name", "%2E%2E"])
async def test_delete_topic_unknown_404_topic_not_found(rest, name):
    status, body = await rest.call("DELETE", f"/topics/{name}")
    assert status == 404 and error_code(body) == "TOPIC_NOT_FOUND"


async def test_get_topics_lists_names_with_subscription_counts(rest, ws_connect):
    await rest.create("b")
    await rest.create("a")
    for _ in range(3):
        await (await ws_connect()).subscribe("a")
    status, body = await rest.call("GET", "/topics")
    assert status == 200
    assert sorted(body["topics"], key=lambda t: t["name"]) == [{"name": "a", "subscribers": 3}, {"name": "b", "subscribers": 0}]


async def test_get_topics_none_empty_list(rest):
    assert await rest.call("GET", "/topics") == (200, {"topics": []})


async def test_get_health_200_with_counts(rest, ws_connect):
    await rest.create("a")
    await rest.create("b")
    client = await ws_connect()
    await client.subscribe("a")
    await client.subscribe("b")
    status, body = await rest.call("GET", "/health")
    assert status == 200
    assert body == {"status": "ok", "uptime_sec": body["uptime_sec"], "topics": 2, "subscribers": 2}
    assert isinstance(body["uptime_sec"], int) and body["uptime_sec"] >= 0


async def test_get_health_while_draining_503_draining(rest, broker):
    broker.begin_shutdown()
    status, body = await rest.call("GET", "/health")
    assert status == 503 and body["status"] == "draining" and "uptime_sec" in body


async def test_get_stats_per_topic_counters(rest, ws_connect):
    await rest.create("orders")
    await rest.create("idle")
    sub = await ws_connect()
    await sub.subscribe("orders")
    for i in range(3):
        await sub.publish("orders", i)
    status, body = await rest.call("GET", "/stats")
    assert status == 200
    orders = body["topics"]["orders"]
    assert (orders["messages"], orders["subscribers"], orders["dropped"], orders["last_seq"]) == (3, 1, 0, 3)
    idle = body["topics"]["idle"]
    assert (idle["messages"], idle["subscribers"], idle["dropped"], idle["last_seq"]) == (0, 0, 0, 0)


async def test_stats_messages_exclude_duplicates(rest):
    await rest.create("t")
    mid = new_id()
    for _ in range(3):
        await rest.call("POST", "/topics/t/messages", {"id": mid, "payload": 1})
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["messages"] == 1


async def test_post_message_with_id_201_published(rest):
    await rest.create("t")
    mid = new_id()
    status, body = await rest.call("POST", "/topics/t/messages", {"id": mid, "payload": {"a": 1}})
    assert (status, body) == (201, {"status": "published", "topic": "t", "id": mid, "seq": 1, "duplicate": False})


async def test_post_message_without_id_201_generated_uuid(rest):
    await rest.create("t")
    status, body = await rest.call("POST", "/topics/t/messages", {"payload": None})
    assert status == 201 and body["seq"] == 1 and body["duplicate"] is False
    assert len(body["id"]) == 36 and body["id"].count("-") == 4


async def test_post_message_repeated_id_201_duplicate_original_seq(rest):
    await rest.create("t")
    mid = new_id()
    await rest.call("POST", "/topics/t/messages", {"id": mid, "payload": 1})
    await rest.call("POST", "/topics/t/messages", {"payload": 2})
    status, body = await rest.call("POST", "/topics/t/messages", {"id": mid, "payload": 1})
    assert status == 201 and body["seq"] == 1 and body["duplicate"] is True and body["id"] == mid


@pytest.mark.parametrize(
    "body, field",
    [({}, "payload"), ({"id": "nope", "payload": 1}, "id"), ({"id": 5, "payload": 1}, "id"), ([1], "object")],
    ids=["no_payload", "bad_uuid", "int_id", "array"],
)
async def test_post_message_bad_body_400_naming_field(rest, body, field):
    await rest.create("t")
    status, reply = await rest.call("POST", "/topics/t/messages", body)
    assert status == 400 and error_code(reply) == "BAD_REQUEST" and field in reply["error"]["message"]


async def test_post_message_unknown_topic_404(rest):
    status, body = await rest.call("POST", "/topics/nope/messages", {"payload": 1})
    assert status == 404 and error_code(body) == "TOPIC_NOT_FOUND"


async def test_post_message_reaches_websocket_subscribers(rest, ws_connect):
    await rest.create("t")
    subs = [await ws_connect() for _ in range(2)]
    for sub in subs:
        await sub.subscribe("t")
    mid = new_id()
    status, body = await rest.call("POST", "/topics/t/messages", {"id": mid, "payload": {"via": "http"}})
    assert status == 201
    for sub in subs:
        (event,) = await sub.events(1)
        assert event["message"] == {"id": mid, "payload": {"via": "http"}} and event["seq"] == body["seq"]


async def test_get_metrics_prometheus_text_with_named_metrics(rest, ws_connect):
    await rest.create("t")
    client = await ws_connect()
    await client.subscribe("t")
    await client.publish("t", 1)
    await client.subscribe("missing")
    status, text = await rest.call("GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    for line in (
        "pubsub_connections 1.0",
        "pubsub_subscriptions 1.0",
        "pubsub_topics 1.0",
        "pubsub_messages_published_total 1.0",
        "pubsub_events_dropped_total 0.0",
        "pubsub_slow_consumer_disconnects_total 0.0",
        'pubsub_errors_total{code="TOPIC_NOT_FOUND"} 1.0',
    ):
        assert line in text.splitlines(), f"{line!r} missing"
    assert re.search(r"^pubsub_events_delivered_total [1-9]", text, re.MULTILINE)  # the publisher's own event
    assert re.search(r"^pubsub_errors_total\{code=\"BAD_REQUEST\"\} 0\.0$", text, re.MULTILINE)  # known codes at 0
    assert "topic=" not in text  # no per-topic labels


async def test_get_metrics_content_type_is_prometheus_text(port):
    status, raw = await raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert status == 200 and b"content-type: text/plain" in head and b"version=" in head


async def test_json_responses_have_json_content_type(port):
    status, raw = await raw_http(port, b"GET /topics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 200 and b"content-type: application/json" in raw.split(b"\r\n\r\n", 1)[0].lower()


@pytest.mark.parametrize("path", ["/nope", "/topics/a/b/c", "/ws/extra", "/"])
async def test_unknown_route_404_json_not_found(rest, path):
    status, body = await rest.call("GET", path)
    assert status == 404 and error_code(body) == "NOT_FOUND"


@pytest.mark.parametrize(
    "method, path",
    [("PUT", "/topics"), ("DELETE", "/topics"), ("GET", "/topics/x"), ("POST", "/health"), ("DELETE", "/stats"), ("GET", "/topics/x/messages"), ("PATCH", "/metrics")],
)
async def test_wrong_method_405_json_error(rest, method, path):
    status, body = await rest.call(method, path, {} if method in ("PUT", "PATCH") else None)
    assert status == 405 and error_code(body) == "METHOD_NOT_ALLOWED"


async def test_rest_operation_while_draining_503_shutting_down(rest, broker):
    await rest.create("t")
    broker.begin_shutdown()
    status, body = await rest.call("POST", "/topics/t/messages", {"payload": 1})
    assert status == 503 and error_code(body) == "SHUTTING_DOWN"
    status, body = await rest.call("POST", "/topics", {"name": "u"})
    assert status == 503 and error_code(body) == "SHUTTING_DOWN"


@pytest.mark.pubsub(max_message_size=1024)
async def test_post_message_body_far_over_limit_rejected_without_crash(rest):
    await rest.create("t")
    status, _ = await rest.call("POST", "/topics/t/messages", {"payload": "x" * 20000})
    assert status in (400, 413)
    assert (await rest.call("GET", "/health"))[0] == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_ws_path_with_other_method_405_json_error(rest, method):
    status, body = await rest.call(method, "/ws", {} if method != "DELETE" else None)
    assert status == 405 and error_code(body) == "METHOD_NOT_ALLOWED"


async def test_ws_path_plain_get_without_upgrade_400_json_error(rest):
    status, body = await rest.call("GET", "/ws")
    assert status == 400 and error_code(body) == "BAD_REQUEST" and "WebSocket" in body["error"]["message"]


async def test_rest_handler_unexpected_exception_500_internal_logged(rest, broker, monkeypatch, caplog):
    async def explode():
        raise RuntimeError("boom in list_topics: secret internals at /work/tornado_pubsub/broker.py line 1")

    monkeypatch.setattr(broker, "list_topics", explode)
    status, body = await rest.call("GET", "/topics")
    assert status == 500 and error_code(body) == "INTERNAL" and "boom" not in body["error"]["message"]
    # A bare JSON 500: nothing of the exception (text, paths) reaches the client.
    assert body == {"error": {"code": "INTERNAL", "message": "internal server error"}}
    assert any(r.exc_info and "boom in list_topics" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    assert (await rest.call("GET", "/topics"))[0] == 200
