"""Small assertions and look-ups shared by the tests."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from typing import Any

from tests.kit.wait import wait_until
from tornado_pubsub.core.hub import Subscriber
from tornado_pubsub.core.outbound import Close

#: The contract's timestamp: ISO-8601 UTC, millisecond precision, ``Z`` suffix.
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")


def queued(sub: Subscriber) -> list[dict[str, Any]]:
    """Everything in a socketless subscriber's queue, decoded, oldest first (and
    removed); a close instruction reads ``{"type": "close", "code", "reason", "abort"}``."""
    return [decoded(item) for item in sub.queue.drain_nowait()]


def decoded(item: Any) -> dict[str, Any]:
    """One queue item as the client would see it (a close as a pseudo-frame)."""
    if isinstance(item, Close):
        return {"type": "close", "code": item.disconnect.code, "reason": item.disconnect.reason, "abort": item.abort}
    return json.loads(item if isinstance(item, bytes) else item.data)


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


def spellings(secret: str) -> set[str]:
    """Every way ``secret`` (or a piece of it) could show up in a log line."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret, safe="").lower(),
        urllib.parse.quote_plus(secret),
        "".join(f"%{b:02X}" for b in raw),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    if secret.count(".") == 2:  # a JWT: none of its segments either
        forms.update(part for part in secret.split(".") if len(part) >= 8)
    return {f for f in forms if f}


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a /metrics text (it must be there)."""
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))
