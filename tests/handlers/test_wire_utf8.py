"""Wire text is UTF-8 (PROTOCOL §9): non-ASCII goes out as UTF-8, not as
``\\u`` escapes, so an event is never much larger than what was published;
a JSON string holding a lone surrogate is refused with BAD_REQUEST, on the
WebSocket and in REST bodies, wherever it hides."""

from __future__ import annotations

import json

import pytest

from tests.kit.clients import new_id
from tests.kit.rawws import RawWs

TEXT = "日本語のテキスト é ü 😀 " * 1500  # ~58 KB of UTF-8, 2-4 bytes a character


def publish_text(topic: str, payload_json: str, request_id: str = "p") -> str:
    """A publish frame written by hand, so the test controls every escape."""
    return '{"type":"publish","topic":"%s","request_id":"%s","message":{"id":"%s","payload":%s}}' % (
        topic, request_id, new_id(), payload_json,
    )  # fmt: skip


async def test_non_ascii_event_is_sent_as_utf8_about_the_size_published(rest, ws_connect, port):
    await rest.create("t")
    sub = await RawWs.open(port)
    sub.send_json({"type": "subscribe", "topic": "t", "client_id": "s"})
    assert (await sub.reply())["type"] == "ack"
    frame = json.dumps({"type": "publish", "topic": "t", "message": {"id": new_id(), "payload": TEXT}}, ensure_ascii=False)
    pub = await ws_connect()
    pub.send(frame)
    assert (await pub.reply())["type"] == "ack"
    wire = await sub.recv_wire()
    published = len(frame.encode("utf-8"))
    assert TEXT.encode("utf-8") in wire  # raw UTF-8, no \u escapes
    assert len(wire) <= 1.1 * published, (len(wire), published)


@pytest.mark.parametrize(
    "payload_json, where",
    [
        ('"a\\ud800b"', "message.payload"),
        ('"\\udfff\\ud800"', "message.payload"),  # reversed pair: two lone halves
        ('{"x":[1,{"y":"\\uDBFF"}]}', "message.payload.x[1].y"),
        ('{"k\\ud800":1}', "a key in message.payload"),
    ],
)
async def test_lone_surrogate_anywhere_in_a_publish_is_bad_request(rest, ws_connect, payload_json, where):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    pub = await ws_connect()
    pub.send(publish_text("t", payload_json))
    reply = await pub.reply()
    assert reply["type"] == "error" and reply["error"]["code"] == "BAD_REQUEST", reply
    assert reply["error"]["message"].startswith(where) and "lone surrogate" in reply["error"]["message"]
    assert await sub.nothing_within(0.2)  # nothing was published
    # ...and the connection is still usable, a proper pair included.
    pub.send(publish_text("t", '"\\ud83d\\ude00"'))
    assert (await pub.reply())["type"] == "ack"
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == "😀"


async def test_lone_surrogate_in_other_frames_and_fields_is_bad_request(rest, ws_connect):
    await rest.create("t")
    client = await ws_connect()
    for text in (
        '{"type":"subscribe","topic":"t","client_id":"c\\ud800"}',
        '{"type":"ping","request_id":"\\udc00"}',
        '{"type":"ping","request_id":"r","extra":{"\\ud800":0}}',
    ):
        client.send(text)
        reply = await client.reply()
        assert reply["type"] == "error" and reply["error"]["code"] == "BAD_REQUEST", (text, reply)
        assert "lone surrogate" in reply["error"]["message"]
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["subscribers"] == 0


async def test_escaped_backslash_before_u_is_plain_text(rest, ws_connect):
    # "\\ud800" is a backslash followed by "ud800": no surrogate at all.
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    pub = await ws_connect()
    pub.send(publish_text("t", '"\\\\ud800"'))
    assert (await pub.reply())["type"] == "ack"
    assert (await sub.events(1))[0]["message"]["payload"] == "\\ud800"


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/topics/t/messages", b'{"payload":"a\\ud800"}'),
        ("/topics/t/messages", b'{"payload":{"\\udabc":1}}'),
        ("/topics", b'{"name":"\\ud800"}'),
        ("/topics/t/messages", '{"payload":"\\ud800"}'.encode("utf-16")),  # another encoding, same escape
    ],
)
async def test_lone_surrogate_in_a_rest_body_is_bad_request(rest, path, raw):
    await rest.create("t")
    status, body = await rest.call("POST", path, raw=raw, headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST", body
    assert "lone surrogate" in body["error"]["message"]
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["messages"] == 0


async def test_rest_publish_of_non_ascii_reaches_subscribers_as_utf8(rest, port):
    await rest.create("t")
    sub = await RawWs.open(port)
    sub.send_json({"type": "subscribe", "topic": "t", "client_id": "s"})
    assert (await sub.reply())["type"] == "ack"
    status, _ = await rest.call("POST", "/topics/t/messages", raw=json.dumps({"payload": "ü😀"}).encode())
    assert status == 201
    wire = await sub.recv_wire()
    assert "ü😀".encode("utf-8") in wire and b"\\u" not in wire
