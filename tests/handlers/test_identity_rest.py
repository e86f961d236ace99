"""Identity on REST over real sockets (PROTOCOL.md 5.1, 5.2, 5.4): who may
manage, who may publish, refusals of every kind, FORBIDDEN before existence,
and neither the key nor a token in the server's output in any encoding."""

from __future__ import annotations

import base64
import logging
import time
import urllib.parse

import jwt
import pytest

from tornado_pubsub.tokens import issue

from tests.kit.clients import Rest
from tests.kit.procs import served
from tests.kit.support import spellings

KEY = "s3cret-Key_0123.Zz"
SECRET = "0123456789abcdef-token-secret-0123456789"
ADMIN = {"X-API-Key": KEY}
BOTH = pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
PUBLISH_ORDERS = [{"topics": ["orders.*", "user.{sub}"], "allow": ["publish"]}]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user(sub: str = "42", caps=None, **kw) -> dict[str, str]:
    return bearer(issue(SECRET, sub, PUBLISH_ORDERS if caps is None else caps, **kw))


def signed(claims: dict, key: str = SECRET, alg: str = "HS256") -> dict[str, str]:
    return bearer(jwt.encode(claims, key, algorithm=alg))


async def create(rest, *names: str) -> None:
    for name in names:
        status, body = await rest.call("POST", "/topics", {"name": name}, headers=ADMIN)
        assert status == 201, body


def error(status: int, body, code: str) -> str:
    assert body["error"]["code"] == code and status == {"UNAUTHORIZED": 401, "FORBIDDEN": 403, "TOPIC_NOT_FOUND": 404}[code], (status, body)
    return body["error"]["message"]


ADMIN_ROUTES = [
    ("GET", "/topics", None),
    ("POST", "/topics", {"name": "fresh"}),
    ("DELETE", "/topics/orders.eu", None),
    ("DELETE", "/topics/absent", None),
    ("GET", "/stats", None),
]
ADMIN_IDS = [f"{m} {p}" for m, p, _ in ADMIN_ROUTES]


@BOTH
@pytest.mark.parametrize("method, path, body", ADMIN_ROUTES, ids=ADMIN_IDS)
async def test_admin_route_with_a_valid_user_token_403_forbidden(rest, method, path, body):
    await create(rest, "orders.eu")
    # Even a token allowed everything on every topic is not an administrator.
    everything = [{"topics": ["*"], "allow": ["subscribe", "publish", "presence"]}]
    status, reply = await rest.call(method, path, body, headers=user(caps=everything))
    assert "admin key" in error(status, reply, "FORBIDDEN")
    status, topics = await rest.call("GET", "/topics", headers=ADMIN)
    assert [t["name"] for t in topics["topics"]] == ["orders.eu"]  # nothing was changed


@BOTH
@pytest.mark.parametrize("method, path, body", ADMIN_ROUTES, ids=ADMIN_IDS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer "}],
    ids=["none", "bad_token", "bad_key", "empty_bearer"],
)
async def test_admin_route_without_or_with_a_bad_credential_401(rest, method, path, body, headers):
    await create(rest, "orders.eu")
    status, reply = await rest.call(method, path, body, headers=headers)
    error(status, reply, "UNAUTHORIZED")


@BOTH
@pytest.mark.parametrize("method, path, body", [r for r in ADMIN_ROUTES if "absent" not in r[1]], ids=[i for i in ADMIN_IDS if "absent" not in i])
async def test_admin_route_with_the_key_succeeds_beside_a_token(rest, method, path, body):
    await create(rest, "orders.eu")
    status, reply = await rest.call(method, path, body, headers={**ADMIN, **user()})
    assert status in (200, 201), reply


@pytest.mark.pubsub(token_secret=SECRET)
async def test_token_only_server_has_no_administrator(rest):
    # No api_key: management is closed to everyone, tokens included.
    status, reply = await rest.call("POST", "/topics", {"name": "x"}, headers=user())
    error(status, reply, "FORBIDDEN")
    status, reply = await rest.call("GET", "/topics")
    error(status, reply, "UNAUTHORIZED")


@BOTH
@pytest.mark.parametrize("path", ["/health", "/metrics"])
async def test_health_and_metrics_stay_public(rest, path):
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        status, _ = await rest.call("GET", path, headers=headers)
        assert status == 200


@BOTH
async def test_token_allowed_to_publish_reaches_subscribers_and_logs_the_user(rest, ws_connect, caplog):
    caplog.set_level(logging.INFO)
    await create(rest, "orders.eu")
    subscriber = await ws_connect(headers=ADMIN)
    assert (await subscriber.subscribe("orders.eu"))["type"] == "ack"  # acked once in place
    status, reply = await rest.call("POST", "/topics/orders.eu/messages", {"payload": {"n": 1}}, headers=user("42"))
    assert status == 201 and reply["status"] == "published", reply
    assert (await subscriber.events(1))[0]["message"]["payload"] == {"n": 1}
    records = [r for r in caplog.records if getattr(r, "event", None) == "publish"]
    assert [(r.user, r.via) for r in records] == [("42", "http")]


@BOTH
async def test_sub_scoped_publish_only_to_the_users_own_topic(rest, caplog):
    caplog.set_level(logging.INFO)
    await create(rest, "user.42", "user.43")
    status, _ = await rest.call("POST", "/topics/user.42/messages", {"payload": 1}, headers=user("42"))
    assert status == 201
    status, reply = await rest.call("POST", "/topics/user.43/messages", {"payload": 1}, headers=user("42"))
    assert "publish" in error(status, reply, "FORBIDDEN") and "user.43" in reply["error"]["message"]
    refused = [r for r in caplog.records if getattr(r, "event", None) in ("error", "http") and getattr(r, "status", None) == 403]
    assert len(refused) == 2 and all(r.user == "42" for r in refused)  # the error record and the access record


@BOTH
async def test_token_without_publish_403_forbidden(rest):
    await create(rest, "orders.eu")
    only_subscribe = [{"topics": ["*"], "allow": ["subscribe", "presence"]}]
    status, reply = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=user(caps=only_subscribe))
    error(status, reply, "FORBIDDEN")
    status, stats = await rest.call("GET", "/stats", headers=ADMIN)
    assert stats["topics"]["orders.eu"]["messages"] == 0


@BOTH
@pytest.mark.parametrize(
    "path, body",
    [
        ("/topics/secret.plans/messages", {"payload": 1}),  # exists
        ("/topics/absent/messages", {"payload": 1}),  # does not
        ("/topics/absent/messages", {"not": "a publish body"}),  # and the body is wrong too
        ("/topics/bad%20name/messages", {"payload": 1}),  # not even a topic name
    ],
    ids=["existing", "absent", "absent_bad_body", "invalid_name"],
)
async def test_forbidden_is_checked_before_existence_and_body(rest, path, body):
    await create(rest, "secret.plans")
    status, reply = await rest.call("POST", path, body, headers=user())
    error(status, reply, "FORBIDDEN")


@BOTH
async def test_allowed_publish_on_a_missing_topic_is_404(rest):
    status, reply = await rest.call("POST", "/topics/orders.nowhere/messages", {"payload": 1}, headers=user())
    error(status, reply, "TOPIC_NOT_FOUND")


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, default_caps='[{"topics": ["feedback"], "allow": ["publish"]}]')
async def test_default_caps_granted_to_every_token(rest):
    await create(rest, "feedback")
    status, _ = await rest.call("POST", "/topics/feedback/messages", {"payload": 1}, headers=user(caps=[]))
    assert status == 201


@pytest.mark.pubsub(api_key=KEY, anonymous_caps='[{"topics": ["guestbook", "user.{sub}"], "allow": ["publish"]}]')
async def test_anonymous_caps_without_a_credential(rest):
    await create(rest, "guestbook", "orders.eu", "user.None")
    status, _ = await rest.call("POST", "/topics/guestbook/messages", {"payload": 1})
    assert status == 201
    for topic in ("orders.eu", "user.None"):  # {sub} never matches without a subject
        status, reply = await rest.call("POST", f"/topics/{topic}/messages", {"payload": 1})
        error(status, reply, "FORBIDDEN")
    status, reply = await rest.call("GET", "/topics")  # management still needs the key
    error(status, reply, "UNAUTHORIZED")
    # A wrong key is refused, not treated as "no credential".
    status, reply = await rest.call("POST", "/topics/guestbook/messages", {"payload": 1}, headers={"X-API-Key": "nope"})
    error(status, reply, "UNAUTHORIZED")


@BOTH
async def test_no_credential_without_anonymous_caps_401_on_publish(rest):
    await create(rest, "orders.eu")
    status, reply = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1})
    error(status, reply, "UNAUTHORIZED")


@BOTH
async def test_token_in_the_query_string_is_not_accepted_on_rest(rest):
    await create(rest, "orders.eu")
    token = issue(SECRET, "42", PUBLISH_ORDERS)
    status, reply = await rest.call("POST", f"/topics/orders.eu/messages?token={token}", {"payload": 1})
    error(status, reply, "UNAUTHORIZED")


@pytest.mark.pubsub(api_key=KEY)
async def test_key_only_server_refuses_tokens_with_a_reason(rest):
    await create(rest, "orders.eu")
    status, reply = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=user())
    assert "accepts no tokens" in error(status, reply, "UNAUTHORIZED")


async def test_open_server_ignores_authorization_headers(rest):
    # Parts 1-4: with no credential configured, nothing a client sends is checked.
    status, _ = await rest.call("POST", "/topics", {"name": "t"}, headers={"Authorization": "Bearer junk"})
    assert status == 201
    status, _ = await rest.call("POST", "/topics/t/messages", {"payload": 1}, headers={"Authorization": "Basic eDp5", "X-API-Key": "x"})
    assert status == 201


@BOTH
async def test_wrong_key_beside_a_valid_token_acts_as_the_user(rest):
    await create(rest, "orders.eu")
    headers = {"X-API-Key": "stale", **user()}
    status, _ = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=headers)
    assert status == 201
    status, reply = await rest.call("GET", "/topics", headers=headers)
    error(status, reply, "FORBIDDEN")


def now() -> int:
    return int(time.time())


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET, token_issuer="https://app.example", token_audience="pubsub")
@pytest.mark.parametrize(
    "make_headers, reason",
    [
        (lambda: signed({"sub": "42", "iss": "https://app.example", "aud": "pubsub", "exp": now() - 5}), "expired"),
        (lambda: signed({"sub": "42", "iss": "https://app.example", "aud": "pubsub", "nbf": now() + 3600}), "not yet valid"),
        (lambda: signed({"sub": "42", "iss": "https://app.example", "aud": "pubsub"}, key="x" * 40), "bad signature"),
        (lambda: signed({"sub": "42", "iss": "https://evil.example", "aud": "pubsub"}), "wrong issuer"),
        (lambda: signed({"sub": "42", "iss": "https://app.example", "aud": "elsewhere"}), "wrong audience"),
        (lambda: signed({"iss": "https://app.example", "aud": "pubsub"}), "sub missing"),
        (lambda: bearer("eyJhbGciOiJIUzI1NiJ9.not-base64!.x"), "malformed"),
        (lambda: bearer(base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=") + ".eyJzdWIiOiI0MiJ9."), "algorithm 'none' not accepted"),
        (lambda: signed({"sub": "42", "iss": "https://app.example", "aud": "pubsub", "caps": [{"topics": ["*"], "allow": ["own"]}]}), "caps invalid"),
    ],
    ids=["expired", "not_yet_valid", "bad_signature", "wrong_issuer", "wrong_audience", "sub_missing", "malformed", "alg_none", "caps_invalid"],
)
async def test_refused_token_401_says_why(rest, make_headers, reason):
    await create(rest, "orders.eu")
    status, reply = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=make_headers())
    assert reason in error(status, reply, "UNAUTHORIZED")
    good = issue(SECRET, "42", PUBLISH_ORDERS, issuer="https://app.example", audience="pubsub")
    status, _ = await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=bearer(good))
    assert status == 201  # the same server takes a right token


@pytest.mark.timeout(seconds=120)
async def test_neither_key_nor_token_reaches_the_server_output_in_any_encoding():
    token = issue(SECRET, "42", PUBLISH_ORDERS, ttl=600)
    expired = jwt.encode({"sub": "42", "exp": now() - 5}, SECRET, algorithm="HS256")
    quoted_key = urllib.parse.quote(KEY, safe="")
    every_char = "".join(f"%{b:02X}" for b in KEY.encode())

    async def visit(port: int) -> None:
        rest = Rest(port)
        await rest.call("POST", "/topics", {"name": "orders.eu"}, headers=ADMIN)
        await rest.call("POST", "/topics", {"name": KEY}, headers=ADMIN)  # the key as a topic name
        await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=bearer(token))
        for path in (
            f"/topics?api_key={KEY}",
            f"/topics?api%5Fkey={quoted_key}",
            f"/topics?API_KEY={every_char}",
            f"/topics/{quoted_key}/messages",
            f"/topics/{every_char}",
            f"/nope/{KEY}",
            f"/nope?x={base64.b64encode(KEY.encode()).decode()}",
            f"/topics?token={token}",
            f"/topics?tok%65n={urllib.parse.quote(token, safe='')}",
            f"/topics/{token}/messages",
            f"/topics/{urllib.parse.quote(token, safe='').replace('.', '%2E')}/messages",
            f"/ws?api_key={quoted_key}",
            f"/ws?token={token}",
        ):
            await rest.call("GET", path)
            await rest.call("POST", path, {"payload": KEY})
        await rest.call("GET", "/stats", headers={"X-API-Key": KEY + "x"})
        await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=bearer(expired))
        await rest.call("POST", "/topics/orders.eu/messages", {"payload": 1}, headers=bearer(token[:-2]))

    server = await served(visit, f"--api_key={KEY}", "--log_level=debug", env={"PUBSUB_TOKEN_SECRET": SECRET})
    output, records = server.log(), server.records()
    assert sum(1 for r in records if r.get("event") == "http") >= 26, "the requests were not logged"
    assert "[REDACTED]" in output and any(r.get("event") == "publish" and r.get("user") == "42" for r in records)
    for secret in (KEY, SECRET, token, expired):
        for form in spellings(secret):
            assert form not in output, f"{form!r} (a form of a secret) is in the server output"
