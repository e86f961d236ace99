"""The browser client ``/client.js`` in a real headless Chromium: a page on
another origin imports it from the server, subscribes, and reports what its
callbacks saw while the test kills and restarts Redis-backed server
processes, drops connections between a publish and its ack, and asks for
things the server refuses.

The page (``HARNESS``) only records: every event, gap, state, error and
publish ack goes into ``window.rec[name]``, which the test reads back.
Browser steps block, so they run in a worker thread (``in_browser``) while
this test's IOLoop keeps serving the harness page and the in-process server.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from tests.conftest import Rest
from tests.procs import PubSub, Redis, redis_server  # noqa: F401  (fixture)
from tests.test_dashboard import WAIT, Page, browser, in_browser  # noqa: F401  (fixture)
from tornado_pubsub.handlers import ws as ws_handlers
from tornado_pubsub.settings import Settings

HARNESS = """<!doctype html>
<meta charset="utf-8">
<title>client.js harness</title>
<script type="module">
const { PubSubClient } = await import(new URLSearchParams(location.search).get("client"));
window.clients = {};
window.rec = {};
window.start = (name, url, options, topic, subOptions) => {
  const r = (rec[name] = { events: [], gaps: [], states: [], errors: [], subscribed: [], ends: [], acks: [] });
  const client = (clients[name] = new PubSubClient(url, options));
  client.on("state", ({ state }) => r.states.push(state));
  client.on("error", (err) => r.errors.push(err.code || String(err)));
  if (topic) {
    client.subscribe(topic, (ev) => r.events.push({ seq: ev.seq, epoch: ev.epoch, id: ev.id, payload: ev.payload }), {
      ...subOptions,
      onGap: (gap) => r.gaps.push(gap),
      onSubscribed: (s) => r.subscribed.push(s),
      onEnd: (e) => r.ends.push({ reason: e.reason, code: e.error ? e.error.code : null }),
    });
  }
  client.connect().catch((err) => r.errors.push(err.code));
};
window.publish = (name, topic, payload, opts) => {
  clients[name].publish(topic, payload, opts).then(
    (ack) => rec[name].acks.push(ack),
    (err) => rec[name].acks.push({ error: err.code }),
  );
};
window.harnessReady = true;
</script>
"""

# Reconnect quickly in tests; the delays stay bounded and jittered.
FAST = {"minReconnectDelay": 100, "maxReconnectDelay": 400, "timeout": 8000}


class HarnessPage(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(HARNESS)


class Harness:
    """The harness page's own origin, apart from every pub/sub server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"

    def url(self, server_port: int) -> str:
        client = f"http://127.0.0.1:{server_port}/client.js"
        return f"{self.origin}/harness?client={urllib.parse.quote(client, safe='')}"


@pytest.fixture
def harness(io_loop):
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/harness", HarnessPage)]))
    server.add_sockets([sock])
    yield Harness(sock.getsockname()[1])
    server.stop()


@pytest.fixture
def settings(request: pytest.FixtureRequest, harness: Harness) -> Settings:
    """conftest's settings, with the harness origin allowed to open WebSockets."""
    marker = request.node.get_closest_marker("pubsub")
    overrides = dict(marker.kwargs) if marker else {}
    return Settings(port=0, allowed_origins=(harness.origin,), **overrides)


# -- browser steps (blocking; run through in_browser) -----------------------------


def open_harness(page: Page, url: str) -> None:
    page.open(url)
    page.wait(lambda: page.js("return window.harnessReady === true"), "the harness to import /client.js")


def start(page: Page, name: str, server_port: int, topic: str | None, options: dict | None = None, sub: dict | None = None) -> None:
    """Client ``name`` in the page (FAST reconnects plus ``options``), subscribed to ``topic`` with ``sub`` options."""
    page.driver.execute_script(
        "start(...arguments)", name, f"http://127.0.0.1:{server_port}", {**FAST, **(options or {})}, topic, sub or {}
    )


def rec(page: Page, name: str) -> dict[str, Any]:
    return page.driver.execute_script("return window.rec[arguments[0]]", name)


def wait_rec(page: Page, name: str, check: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
    page.wait(lambda: check(rec(page, name)), what)
    return rec(page, name)


def seqs(record: dict[str, Any]) -> list[int]:
    return [e["seq"] for e in record["events"]]


async def rest_publish(rest: Rest, topic: str, payload: Any) -> int:
    status, body = await rest.call("POST", f"/topics/{topic}/messages", {"payload": payload})
    assert status == 201, body
    return body["seq"]


def redis_pubsub(tmp_path: Path, redis: Redis, harness: Harness, name: str, *flags: str) -> PubSub:
    return PubSub(
        tmp_path, "--broker=redis", f"--redis-url={redis.url}", f"--allowed-origins={harness.origin}", *flags, name=name
    )


# -- across a killed and restarted Redis-backed server ----------------------------------


@pytest.mark.timeout(seconds=120)
async def test_every_seq_arrives_once_in_order_across_a_killed_and_restarted_server(
    tmp_path, redis_server, harness, browser
):
    # The page talks to process a; the test publishes through process b, all the time.
    a = redis_pubsub(tmp_path, redis_server, harness, "a")
    b = redis_pubsub(tmp_path, redis_server, harness, "b")
    try:
        await in_browser(a.start)
        await in_browser(b.start)
        rest = Rest(b.port)
        await rest.create("feed")
        await in_browser(open_harness, browser, harness.url(a.port))
        await in_browser(start, browser, "p", a.port, "feed")
        await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")

        total = 60
        published: list[int] = []

        async def publish_all() -> None:
            for n in range(1, total + 1):
                published.append(await rest_publish(rest, "feed", {"n": n}))
                await asyncio.sleep(0.02)

        publisher = asyncio.ensure_future(publish_all())
        await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 10, "ten events before the kill")
        a.stop(signal.SIGKILL)  # the server side of the connection vanishes mid-stream
        await in_browser(wait_rec, browser, "p", lambda r: "reconnecting" in r["states"], "the page to notice")
        before = len(published)
        await asyncio.wait_for(_until(lambda: len(published) >= before + 10), WAIT)  # missed while down
        await in_browser(a.start)
        await asyncio.wait_for(publisher, WAIT * 2)
        record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= total, f"{total} events")

        assert seqs(record) == list(range(1, total + 1))  # each seq once, in order
        assert [e["payload"]["n"] for e in record["events"]] == list(range(1, total + 1))
        assert len({e["epoch"] for e in record["events"]}) == 1
        assert record["gaps"] == []  # the history covered the outage: no gap reported
        assert record["subscribed"][-1]["resumed"] and record["subscribed"][-1]["recovered"] is True
        assert record["states"][:2] == ["connecting", "connected"] and record["states"][-1] == "connected"
        assert "reconnecting" in record["states"] and record["ends"] == []
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(seconds=120)
async def test_on_gap_reports_only_what_the_history_really_lost(tmp_path, redis_server, harness, browser):
    a = redis_pubsub(tmp_path, redis_server, harness, "a", "--history-size=5")
    b = redis_pubsub(tmp_path, redis_server, harness, "b", "--history-size=5")
    try:
        await in_browser(a.start)
        await in_browser(b.start)
        rest = Rest(b.port)
        await rest.create("feed")
        await in_browser(open_harness, browser, harness.url(a.port))
        await in_browser(start, browser, "p", a.port, "feed")
        await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")
        for n in range(1, 4):
            await rest_publish(rest, "feed", n)
        await in_browser(wait_rec, browser, "p", lambda r: seqs(r) == [1, 2, 3], "seqs 1-3")

        # Down while 10 are published: the history of 5 keeps 9-13, so 4-8 are lost.
        a.stop(signal.SIGKILL)
        for n in range(4, 14):
            await rest_publish(rest, "feed", n)
        await in_browser(a.start)
        record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 8, "the replay after the gap")
        assert seqs(record) == [1, 2, 3, 9, 10, 11, 12, 13]
        [gap] = record["gaps"]
        assert gap["reason"] == "evicted" and gap["topic"] == "feed"
        assert (gap["afterSeq"], gap["firstSeq"], gap["missed"]) == (3, 9, 5)
        assert gap["epoch"] == record["events"][0]["epoch"]
        assert record["subscribed"][-1]["recovered"] is False

        # Down again while only 4 are published: the small history still holds them all.
        a.stop(signal.SIGKILL)
        for n in range(14, 18):
            await rest_publish(rest, "feed", n)
        await in_browser(a.start)
        record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 12, "the gapless replay")
        assert seqs(record)[8:] == [14, 15, 16, 17]
        assert len(record["gaps"]) == 1  # no second gap: nothing was lost this time
        assert record["subscribed"][-1]["recovered"] is True
        await rest_publish(rest, "feed", 18)
        record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 13, "a live event")
        assert seqs(record)[-1] == 18 and len(seqs(record)) == len(set(seqs(record)))
    finally:
        a.stop()
        b.stop()


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)


# -- publish retried with the same id -------------------------------------------------


@pytest.mark.parametrize("when", ["after", "before"])
async def test_publish_lost_before_its_ack_is_sent_again_with_the_same_id_and_delivered_once(
    when, app, port, rest, harness, browser, ws_connect, monkeypatch
):
    await rest.create("orders")
    watcher = await ws_connect()
    assert (await watcher.subscribe("orders"))["type"] == "ack"
    real_publish = ws_handlers._OPS["publish"]
    dropped: list[str] = []

    async def publish_and_vanish(self, sub, frame):
        # The first publish: the connection dies just before (or just after)
        # the server stores it, so the page never sees the ack.
        if not dropped:
            dropped.append(frame["message"]["id"])
            if when == "after":
                await real_publish(self, sub, frame)
            self.abort("test", 1012, "restarting")
            return
        await real_publish(self, sub, frame)

    monkeypatch.setitem(ws_handlers._OPS, "publish", publish_and_vanish)

    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "orders")
    await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")
    browser.driver.execute_script("publish('p', 'orders', {n: 1})")
    record = await in_browser(wait_rec, browser, "p", lambda r: r["acks"], "the publish ack")

    [ack] = record["acks"]
    assert ack == {"topic": "orders", "id": dropped[0], "seq": 1, "duplicate": when == "after"}
    assert "reconnecting" in record["states"] and record["errors"] == []
    browser.driver.execute_script("publish('p', 'orders', {n: 2})")
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 2, "both events on the page")
    assert seqs(record) == [1, 2] and record["events"][0]["id"] == dropped[0]
    assert [e["payload"] for e in record["events"]] == [{"n": 1}, {"n": 2}]
    # Another subscriber got each message once: the retry was not stored again.
    events = await watcher.events(2)
    assert [(e["seq"], e["message"]["id"]) for e in events][0] == (1, dropped[0])
    assert [e["seq"] for e in events] == [1, 2]
    assert await watcher.nothing_within(0.3)
    status, stats = await rest.call("GET", "/stats")
    assert stats["topics"]["orders"]["messages"] == 2


# -- errors carry the protocol code ---------------------------------------------------------


async def test_a_refused_subscription_ends_with_the_protocol_code(port, harness, browser):
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "nowhere")
    record = await in_browser(wait_rec, browser, "p", lambda r: r["ends"], "the subscription to end")
    assert record["ends"] == [{"reason": "refused", "code": "TOPIC_NOT_FOUND"}]
    message = await in_browser(
        browser.driver.execute_async_script,
        "const done = arguments[arguments.length - 1];"
        "clients.p.publish('nowhere', 1).then(() => done('resolved'), (e) => done([e.name, e.code, e.message, e instanceof Error]))",
    )
    assert message[0] == "PubSubError" and message[1] == "TOPIC_NOT_FOUND" and message[3] is True
    assert message[2].startswith("TOPIC_NOT_FOUND: ")


# -- gaps that are and are not losses -------------------------------------------------------


@pytest.mark.pubsub(history_size=5)
async def test_a_last_n_replay_cut_short_by_a_reconnect_is_not_a_gap(app, port, rest, harness, browser, monkeypatch):
    await rest.create("feed")
    for n in range(1, 6):
        await rest_publish(rest, "feed", n)
    real_subscribe = ws_handlers._OPS["subscribe"]
    cut: list[bool] = []

    async def ack_then_vanish(self, sub, frame):
        # The first subscribe (last_n=5) is acked, then the connection dies
        # before the replay; meanwhile three more messages evict seqs 1-3.
        if cut:
            return await real_subscribe(self, sub, frame)
        cut.append(True)
        await real_subscribe(self, sub, {**frame, "last_n": None})  # the ack only
        await asyncio.wait_for(_until(lambda: sub.queue.qsize() == 0), WAIT)
        self.abort("test", 1012, "restarting")
        for n in range(6, 9):
            await self.broker.publish("feed", n)

    monkeypatch.setitem(ws_handlers._OPS, "subscribe", ack_then_vanish)
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "feed", None, {"lastN": 5})
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 5, "the resumed replay")
    # Seqs 1-3 were only part of "the last 5" asked for; every seq after the ack arrived.
    assert seqs(record) == [4, 5, 6, 7, 8]
    assert record["gaps"] == []
    assert [s["recovered"] for s in record["subscribed"]] == [None, False]  # the server did send history_gap


async def test_a_topic_recreated_while_disconnected_is_an_epoch_gap(app, broker, port, rest, harness, browser):
    await rest.create("feed")
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "feed", {"minReconnectDelay": 1000})
    await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")
    for n in (1, 2):
        await rest_publish(rest, "feed", n)
    record = await in_browser(wait_rec, browser, "p", lambda r: seqs(r) == [1, 2], "seqs 1-2")
    old_epoch = record["events"][0]["epoch"]

    app.pubsub.heartbeat.abort_all("test", 1012, "restarting")
    await broker.delete_topic("feed")
    await broker.create_topic("feed")
    await broker.publish("feed", 3)
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["events"]) >= 3, "the new incarnation's event")
    new_epoch = record["events"][2]["epoch"]
    assert new_epoch != old_epoch
    assert [(e["seq"], e["payload"]) for e in record["events"]] == [(1, 1), (2, 2), (1, 3)]
    [gap] = record["gaps"]
    assert (gap["reason"], gap["previousEpoch"], gap["epoch"], gap["firstSeq"]) == ("epoch_changed", old_epoch, new_epoch, 1)
