"""The browser client's token refresh against the real server, in Chromium
(PROTOCOL.md 5.3): with short-lived tokens from the application's backend
(``getToken``), one connection stays subscribed past every token's exp and
the page sees every event exactly once."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clients import Rest
from tests.system.test_dashboard import browser, in_browser  # noqa: F401  (fixture)
from tests.system.test_jsclient import harness, open_harness, rest_publish, seqs, settings, start, wait_rec  # noqa: F401
from tornado_pubsub.tokens import issue

pytestmark = pytest.mark.browser

KEY = "admin-key-for-js-client-auth-tests"
SECRET = "0123456789abcdef-token-secret-0123456789"
OWN = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]


@pytest.mark.pubsub(api_key=KEY, token_secret=SECRET)
@pytest.mark.timeout(seconds=90)
async def test_the_js_client_refreshes_short_tokens_on_one_connection_and_misses_nothing(port, harness, browser, broker):
    rest = Rest(port, {"X-API-Key": KEY})
    await rest.create("user.42")
    minted: list[str] = []

    def mint() -> str:
        minted.append(issue(SECRET, "42", OWN, ttl=4))
        return minted[-1]

    harness.mint = mint
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "user.42", {"tokenUrl": f"{harness.origin}/token"})
    await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")
    loop = asyncio.get_running_loop()
    past_first_exp = loop.time() + 4 + 3
    n = 0
    while loop.time() < past_first_exp:
        n += 1
        assert await rest_publish(rest, "user.42", n) == n
        await asyncio.sleep(0.2)
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= n, "every event")
    assert seqs(record) == list(range(1, n + 1))  # each exactly once, in order
    assert len(record["auths"]) >= 2 and {a["user"] for a in record["auths"]} == {"42"}
    assert "reconnecting" not in record["states"] and record["errors"] == [] and record["ends"] == []
    assert broker.counters.connections_total == 1  # never reconnected
    assert len(minted) >= 3
