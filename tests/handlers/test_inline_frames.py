"""Client frames are handled inline while the broker never suspends, and
still correctly, in order, when a backend's operation really awaits."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest


@pytest.mark.parametrize("pause", [0, 0.01], ids=["bare-yield", "future"])
async def test_frames_stay_in_order_when_the_broker_suspends(rest, ws_connect, broker, monkeypatch, pause):
    original = broker.publish

    async def slow_publish(*args, **kwargs):
        await asyncio.sleep(pause)  # what a networked backend would do
        return await original(*args, **kwargs)

    monkeypatch.setattr(broker, "publish", slow_publish)
    await rest.create("slow")
    sub = await ws_connect()
    await sub.subscribe("slow")
    pub = await ws_connect()
    for n in range(5):  # back to back, without waiting for the acks
        pub.send({"type": "publish", "topic": "slow", "message": {"id": str(uuid.uuid4()), "payload": n}, "request_id": f"p{n}"})
    pub.send({"type": "ping", "request_id": "last"})
    replies = [await pub.recv_type(kind) for kind in ["ack"] * 5 + ["pong"]]
    assert [r["request_id"] for r in replies] == ["p0", "p1", "p2", "p3", "p4", "last"]
    assert [r["seq"] for r in replies[:5]] == [1, 2, 3, 4, 5]
    assert [e["message"]["payload"] for e in await sub.events(5)] == [0, 1, 2, 3, 4]


async def test_an_error_in_one_frame_does_not_stop_the_next(ws_connect):
    client = await ws_connect()
    client.send("{not json")
    client.send(json.dumps({"type": "ping", "request_id": "after"}))
    error = await client.recv_type("error")
    assert error["error"]["code"] == "BAD_REQUEST"
    assert (await client.recv_type("pong"))["request_id"] == "after"
