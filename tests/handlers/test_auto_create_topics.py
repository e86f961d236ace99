"""``auto_create_topics`` (PROTOCOL.md 8) over every transport: a subscribe or
publish on a missing topic creates it instead of answering TOPIC_NOT_FOUND."""

from __future__ import annotations

import pytest

from tornado_pubsub.tokens import issue

KEY = "auto-admin-key"
SECRET = "a" * 40


@pytest.mark.pubsub(auto_create_topics=True)
async def test_ws_subscribe_and_publish_create_missing_topics(rest, ws_connect):
    ws = await ws_connect()
    ack = await ws.subscribe("fresh")
    assert ack["type"] == "ack" and ack["last_seq"] == 0
    publish_ack = await ws.publish("other", {"n": 1})
    assert publish_ack["type"] == "ack" and publish_ack["seq"] == 1
    status, topics = await rest.call("GET", "/topics")
    assert sorted(t["name"] for t in topics["topics"]) == ["fresh", "other"]


@pytest.mark.pubsub(auto_create_topics=True)
async def test_rest_publish_and_sse_create_missing_topics(rest, sse_connect):
    status, body = await rest.call("POST", "/topics/by-rest/messages", {"payload": 1})
    assert (status, body["seq"]) == (201, 1)
    stream = await sse_connect("/topics/by-sse/events")
    assert stream.status == 200
    status, topics = await rest.call("GET", "/topics")
    assert sorted(t["name"] for t in topics["topics"]) == ["by-rest", "by-sse"]


async def test_without_the_setting_missing_topics_stay_missing(rest, ws_connect, sse_connect):
    ws = await ws_connect()
    assert (await ws.subscribe("fresh"))["error"]["code"] == "TOPIC_NOT_FOUND"
    status, body = await rest.call("POST", "/topics/fresh/messages", {"payload": 1})
    assert (status, body["error"]["code"]) == (404, "TOPIC_NOT_FOUND")
    assert (await sse_connect("/topics/fresh/events")).status == 404
    status, topics = await rest.call("GET", "/topics")
    assert topics["topics"] == []


@pytest.mark.pubsub(auto_create_topics=True, api_key=KEY, token_secret=SECRET)
async def test_a_refused_client_creates_nothing(rest, sse_connect):
    token = issue(SECRET, "42", [{"topics": ["mine"], "allow": ["subscribe"]}])
    assert (await sse_connect(f"/topics/theirs/events?token={token}")).status == 403
    status, body = await rest.call("POST", "/topics/theirs/messages", {"payload": 1}, headers={"Authorization": f"Bearer {token}"})
    assert status == 403
    status, topics = await rest.call("GET", "/topics", headers={"X-API-Key": KEY})
    assert topics["topics"] == []
