"""The log records of an authenticated /ws connection, read from a real
server's JSON output (PROTOCOL.md 5.4, 5.1): every record about it carries
``user`` (connect, subscribe, publish, error, auth, revocation, expiry,
disconnect), and no token sent in an ``auth`` frame, well-formed or not,
reaches the log or an error message in any encoding."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.kit.clients import Rest
from tests.kit.procs import served
from tests.kit.support import spellings
from tornado_pubsub.tokens import issue

KEY = "admin-key-for-auth-log-tests-0123"
SECRET = "0123456789abcdef-token-secret-0123456789"
ADMIN = {"X-API-Key": KEY}
WIDE = [{"topics": ["user.{sub}", "news.*"], "allow": ["subscribe", "publish"]}]
NARROW = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]


def malformed_auth_frames(token: str) -> list[str]:
    """Frames that carry ``token`` and are refused before it is verified."""
    return [
        json.dumps({"type": "auth", "token": token, "request_id": 5}),
        json.dumps({"type": "auth", "token": [token]}),
        json.dumps({"type": "auth", "token": {"t": token}}),
        '{"type":"auth","token":"' + token + '"',  # not JSON: unterminated
        '{"type":"auth","token":"' + token + '\\ud800"}',  # a lone surrogate after it
        json.dumps({"type": token, "token": token}),
        json.dumps({"type": "subscribe", "topic": token, "client_id": "c"}),
        json.dumps({"type": "auth", "token": token[:-3]}),  # bad signature
        json.dumps({"type": "auth", "token": token + "." + token}),  # malformed
    ]


@pytest.mark.timeout(seconds=120)
async def test_every_record_about_an_authenticated_connection_carries_user_and_no_token_leaks(ws_at):
    first = issue(SECRET, "42", WIDE, ttl=600)
    other = issue(SECRET, "7", NARROW, ttl=600)
    errors: list[str] = []
    tokens = [first, other]

    async def visit(port: int) -> None:
        rest = Rest(port, ADMIN)
        for name in ("user.42", "news.eu", "user.7"):
            await rest.create(name)
        client = await ws_at(port, "/ws?" + urllib.parse.urlencode({"token": first}))
        assert (await client.subscribe("user.42"))["type"] == "ack"
        assert (await client.subscribe("news.eu"))["type"] == "ack"
        assert (await client.publish("news.eu", {"n": 1}))["type"] == "ack"
        errors.append((await client.subscribe("user.7"))["error"]["message"])  # FORBIDDEN
        # Narrower (revokes news.eu) and short (expires); minted only now, so
        # however slowly the server started, it is not expired on arrival.
        refresh = issue(SECRET, "42", NARROW, ttl=3)
        tokens.append(refresh)
        ack = await client.request({"type": "auth", "token": refresh, "request_id": "r"})
        assert ack["user"] == "42"
        assert (await client.recv_type("info"))["msg"] in ("subscription_revoked", "token_expiring")
        assert await client.closed(15) == 4401

        pending = await ws_at(port)
        for raw in malformed_auth_frames(other):
            pending.send(raw)
            reply = await pending.reply()
            assert reply["type"] == "error", reply
            errors.append(reply["error"]["message"])
        assert (await pending.request({"type": "auth", "token": other}))["user"] == "7"
        assert (await pending.subscribe("user.7"))["type"] == "ack"
        pending.close()

    server = await served(visit, f"--api_key={KEY}", "--log_level=debug", env={"PUBSUB_TOKEN_SECRET": SECRET})
    output, records = server.log(), server.records()

    by_conn: dict[str, list[dict]] = {}
    for record in records:
        if "conn_id" in record:
            by_conn.setdefault(record["conn_id"], []).append(record)
    user42 = next(rs for rs in by_conn.values() if any(r.get("user") == "42" for r in rs))
    assert all(r.get("user") == "42" for r in user42), [r for r in user42 if r.get("user") != "42"]
    events = {r["event"] for r in user42}
    assert {"connect", "subscribe", "publish", "error", "auth", "revoke", "token_expiring", "disconnect"} <= events, events
    assert any(r["event"] == "error" and r.get("detail") == "token expired" for r in user42)
    assert any(r["event"] == "disconnect" and r.get("close_code") == 4401 for r in user42)
    # The connection that authenticated by frame: every record from its auth on names its user.
    user7 = next(rs for rs in by_conn.values() if any(r.get("user") == "7" for r in rs))
    after = user7[next(i for i, r in enumerate(user7) if r["event"] == "auth") :]
    assert [r["event"] for r in after] == ["auth", "subscribe", "disconnect"] and all(r.get("user") == "7" for r in after)
    assert sum(r["event"] == "error" for r in user7) == len(malformed_auth_frames(other))

    assert len(tokens) == 3
    for token in tokens:
        for form in spellings(token):
            assert form not in output, f"{form!r} (a form of a token) is in the server output"
            assert not any(form in message for message in errors), f"{form!r} is in an error message"
