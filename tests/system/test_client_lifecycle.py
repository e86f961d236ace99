"""The Python client's lifecycle: ``async for``, bounded buffering, how a
subscription ends, connection-state callbacks, and surviving a real server
restart (a ``python -m tornado_pubsub`` child process killed and started
again on the same port), plus token auth against a tiny fake server."""

from __future__ import annotations

import asyncio
import json

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tornado_pubsub.client import (
    CONNECTION_LOST,
    ClientError,
    Gap,
    Message,
    PubSubClient,
    Subscription,
    SubscriptionEnded,
)

from tests.kit.procs import free_port
from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until
from tests.system.test_client import Recorder

WAIT = 10.0  # upper bound for any wait in this module


def event(seq: int) -> dict:
    return {"type": "event", "topic": "t", "seq": seq, "message": {"id": str(seq), "payload": seq}, "ts": ""}


async def collect(sub: Subscription, into: list) -> BaseException | None:
    """Iterate ``sub`` into ``into``; return what ended the loop (None: it simply stopped)."""
    try:
        async for message in sub:
            into.append(message)
    except SubscriptionEnded as exc:
        return exc
    return None


# -- no socket: the subscription's buffer ----------------------------------------------------


async def test_a_consumer_that_falls_behind_loses_the_oldest_messages_as_one_overflow_gap():
    gaps: list[Gap] = []
    sub = Subscription("t", None, gaps.append, max_buffered=3)
    sub.on_ack({"type": "ack", "topic": "t", "epoch": "e1", "last_seq": 0})
    for seq in range(1, 11):  # nobody iterates meanwhile
        sub.on_event(event(seq))
    assert sub.overflowed == 7 and len(sub._buffer) == 4  # three messages and the gap before them
    sub.end("unsubscribed")
    got: list[Message] = []
    assert await asyncio.wait_for(collect(sub, got), WAIT) is None
    assert [m.seq for m in got] == [8, 9, 10]
    (gap,) = gaps
    assert (gap.reason, gap.epoch, gap.after_seq, gap.first_seq) == ("overflow", "e1", 0, 8)
    assert sub.subscribe_frame()["since_seq"] == 10  # the position is what arrived, not what was consumed


async def test_a_server_gap_caught_in_an_overflow_keeps_its_reason():
    gaps: list[Gap] = []
    sub = Subscription("t", None, gaps.append, max_buffered=2)
    sub.on_ack({"type": "ack", "topic": "t", "epoch": "e1", "last_seq": 0})
    for seq in (1, 2, 5, 6, 7):  # 3 and 4 were dropped by the server
        sub.on_event(event(seq))
    sub.end("unsubscribed")
    got: list[Message] = []
    await asyncio.wait_for(collect(sub, got), WAIT)
    assert [m.seq for m in got] == [6, 7]
    assert [(g.reason, g.after_seq, g.first_seq) for g in gaps] == [("dropped", 0, 6)]


async def test_iterating_a_subscription_with_a_handler_is_refused():
    sub = Subscription("t", print, None)
    with pytest.raises(TypeError):
        sub.__aiter__()
    sub.cancel()


def test_client_error_text_carries_the_code():
    error = ClientError("TOPIC_NOT_FOUND", "topic 'x' does not exist", 404)
    assert str(error) == "TOPIC_NOT_FOUND: topic 'x' does not exist" and error.message == "topic 'x' does not exist"


# -- against the in-process test server ------------------------------------------------------


@pytest.fixture
def client(port, io_loop):
    made = PubSubClient(f"http://127.0.0.1:{port}", backoff_min=0.05, backoff_max=0.5)
    yield made
    io_loop.run_sync(made.close)


async def test_async_for_yields_replay_then_live_and_stops_after_unsubscribe(client):
    await client.connect()
    assert await client.create_topic("orders") is True
    assert await client.create_topic("orders", exist_ok=True) is False
    with pytest.raises(ClientError) as info:
        await client.create_topic("orders")
    assert info.value.code == "TOPIC_EXISTS"
    for n in range(3):
        await client.publish("orders", n)
    sub = await client.subscribe("orders", last_n=2)
    got: list[Message] = []
    loop = asyncio.ensure_future(collect(sub, got))
    await client.publish("orders", 3)
    await wait_until(lambda: len(got) == 3, WAIT, "three messages")
    await client.unsubscribe("orders")
    assert await asyncio.wait_for(loop, WAIT) is None
    assert [(m.seq, m.payload) for m in got] == [(2, 1), (3, 2), (4, 3)]


async def test_a_deleted_topic_raises_from_the_loop_and_calls_on_end(client):
    await client.connect()
    await client.create_topic("orders")
    ends: list[SubscriptionEnded] = []
    sub = await client.subscribe("orders", on_end=ends.append)
    loop = asyncio.ensure_future(collect(sub, []))
    await client.delete_topic("orders")
    raised = await asyncio.wait_for(loop, WAIT)
    assert isinstance(raised, SubscriptionEnded) and (raised.reason, raised.code) == ("topic_deleted", "TOPIC_DELETED")
    await wait_until(lambda: ends, WAIT, "on_end")
    assert ends[0].reason == "topic_deleted" and "orders" in str(ends[0])


async def test_close_ends_the_loop_with_closed(client):
    await client.connect()
    await client.create_topic("orders")
    sub = await client.subscribe("orders")
    loop = asyncio.ensure_future(collect(sub, []))
    await asyncio.sleep(0)
    await client.close()
    raised = await asyncio.wait_for(loop, WAIT)
    assert isinstance(raised, SubscriptionEnded) and raised.reason == "closed"


async def test_a_deleted_topic_is_waited_for_with_wait_for_topic(client, rest):
    await client.connect()
    await client.create_topic("orders")
    seen = Recorder()
    ends: list = []
    await client.subscribe("orders", seen, on_gap=seen, on_end=ends.append, wait_for_topic=True)
    await client.publish("orders", "old")
    await seen.until(lambda r: r.seqs == [1])
    await client.delete_topic("orders")
    await wait_until(lambda: client.subscriptions["orders"].waiting, WAIT, "the subscription to wait")
    await client.create_topic("orders")
    await client.publish("orders", "new")
    await seen.until(lambda r: len(r.seqs) == 2)
    assert seen.seqs == [1, 1] and seen.items[-1].payload == "new" and ends == []
    (gap,) = seen.gaps
    assert (gap.reason, gap.after_seq, gap.first_seq) == ("epoch_changed", 1, 1)


# -- a real server process, restarted --------------------------------------------------------


class Restartable:
    """A server child process on a fixed port that can be killed and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: ServerProcess | None = None

    def start(self) -> "Restartable":
        self.proc = ServerProcess(port=self.port).__enter__()
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def restartable():
    server = Restartable().start()
    yield server
    server.kill()


async def test_restart_without_the_topic_ends_the_subscription_loudly(restartable):
    states: list[tuple] = []
    client = PubSubClient(
        restartable.url,
        backoff_min=0.05,
        backoff_max=0.3,
        on_connected=lambda again: states.append(("connected", again)),
        on_disconnected=lambda error: states.append(("disconnected", error.code)),
        on_reconnecting=lambda attempt, delay: states.append(("reconnecting", attempt)),
    )
    try:
        await client.connect()
        await client.create_topic("orders")
        ends: list[SubscriptionEnded] = []
        sub = await client.subscribe("orders", on_end=ends.append)
        loop = asyncio.ensure_future(collect(sub, []))
        restartable.kill()
        restartable.start()  # the memory broker forgot "orders"
        raised = await asyncio.wait_for(loop, WAIT)
        assert isinstance(raised, SubscriptionEnded) and raised.reason == "topic_not_found"
        await wait_until(lambda: ends, WAIT, "on_end")
        assert states[0] == ("connected", False) and states[1] == ("disconnected", CONNECTION_LOST)
        assert states[2] == ("reconnecting", 1) and states[-1] == ("connected", True)
    finally:
        await client.close()


async def test_restart_with_wait_for_topic_resumes_once_the_topic_exists_and_reports_the_gap(restartable):
    client = PubSubClient(restartable.url, backoff_min=0.05, backoff_max=0.3)
    other = PubSubClient(restartable.url, backoff_min=0.05, backoff_max=0.3)
    try:
        await client.connect()
        await client.create_topic("orders")
        gaps: list[Gap] = []
        sub = await client.subscribe("orders", on_gap=gaps.append, wait_for_topic=True)
        got: list[Message] = []
        loop = asyncio.ensure_future(collect(sub, got))
        for n in range(3):
            await client.publish("orders", f"old {n}")
        await wait_until(lambda: len(got) == 3, WAIT, "the first three")
        restartable.kill()
        restartable.start()
        await wait_until(lambda: client.connected and sub.waiting, WAIT, "the client to wait for the topic")
        await other.connect()
        await other.create_topic("orders")
        await other.publish("orders", "new 0")
        await wait_until(lambda: len(got) == 4, WAIT, "the new incarnation's first message")
        assert [(m.seq, m.payload) for m in got] == [(1, "old 0"), (2, "old 1"), (3, "old 2"), (1, "new 0")]
        (gap,) = gaps
        assert (gap.reason, gap.after_seq, gap.first_seq) == ("epoch_changed", 3, 1) and gap.epoch == got[-1].epoch
        assert not loop.done()
    finally:
        await client.close()
        await other.close()


async def test_close_sends_1000_so_the_server_logs_a_client_close(restartable):
    client = PubSubClient(restartable.url)
    await client.connect()
    await client.close()

    def disconnects() -> list[dict]:
        return [r for r in restartable.proc.records() if r.get("event") == "disconnect"]

    (record,) = await wait_until(disconnects, WAIT, "the disconnect record")
    assert (record["close_code"], record["reason"]) == (1000, "client closed")


# -- tokens, against a fake server ---------------------------------------------------------------


class _TokenServer(tornado.websocket.WebSocketHandler):
    """Records the handshake's Authorization header, warns token_expiring, acks auth frames."""

    seen: list

    def initialize(self, seen: list) -> None:
        self.seen = seen

    def open(self) -> None:
        self.seen.append(("header", self.request.headers.get("Authorization")))
        self.write_message(json.dumps({"type": "info", "msg": "token_expiring", "expires_at": "x", "ts": "x"}))

    def on_message(self, message: str) -> None:
        frame = json.loads(message)
        self.seen.append(("frame", frame["type"], frame.get("token")))
        self.write_message(json.dumps({"type": "ack", "request_id": frame["request_id"], "status": "ok", "user": "u"}))


async def test_token_goes_in_the_handshake_and_is_refreshed_on_token_expiring():
    seen: list = []
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application([(r"/ws", _TokenServer, {"seen": seen})]))
    server.add_sockets(sockets)
    issued = iter(["first", "second"])

    async def token() -> str:
        return next(issued)

    client = PubSubClient(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", token=token)
    try:
        await client.connect()
        await wait_until(lambda: len(seen) == 2, WAIT, "the auth frame")
        assert seen == [("header", "Bearer first"), ("frame", "auth", "second")]
    finally:
        await client.close()
        server.stop()


async def test_a_failing_token_function_is_token_failed_without_its_message(port):
    def token() -> str:
        raise RuntimeError("eyJ-part-of-a-token")

    client = PubSubClient(f"http://127.0.0.1:{port}", token=token)
    with pytest.raises(ClientError) as info:
        await client.connect()
    assert info.value.code == "TOKEN_FAILED" and "eyJ" not in str(info.value)
    with pytest.raises(ClientError) as info:
        await client.topics()
    assert info.value.code == "TOKEN_FAILED"
