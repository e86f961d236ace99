"""``Credentials.resolve``, the one function every transport uses to turn
what a client presented into an identity (PROTOCOL.md 5.1). No sockets; the
REST rules over real sockets are in test_identity_rest.py."""

from __future__ import annotations

import pytest

from tornado_pubsub.core.errors import PubSubError
from tornado_pubsub.core.identity import ADMIN, ANONYMOUS, OPEN, USER, Credentials, Identity, require, require_admin
from tornado_pubsub.settings import Settings
from tornado_pubsub.tokens import credentials_for, issue

KEY = "admin-key-0123"
SECRET = "0123456789abcdef-token-secret-0123456789"
GUEST = '[{"topics": ["public.*"], "allow": ["subscribe"]}]'


def creds(**settings) -> Credentials:
    return credentials_for(Settings(**settings))


def unauthorized(call) -> str:
    with pytest.raises(PubSubError) as err:
        call()
    assert err.value.code == "UNAUTHORIZED"
    return err.value.message


def test_nothing_configured_is_open_whatever_is_presented():
    c = creds()
    for presented in ({}, {"key": "x"}, {"authorization": "Bearer junk"}, {"query_token": "junk"}):
        assert c.resolve(**presented).kind == OPEN


def test_key_from_header_or_query_makes_an_admin():
    c = creds(api_key=KEY, token_secret=SECRET)
    assert c.resolve(key=KEY).kind == ADMIN
    assert c.resolve(query_key=KEY).kind == ADMIN
    assert c.resolve(key="wrong", query_key=KEY).kind == ADMIN  # either source is enough (part 3)
    assert c.resolve(key=KEY, authorization="Bearer junk").kind == ADMIN


def test_token_from_bearer_header_or_query_makes_a_user():
    c = creds(api_key=KEY, token_secret=SECRET)
    token = issue(SECRET, "42")
    assert c.resolve(authorization=f"Bearer {token}").user == "42"
    assert c.resolve(authorization=f"bearer  {token} ").user == "42"
    assert c.resolve(query_token=token).kind == USER
    # The header wins over the query: a bad header token is refused even beside a good query one.
    assert "malformed" in unauthorized(lambda: c.resolve(authorization="Bearer junk", query_token=token))


def test_bad_key_or_token_is_refused_never_downgraded_to_anonymous():
    c = creds(api_key=KEY, token_secret=SECRET, anonymous_caps=GUEST)
    assert unauthorized(lambda: c.resolve(key="wrong")) == "invalid API key"
    assert unauthorized(lambda: c.resolve(query_key="wrong")) == "invalid API key"
    assert "malformed" in unauthorized(lambda: c.resolve(query_token="junk"))
    assert c.resolve().kind == ANONYMOUS


def test_no_credential_without_anonymous_caps_is_none_for_the_transport_to_decide():
    assert creds(api_key=KEY).resolve() is None
    assert creds(token_secret=SECRET).resolve() is None


def test_other_authorization_schemes_are_not_credentials():
    assert creds(token_secret=SECRET).resolve(authorization="Basic eDp5") is None


def test_a_token_on_a_server_without_a_token_key_is_refused():
    assert "accepts no tokens" in unauthorized(lambda: creds(api_key=KEY).resolve(authorization="Bearer x"))


def test_require_and_require_admin_answer_401_or_403():
    c = creds(api_key=KEY, token_secret=SECRET, anonymous_caps=GUEST)
    user = c.resolve(authorization="Bearer " + issue(SECRET, "42", [{"topics": ["user.{sub}"], "allow": ["publish"]}]))
    assert require(user, "publish", "user.42") is user
    with pytest.raises(PubSubError) as err:
        require(user, "publish", "user.43")
    assert err.value.code == "FORBIDDEN" and err.value.message == "publish on topic 'user.43' is not allowed"
    with pytest.raises(PubSubError) as err:
        require_admin(user)
    assert err.value.code == "FORBIDDEN"
    for nobody in (None, c.resolve()):
        with pytest.raises(PubSubError) as err:
            require_admin(nobody)
        assert err.value.code == "UNAUTHORIZED"
    assert require(c.resolve(), "subscribe", "public.news").kind == ANONYMOUS
    assert require_admin(c.resolve(key=KEY)).admin


def test_anonymous_caps_never_match_sub_patterns():
    c = creds(token_secret=SECRET, anonymous_caps='[{"topics": ["user.{sub}", "user.*"], "allow": ["publish"]}]')
    anonymous = c.resolve()
    assert anonymous.user is None and not anonymous.allows("subscribe", "user.None")
    assert anonymous.allows("publish", "user.None")  # through user.*, not {sub}


class FakeHandler:
    """What ``resolve_for`` reads of a Tornado handler: headers and query arguments."""

    def __init__(self, headers: dict[str, str] | None = None, query: dict[str, str] | None = None, user: str | None = None) -> None:
        self.request = type("Request", (), {"headers": headers or {}})()
        self.query = query or {}
        self.user = user

    def get_query_argument(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)


def host_login(handler: FakeHandler) -> Identity | None:
    return Identity(user=handler.user, caps=[{"topics": ["user.{sub}"], "allow": ["subscribe"]}]) if handler.user else None


async def test_the_host_hook_comes_first_and_none_falls_back_to_the_other_credentials():
    c = credentials_for(Settings(api_key=KEY, token_secret=SECRET), authenticate=host_login)
    assert (await c.resolve_for(FakeHandler(user="alice"))).user == "alice"
    assert (await c.resolve_for(FakeHandler({"X-API-Key": "wrong"}, user="alice"))).user == "alice"  # the host decided
    assert (await c.resolve_for(FakeHandler({"X-API-Key": KEY}))).kind == ADMIN
    token = issue(SECRET, "42")
    assert (await c.resolve_for(FakeHandler({"Authorization": f"Bearer {token}"}))).user == "42"
    assert await c.resolve_for(FakeHandler()) is None


async def test_query_credentials_are_read_only_where_the_transport_asks():
    c = creds(api_key=KEY)
    assert await c.resolve_for(FakeHandler(query={"api_key": KEY})) is None  # REST: headers only
    assert (await c.resolve_for(FakeHandler(query={"api_key": KEY}), query=True)).kind == ADMIN


async def test_a_hook_closes_an_otherwise_open_server():
    c = credentials_for(Settings(), authenticate=host_login)
    assert not c.open and c.anonymous is None
    assert await c.resolve_for(FakeHandler()) is None  # 401 for the transport, not everything
