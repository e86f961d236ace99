"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from typing import Any, Callable

import tornado.httpclient
import tornado.websocket

from tornado_pubsub.core.hub import Subscriber

#: The contract's timestamp: ISO-8601 UTC, millisecond precision, ``Z`` suffix.
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")


async def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``check`` (plain or async) every 20 ms until it returns something
    truthy, and return that; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def queued(sub: Subscriber) -> list[dict[str, Any]]:
    """Everything in a socketless subscriber's queue, decoded, oldest first (and removed)."""
    return [json.loads(item if isinstance(item, bytes) else item.data) for item in sub.queue.drain_nowait()]


async def subscriber_count(rest: Any, topic: str) -> int | None:
    """The ``subscribers`` figure ``GET /topics`` reports for ``topic``."""
    status, body = await rest.call("GET", "/topics")
    assert status == 200, body
    return next((t["subscribers"] for t in body["topics"] if t["name"] == topic), None)


async def wait_subscribers(rest: Any, topic: str, expected: int, timeout: float = 5.0) -> None:
    """Wait until ``GET /topics`` shows ``expected`` subscribers on ``topic``."""

    async def check() -> bool:
        return await subscriber_count(rest, topic) == expected

    await wait_until(check, timeout, f"{expected} subscriber(s) on {topic!r}")


async def handshake_status(port: int, path: str = "/ws", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """101 (and None) if the WebSocket handshake upgraded, else (status, JSON body)."""
    request = tornado.httpclient.HTTPRequest(f"ws://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        conn = await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as exc:
        assert exc.response is not None
        body = exc.response.body.decode()
        return exc.code, json.loads(body) if body.startswith("{") else body
    conn.close()
    return 101, None
