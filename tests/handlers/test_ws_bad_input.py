"""Every class of bad WebSocket input gets a BAD_REQUEST error frame naming the
field, and the connection stays usable; oversize frames close with 1009; an
unexpected fault becomes INTERNAL."""

from __future__ import annotations

import json
import logging

import pytest

from tornado_pubsub.core.schemas import MAX_DEPTH

from tests.kit.clients import new_id
from tests.kit.rawws import OP_TEXT, RawWs
from tests.kit.support import TS_RE

UUID = "6f1c2a6e-1d7b-4b7e-9a55-0c1d2e3f4a5b"


def sub(**extra):
    return {"type": "subscribe", "topic": "t", "client_id": "c", **extra}


def pub(**message):
    return {"type": "publish", "topic": "t", "message": {"id": UUID, "payload": 1, **message}}


# (frame to send, words the error message must contain)
BAD_FRAMES = {
    "invalid_json": ("{not json", ["invalid JSON"]),
    "truncated_json": ('{"type": "ping"', ["invalid JSON"]),
    "array": ("[1, 2]", ["object"]),
    "string": ('"ping"', ["object"]),
    "null": ("null", ["object"]),
    "number": ("42", ["object"]),
    "empty_text": ("", ["invalid JSON"]),
    "missing_type": ({"topic": "t"}, ["type"]),
    "unknown_type": ({"type": "launch"}, ["type"]),
    "type_not_string": ({"type": 5}, ["type"]),
    "subscribe_missing_topic": ({"type": "subscribe", "client_id": "c"}, ["topic", "required"]),
    "subscribe_missing_client_id": ({"type": "subscribe", "topic": "t"}, ["client_id", "required"]),
    "subscribe_empty_client_id": (sub(client_id=""), ["client_id"]),
    "subscribe_long_client_id": (sub(client_id="c" * 129), ["client_id"]),
    "subscribe_client_id_number": (sub(client_id=7), ["client_id", "string"]),
    "topic_not_string": (sub(topic=["t"]), ["topic", "string"]),
    "topic_null": (sub(topic=None), ["topic"]),
    "topic_empty": (sub(topic=""), ["topic"]),
    "topic_129_chars": (sub(topic="a" * 129), ["topic"]),
    "topic_trailing_newline": (sub(topic="t\n"), ["topic"]),
    "topic_leading_dot": (sub(topic=".t"), ["topic"]),
    "topic_slash": (sub(topic="a/b"), ["topic"]),
    "topic_space": (sub(topic="a b"), ["topic"]),
    "topic_unicode": (sub(topic="café"), ["topic"]),
    "last_n_negative": (sub(last_n=-1), ["last_n"]),
    "last_n_bool": (sub(last_n=True), ["last_n", "integer"]),
    "last_n_float": (sub(last_n=1.5), ["last_n", "integer"]),
    "last_n_string": (sub(last_n="5"), ["last_n", "integer"]),
    "since_seq_negative": (sub(since_seq=-3), ["since_seq"]),
    "since_seq_bool": (sub(since_seq=False), ["since_seq", "integer"]),
    "last_n_and_since_seq": (sub(last_n=1, since_seq=1), ["last_n", "since_seq"]),
    "epoch_not_string": (sub(since_seq=1, epoch=12), ["epoch"]),
    "unsubscribe_missing_client_id": ({"type": "unsubscribe", "topic": "t"}, ["client_id"]),
    "publish_missing_message": ({"type": "publish", "topic": "t"}, ["message", "required"]),
    "publish_message_not_object": ({"type": "publish", "topic": "t", "message": "hi"}, ["message", "object"]),
    "publish_message_null": ({"type": "publish", "topic": "t", "message": None}, ["message"]),
    "publish_missing_id": ({"type": "publish", "topic": "t", "message": {"payload": 1}}, ["message.id"]),
    "publish_missing_payload": ({"type": "publish", "topic": "t", "message": {"id": UUID}}, ["message.payload"]),
    "publish_bad_uuid": (pub(id="not-a-uuid"), ["message.id", "UUID"]),
    "publish_uuid_no_dashes": (pub(id=UUID.replace("-", "")), ["message.id", "UUID"]),
    "publish_uuid_braces": (pub(id="{" + UUID + "}"), ["message.id", "UUID"]),
    "publish_uuid_trailing_newline": (pub(id=UUID + "\n"), ["message.id", "UUID"]),
    "publish_uuid_number": (pub(id=12345), ["message.id"]),
    "request_id_not_string": ({"type": "ping", "request_id": 7}, ["request_id", "string"]),
    "request_id_too_long": ({"type": "ping", "request_id": "r" * 129}, ["request_id", "128"]),
    "nan": ('{"type": "publish", "topic": "t", "message": {"id": "%s", "payload": NaN}}' % UUID, ["NaN"]),
    "infinity": ('{"type": "ping", "x": Infinity}', ["Infinity"]),
    "minus_infinity": ('{"type": "ping", "x": -Infinity}', ["Infinity"]),
    "huge_float": ('{"type": "ping", "x": 1e999}', ["range"]),
    "deep_nesting_frame": ("[" * 20000 + "]" * 20000, ["nested"]),
    "invalid_utf8_escape_ok_but_lone_bracket": ('{"type": "ping"}}', ["invalid JSON"]),
}


@pytest.mark.parametrize("frame, words", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
async def test_bad_frame_bad_request_naming_field_then_connection_usable(rest, ws_connect, frame, words):
    await rest.create("t")
    client = await ws_connect()
    client.send(frame if isinstance(frame, str) else json.dumps(frame))
    error = await client.recv()
    assert error["type"] == "error" and error["error"]["code"] == "BAD_REQUEST", error
    assert TS_RE.match(error["ts"])
    message = error["error"]["message"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    pong = await client.request({"type": "ping", "request_id": "after"})
    assert pong["type"] == "pong" and pong["request_id"] == "after"


async def test_bad_frame_with_readable_request_id_echoes_it(ws_connect):
    client = await ws_connect()
    error = await client.request({"type": "publish", "topic": "t", "request_id": "r9"})
    assert error["type"] == "error" and error["request_id"] == "r9"


async def test_bad_frame_with_non_string_request_id_has_none(ws_connect):
    client = await ws_connect()
    error = await client.request({"type": "ping", "request_id": {"a": 1}})
    assert error["type"] == "error" and "request_id" not in error


async def test_binary_frame_bad_request_connection_usable(ws_connect):
    client = await ws_connect()
    client.send(b'{"type": "ping"}')
    error = await client.recv()
    assert error["error"]["code"] == "BAD_REQUEST" and "binary" in error["error"]["message"]
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_publish_payload_nested_past_max_depth_bad_request_never_internal(rest, ws_connect):
    # Decodes fine (under the parser's recursion limit) but nests far deeper than
    # schemas.MAX_DEPTH (128), so it is refused before anything is published.
    assert MAX_DEPTH < 960
    await rest.create("t")
    client = await ws_connect()
    depth = 960
    text = '{"type":"publish","topic":"t","message":{"id":"%s","payload":%s1%s}}' % (new_id(), "[" * depth, "]" * depth)
    client.send(text)
    reply = await client.recv()
    assert reply["type"] == "error", reply
    assert reply["error"]["code"] == "BAD_REQUEST" and "nested" in reply["error"]["message"], reply
    _, stats = await rest.call("GET", "/stats")
    assert stats["topics"]["t"]["messages"] == 0
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_many_bad_frames_in_a_row_each_answered(ws_connect):
    client = await ws_connect()
    for i in range(50):
        client.send("garbage %d" % i)
    errors = [await client.recv() for _ in range(50)]
    assert all(e["error"]["code"] == "BAD_REQUEST" for e in errors)
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.pubsub(max_message_size=1024)
async def test_frame_over_max_message_size_closed_1009(ws_connect):
    client = await ws_connect()
    client.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
    assert await client.closed() == 1009


@pytest.mark.pubsub(max_message_size=1024)
async def test_frame_at_max_message_size_accepted(ws_connect):
    client = await ws_connect()
    frame = {"type": "ping", "request_id": "r", "pad": ""}
    frame["pad"] = "x" * (1024 - len(json.dumps(frame)))
    assert len(json.dumps(frame)) == 1024
    assert (await client.request(frame))["type"] == "pong"


async def test_handler_unexpected_exception_internal_logged_connection_usable(
    rest, ws_connect, broker, monkeypatch, caplog
):
    await rest.create("t")

    async def explode(*args, **kwargs):
        raise RuntimeError("boom in subscribe")

    monkeypatch.setattr(broker, "subscribe", explode)
    client = await ws_connect()
    with caplog.at_level(logging.ERROR, logger="tornado_pubsub"):
        error = await client.subscribe("t", request_id="r")
    assert error["type"] == "error" and error["request_id"] == "r"
    assert error["error"]["code"] == "INTERNAL" and "boom" not in error["error"]["message"]
    traced = [r for r in caplog.records if r.exc_info and "boom in subscribe" in str(r.exc_info[1])]
    assert traced, "the traceback was not logged"
    monkeypatch.undo()
    assert (await client.subscribe("t"))["type"] == "ack"


async def test_text_frame_invalid_utf8_bad_request_connection_usable(port, ws_connect):
    # Tornado would drop the TCP connection silently; we answer like any other
    # unreadable frame, and the connection (and everyone else) carries on.
    other = await ws_connect()
    peer = await RawWs.connect(port)
    try:
        await peer.send_frame(OP_TEXT, b'{"type": "ping", "request_id": "u", "x": "\xff\xfe"}')
        reply = await peer.recv_json(timeout=5)
        assert reply["type"] == "error" and reply["error"]["code"] == "BAD_REQUEST"
        assert "UTF-8" in reply["error"]["message"]
        await peer.send_frame(OP_TEXT, b'{"type": "ping", "request_id": "after"}')
        pong = await peer.recv_json(timeout=5)
        assert pong["type"] == "pong" and pong["request_id"] == "after" and TS_RE.match(pong["ts"])
    finally:
        peer.close()
    assert (await other.request({"type": "ping"}))["type"] == "pong"
