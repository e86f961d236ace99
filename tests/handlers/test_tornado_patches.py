"""Tornado's private internals are used only behind checks, with public
fallbacks: with every check failed the server still speaks the whole
protocol (slower, or heavier per connection, never wrong)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import struct
from typing import Any

import pytest
import tornado.iostream
import tornado.websocket

from tornado_pubsub.handlers.ws import PubSubSocket
from tornado_pubsub.server import tornado_patches
from tornado_pubsub.server.tornado_patches import checks

from tests.kit.rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWs, client_frame


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
    assert checks._check_strict_frames()

    async def _receive_frame(self):  # a Tornado that checks the size before it reads the 64-bit length
        data = await self._read_bytes(2)
        mask_payloadlen = data[1]
        if mask_payloadlen & 0x80 and (opcode_is_control and payloadlen >= 126):  # noqa: F821
            data = await self._read_bytes(2)
        if len(self._fragmented_message_buffer) > self.params.max_message_size:
            return
        data = await self._read_bytes(8)

    monkeypatch.setattr(tornado.websocket.WebSocketProtocol13, "_receive_frame", _receive_frame)
    assert not checks._check_strict_frames()
    monkeypatch.undo()
    assert checks._check_utf8()

    def _handle_message(self, opcode, data, extra):  # a Tornado that changed the signature
        raise AssertionError("never called")

    monkeypatch.setattr(tornado.websocket.WebSocketProtocol13, "_handle_message", _handle_message)
    assert not checks._check_utf8()
    monkeypatch.setattr(tornado.websocket.WebSocketProtocol13, "_receive_frame_loop", lambda self: None)
    assert not checks._check_frame_loop()
    monkeypatch.setattr(tornado.iostream.BaseIOStream, "_consume", lambda self, loc, extra: b"")
    assert not checks._check_one_pass_read()


@pytest.mark.parametrize("patched", [True, False])
async def test_frames_split_anywhere_or_buffered_together_are_read_in_order(monkeypatch, patched, rest, port):
    # one_pass_read takes frames already buffered without read_bytes: a
    # frame whose header, mask or payload is cut across TCP reads, and many
    # frames in one read, must come out the same as on Tornado's own reader.
    if not patched:
        monkeypatch.setitem(tornado_patches.ENABLED, "one_pass_read", False)
    await rest.create("t")
    client = await RawWs.connect(port)
    try:
        wire = b""
        for n in range(12):
            pad = "x" * (n * 23)  # short frames and 126+ byte ones (16-bit length)
            frame = {"type": "ping", "request_id": f"r{n}", "pad": pad}
            text = json.dumps(frame).encode()
            if n % 4 == 3:  # fragmented, with a ping interleaved
                wire += client_frame(OP_TEXT, text[:10], fin=False) + client_frame(OP_PING, b"p")
                wire += client_frame(0x0, text[10:], fin=True)
            else:
                wire += client_frame(OP_TEXT, text)
        cuts = [1, 2, 3, 5, 7, 11, 13, 40, 200]
        position, step = 0, 0
        while position < len(wire) // 2:  # the first half in awkward pieces, one loop pass or more apart
            size = cuts[step % len(cuts)]
            await client.send_raw(wire[position : position + size])
            await asyncio.sleep(0.002)
            position, step = position + size, step + 1
        await client.send_raw(wire[position:])  # the rest at once
        ids = []
        for _ in range(12):
            reply = await client.reply()
            assert reply is not None and reply["type"] == "pong", reply
            ids.append(reply["request_id"])
        assert ids == [f"r{n}" for n in range(12)]
    finally:
        client.close()


def _frame(first: int, payload: bytes, length_field: int | None = None, masked: bool = True) -> bytes:
    """A client frame built by hand: ``first`` is the FIN/RSV/opcode byte;
    ``length_field`` 127 forces a 64-bit length even for a short payload."""
    n = len(payload)
    bits = length_field or (n if n < 126 else 126 if n < 65536 else 127)
    head = struct.pack("!BB", first, (0x80 if masked else 0) | bits)
    head += {126: struct.pack("!H", n), 127: struct.pack("!Q", n)}.get(bits, b"")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ping(request_id: str, pad: int = 0) -> bytes:
    return json.dumps({"type": "ping", "request_id": request_id, "pad": "x" * pad}).encode()


# Frames a reader in one pass must leave to Tornado (or handle as Tornado
# does) however they arrive: each sent after a first frame in the same write.
MIXED = [
    _frame(0x82, _ping("binary")),  # binary
    _frame(0x81, _ping("long", 300)),  # 16-bit length
    _frame(0x89, b"hello"),  # a ping control frame
    _frame(0x81, _ping("wide"), length_field=127),  # 64-bit length for a short frame
    _frame(0x81, b'{"type": "ping", "request_id": "\xff"}'),  # not UTF-8
    _frame(0x01, _ping("split")[:7]) + _frame(0x89, b"in between") + _frame(0x80, _ping("split")[7:]),  # fragmented
    _frame(0x81, _ping("last")),
]
@pytest.mark.parametrize("one_pass", [True, False])
async def test_the_one_pass_reader_answers_every_frame_as_tornados_does(monkeypatch, one_pass, port):
    # It takes only whole, final, masked data frames from the buffer;
    # everything else, also when it sits in the same read, must come out as
    # Tornado's own reader makes it.
    monkeypatch.setitem(tornado_patches.ENABLED, "one_pass_read", one_pass)
    client = await RawWs.connect(port)
    try:
        await client.send_raw(_frame(0x81, _ping("first")) + b"".join(MIXED))
        replies: list[Any] = []
        controls: list[bytes] = []  # Tornado answers a ping at once, ahead of queued replies
        while len(replies) < 7 or len(controls) < 2:
            opcode, payload = await client.recv_frame() or (None, b"")
            if opcode == OP_TEXT:
                body = json.loads(payload)
                replies.append((body["type"], body.get("request_id"), body.get("error", {}).get("code")))
            elif opcode == OP_PONG:
                controls.append(payload)
            else:
                assert opcode == OP_PING, (opcode, payload)  # the server's own keepalive
    finally:
        client.close()
    assert replies == [
        ("pong", "first", None),
        ("error", None, "BAD_REQUEST"),  # binary: the protocol is text
        ("pong", "long", None),
        ("pong", "wide", None),
        ("error", None, "BAD_REQUEST"),
        ("pong", "split", None),
        ("pong", "last", None),
    ]
    assert controls == [b"hello", b"in between"]


# Frames the reader refuses, and the close code that ends the connection.
REFUSED = {
    "too big": (_frame(0x81, _ping("big", 2000)), 1009),
    "too big, 64-bit length": (_frame(0x81, _ping("big", 2000), length_field=127), 1009),
    "too big, header only": (_frame(0x81, _ping("big", 2000))[:8], 1009),
    "too big, in fragments": (_frame(0x01, b" " * 600) + _frame(0x80, b" " * 600), 1009),
    "unmasked": (_frame(0x81, _ping("bare"), masked=False), 1002),
    "reserved bit": (_frame(0xC1, _ping("rsv1")), 1002),
    "close code not allowed on the wire": (_frame(0x88, struct.pack("!H", 1005)), 1002),
}


@pytest.mark.pubsub(max_message_size=1024)
@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("refused", REFUSED)
async def test_a_refused_frame_is_closed_on_after_the_replies_to_the_frames_before_it(monkeypatch, refused, one_pass, port):
    # Sent in one write: the frames before it are handled, and their replies
    # (queued for the writer) must reach the client before the close frame,
    # after which a peer may send nothing (RFC 6455 5.5.1).  Read in one pass
    # or by Tornado's reader (strict_frames' checks), the same.
    monkeypatch.setitem(tornado_patches.ENABLED, "one_pass_read", one_pass)
    frame, code = REFUSED[refused]
    client = await RawWs.connect(port)
    try:
        await client.send_raw(_frame(0x81, _ping("a")) + _frame(0x81, _ping("b", 200)) + frame)
        seen = []
        while (received := await client.recv_frame()) is not None:
            opcode, payload = received
            if opcode == OP_TEXT:
                seen.append(json.loads(payload)["request_id"])
            elif opcode == OP_CLOSE:
                seen.append(client.close_code)
                break
        assert await client.at_eof()
    finally:
        client.close()
    assert seen == ["a", "b", code]


@pytest.mark.pubsub(max_message_size=1024)
@pytest.mark.parametrize("length_field", [126, 127])
async def test_an_oversized_frame_whose_header_is_split_across_reads_is_refused_by_the_session(length_field, port, caplog):
    # Too little of the header is buffered for the one-pass reader: Tornado
    # reads it, and strict_frames refuses it once the length is in, as the
    # session's refusal (logged with the connection's context), not
    # Tornado's own 1009.
    caplog.set_level(logging.INFO, logger="tornado_pubsub")
    frame = _frame(0x81, _ping("big", 2000), length_field=length_field)
    client = await RawWs.connect(port)
    try:
        await client.send_raw(_frame(0x81, _ping("a")) + frame[:3])
        assert (await client.reply())["request_id"] == "a"
        await client.send_raw(frame[3:12])
        assert await client.recv_json() is None and client.close_code == 1009
    finally:
        client.close()
    (refusal,) = [r for r in caplog.records if r.getMessage() == "ws_protocol"]
    assert refusal.outcome == "closed_1009" and "over max_message_size" in refusal.detail and refusal.conn_id


async def test_a_refused_close_frame_ends_the_tcp_connection_once_the_server_answered_it(monkeypatch, port):
    # The peer has sent its close frame: once ours is out, the close handshake
    # is over and the server closes the connection (RFC 6455 7.1.1) instead
    # of lingering for more input, however long the linger is.
    monkeypatch.setattr(tornado_patches.protocol, "LINGER", 60.0)
    client = await RawWs.connect(port)
    try:
        await client.send_raw(_frame(0x81, _ping("a")) + _frame(0x88, struct.pack("!H", 1005)))
        assert (await client.reply())["request_id"] == "a"
        assert await client.recv_json() is None and client.close_code == 1002
        # At once (milliseconds); lingering would keep it open 60 s, and
        # Tornado's own close-handshake timer would end it after 5.
        assert await client.at_eof(timeout=3)
    finally:
        client.close()


@pytest.mark.pubsub(max_message_size=1024)
async def test_a_publish_before_an_oversized_frame_is_acked_before_the_1009(rest, ws_connect, port, caplog):
    # What a client pipelining publishes sees when one of them is too big:
    # the publish before it reached its subscriber, and its ack reaches it.
    caplog.set_level(logging.INFO, logger="tornado_pubsub")
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    client = await RawWs.connect(port)
    try:
        publish = {"type": "publish", "topic": "t", "request_id": "p1",
                   "message": {"id": "0b7e5f0c-4c1e-4d8e-9a51-6a1f0b2c3d4e", "payload": {"n": 1}}}
        await client.send_raw(_frame(0x81, json.dumps(publish).encode()) + _frame(0x81, _ping("big", 2000)))
        ack = await client.reply()
        assert ack is not None and (ack["type"], ack["request_id"], ack["seq"]) == ("ack", "p1", 1)
        assert await client.recv_json() is None and client.close_code == 1009
    finally:
        client.close()
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == {"n": 1}
    # One record says why, with the connection's context like any other.
    (refusal,) = [r for r in caplog.records if r.getMessage() == "ws_protocol"]
    assert refusal.outcome == "closed_1009" and "over max_message_size" in refusal.detail
    assert refusal.conn_id and refusal.remote == "127.0.0.1"
