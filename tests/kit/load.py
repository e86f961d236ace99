"""Load-test building blocks shared by the fault, concurrency and shutdown
tests: clients that collect every event in the background, and a publisher
that pipelines a window of frames at a time."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests.kit.clients import WsClient

#: Seconds a load test may run before pytest-tornasync fails it (its
#: ``timeout`` marker; the default is pytest.ini's 30).  A hang guard for the
#: heaviest tests, which take about 15 s alone and several times that on a
#: busy shared machine; never a performance target.
LOAD_TEST_TIMEOUT = 120


class Collector:
    """Reads every frame of one connection in a background task.

    ``seqs[topic]`` lists event seqs in arrival order; ``frames`` keeps the
    non-event frames; ``closed`` is set when the server closes.
    """

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.seqs: dict[str, list[int]] = {}
        self.frames: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            raw = await self.client.conn.read_message()
            if raw is None:
                self.closed.set()
                return
            frame = json.loads(raw)
            if frame["type"] == "event":
                self.seqs.setdefault(frame["topic"], []).append(frame["seq"])
            else:
                self.frames.append(frame)

    def count(self, topic: str) -> int:
        return len(self.seqs.get(topic, ()))

    async def wait_for(self, topic: str, count: int, timeout: float) -> None:
        """Wait (bounded) until ``count`` events of ``topic`` have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(topic) < count:
            assert loop.time() < deadline, f"{self.count(topic)} of {count} events of {topic} after {timeout} s"
            assert not self.closed.is_set(), f"closed after {self.count(topic)} of {count} events of {topic}"
            await asyncio.sleep(0.005)

    async def reply(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The ack/error/pong carrying ``request_id``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for frame in self.frames:
                if frame.get("request_id") == request_id:
                    return frame
            assert loop.time() < deadline, f"no reply to {request_id}"
            await asyncio.sleep(0.005)

    async def subscribe(self, topic: str, client_id: str = "collector", **extra: Any) -> dict[str, Any]:
        """Subscribe through the collected connection; returns the reply."""
        request_id = f"sub-{topic}-{len(self.frames)}-{uuid.uuid4().hex[:6]}"
        frame = {"type": "subscribe", "topic": topic, "client_id": client_id, "request_id": request_id, **extra}
        self.client.conn.write_message(json.dumps(frame))
        return await self.reply(request_id)

    def stop(self) -> None:
        self.task.cancel()
        self.client.close()


def publish_frame(topic: str, payload: Any, request_id: str) -> str:
    return json.dumps(
        {"type": "publish", "topic": topic, "request_id": request_id, "message": {"id": str(uuid.uuid4()), "payload": payload}}
    )


async def publish_many(
    client: WsClient, topic: str, count: int, *, payload: Any = None, window: int = 200, prefix: str = "p"
) -> list[dict[str, Any]]:
    """Publish ``count`` messages, ``window`` in flight at a time; returns the replies in order."""
    replies: list[dict[str, Any]] = []
    sent = 0
    while sent < count:
        batch = min(window, count - sent)
        for i in range(sent, sent + batch):
            client.conn.write_message(publish_frame(topic, payload if payload is not None else i, f"{prefix}{i}"))
        got = 0
        while got < batch:
            frame = await client.recv(timeout=30)
            assert frame is not None, "publisher disconnected"
            if frame["type"] in ("ack", "error"):
                replies.append(frame)
                got += 1
        sent += batch
    return replies


def assert_gapless(seqs: list[int], first: int, last: int) -> None:
    """``seqs`` is exactly first..last, in order, nothing missing or repeated."""
    expected = list(range(first, last + 1))
    if seqs != expected:
        dupes = len(seqs) - len(set(seqs))
        missing = sorted(set(expected) - set(seqs))[:10]
        raise AssertionError(
            f"{len(seqs)} seqs, expected {first}..{last}: duplicates={dupes}, first missing={missing}, "
            f"out of order={seqs != sorted(seqs)}"
        )
