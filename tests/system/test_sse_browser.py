"""SSE in a real headless Chromium: a page's own ``EventSource`` on
``/topics/{name}/events``, including the automatic reconnect with
``Last-Event-ID`` after the server drops the stream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.test_dashboard import Page, browser, in_browser  # noqa: F401  (fixture)
from tornado_pubsub.handlers.sse import EventStream

pytestmark = pytest.mark.browser

# Records what the page's EventSource saw; the test reads window.rec back.
LISTEN = """
window.rec = {events: [], infos: [], opens: 0, errors: 0};
const es = window.es = new EventSource(arguments[0]);
es.addEventListener("event", (e) => {
  rec.events.push({seq: JSON.parse(e.data).seq, id: e.lastEventId});
});
es.addEventListener("info", (e) => rec.infos.push(JSON.parse(e.data).msg));
es.onopen = () => { rec.opens += 1; };
es.onerror = () => { rec.errors += 1; };
"""


def listen(page: Page, base: str, path: str) -> None:
    page.open(base + "/health")  # any page of the server's origin: EventSource is same-origin here
    page.driver.execute_script(LISTEN, path)
    page.wait(lambda: page.js("return window.rec.opens") == 1, "the stream to open")


def rec(page: Page) -> dict[str, Any]:
    return page.js("return window.rec")


def wait_events(page: Page, count: int) -> dict[str, Any]:
    page.wait(lambda: len(rec(page)["events"]) >= count, f"{count} events")
    return rec(page)


async def publish(rest, topic: str, n: int) -> None:
    for _ in range(n):
        status, body = await rest.call("POST", f"/topics/{topic}/messages", {"payload": "x"})
        assert status == 201, body


async def test_event_source_reconnects_with_last_event_id_and_gets_every_seq_once(app, port, rest, browser):
    await rest.create("feed")
    await in_browser(listen, browser, f"http://127.0.0.1:{port}", "/topics/feed/events")
    await publish(rest, "feed", 5)
    before = await in_browser(wait_events, browser, 5)
    epoch = (await rest.call("GET", "/stats"))[1]["topics"]["feed"]["epoch"]
    assert [e["id"] for e in before["events"]] == [f"{epoch}:{n}" for n in range(1, 6)]

    (stream,) = [s for s in app.pubsub.heartbeat.sockets if isinstance(s, EventStream)]
    stream.abort("test", 1001, "dropped by the test")  # the server drops the stream mid-way
    await publish(rest, "feed", 3)  # while the page is disconnected (it waits retry: 1000 ms)
    await in_browser(browser.wait, lambda: rec(browser)["opens"] == 2, "the automatic reconnect")
    await publish(rest, "feed", 2)
    after = await in_browser(wait_events, browser, 10)

    assert [e["seq"] for e in after["events"]] == list(range(1, 11))  # each seq exactly once, in order
    assert after["infos"] == []  # Last-Event-ID resumed within history: no history_gap
    assert after["errors"] >= 1  # the drop was seen, and survived


async def test_event_source_stops_after_topic_deleted_and_a_404(app, port, rest, browser):
    await rest.create("feed")
    await in_browser(listen, browser, f"http://127.0.0.1:{port}", "/topics/feed/events")
    await rest.call("DELETE", "/topics/feed")
    await in_browser(browser.wait, lambda: rec(browser)["infos"] == ["topic_deleted"], "topic_deleted")
    # The stream ended; the reconnect meets 404 and EventSource gives up (readyState CLOSED).
    await in_browser(browser.wait, lambda: browser.js("return window.es.readyState") == 2, "EventSource to close")
    assert not app.pubsub.broker.connections
