"""The session's own bounds against a hostile client, with no socket: the
frame budget is charged before the JSON parse (in frames and bytes), and
every ERROR record is throttled per connection, INTERNAL included."""

from __future__ import annotations

import json
import logging

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core import schemas
from tornado_pubsub.core.ratelimit import BYTES_PER_TOKEN, frame_cost
from tornado_pubsub.core.session import ERROR_LOGS_PER_SECOND, Session

from tests.kit.support import queued


def feed_all(session: Session, frames: list[str]) -> None:
    for frame in frames:
        pending = session.feed(frame)
        if pending is not None:
            pending.cancel()  # only INLINE_BURST's yield: nothing left to run


async def test_frames_over_budget_are_refused_before_they_are_parsed(monkeypatch):
    parsed = []
    real = schemas.parse_json
    monkeypatch.setattr(schemas, "parse_json", lambda text: parsed.append(1) or real(text))
    session = Session.open(Broker(queue_size=1000), "127.0.0.1", 10)
    junk = "x" * 60_000  # not JSON; costs 4 tokens of a 10-token bucket
    feed_all(session, [junk] * 20)
    replies = queued(session.sub)
    codes = [r["error"]["code"] for r in replies]
    assert len(replies) == 20
    assert codes.count("BAD_REQUEST") == len(parsed) <= 3  # only what the budget let through was parsed
    assert codes.count("LIMIT_EXCEEDED") >= 17


async def test_large_frames_spend_the_budget_in_bytes():
    session = Session.open(Broker(queue_size=1000), "127.0.0.1", 10)
    small = json.dumps({"type": "ping", "request_id": "s"})
    feed_all(session, [small] * 10)
    assert [r["type"] for r in queued(session.sub)] == ["pong"] * 10
    assert frame_cost("x" * (3 * BYTES_PER_TOKEN)) == 4 and frame_cost(small) == 1


async def test_over_budget_reply_echoes_a_plain_request_id_without_parsing():
    session = Session.open(Broker(queue_size=1000), "127.0.0.1", 1)
    feed_all(session, [json.dumps({"type": "ping", "request_id": f"r{n}"}) for n in range(3)])
    first, second, third = queued(session.sub)
    assert first["type"] == "pong"
    assert (second["error"]["code"], second["request_id"]) == ("LIMIT_EXCEEDED", "r1")
    assert third["request_id"] == "r2"


async def test_internal_errors_are_logged_within_the_error_log_budget(monkeypatch, caplog):
    async def broken(self, sub, frame):
        raise KeyError("boom")

    monkeypatch.setitem(Session.routes, "ping", broken)
    caplog.set_level(logging.INFO, logger="tornado_pubsub")
    session = Session.open(Broker(queue_size=1000), "127.0.0.1", 100000)
    feed_all(session, [json.dumps({"type": "ping"})] * 200)
    replies = queued(session.sub)
    assert [r["error"]["code"] for r in replies] == ["INTERNAL"] * 200  # every frame answered
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 0 < len(errors) <= ERROR_LOGS_PER_SECOND + 2  # a burst's worth, not one (or two) per frame
    assert session.errors_unlogged > 0
