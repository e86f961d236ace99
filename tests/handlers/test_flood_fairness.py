"""Finding 13: the frame budget is charged before the JSON parse, in frames
and bytes, so a client flooding large junk is throttled without being
parsed, and another client on the same server is served throughout."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.rawws import RawWs

JUNK = "j" * 60_000  # not JSON


@pytest.mark.timeout(seconds=90)
@pytest.mark.pubsub(max_frames_per_second=50)
async def test_large_junk_flood_is_throttled_before_parsing_and_others_are_served(port, ws_connect):
    flooder = await RawWs.connect(port)
    healthy = await ws_connect()
    try:
        for _ in range(120):  # as fast as the socket takes them
            flooder.send_text(JUNK)
        pongs = 0
        for n in range(20):  # meanwhile, another client's round trips
            reply = await healthy.request({"type": "ping", "request_id": f"h{n}"})
            assert reply["type"] == "pong" and reply["request_id"] == f"h{n}"
            pongs += 1
        codes = []
        for _ in range(120):
            reply = await flooder.reply(timeout=20)
            assert reply is not None, f"flooder closed after {len(codes)} replies"
            codes.append(reply["error"]["code"])
        # 120 frames of 4 tokens each against 50 tokens a second: most were
        # refused unparsed; only what the budget admitted was parsed.
        assert codes.count("LIMIT_EXCEEDED") >= 60, codes.count("BAD_REQUEST")
        assert set(codes) <= {"LIMIT_EXCEEDED", "BAD_REQUEST"} and pongs == 20
    finally:
        flooder.close()
