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
import json
import signal
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from tests.kit.clients import Rest
from tests.kit.procs import Redis, ServerProcess
from tests.kit.wait import wait_until
from tests.system.test_dashboard import WAIT, Page, browser, in_browser  # noqa: F401  (fixture)
from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.core.session import Session
from tornado_pubsub.settings import Settings

# Drives a real headless Chromium (the Tornado 6.2 CI pass deselects it, like the dashboard's).
pytestmark = pytest.mark.browser

HARNESS = """<!doctype html>
<meta charset="utf-8">
<title>client.js harness</title>
<script type="module">
const { PubSubClient } = await import(new URLSearchParams(location.search).get("client"));
window.clients = {};
window.rec = {};
window.start = (name, url, options, topic, subOptions) => {
  const r = (rec[name] = { events: [], gaps: [], states: [], errors: [], subscribed: [], ends: [], acks: [],
                           auths: [], expiring: [], presence: [], presences: [] });
  if (options.tokenPrefix) {
    let n = 0;
    options.getToken = async () => `${options.tokenPrefix}-${++n}`;
  }
  if (options.tokenUrl) {  // as an application would: its backend mints the token
    const tokenUrl = options.tokenUrl;
    options.getToken = async () => (await fetch(tokenUrl)).text();
  }
  const client = (clients[name] = new PubSubClient(url, options));
  client.on("state", ({ state }) => r.states.push(state));
  client.on("error", (err) => r.errors.push(err.code || String(err)));
  client.on("auth", (a) => r.auths.push(a));
  client.on("token_expiring", (t) => r.expiring.push(t));
  if (topic) {
    client.subscribe(topic, (ev) => r.events.push({ seq: ev.seq, epoch: ev.epoch, id: ev.id, payload: ev.payload }), {
      ...subOptions,
      onGap: (gap) => r.gaps.push(gap),
      onSubscribed: (s) => r.subscribed.push(s),
      onEnd: (e) => r.ends.push({ reason: e.reason, code: e.error ? e.error.code : null }),
      onPresence: (p) => r.presence.push(p),
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
window.presence = (name, topic) => {
  clients[name].presence(topic).then(
    (who) => rec[name].presences.push(who),
    (err) => rec[name].presences.push({ error: err.code }),
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


class PeerConn:
    """One connection the scripted peer accepted: its query, the frames it got, a way to answer."""

    def __init__(self, handler: tornado.websocket.WebSocketHandler) -> None:
        self.handler = handler
        self.query = {k: handler.get_query_argument(k) for k in handler.request.query_arguments}
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = False

    async def recv(self, kind: str) -> dict[str, Any]:
        """The next frame of type ``kind`` (others skipped), within WAIT seconds."""
        async def next_of_kind() -> dict[str, Any]:
            while (frame := await self.frames.get())["type"] != kind:
                pass
            return frame

        return await asyncio.wait_for(next_of_kind(), WAIT)

    def send(self, frame: dict[str, Any]) -> None:
        self.handler.write_message(json.dumps({"ts": "2026-12-03T10:00:00.000Z", **frame}))

    async def answer_subscribe(self, **ack: Any) -> dict[str, Any]:
        frame = await self.recv("subscribe")
        self.send({"type": "ack", "status": "ok", "topic": frame["topic"], "request_id": frame["request_id"], **ack})
        return frame

    def close(self, code: int, reason: str = "") -> None:
        self.handler.close(code, reason)


class Peer:
    """A scripted stand-in for the server at ``/peer/ws`` on the harness origin: for
    the parts of the contract whose server side lands later (token refresh,
    presence) and for close codes and silences a real server will not produce on cue."""

    def __init__(self) -> None:
        self.conns: list[PeerConn] = []

    async def connection(self, n: int) -> PeerConn:
        """The ``n``-th connection (1-based), waiting for it within WAIT seconds."""
        await wait_until(lambda: len(self.conns) >= n, WAIT, f"connection {n} to the peer")
        return self.conns[n - 1]


class PeerSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, peer: Peer) -> None:
        self.peer = peer

    def open(self) -> None:
        self.conn = PeerConn(self)
        self.peer.conns.append(self.conn)

    def on_message(self, message: str | bytes) -> None:
        self.conn.frames.put_nowait(json.loads(message))

    def on_close(self) -> None:
        self.conn.closed = True


class TokenPage(tornado.web.RequestHandler):
    """``/token`` on the harness origin: a fresh token from ``Harness.mint``, as an
    application's backend would hand one to its page."""

    def initialize(self, harness: "Harness") -> None:
        self.harness = harness

    def get(self) -> None:
        assert self.harness.mint is not None, "the test did not set harness.mint"
        self.set_header("Content-Type", "text/plain")
        self.finish(self.harness.mint())


class Harness:
    """The harness page's own origin, apart from every pub/sub server, and the scripted peer."""

    def __init__(self, port: int, peer: Peer) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.peer = peer
        self.peer_url = f"{self.origin}/peer"
        self.mint: Callable[[], str] | None = None  # what /token answers

    def url(self, server_port: int) -> str:
        client = f"http://127.0.0.1:{server_port}/client.js"
        return f"{self.origin}/harness?client={urllib.parse.quote(client, safe='')}"


@pytest.fixture
def harness(io_loop):
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    peer = Peer()
    harness = Harness(sock.getsockname()[1], peer)
    app = tornado.web.Application(
        [(r"/harness", HarnessPage), (r"/peer/ws", PeerSocket, {"peer": peer}), (r"/token", TokenPage, {"harness": harness})]
    )
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    yield harness
    server.stop()
    for conn in peer.conns:
        conn.handler.close()


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


def start(page: Page, name: str, server: int | str, topic: str | None, options: dict | None = None, sub: dict | None = None) -> None:
    """Client ``name`` in the page for ``server`` (a loopback port or a URL), with FAST
    reconnects plus ``options``, subscribed to ``topic`` with ``sub`` options."""
    url = server if isinstance(server, str) else f"http://127.0.0.1:{server}"
    page.driver.execute_script("start(...arguments)", name, url, {**FAST, **(options or {})}, topic, sub or {})


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


def redis_pubsub(tmp_path: Path, redis: Redis, harness: Harness, name: str, *flags: str) -> ServerProcess:
    return ServerProcess(
        "--broker=redis", f"--redis-url={redis.url}", f"--allowed-origins={harness.origin}", *flags, tmp=tmp_path, name=name
    )


# -- across a killed and restarted Redis-backed server ----------------------------------


@pytest.fixture
def two_servers(tmp_path: Path, redis_server: Redis, harness: Harness):
    """``await two_servers(*flags)`` -> ``(a, rest_b)``: process a (the page's) and
    process b (where the test publishes) on one Redis, stopped on teardown."""
    started: list[ServerProcess] = []

    async def start_two(*flags: str) -> tuple[ServerProcess, Rest]:
        a, b = (redis_pubsub(tmp_path, redis_server, harness, name, *flags) for name in ("a", "b"))
        for proc in (a, b):
            started.append(proc)
            await in_browser(proc.start)
        return a, Rest(b.port)

    yield start_two
    for proc in started:
        proc.stop()


async def follow_feed(browser: Page, harness: Harness, a: ServerProcess, rest: Rest) -> None:
    """Create topic ``feed`` and have the page's client ``p`` subscribed to it on ``a``."""
    await rest.create("feed")
    await in_browser(open_harness, browser, harness.url(a.port))
    await in_browser(start, browser, "p", a.port, "feed")
    await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the subscription")


@pytest.mark.timeout(seconds=120)
async def test_every_seq_arrives_once_in_order_across_a_killed_and_restarted_server(two_servers, harness, browser):
    a, rest = await two_servers()  # the test publishes through process b all the time
    await follow_feed(browser, harness, a, rest)
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
    await wait_until(lambda: len(published) >= before + 10, WAIT, "ten publishes while a is down")
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


@pytest.mark.timeout(seconds=120)
async def test_on_gap_reports_only_what_the_history_really_lost(two_servers, harness, browser):
    a, rest = await two_servers("--history-size=5")
    await follow_feed(browser, harness, a, rest)
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


# -- publish retried with the same id -------------------------------------------------


@pytest.mark.parametrize("when", ["after", "before"])
async def test_publish_lost_before_its_ack_is_sent_again_with_the_same_id_and_delivered_once(
    when, app, port, rest, harness, browser, ws_connect, monkeypatch
):
    await rest.create("orders")
    watcher = await ws_connect()
    assert (await watcher.subscribe("orders"))["type"] == "ack"
    # The publish route also gets the publish fed before it (for the reply order).
    real_publish = Session.routes["publish"]
    dropped: list[str] = []

    async def publish_and_vanish(self, sub, frame, before=None):
        # The first publish: the connection dies just before (or just after)
        # the server stores it, so the page never sees the ack.
        if not dropped:
            dropped.append(frame["message"]["id"])
            if when == "after":
                await real_publish(self, sub, frame, before)
            # Abort: the queued ack (when "after") is discarded with the connection.
            sub.queue.close(Disconnect(1012, "restarting"), abort=True)
            return
        await real_publish(self, sub, frame, before)

    monkeypatch.setitem(Session.routes, "publish", publish_and_vanish)

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
    real_subscribe = Session.routes["subscribe"]
    cut: list[bool] = []

    async def ack_then_vanish(self, sub, frame):
        # The first subscribe (last_n=5) is acked, then the connection dies
        # before the replay; meanwhile three more messages evict seqs 1-3.
        if cut:
            return await real_subscribe(self, sub, frame)
        cut.append(True)
        await real_subscribe(self, sub, {**frame, "last_n": None})  # the ack only
        await in_browser(wait_rec, browser, "p", lambda r: r["subscribed"], "the page to have the ack")
        sub.queue.close(Disconnect(1012, "restarting"), abort=True)
        for n in range(6, 9):
            await self.broker.publish("feed", n)

    monkeypatch.setitem(Session.routes, "subscribe", ack_then_vanish)
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


# -- against a scripted peer: token refresh, presence, close codes, silence ---------------------


async def test_get_token_is_called_per_connection_and_on_token_expiring(port, harness, browser):
    peer = harness.peer
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", harness.peer_url, "feed", {"tokenPrefix": "jwt"})
    first = await peer.connection(1)
    assert first.query == {"token": "jwt-1"}
    subscribe = await first.answer_subscribe(epoch="e1", last_seq=4)
    assert "since_seq" not in subscribe and "last_n" not in subscribe and subscribe["client_id"].startswith("js-")
    first.send({"type": "event", "topic": "feed", "seq": 5, "message": {"id": "m5", "payload": 5}})

    # PROTOCOL.md 5.3: the refreshed token goes in an auth frame on the same connection.
    first.send({"type": "info", "msg": "token_expiring", "expires_at": "2026-12-03T10:00:30.000Z"})
    auth = await first.recv("auth")
    assert auth["token"] == "jwt-2"
    first.send({"type": "ack", "status": "ok", "request_id": auth["request_id"], "user": "u1", "expires_at": "2026-12-03T11:00:00.000Z"})
    record = await in_browser(wait_rec, browser, "p", lambda r: r["auths"], "the auth ack")
    assert record["auths"] == [{"user": "u1", "expiresAt": "2026-12-03T11:00:00.000Z"}]

    # Expired anyway (4401): a reconnect with a new token resumes where the page was.
    first.close(4401, "token expired")
    second = await peer.connection(2)
    assert second.query == {"token": "jwt-3"}
    resume = await second.answer_subscribe(epoch="e1", last_seq=5, recovered=True)
    assert (resume["since_seq"], resume["epoch"]) == (5, "e1")
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["subscribed"]) == 2, "the resumed subscription")
    assert seqs(record) == [5] and record["gaps"] == [] and record["errors"] == []


@pytest.mark.parametrize("code, error", [(4401, "UNAUTHORIZED"), (4403, "FORBIDDEN")])
async def test_a_close_that_a_reconnect_cannot_fix_ends_the_client(code, error, port, harness, browser):
    peer = harness.peer
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", harness.peer_url, "feed", {"token": "static-jwt"})
    first = await peer.connection(1)
    assert first.query == {"token": "static-jwt"}
    await first.answer_subscribe(epoch="e1", last_seq=0)
    first.send({"type": "info", "msg": "token_expiring", "expires_at": "2026-12-03T10:00:30.000Z"})
    record = await in_browser(wait_rec, browser, "p", lambda r: r["expiring"], "token_expiring for the page")
    assert record["expiring"] == [{"expiresAt": "2026-12-03T10:00:30.000Z"}]  # no getToken: the page is told

    first.close(code, "bye")
    record = await in_browser(wait_rec, browser, "p", lambda r: r["states"][-1] == "disconnected", "the client to stop")
    assert error in record["errors"]
    assert record["ends"] == [{"reason": "closed", "code": error}]
    await asyncio.sleep(3 * FAST["maxReconnectDelay"] / 1000)
    assert len(peer.conns) == 1  # no reconnect


async def test_presence_query_join_leave_and_revocation(port, harness, browser):
    peer = harness.peer
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", harness.peer_url, "feed", {"apiKey": "admin-key"}, {"presence": True})
    conn = await peer.connection(1)
    assert conn.query == {"api_key": "admin-key"}
    subscribe = await conn.answer_subscribe(epoch="e1", last_seq=0)
    assert subscribe["presence"] is True

    browser.driver.execute_script("presence('p', 'feed')")
    ask = await conn.recv("presence")
    assert ask["topic"] == "feed"
    who = [{"conn_id": "c7", "client_id": "py-1", "user": "u7"}, {"conn_id": "c8", "client_id": "js-2", "user": None}]
    conn.send({"type": "presence", "topic": "feed", "subscribers": who, "request_id": ask["request_id"]})
    record = await in_browser(wait_rec, browser, "p", lambda r: r["presences"], "the presence reply")
    assert record["presences"] == [
        {"topic": "feed", "subscribers": [{"connId": "c7", "clientId": "py-1", "user": "u7"}, {"connId": "c8", "clientId": "js-2", "user": None}]}
    ]

    for msg in ("join", "leave"):
        conn.send({"type": "info", "msg": msg, "topic": "feed", "conn_id": "c9", "client_id": "x", "user": "u9"})
    record = await in_browser(wait_rec, browser, "p", lambda r: len(r["presence"]) == 2, "join and leave")
    assert [(p["type"], p["connId"], p["user"]) for p in record["presence"]] == [("join", "c9", "u9"), ("leave", "c9", "u9")]

    conn.send({"type": "info", "msg": "subscription_revoked", "topic": "feed"})
    record = await in_browser(wait_rec, browser, "p", lambda r: r["ends"], "the revoked subscription to end")
    assert record["ends"] == [{"reason": "revoked", "code": "FORBIDDEN"}]


async def test_a_publish_refused_while_draining_is_sent_again_with_its_id_after_the_reconnect(port, harness, browser):
    peer = harness.peer
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", harness.peer_url, None, None)
    first = await peer.connection(1)
    browser.driver.execute_script("publish('p', 'orders', {n: 1})")
    attempt = await first.recv("publish")
    first.send({"type": "error", "request_id": attempt["request_id"], "error": {"code": "SHUTTING_DOWN", "message": "draining"}})
    first.send({"type": "info", "msg": "shutting_down"})
    first.close(1001, "shutdown")

    second = await peer.connection(2)
    retry = await second.recv("publish")
    assert retry["message"] == attempt["message"] == {"id": attempt["message"]["id"], "payload": {"n": 1}}
    second.send({"type": "ack", "status": "ok", "topic": "orders", "request_id": retry["request_id"], "seq": 7, "duplicate": False})
    record = await in_browser(wait_rec, browser, "p", lambda r: r["acks"], "the publish ack")
    assert record["acks"] == [{"topic": "orders", "id": attempt["message"]["id"], "seq": 7, "duplicate": False}]


async def test_a_silent_connection_is_pinged_then_replaced(port, harness, browser):
    peer = harness.peer
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", harness.peer_url, None, {"pingInterval": 300, "pongTimeout": 300})
    first = await peer.connection(1)
    await first.recv("ping")  # silence: the client asks
    second = await peer.connection(2)  # no pong: it gives up on the connection and opens another
    ping = await second.recv("ping")
    second.send({"type": "pong", "request_id": ping["request_id"]})
    await wait_until(lambda: first.closed, WAIT, "the silent connection to be closed")
    record = await in_browser(rec, browser, "p")
    assert record["states"][-1] == "connected" and len(peer.conns) == 2, record


# -- the file itself (no browser) --------------------------------------------------------------


@pytest.mark.pubsub(api_key="s3cret")
async def test_client_js_is_a_public_cacheable_module(port):
    client = tornado.httpclient.AsyncHTTPClient()
    url = f"http://127.0.0.1:{port}/client.js"
    first = await client.fetch(url, raise_error=False)
    assert first.code == 200  # no key needed: it is code, not data
    assert first.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert first.headers["Access-Control-Allow-Origin"] == "*"  # importable as a module from any origin
    assert first.headers["Cache-Control"] == "no-cache" and first.headers["X-Content-Type-Options"] == "nosniff"
    assert b"export class PubSubClient" in first.body
    again = await client.fetch(url, headers={"If-None-Match": first.headers["Etag"]}, raise_error=False)
    assert again.code == 304 and not again.body
    head = await client.fetch(url, method="HEAD", raise_error=False)
    assert head.code == 200 and head.headers["Etag"] == first.headers["Etag"] and not head.body
    # The modules it imports, relative to it, with the same headers.
    part = await client.fetch(f"http://127.0.0.1:{port}/client/subscription.js", raise_error=False)
    assert b'from "./client/subscription.js"' in first.body and b"export class Subscription" in part.body
    assert part.code == 200 and part.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/client/nope.js", "/client/%2e%2e/dashboard/index.html", "/client/../app.py", "/client.js/x"])
async def test_client_routes_serve_only_the_client(port, path):
    client = tornado.httpclient.AsyncHTTPClient()
    response = await client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)
    assert response.code == 404 and json.loads(response.body)["error"]["code"] == "NOT_FOUND"


async def test_last_n_replay_then_live_then_unsubscribe(port, rest, harness, browser):
    await rest.create("t")
    for n in range(1, 5):
        await rest_publish(rest, "t", n)
    await in_browser(open_harness, browser, harness.url(port))
    await in_browser(start, browser, "p", port, "t", None, {"lastN": 2})
    await in_browser(wait_rec, browser, "p", lambda r: seqs(r) == [3, 4], "the last two replayed")
    await rest_publish(rest, "t", 5)
    record = await in_browser(wait_rec, browser, "p", lambda r: seqs(r) == [3, 4, 5], "a live event after the replay")
    assert [s["resumed"] for s in record["subscribed"]] == [False]

    await in_browser(browser.driver.execute_async_script, "clients.p.unsubscribe('t').then(arguments[0])")
    status, body = await rest.call("GET", "/topics")
    assert body["topics"] == [{"name": "t", "subscribers": 0}]
    await in_browser(start, browser, "q", port, "t")  # a second client sees what p no longer does
    await in_browser(wait_rec, browser, "q", lambda r: r["subscribed"], "q's subscription")
    await rest_publish(rest, "t", 6)
    await in_browser(wait_rec, browser, "q", lambda r: seqs(r) == [6], "q to get seq 6")
    record = await in_browser(rec, browser, "p")
    assert seqs(record) == [3, 4, 5] and record["ends"] == [{"reason": "unsubscribed", "code": None}]
