"""RFC 6455 at the frame level (PROTOCOL.md 1.3): close codes a peer may not
send, a close reason that is not UTF-8 and unmasked client frames are all
answered with close 1002, never echoed, never a traceback in the log."""

from __future__ import annotations

import json
import logging
import struct

import pytest

from tests.kit.rawws import OP_CLOSE, OP_TEXT, RawWs


async def close_reply(port: int, body: bytes) -> tuple[int | None, RawWs]:
    """Send a close frame with ``body``; the code of the server's close frame."""
    peer = await RawWs.connect(port)
    await peer.send_frame(OP_CLOSE, body)
    while True:
        frame = await peer.recv_frame()
        if frame is None or frame[0] == OP_CLOSE:
            return peer.close_code if frame is not None else None, peer


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_forbidden_close_code_is_answered_1002_not_echoed(port, code):
    answered, peer = await close_reply(port, struct.pack("!H", code) + b"bye")
    peer.close()
    assert answered == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1013, 3000, 4999])
async def test_allowed_close_code_is_echoed(port, code):
    answered, peer = await close_reply(port, struct.pack("!H", code))
    peer.close()
    assert answered == code


async def test_close_reason_not_utf8_is_answered_1002_without_an_error_log(port, caplog):
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            answered, peer = await close_reply(port, struct.pack("!H", 1000) + b"\xff\xfe bad")
            peer.close()
            assert answered == 1002
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_one_byte_close_body_is_answered_1002(port):
    answered, peer = await close_reply(port, b"\x03")
    peer.close()
    assert answered == 1002


async def test_unmasked_client_frame_is_answered_1002(port):
    peer = await RawWs.connect(port)
    try:
        payload = json.dumps({"type": "ping", "request_id": "unmasked"}).encode()
        await peer.send_raw(bytes([0x81, len(payload)]) + payload)  # no mask bit, no key
        frame = await peer.recv_frame()
        while frame is not None and frame[0] != OP_CLOSE:  # no pong: the frame is refused
            assert frame[0] != OP_TEXT or json.loads(frame[1]).get("request_id") != "unmasked"
            frame = await peer.recv_frame()
        assert frame is not None and peer.close_code == 1002
    finally:
        peer.close()


async def test_masked_frames_still_work(port):
    peer = await RawWs.connect(port)
    try:
        await peer.send_json({"type": "ping", "request_id": "masked"})
        assert (await peer.reply())["request_id"] == "masked"
    finally:
        peer.close()
