"""Embedding with the host's own login: ``PubSub(authenticate=...)`` names the
caller of every /ws handshake and REST call from the host application's
secure cookie, with no token anywhere (README "Security model")."""

from __future__ import annotations

import asyncio
import logging

import pytest
import tornado.web

from tests.kit.clients import Rest, handshake_status
from tornado_pubsub import Identity, PubSub

COOKIE_SECRET = "host-app-cookie-secret-0123456789abcdef"
KEY = "admin-key-for-the-host-backend-0123456789"
OWN_TOPIC = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
SESSION_ID = "sess-4f1e-very-private"  # in the hook's exception: must stay out of the body


def who(handler: tornado.web.RequestHandler) -> Identity | None:
    """The host's get_current_user, reused: its signed cookie names the user."""
    name = handler.get_secure_cookie("user")
    if name is None:
        return None
    if name == b"boom":
        raise RuntimeError(f"session store unreachable for {SESSION_ID}")
    if name == b"banned":
        raise tornado.web.HTTPError(403)
    if name == b"confused":
        return "alice"  # type: ignore[return-value]  # a host bug: not an Identity
    if name == b"staff":
        return Identity("admin")
    return Identity(user=name.decode(), caps=OWN_TOPIC)


async def who_async(handler: tornado.web.RequestHandler) -> Identity | None:
    await asyncio.sleep(0)  # as if the session lived in a database
    return who(handler)


XSRF = "5f3c0a9d"  # any hex string is a valid (version 1) Tornado XSRF token


def cookie(name: str, secret: str = COOKIE_SECRET, xsrf: bool = True) -> dict[str, str]:
    """The host's signed login cookie, and the XSRF pair its pages' scripts send."""
    value = tornado.web.create_signed_value(secret, "user", name).decode()
    if not xsrf:
        return {"Cookie": f"user={value}"}
    return {"Cookie": f"user={value}; _xsrf={XSRF}", "X-XSRFToken": XSRF}


@pytest.fixture(params=["plain function", "coroutine function"])
def pubsub(request, settings):
    embedded = PubSub(settings, prefix="/pubsub", authenticate=who if request.param == "plain function" else who_async)
    yield embedded
    embedded.close()


@pytest.fixture
def app(pubsub):
    """Overrides the kit's standalone app: a host application with a cookie secret."""
    host = tornado.web.Application(pubsub.routes, cookie_secret=COOKIE_SECRET, xsrf_cookies=True)
    host.pubsub = pubsub.context  # where the kit's teardown finds sockets left open
    return host


async def test_a_cookie_user_subscribes_to_their_own_topic_and_nothing_else(pubsub, ws_connect, caplog):
    for name in ("user.alice", "user.bob"):
        await pubsub.create_topic(name)
    sock = await ws_connect("/pubsub/ws", headers=cookie("alice"))
    with caplog.at_level(logging.INFO, logger="tornado_pubsub"):
        assert (await sock.subscribe("user.alice"))["status"] == "ok"
    for topic in ("user.bob", "user.nobody"):  # FORBIDDEN before existence: nothing leaks
        reply = await sock.subscribe(topic)
        assert reply["error"]["code"] == "FORBIDDEN", reply
    reply = await sock.publish("user.alice", 1)
    assert reply["error"]["code"] == "FORBIDDEN", reply  # subscribe only
    await pubsub.publish("user.alice", {"note": "hi"})
    (event,) = await sock.events(1)
    assert event["message"]["payload"] == {"note": "hi"}
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "subscribe"]
    assert record.user == "alice"


async def test_no_cookie_or_a_forged_one_is_refused_before_the_upgrade(port):
    no_login = {"Cookie": f"_xsrf={XSRF}", "X-XSRFToken": XSRF}  # a page of the host, before logging in
    for headers in (no_login, cookie("alice", secret="not-the-host-secret-0123456789abcdef")):
        status, body = await handshake_status(port, "/pubsub/ws", headers)
        assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", body
        status, body = await Rest(port).call("POST", "/pubsub/topics/user.alice/messages", {"payload": 1}, headers=headers)
        assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", body


async def test_rest_calls_see_the_same_identity(pubsub, port):
    await pubsub.create_topic("user.alice")
    rest = Rest(port)
    status, body = await rest.call("POST", "/pubsub/topics/user.alice/messages", {"payload": 1}, headers=cookie("alice"))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN", body  # a user, allowed no publish
    status, body = await rest.call("GET", "/pubsub/stats", headers=cookie("alice"))
    assert status == 403, body  # admin-only route
    status, body = await rest.call("POST", "/pubsub/topics/user.alice/messages", {"payload": 1}, headers=cookie("staff"))
    assert status == 201 and body["seq"] == 1, body  # the hook may name an administrator


async def test_a_cross_site_page_cannot_use_the_visitors_cookie(port):
    """Cross-site WebSocket hijacking: the browser sends the cookie with any page's handshake."""
    headers = {**cookie("alice"), "Origin": "https://evil.example"}
    status, body = await handshake_status(port, "/pubsub/ws", headers)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN", body
    status, _ = await handshake_status(port, "/pubsub/ws", {**cookie("alice"), "Origin": f"http://127.0.0.1:{port}"})
    assert status == 101  # the host's own pages


@pytest.mark.pubsub(api_key=KEY)
async def test_without_a_host_identity_the_key_still_works(pubsub, ws_connect, port):
    await pubsub.create_topic("orders")
    sock = await ws_connect("/pubsub/ws", headers={"X-API-Key": KEY})
    assert (await sock.publish("orders", 1))["status"] == "ok"
    status, body = await handshake_status(port, "/pubsub/ws", {"X-API-Key": KEY + "x"})
    assert status == 401, body
    # The host's xsrf_cookies guards cookie-borne writes, not a backend's key.
    status, body = await Rest(port).call("POST", "/pubsub/topics/orders/messages", {"payload": 2}, headers={"X-API-Key": KEY})
    assert status == 201, body


async def test_the_hosts_xsrf_check_guards_cookie_borne_writes(pubsub, port):
    await pubsub.create_topic("user.alice")
    path = "/pubsub/topics/user.alice/messages"
    status, body = await Rest(port).call("POST", path, {"payload": 1}, headers=cookie("staff", xsrf=False))
    assert status == 403 and body["error"] == {"code": "FORBIDDEN", "message": "'_xsrf' argument missing from POST"}
    status, body = await Rest(port).call("POST", path, {"payload": 1}, headers=cookie("staff"))
    assert status == 201, body


async def test_a_failing_hook_is_a_500_logged_once_without_a_traceback(port, caplog):
    with caplog.at_level(logging.DEBUG):
        ws_status, ws_body = await handshake_status(port, "/pubsub/ws", cookie("boom"))
        rest_status, rest_body = await Rest(port).call(
            "POST", "/pubsub/topics/x/messages", {"payload": 1}, headers=cookie("boom")
        )
    for status, body in ((ws_status, ws_body), (rest_status, rest_body)):
        assert status == 500 and body["error"]["code"] == "INTERNAL", body
        assert SESSION_ID not in str(body)  # the cause is for the operator only
    errors = [r for r in caplog.records if getattr(r, "code", None) == "INTERNAL"]
    assert len(errors) == 2, [r.getMessage() for r in caplog.records]
    for record in errors:
        assert record.cause == f"RuntimeError: session store unreachable for {SESSION_ID}"
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a hook failure"


async def test_a_hook_may_refuse_with_an_http_error_and_must_return_an_identity(port):
    status, body = await handshake_status(port, "/pubsub/ws", cookie("banned"))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN", body
    status, body = await handshake_status(port, "/pubsub/ws", cookie("confused"))
    assert status == 500 and body["error"]["code"] == "INTERNAL", body


def test_identity_caps_are_validated_like_a_tokens():
    with pytest.raises(ValueError, match="caps"):
        Identity(user="alice", caps=[{"topics": ["user/{sub}"], "allow": ["subscribe"]}])
    with pytest.raises(ValueError, match="user"):
        Identity(caps=OWN_TOPIC)
    assert Identity(user="alice", caps=OWN_TOPIC).allows("subscribe", "user.alice")


async def test_an_event_stream_sees_the_same_identity(pubsub, sse_connect):
    """SSE resolves its caller through the same hook as /ws and REST."""
    for name in ("user.alice", "user.bob"):
        await pubsub.create_topic(name)
    stream = await sse_connect("/pubsub/topics/user.alice/events", headers=cookie("alice"))
    assert stream.status == 200
    assert await stream.block() == {"retry": "1000"}
    await pubsub.publish("user.alice", {"note": "hi"})
    (block,) = await stream.events(1)
    assert block.frame()["message"]["payload"] == {"note": "hi"}
    refused = await sse_connect("/pubsub/topics/user.bob/events", headers=cookie("alice"))
    assert refused.status == 403 and refused.body["error"]["code"] == "FORBIDDEN", refused.body
    anonymous = await sse_connect("/pubsub/topics/user.alice/events")
    assert anonymous.status == 401 and anonymous.body["error"]["code"] == "UNAUTHORIZED", anonymous.body
