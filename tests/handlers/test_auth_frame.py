"""The auth lifecycle on /ws over real sockets (PROTOCOL.md 5.3, 5.4): the
``auth`` frame on a connection with no credential, refresh with the same
``sub``, revocation, expiry with short-lived tokens, the per-user connection
limit and the admin key's exemption from the frame rate limit."""

from __future__ import annotations

import asyncio
import calendar
import re
import time
import urllib.parse

import pytest

from tests.kit.clients import Rest, handshake_status
from tests.kit.support import subscriber_count, wait_subscribers
from tests.kit.wait import wait_until
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-auth-frame-tests"
SECRET = "0123456789abcdef-token-secret-0123456789"
ADMIN = {"X-API-Key": KEY}
OWN = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
OWN_AND_NEWS = [{"topics": ["user.{sub}", "news.*"], "allow": ["subscribe"]}]
BOTH = pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def token_path(token: str) -> str:
    return "/ws?" + urllib.parse.urlencode({"token": token})


@pytest.fixture
def rest(port: int) -> Rest:
    """REST as the admin: creates topics and reads their subscriber counts."""
    return Rest(port, ADMIN)


async def create(rest, *names: str) -> None:
    for name in names:
        await rest.create(name)


async def auth(client, token: str, request_id: str = "a1") -> dict:
    return await client.request({"type": "auth", "token": token, "request_id": request_id})


def refused(reply: dict, code: str = "UNAUTHORIZED") -> str:
    assert reply["type"] == "error" and reply["error"]["code"] == code, reply
    return reply["error"]["message"]


async def next_info(client, msg: str, timeout: float = 5.0) -> dict:
    """The next ``info`` frame with ``msg`` (heartbeats and other notices skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await client.recv_type("info", max(0.01, deadline - loop.time()))
        if frame["msg"] == msg:
            return frame


# -- a connection with no credential ------------------------------------------------------


@BOTH
async def test_before_auth_every_frame_but_auth_and_ping_is_unauthorized(rest, ws_connect):
    await create(rest, "user.42")
    client = await ws_connect()
    assert "auth frame" in refused(await client.subscribe("user.42"))
    refused(await client.publish("user.42", {"n": 1}))
    refused(await client.unsubscribe("user.42"))
    assert (await client.request({"type": "ping", "request_id": "p"}))["type"] == "pong"
    assert await subscriber_count(rest, "user.42") == 0


@BOTH
async def test_auth_sets_the_identity_and_the_ack_has_the_contract_shape(rest, ws_connect):
    await create(rest, "user.42", "user.43")
    client = await ws_connect()
    token = issue(SECRET, "42", OWN, ttl=600)
    ack = await auth(client, token)
    assert set(ack) == {"type", "request_id", "status", "user", "expires_at", "ts"}, ack
    assert (ack["type"], ack["request_id"], ack["status"], ack["user"]) == ("ack", "a1", "ok", "42")
    assert TS.match(ack["expires_at"]) and TS.match(ack["ts"])
    exp = int(time.time() + 600)
    assert abs(calendar.timegm(time.strptime(ack["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - exp) <= 2
    assert (await client.subscribe("user.42"))["type"] == "ack"
    refused(await client.subscribe("user.43"), "FORBIDDEN")


@BOTH
async def test_auth_ack_of_a_token_without_exp_says_expires_at_null(ws_connect):
    client = await ws_connect()
    ack = await auth(client, issue(SECRET, "42", OWN, ttl=None))
    assert ack["expires_at"] is None and ack["user"] == "42"


@BOTH
async def test_a_refused_auth_frame_changes_nothing_and_says_why(rest, ws_connect):
    await create(rest, "user.42")
    client = await ws_connect()
    expired = issue(SECRET, "42", OWN, ttl=60, now=time.time() - 120)
    forged = issue("another-secret-of-at-least-32-bytes!!", "42", OWN)
    assert "expired" in refused(await auth(client, expired))
    assert "signature" in refused(await auth(client, forged))
    assert "malformed" in refused(await auth(client, "not-a-jwt"))
    refused(await client.subscribe("user.42"))  # still unauthenticated
    assert (await auth(client, issue(SECRET, "42", OWN)))["user"] == "42"


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, handshake_timeout=2.0)
async def test_no_successful_auth_within_handshake_timeout_closes_1000(ws_connect):
    client = await ws_connect()
    started = time.monotonic()
    # Signs of life (pings, a refused auth) do not count as authenticating.
    refused(await auth(client, "not-a-jwt"))
    while time.monotonic() - started < 0.5:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await asyncio.sleep(0.1)
    assert await client.closed(10) == 1000
    assert client.conn.close_reason == "handshake timeout"


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, handshake_timeout=1.0)
async def test_a_connection_that_authenticated_outlives_the_handshake_timeout(ws_connect):
    client = await ws_connect()
    await auth(client, issue(SECRET, "42", OWN))
    assert await client.nothing_within(2.0)
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.pubsub(token_secret=SECRET, anonymous_caps='[{"topics": ["news.*"], "allow": ["subscribe"]}]')
async def test_anonymous_caps_apply_until_auth_then_the_token_s_and_lost_subscriptions_are_revoked(rest, ws_connect, broker):
    await broker.create_topic("news.eu")
    await broker.create_topic("user.42")
    client = await ws_connect()
    refused(await client.subscribe("user.42"), "FORBIDDEN")
    assert (await client.subscribe("news.eu"))["type"] == "ack"
    ack = await auth(client, issue(SECRET, "42", OWN))
    assert ack["user"] == "42"
    revoked = await next_info(client, "subscription_revoked")
    assert revoked["topic"] == "news.eu"
    assert (await client.subscribe("user.42"))["type"] == "ack"
    sub = next(iter(broker.connections.values()))
    assert list(sub.topics) == ["user.42"] and sub.user == "42"


@pytest.mark.pubsub(api_key=KEY, anonymous_caps='[{"topics": ["news.*"], "allow": ["subscribe"]}]')
async def test_a_server_without_a_token_key_refuses_auth_frames(ws_connect):
    client = await ws_connect()
    assert "no token key" in refused(await auth(client, "eyJhbGciOiJIUzI1NiJ9.e30.x"))


@BOTH
async def test_an_admin_connection_cannot_auth(ws_connect):
    client = await ws_connect(headers=ADMIN)
    assert "API key" in refused(await auth(client, issue(SECRET, "42", OWN)))


# -- refresh -----------------------------------------------------------------------------------


@BOTH
async def test_refresh_with_another_sub_is_refused_and_nothing_changes(rest, ws_connect):
    await create(rest, "user.42")
    client = await ws_connect(token_path(issue(SECRET, "42", OWN)))
    assert (await client.subscribe("user.42"))["type"] == "ack"
    everything = [{"topics": ["*"], "allow": ["subscribe"]}]
    assert "another user" in refused(await auth(client, issue(SECRET, "43", everything)))
    publisher = await ws_connect(headers=ADMIN)
    await publisher.publish("user.42", {"n": 1})
    assert (await client.recv_type("event"))["message"]["payload"] == {"n": 1}
    refused(await client.subscribe("user.43"), "FORBIDDEN")  # the other user's caps were not taken


@BOTH
async def test_refresh_with_narrower_caps_revokes_exactly_the_lost_subscriptions(rest, ws_connect):
    await create(rest, "user.42", "news.eu", "news.us")
    client = await ws_connect(token_path(issue(SECRET, "42", OWN_AND_NEWS)))
    for topic in ("user.42", "news.eu", "news.us"):
        assert (await client.subscribe(topic))["type"] == "ack"
    ack = await auth(client, issue(SECRET, "42", OWN), "refresh")
    assert ack["request_id"] == "refresh" and ack["user"] == "42"
    revoked = {(await next_info(client, "subscription_revoked"))["topic"] for _ in range(2)}
    assert revoked == {"news.eu", "news.us"}
    # Really unsubscribed: the hub counts no subscriber and no event arrives.
    assert await subscriber_count(rest, "news.eu") == 0 and await subscriber_count(rest, "user.42") == 1
    publisher = await ws_connect(headers=ADMIN)
    await publisher.publish("news.eu", {"n": "gone"})
    await publisher.publish("user.42", {"n": "kept"})
    assert (await client.recv_type("event"))["message"]["payload"] == {"n": "kept"}
    refused(await client.subscribe("news.eu"), "FORBIDDEN")


# -- expiry ---------------------------------------------------------------------------------


async def warned(ws_connect, ttl: float) -> tuple:
    """A connection with a token of ``ttl`` seconds (under 30: warned at once) and its warning."""
    client = await ws_connect(token_path(issue(SECRET, "42", OWN, ttl=ttl)))
    return client, await next_info(client, "token_expiring")


@BOTH
@pytest.mark.timeout(seconds=90)
async def test_a_short_token_is_warned_at_once_then_expires_with_4401(rest, ws_connect):
    await create(rest, "user.42")
    client, warning = await warned(ws_connect, 3)
    assert TS.match(warning["expires_at"]) and set(warning) == {"type", "msg", "expires_at", "ts"}
    assert (await client.subscribe("user.42"))["type"] == "ack"
    error = await client.recv_type("error", 10)
    assert error["error"] == {"code": "UNAUTHORIZED", "message": "token expired"}
    assert await client.closed(5) == 4401
    assert client.conn.close_reason == "token expired"
    await wait_subscribers(rest, "user.42", 0)


@BOTH
@pytest.mark.timeout(seconds=90)
async def test_a_token_with_more_than_30_s_left_is_warned_later_not_at_once(ws_connect):
    client = await ws_connect(token_path(issue(SECRET, "42", OWN, ttl=33)))
    # The pong comes first: no warning was queued at the upgrade.
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    warning = await next_info(client, "token_expiring", 10)
    assert TS.match(warning["expires_at"])


@BOTH
@pytest.mark.timeout(seconds=90)
async def test_a_refresh_before_exp_keeps_the_connection_and_its_subscriptions(rest, ws_connect):
    await create(rest, "user.42")
    client, _ = await warned(ws_connect, 4)
    assert (await client.subscribe("user.42"))["type"] == "ack"
    assert (await auth(client, issue(SECRET, "42", OWN, ttl=600)))["type"] == "ack"
    await asyncio.sleep(4.5)  # past the first token's exp
    publisher = await ws_connect(headers=ADMIN)
    await publisher.publish("user.42", {"n": 1})
    assert (await client.recv_type("event"))["message"]["payload"] == {"n": 1}
    assert client.close_code is None


@BOTH
@pytest.mark.timeout(seconds=90)
async def test_a_pending_connection_authenticated_with_a_short_token_expires_too(ws_connect):
    client = await ws_connect()
    await auth(client, issue(SECRET, "42", OWN, ttl=2))
    await next_info(client, "token_expiring")
    refused(await client.recv_type("error", 10))
    assert await client.closed(5) == 4401


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, max_connections_per_user=2)
async def test_max_connections_per_user_refuses_one_more_handshake_with_503(ws_connect, port, broker):
    first = await ws_connect(token_path(issue(SECRET, "42", OWN)))
    await ws_connect("/ws", headers={"Authorization": f"Bearer {issue(SECRET, '42', OWN)}"})
    status, body = await handshake_status(port, token_path(issue(SECRET, "42", OWN)))
    assert status == 503 and body["error"]["code"] == "LIMIT_EXCEEDED" and "per user" in body["error"]["message"]
    # Other users, the admin key and anonymous connections are not counted against user 42.
    assert (await handshake_status(port, token_path(issue(SECRET, "43", OWN))))[0] == 101
    assert (await handshake_status(port, headers=ADMIN))[0] == 101
    # A connection with no credential cannot become the third one by an auth frame.
    pending = await ws_connect()
    assert "per user" in refused(await auth(pending, issue(SECRET, "42", OWN)), "LIMIT_EXCEEDED")
    refused(await pending.subscribe("user.42"))  # still unauthenticated
    first.close()
    await wait_until(lambda: broker.hub.users.get("42") == 1, 5, "the closed connection to be forgotten")
    assert (await auth(pending, issue(SECRET, "42", OWN)))["user"] == "42"
    assert broker.hub.users == {"42": 2}


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, max_frames_per_second=5)
async def test_the_frame_rate_limit_exempts_the_admin_key_not_users(ws_connect):
    admin = await ws_connect(headers=ADMIN)
    user = await ws_connect(token_path(issue(SECRET, "42", OWN)))
    for client, limited in ((admin, False), (user, True)):
        for n in range(50):
            client.send({"type": "ping", "request_id": f"p{n}"})
        replies = [await client.reply() for _ in range(50)]
        codes = {r["error"]["code"] for r in replies if r["type"] == "error"}
        assert codes == ({"LIMIT_EXCEEDED"} if limited else set()), replies[-1]


# -- with the Redis broker ------------------------------------------------------------------


@pytest.mark.timeout(seconds=90)
async def test_with_redis_a_revoked_subscription_is_gone_cluster_wide_and_a_token_expires(cluster, ws_at):
    flags = (f"--api_key={KEY}", f"--token_secret={SECRET}")
    a, b = cluster(2, *flags)
    admin_b = Rest(b.port, ADMIN)
    await create(Rest(a.port, ADMIN), "user.42", "news.eu")
    client = await ws_at(a.port, token_path(issue(SECRET, "42", OWN_AND_NEWS, ttl=600)))
    for topic in ("user.42", "news.eu"):
        assert (await client.subscribe(topic))["type"] == "ack"
    await wait_subscribers(admin_b, "news.eu", 1)
    await auth(client, issue(SECRET, "42", OWN, ttl=3))  # narrower, and short
    assert (await next_info(client, "subscription_revoked"))["topic"] == "news.eu"
    await wait_subscribers(admin_b, "news.eu", 0)  # the other process sees it gone
    publisher = await ws_at(b.port, headers=ADMIN)
    await publisher.publish("news.eu", {"n": "gone"})
    await publisher.publish("user.42", {"n": "kept"})
    assert (await client.recv_type("event"))["message"]["payload"] == {"n": "kept"}
    assert "expired" in refused(await client.recv_type("error", 10))
    assert await client.closed(5) == 4401
    await wait_subscribers(admin_b, "user.42", 0)


@BOTH
async def test_a_flood_of_forged_tokens_is_checked_at_auths_own_pace_and_a_good_one_still_passes(ws_connect):
    """Each auth frame costs a signature check: beyond a burst of five they are
    refused unverified, far below the general frame budget."""
    client = await ws_connect()
    forged = issue("another-secret-of-at-least-32-bytes!!", "42", OWN)
    codes = [(await auth(client, forged, str(i)))["error"]["code"] for i in range(20)]
    assert codes[:5] == ["UNAUTHORIZED"] * 5, codes
    assert codes.count("LIMIT_EXCEEDED") >= 14, codes  # at most one more refill within the loop
    await asyncio.sleep(1.1)  # the budget refills: a real token is checked again
    assert (await auth(client, issue(SECRET, "42", OWN)))["user"] == "42"
