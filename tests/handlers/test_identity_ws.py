"""Identity on /ws at the handshake (PROTOCOL.md 5.1, 5.2): who may open a
socket, and what a token's capabilities let that socket do."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from tests.kit.clients import handshake_status
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-ws-identity-tests"
SECRET = "0123456789abcdef-token-secret-0123456789"
OWN_TOPIC = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
BOTH = pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)


async def create(rest, *names: str) -> None:
    for name in names:
        status, body = await rest.call("POST", "/topics", {"name": name}, headers={"X-API-Key": KEY})
        assert status == 201, body


def token_path(token: str) -> str:
    return "/ws?" + urllib.parse.urlencode({"token": token})


@pytest.mark.pubsub(api_key=KEY)
async def test_a_key_only_server_refuses_a_handshake_with_no_credential(port):
    status, body = await handshake_status(port)
    assert status == 401
    assert body["error"]["code"] == "UNAUTHORIZED" and "credential" in body["error"]["message"]


@BOTH
async def test_a_token_server_upgrades_a_handshake_with_no_credential(port):
    # It must then send an auth frame (tests/handlers/test_auth_frame.py).
    status, _ = await handshake_status(port)
    assert status == 101


@BOTH
async def test_a_refused_token_is_401_before_the_upgrade_and_says_why(port):
    status, body = await handshake_status(port, token_path(issue(SECRET, "42", OWN_TOPIC, ttl=60, now=time.time() - 120)))
    assert status == 401 and "expired" in body["error"]["message"]
    forged = issue("another-secret-of-at-least-32-bytes!!", "42", OWN_TOPIC)
    status, body = await handshake_status(port, "/ws", {"Authorization": f"Bearer {forged}"})
    assert status == 401 and "signature" in body["error"]["message"]


@BOTH
async def test_a_token_may_subscribe_to_its_own_topic_only_and_forbidden_comes_before_existence(rest, ws_connect):
    await create(rest, "user.42", "user.43")
    client = await ws_connect(token_path(issue(SECRET, "42", OWN_TOPIC)))
    assert (await client.subscribe("user.42"))["type"] == "ack"
    for topic in ("user.43", "user.44"):  # user.44 does not exist: still FORBIDDEN, nothing leaks
        reply = await client.subscribe(topic)
        assert reply["type"] == "error" and reply["error"]["code"] == "FORBIDDEN", reply
        assert "subscribe" in reply["error"]["message"] and topic in reply["error"]["message"]
    refused = await client.publish("user.42", {"n": 1})
    assert refused["type"] == "error" and refused["error"]["code"] == "FORBIDDEN"
    # The connection stays usable after refusals.
    assert (await client.request({"type": "ping", "request_id": "p"}))["type"] == "pong"


@BOTH
async def test_the_admin_key_opens_a_socket_allowed_everything(rest, ws_connect):
    await create(rest, "orders")
    client = await ws_connect("/ws", headers={"X-API-Key": KEY})
    assert (await client.subscribe("orders"))["type"] == "ack"
    assert (await client.publish("orders", {"n": 1}))["type"] == "ack"


@pytest.mark.pubsub(token_secret=SECRET, anonymous_caps='[{"topics": ["public.*"], "allow": ["subscribe"]}]')
async def test_without_a_credential_anonymous_caps_apply(rest, ws_connect):
    client = await ws_connect()
    reply = await client.subscribe("private")
    assert reply["type"] == "error" and reply["error"]["code"] == "FORBIDDEN"
    reply = await client.subscribe("public.news")  # allowed, so existence is checked next
    assert reply["type"] == "error" and reply["error"]["code"] == "TOPIC_NOT_FOUND"
