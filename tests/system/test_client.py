"""The Python client against a real server: requests, errors, and resume across
induced disconnects (server-side close, TCP reset, server restart)."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tornado_pubsub.server.app import make_app
from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.client import (
    CLOSED,
    TIMEOUT,
    TOO_BIG,
    UNREACHABLE,
    ClientError,
    Gap,
    Message,
    PubSubClient,
    Subscription,
)
from tornado_pubsub.settings import Settings

from tests.kit.procs import free_port
from tests.kit.wait import wait_until

WAIT = 10.0  # upper bound for any wait in this module


@pytest.fixture
def clients(port, io_loop):
    """``await make(**kw)`` -> a connected PubSubClient for the test server, closed on teardown."""
    made: list[PubSubClient] = []

    async def make(**kw) -> PubSubClient:
        kw.setdefault("backoff_min", 0.05)
        kw.setdefault("backoff_max", 0.5)
        client = PubSubClient(f"http://127.0.0.1:{kw.pop('port', port)}", **kw)
        made.append(client)
        return await client.connect()

    yield make
    for client in made:
        io_loop.run_sync(client.close)


class Recorder:
    """A subscription handler that records what it is given, in order."""

    def __init__(self) -> None:
        self.items: list[Message | Gap] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Message | Gap) -> None:
        self.items.append(item)
        self._changed.set()

    @property
    def seqs(self) -> list[int]:
        return [m.seq for m in self.items if isinstance(m, Message)]

    @property
    def gaps(self) -> list[Gap]:
        return [g for g in self.items if isinstance(g, Gap)]

    async def until(self, predicate, timeout: float = WAIT) -> None:
        """Wait until ``predicate(self)`` holds; fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            self._changed.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"timed out; seen seqs {self.seqs[-5:]} gaps {self.gaps}"
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


def server_sockets(app, subscribed: bool):
    """The server-side handlers of open connections that do (or do not) hold a subscription."""
    return [s for s in app.pubsub.heartbeat.sockets if s.session is not None and bool(s.session.sub.topics) == subscribed]


def tcp_reset(handler) -> None:
    """Abort a server-side connection with a TCP RST instead of a FIN or a close frame."""
    stream = handler.ws_connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.close()


def close_frame(handler) -> None:
    """A clean server-initiated close (as at shutdown)."""
    handler.close(1001, "going away")


# -- requests and errors ------------------------------------------------------------------


async def test_publish_returns_seq_and_flags_a_repeated_id_as_duplicate(rest, clients):
    await rest.create("orders")
    client = await clients()
    seen = Recorder()
    await client.subscribe("orders", seen)
    message_id = str(uuid.uuid4())
    first = await client.publish("orders", {"n": 1}, id=message_id)
    again = await client.publish("orders", {"n": 1}, id=message_id)
    assert (first.seq, first.duplicate, first.id) == (1, False, message_id)
    assert (again.seq, again.duplicate) == (1, True)
    await seen.until(lambda r: r.seqs == [1])
    assert seen.items[0].payload == {"n": 1} and seen.items[0].epoch
    assert await client.ping() >= 0


async def test_async_handler_gets_last_n_replay_then_live_events_in_order(rest, clients):
    await rest.create("orders")
    client = await clients()
    for n in range(5):
        await client.publish("orders", n)
    payloads: list[int] = []

    async def handler(message: Message) -> None:
        await asyncio.sleep(0)  # a coroutine handler is awaited, one message at a time
        payloads.append(message.payload)

    sub = await client.subscribe("orders", handler, last_n=3)
    await client.publish("orders", 5)
    await client.unsubscribe("orders")
    assert await asyncio.wait_for(sub.wait(), WAIT) == "unsubscribed"
    assert payloads == [2, 3, 4, 5]


async def test_publish_to_missing_topic_raises_the_protocol_code(clients):
    client = await clients()
    with pytest.raises(ClientError) as info:
        await client.publish("nope", 1)
    assert info.value.code == "TOPIC_NOT_FOUND" and "nope" in info.value.message
    with pytest.raises(ClientError) as info:
        await client.subscribe("nope", print)
    assert info.value.code == "TOPIC_NOT_FOUND"
    assert "nope" not in client.subscriptions


@pytest.mark.pubsub(api_key="s3cret")
async def test_api_key_goes_in_a_header_and_a_wrong_one_is_unauthorized(clients):
    with pytest.raises(ClientError) as info:
        await clients(api_key="wrong")
    assert (info.value.code, info.value.status) == ("UNAUTHORIZED", 401)
    client = await clients(api_key="s3cret")
    await client.create_topic("orders")
    assert (await client.publish("orders", 1)).seq == 1
    assert await client.topics() == [{"name": "orders", "subscribers": 0}]


async def test_unreachable_server_raises_unreachable():
    client = PubSubClient(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(ClientError) as info:
        await client.connect()
    assert info.value.code == UNREACHABLE
    with pytest.raises(ClientError) as info:
        await client.health()
    assert info.value.code == UNREACHABLE


class _Silent(tornado.websocket.WebSocketHandler):
    def on_message(self, message):  # accepts everything, answers nothing
        pass


async def test_request_without_reply_times_out():
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application([(r"/ws", _Silent)]))
    server.add_sockets(sockets)
    client = PubSubClient(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", request_timeout=0.3)
    try:
        await client.connect()
        with pytest.raises(ClientError) as info:
            await client.ping()
        assert info.value.code == TIMEOUT
    finally:
        await client.close()
        server.stop()
    with pytest.raises(ClientError) as info:
        await client.ping()
    assert info.value.code == CLOSED


@pytest.mark.pubsub(max_message_size=1024)
async def test_oversized_publish_fails_with_too_big_and_the_client_recovers(rest, clients):
    await rest.create("orders")
    client = await clients()
    with pytest.raises(ClientError) as info:
        await client.publish("orders", "x" * 4096)
    assert info.value.code == TOO_BIG
    assert (await client.publish("orders", "small")).seq == 1
    assert client.reconnects == 1


async def test_subscription_drops_repeats_and_reports_a_seq_jump_as_dropped():
    """No socket: frames fed straight to a Subscription, as the reader would."""
    seen = Recorder()
    sub = Subscription("t", seen, seen)
    sub.on_ack({"type": "ack", "topic": "t", "epoch": "e1", "last_seq": 0})
    for seq in (1, 2, 2, 1, 5, 6):
        sub.on_event({"type": "event", "topic": "t", "seq": seq, "message": {"id": str(seq), "payload": seq}, "ts": ""})
    sub.end("unsubscribed")
    assert await asyncio.wait_for(sub.wait(), WAIT) == "unsubscribed"
    assert seen.seqs == [1, 2, 5, 6] and sub.duplicates == 2
    (gap,) = seen.gaps
    assert (gap.reason, gap.epoch, gap.after_seq, gap.first_seq) == ("dropped", "e1", 2, 5)
    assert sub.subscribe_frame() == {"type": "subscribe", "topic": "t", "since_seq": 6, "epoch": "e1"}


async def test_deleted_topic_ends_the_subscription(rest, clients):
    await rest.create("orders")
    client = await clients()
    sub = await client.subscribe("orders", print)
    await rest.call("DELETE", "/topics/orders")
    assert await asyncio.wait_for(sub.wait(), WAIT) == "topic_deleted"
    assert "orders" not in client.subscriptions


async def test_topic_gone_after_a_reconnect_ends_the_subscription(app, broker, rest, clients):
    await rest.create("orders")
    client = await clients()
    sub = await client.subscribe("orders", print)
    (handler,) = server_sockets(app, subscribed=True)
    tcp_reset(handler)
    await broker.delete_topic("orders")  # while the client is away: it never hears topic_deleted
    assert await asyncio.wait_for(sub.wait(), WAIT) == "topic_not_found"
    assert client.reconnects == 1 and "orders" not in client.subscriptions


# -- resume across induced disconnects ---------------------------------------------------------

TOTAL = 300
KILL_AT = (60, 150, 240)  # publish acks after which a connection is killed


async def resubscribed(app) -> list:
    """The server-side handler(s) holding a subscription, once the client has (re)subscribed."""
    return await wait_until(lambda: server_sockets(app, subscribed=True), WAIT, "the client to resubscribe")


async def stream_with_kills(rest, clients, kill) -> tuple[Recorder, PubSubClient, PubSubClient]:
    """One client subscribes, another publishes TOTAL messages; right after each
    KILL_AT ack, ``await kill()`` aborts connection(s) while the stream goes on.
    Returns once the subscriber's handler has seen TOTAL messages."""
    await rest.create("stream")
    subscriber = await clients(client_id="subscriber")
    publisher = await clients(client_id="publisher")
    seen = Recorder()
    await subscriber.subscribe("stream", seen, on_gap=seen)
    for n in range(1, TOTAL + 1):
        ack = await publisher.publish("stream", n)
        assert ack.seq == n and not ack.duplicate
        if n in KILL_AT:
            await kill()
    await seen.until(lambda r: len(r.seqs) >= TOTAL)
    return seen, subscriber, publisher


# History holds the whole stream: these tests are about resuming, and on a
# loaded machine a reconnect can take longer than 100 publishes (eviction and
# its history_gap are tested on their own below).
@pytest.mark.pubsub(history_size=1000)
@pytest.mark.parametrize("abort", [close_frame, tcp_reset], ids=["server_close", "tcp_reset"])
async def test_subscriber_sees_every_seq_once_across_killed_connections(app, rest, clients, abort):
    async def kill() -> None:
        (handler,) = await resubscribed(app)
        abort(handler)

    seen, subscriber, _ = await stream_with_kills(rest, clients, kill)
    assert seen.seqs == list(range(1, TOTAL + 1)) and seen.gaps == []
    assert subscriber.reconnects == len(KILL_AT)


@pytest.mark.pubsub(history_size=1000)
async def test_publisher_reset_mid_stream_stores_each_message_once(app, broker, rest, clients):
    async def kill() -> None:
        # Wait for the subscriber first: listed before it resubscribed, its fresh
        # connection would be in both lists and reset twice.
        subscribed = await resubscribed(app)
        for handler in server_sockets(app, subscribed=False) + subscribed:
            tcp_reset(handler)

    seen, subscriber, publisher = await stream_with_kills(rest, clients, kill)
    assert seen.seqs == list(range(1, TOTAL + 1)) and seen.gaps == []
    assert (await broker.topic_stats())["stream"]["messages"] == TOTAL
    assert subscriber.reconnects == publisher.reconnects == len(KILL_AT)


async def test_publish_whose_ack_was_lost_is_resent_and_acked_as_duplicate(app, broker, rest, clients, monkeypatch):
    """The server stores the message, then the connection dies before the ack:
    the client resends the same id after reconnecting and is told it had landed."""
    await rest.create("orders")
    client = await clients()
    real_publish = broker.publish
    resets: list[str] = []

    async def publish_then_reset(topic, payload, message_id=None):
        result = await real_publish(topic, payload, message_id)
        if payload == "lost ack" and not resets:
            resets.append(result.id)
            (handler,) = server_sockets(app, subscribed=False)
            tcp_reset(handler)  # before the handler can queue the ack
        return result

    monkeypatch.setattr(broker, "publish", publish_then_reset)
    assert (await client.publish("orders", "first")).seq == 1
    ack = await client.publish("orders", "lost ack")
    assert (ack.seq, ack.duplicate, [ack.id]) == (2, True, resets)
    assert client.reconnects == 1
    assert (await broker.topic_stats())["orders"]["messages"] == 2


@pytest.mark.pubsub(history_size=5)
async def test_messages_evicted_while_disconnected_are_reported_as_a_gap(app, broker, rest, clients):
    await rest.create("stream")
    client = await clients(backoff_min=0.2)
    seen = Recorder()
    await client.subscribe("stream", seen, on_gap=seen)
    for n in range(3):
        await broker.publish("stream", n)
    await seen.until(lambda r: r.seqs == [1, 2, 3])
    (handler,) = server_sockets(app, subscribed=True)
    tcp_reset(handler)
    for n in range(3, 23):  # broker.publish never suspends: all 20 land before the client can resume
        await broker.publish("stream", n)

    await seen.until(lambda r: r.seqs[-1:] == [23])
    (gap,) = seen.gaps
    assert (gap.reason, gap.after_seq, gap.first_seq) == ("evicted", 3, 19)
    assert seen.seqs == [1, 2, 3, 19, 20, 21, 22, 23]
    assert seen.items.index(gap) == 3  # told before the first message after the gap


async def test_server_restart_is_reported_as_not_recovered():
    """A new Broker (a restarted server) has new epochs: the client says so, then
    delivers the new incarnation's messages from seq 1."""
    settings = Settings(port=0)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    first_broker = Broker.from_settings(settings)
    first_app = make_app(settings, first_broker)
    server = HTTPServer(first_app)
    server.add_sockets(sockets)
    await first_broker.create_topic("stream")
    client = PubSubClient(f"http://127.0.0.1:{port}", backoff_min=0.05, backoff_max=0.2)
    second_app = None
    try:
        await client.connect()
        seen = Recorder()
        await client.subscribe("stream", seen, on_gap=seen)
        for n in range(4):
            await client.publish("stream", f"old {n}")
        await seen.until(lambda r: len(r.seqs) == 4)
        old_epoch = seen.items[0].epoch

        server.stop()
        first_broker.close_all(Disconnect(1001, "restarting"))
        first_app.pubsub.heartbeat.stop()
        second_broker = Broker.from_settings(settings)
        await second_broker.create_topic("stream")
        await second_broker.publish("stream", "new 0")
        await second_broker.publish("stream", "new 1")
        second_app = make_app(settings, second_broker)
        server = HTTPServer(second_app)
        server.add_sockets(bind_sockets(port, "127.0.0.1"))

        await seen.until(lambda r: len(r.seqs) == 6)
        (gap,) = seen.gaps
        new_epoch = second_broker.backend.topic("stream").epoch
        assert (gap.reason, gap.epoch, gap.after_seq, gap.first_seq) == ("epoch_changed", new_epoch, 4, 1)
        assert seen.seqs == [1, 2, 3, 4, 1, 2]
        assert [m.payload for m in seen.items[-2:]] == ["new 0", "new 1"]
        assert {m.epoch for m in seen.items[-2:]} == {new_epoch} and new_epoch != old_epoch
        assert (await client.publish("stream", "new 2")).seq == 3
        await seen.until(lambda r: r.seqs[-1] == 3)
    finally:
        await client.close()
        server.stop()
        if second_app is not None:
            second_app.pubsub.heartbeat.stop()
