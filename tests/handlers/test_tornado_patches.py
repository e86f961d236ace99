"""Tornado's private internals are used only behind checks, with public
fallbacks: with every check failed the server still speaks the whole
protocol (slower, or heavier per connection, never wrong)."""

from __future__ import annotations

import gc

import pytest
import tornado.websocket

from tornado_pubsub.handlers.ws import PubSubSocket
from tornado_pubsub.server import tornado_patches


@pytest.fixture
def unpatched(monkeypatch):
    """Every patch check reads as failed, as on a Tornado that changed underneath us."""
    for name in tornado_patches.ENABLED:
        monkeypatch.setitem(tornado_patches.ENABLED, name, False)


def protocols_of(broker) -> list[type]:
    handlers = [o for o in gc.get_objects() if isinstance(o, PubSubSocket) and o.broker is broker]
    return [h.ws_connection.__class__ for h in handlers if h.ws_connection is not None]


async def test_a_websocket_conversation_works_on_public_apis_only(unpatched, rest, ws_connect, broker):
    await rest.create("t")
    sub = await ws_connect()
    assert (await sub.subscribe("t", request_id="s"))["type"] == "ack"
    pub = await ws_connect()
    ack = await pub.publish("t", {"n": 1}, request_id="p")
    assert (ack["type"], ack["seq"], ack["request_id"]) == ("ack", 1, "p")
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == {"n": 1}
    pub.send("{not json")
    assert (await pub.reply())["error"]["code"] == "BAD_REQUEST"
    assert (await pub.request({"type": "ping", "request_id": "q"}))["type"] == "pong"
    assert (await sub.unsubscribe("t"))["type"] == "ack"
    # Tornado's own protocol class served both: the fallback, not the patches, was exercised.
    assert set(protocols_of(broker)) == {tornado.websocket.WebSocketProtocol13}


@pytest.mark.pubsub(queue_size=3, overflow_policy="disconnect")
async def test_a_slow_consumer_is_still_evicted_with_1013_on_tornados_own_queue(unpatched, rest, ws_connect, broker):
    await rest.create("t")
    slow = await ws_connect()
    await slow.subscribe("t")
    for sub in list(broker.connections.values()):
        for n in range(5):  # nothing written in between: the queue overflows
            sub.send(b'{"type":"pong"}')
    assert await slow.closed() == 1013


async def test_rest_errors_are_json_on_public_apis_only(unpatched, rest):
    status, body = await rest.call("DELETE", "/topics/nowhere")
    assert (status, body["error"]["code"]) == (404, "TOPIC_NOT_FOUND")
    status, body = await rest.call("PATCH", "/topics")
    assert (status, body["error"]["code"], body["error"]["message"]) == (405, "METHOD_NOT_ALLOWED", "Method Not Allowed")
    status, body = await rest.call("POST", "/topics", raw=b"{")
    assert (status, body["error"]["code"]) == (400, "BAD_REQUEST")


def test_a_check_fails_when_what_it_relies_on_changes(monkeypatch):
    assert tornado_patches._check_utf8()

    def _handle_message(self, opcode, data, extra):  # a Tornado that changed the signature
        raise AssertionError("never called")

    monkeypatch.setattr(tornado.websocket.WebSocketProtocol13, "_handle_message", _handle_message)
    assert not tornado_patches._check_utf8()
    monkeypatch.setattr(tornado.websocket.WebSocketProtocol13, "_receive_frame_loop", lambda self: None)
    assert not tornado_patches._check_frame_loop()
