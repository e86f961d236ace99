"""The Python client's token refresh against the real server (PROTOCOL.md
5.3): with short-lived tokens and a token function it stays on one
connection, subscribed, past every token's exp, and receives every event
exactly once; a subscription the refreshed token no longer allows ends."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clients import Rest
from tests.kit.wait import wait_until
from tornado_pubsub.client import PubSubClient
from tornado_pubsub.client.auth import MAX_REFRESH_DELAY, refresh_delay
from tornado_pubsub.core.frames import timestamp
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-client-auth-tests"
SECRET = "0123456789abcdef-token-secret-0123456789"
ADMIN = {"X-API-Key": KEY}
OWN = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
NEWS = [{"topics": ["user.{sub}", "news.*"], "allow": ["subscribe"]}]


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
@pytest.mark.timeout(seconds=90)
async def test_a_client_with_short_tokens_and_a_token_function_stays_subscribed_past_exp(port):
    rest = Rest(port, ADMIN)
    await rest.create("user.42")
    issued: list[str] = []

    async def token() -> str:
        issued.append(issue(SECRET, "42", OWN, ttl=4))
        return issued[-1]

    received: list[int] = []
    client = PubSubClient(f"http://127.0.0.1:{port}", token=token, backoff_min=0.05)
    try:
        await client.connect()
        await client.subscribe("user.42", lambda m: received.append(m.payload["n"]))
        loop = asyncio.get_running_loop()
        first_exp = loop.time() + 4
        n = 0
        while loop.time() < first_exp + 3:  # well past the first token's exp
            n += 1
            status, body = await rest.call("POST", "/topics/user.42/messages", {"payload": {"n": n}})
            assert status == 201, body
            await asyncio.sleep(0.2)
        await wait_until(lambda: len(received) >= n, 10, "every event")
        assert received == list(range(1, n + 1))  # each exactly once, in order
        assert client.connected and client.reconnects == 0
        assert len(issued) >= 3, "the token was not refreshed on the same connection"
    finally:
        await client.close()


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
async def test_a_refresh_that_narrows_the_caps_ends_the_lost_subscription_as_revoked(port):
    rest = Rest(port, ADMIN)
    await rest.create("user.42")
    await rest.create("news.eu")
    caps = iter([NEWS, OWN])

    def token() -> str:
        return issue(SECRET, "42", next(caps, OWN), ttl=2)

    client = PubSubClient(f"http://127.0.0.1:{port}", token=token)
    try:
        await client.connect()
        news = await client.subscribe("news.eu")
        own = await client.subscribe("user.42")
        await wait_until(lambda: "news.eu" not in client.subscriptions, 10, "news.eu to be revoked")
        assert await asyncio.wait_for(news.ended, 5) == "revoked"
        assert "user.42" in client.subscriptions and not own.ended.done()
        assert client.reconnects == 0
    finally:
        await client.close()


def test_refresh_delay_is_half_the_time_left_capped_and_zero_when_unreadable():
    now = 1_800_000_000.0
    assert refresh_delay(timestamp(now + 4), now) == pytest.approx(2, abs=0.01)
    assert refresh_delay(timestamp(now + 30), now) == MAX_REFRESH_DELAY
    assert refresh_delay(timestamp(now - 5), now) == 0
    assert refresh_delay("x", now) == 0 and refresh_delay(None, now) == 0
