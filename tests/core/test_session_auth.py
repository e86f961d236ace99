"""The auth lifecycle with no socket (PROTOCOL.md 5.3, 5.4): the gate before
``auth``, the expiry timer (one per connection, replaced by a refresh,
cancelled at the end), the per-user count in the hub, the admin exemption
from the frame budget."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.identity import ADMIN_IDENTITY, PENDING_IDENTITY, Credentials
from tornado_pubsub.core.errors import PubSubError
from tornado_pubsub.core.session import Session
from tornado_pubsub.tokens import TokenVerifier, issue

from tests.kit.support import queued

SECRET = "0123456789abcdef-token-secret-0123456789"
OWN = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
CREDENTIALS = Credentials(None, TokenVerifier(SECRET).verify, None)


def verified(sub: str = "42", ttl: float | None = 600) -> Any:
    return CREDENTIALS.token(issue(SECRET, sub, OWN, ttl=ttl))


def open_session(broker: Broker, identity: Any, rate: float = 1000.0) -> Session:
    return Session.open(broker, "127.0.0.1", rate, identity, CREDENTIALS)


async def feed(session: Session, frame: dict[str, Any]) -> list[dict[str, Any]]:
    pending = session.feed(json.dumps(frame))
    if pending is not None:
        await pending
    return queued(session.sub)


@pytest.fixture
def broker() -> Broker:
    return Broker(queue_size=10, max_connections_per_user=2)


async def test_a_pending_session_answers_only_auth_and_ping(broker):
    session = open_session(broker, PENDING_IDENTITY)
    [reply] = await feed(session, {"type": "subscribe", "topic": "user.42", "client_id": "c", "request_id": "s"})
    assert (reply["error"]["code"], reply["request_id"]) == ("UNAUTHORIZED", "s")
    assert [f["type"] for f in await feed(session, {"type": "ping"})] == ["pong"]
    [ack] = await feed(session, {"type": "auth", "token": issue(SECRET, "42", OWN, ttl=None)})
    assert (ack["type"], ack["user"], ack["expires_at"]) == ("ack", "42", None)
    assert not session.awaiting_auth and session.sub.user == "42" and session._expiry is None


async def test_the_expiry_timer_is_one_handle_replaced_by_a_refresh_and_cancelled_at_the_end(broker):
    session = open_session(broker, verified(ttl=600))
    first = session._expiry
    assert first is not None and queued(session.sub) == []  # more than 30 s left: no warning yet
    await feed(session, {"type": "auth", "token": issue(SECRET, "42", OWN, ttl=900)})
    second = session._expiry
    assert first.cancelled() and second is not None and not second.cancelled()
    session.end(1000, "client closed")
    assert second.cancelled() and session._expiry is None


async def test_less_than_30_s_left_warns_at_once_and_the_timer_waits_for_exp(broker):
    session = open_session(broker, verified(ttl=10))
    [warning] = queued(session.sub)
    assert warning["msg"] == "token_expiring" and session._expiry is not None
    session._expire()  # what the timer does at exp
    error, close = queued(session.sub)
    assert error["error"] == {"code": "UNAUTHORIZED", "message": "token expired"}
    assert (close["type"], close["code"], close["reason"]) == ("close", 4401, "token expired")
    assert await feed(session, {"type": "ping"}) == []  # nothing more is done for it
    session.end(4401, "token expired")


async def test_a_refused_refresh_keeps_the_old_token_and_its_timer(broker):
    identity = verified(ttl=600)
    session = open_session(broker, identity)
    timer = session._expiry
    [reply] = await feed(session, {"type": "auth", "token": issue(SECRET, "43", OWN)})
    assert reply["error"]["code"] == "UNAUTHORIZED"
    assert session.identity is identity and session._expiry is timer and not timer.cancelled()
    session.end(1000, "client closed")


def test_the_hub_counts_connections_per_user_and_forgets_them_once():
    broker = Broker(max_connections_per_user=2)
    hub = broker.hub
    a, b = hub.connect(None, "42"), hub.connect(None, "42")
    hub.connect(None, None)  # admin and anonymous connections are not counted
    with pytest.raises(PubSubError) as refused:
        hub.connect(None, "42")
    assert refused.value.code == "LIMIT_EXCEEDED" and hub.users == {"42": 2}
    pending = hub.connect(None)
    with pytest.raises(PubSubError):
        hub.set_user(pending, "42")
    assert pending.user is None and hub.users == {"42": 2}
    hub.disconnect(a)
    hub.disconnect(a)  # twice: counted once
    hub.set_user(pending, "42")
    assert hub.users == {"42": 2}
    hub.disconnect(b)
    hub.disconnect(pending)
    assert hub.users == {}


def test_only_the_admin_key_has_no_frame_budget(broker):
    assert open_session(broker, ADMIN_IDENTITY).budget is None
    assert open_session(broker, verified()).budget is not None
    assert open_session(broker, PENDING_IDENTITY).budget is not None
