"""The writer's batch framing is byte-identical to Tornado's ``write_message``.

The writer frames each batch itself (``handlers.wsframe``) and hands it to the
stream in one write; these tests pin that to what the plain Tornado path
(``WebSocketProtocol13.write_message``) puts on the wire, both for the framing
function and for real event frames read off a raw socket.
"""

from __future__ import annotations

import json
import uuid

import pytest
from tornado.concurrent import Future
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from tornado_pubsub.handlers.wsframe import text_header
from tests.kit.rawws import RawWs

# Every length class of the header: 7-bit, 16-bit and 64-bit lengths and their edges.
SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]


class _Recorder:
    """Stands in for the IOStream: records what Tornado writes."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> Future:
        self.written += data
        done: Future = Future()
        done.set_result(None)
        return done


async def plain_frames(messages: list[bytes]) -> bytes:
    """What the plain Tornado path writes for ``write_message(m)`` per message."""
    proto = WebSocketProtocol13(None, mask_outgoing=False, params=_WebSocketParams())  # type: ignore[arg-type]
    proto.stream = _Recorder()  # type: ignore[assignment]
    for message in messages:
        await proto.write_message(message)
    return bytes(proto.stream.written)  # type: ignore[attr-defined]


def _message(size: int) -> bytes:
    # JSON-ish text with multi-byte UTF-8 in it, exactly ``size`` bytes long.
    body = ('{"p":"' + "é" * size)[: max(0, size)].encode()[:size]
    return body.ljust(size, b"x")


@pytest.mark.parametrize("size", SIZES)
async def test_text_frame_is_byte_identical_to_tornado_write_message(size):
    message = _message(size)
    assert text_header(size) + message == await plain_frames([message])


async def test_batch_is_the_concatenation_of_tornado_frames():
    messages = [_message(size) for size in SIZES]
    assert b"".join(text_header(len(m)) + m for m in messages) == await plain_frames(messages)


# -- on the wire -------------------------------------------------------------


@pytest.mark.pubsub(max_message_size=1_000_000)  # room for a 64-bit-length event frame
async def test_event_frames_on_the_wire_match_plain_write_message(rest, ws_connect, port):
    await rest.create("wire")
    peer = await RawWs.connect(port)
    try:
        await peer.send_json({"type": "subscribe", "topic": "wire", "client_id": "raw"})
        ack = await peer.recv_wire()
        assert json.loads(ack[2:])["type"] == "ack"
        assert ack == await plain_frames([ack[2:]])

        pub = await ws_connect()
        payloads = ["", "x" * 200, "é" * 40000, {"deep": list(range(20000))}]
        for payload in payloads:
            reply = await pub.publish("wire", payload, str(uuid.uuid4()))
            assert reply["type"] == "ack", reply
        for payload in payloads:
            raw = await peer.recv_wire()
            body = raw[2 + {126: 2, 127: 8}.get(raw[1] & 0x7F, 0) :]
            assert json.loads(body)["message"]["payload"] == payload
            assert raw == await plain_frames([body])
    finally:
        peer.close()
