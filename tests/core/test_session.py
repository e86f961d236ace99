"""The session with no socket: feed it frames, read what it queued.

In the style of the ``websockets`` library's protocol tests: each test is a
short conversation with ``Session`` over the in-memory broker, and asserts
the frames the connection's queue would put on the wire, close
instructions included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.errors import SHUTDOWN, PubSubError
from tornado_pubsub.core.session import INLINE_BURST, PIPELINE_MAX, Session

from tests.kit.support import queued

PUBLISH_ID = "0d9a5ad8-52a7-4d3c-9c6e-5f0a8c1e8f10"


def open_session(broker: Broker, rate: float = 1000.0, identity: Any = None) -> Session:
    if identity is None:
        return Session.open(broker, "127.0.0.1", rate)
    return Session.open(broker, "127.0.0.1", rate, identity)


async def feed(session: Session, frame: Any) -> None:
    """Feed one frame as the transport would, awaiting what ``feed`` asks it to."""
    pending = session.feed(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    if pending is not None:
        await pending


def publish(topic: str, payload: Any = 1, request_id: str | None = None) -> dict[str, Any]:
    frame = {"type": "publish", "topic": topic, "message": {"id": str(uuid.uuid4()), "payload": payload}}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def subscribe(topic: str, **extra: Any) -> dict[str, Any]:
    return {"type": "subscribe", "topic": topic, "client_id": "tester", **extra}


class Only:
    """An identity allowed exactly the (action, topic) pairs it is given; records what it was asked."""

    user = "alice"
    admin = False

    def __init__(self, *allowed: tuple[str, str]) -> None:
        self.allowed = set(allowed)
        self.asked: list[tuple[str, str]] = []

    def allows(self, action: str, topic: str) -> bool:
        self.asked.append((action, topic))
        return (action, topic) in self.allowed


@pytest.fixture
def broker() -> Broker:
    return Broker(queue_size=10)


# -- replies ---------------------------------------------------------------------


async def test_ping_is_answered_with_pong_echoing_request_id(broker):
    session = open_session(broker)
    await feed(session, {"type": "ping", "request_id": "p1"})
    (pong,) = queued(session.sub)
    assert pong["type"] == "pong" and pong["request_id"] == "p1"


async def test_publish_is_acked_after_the_event_is_queued_for_subscribers(broker):
    await broker.create_topic("t")
    reader, writer = open_session(broker), open_session(broker)
    await feed(reader, subscribe("t", request_id="s"))
    await feed(writer, publish("t", {"n": 1}, request_id="w"))
    ack, event = queued(reader.sub)
    assert (ack["type"], ack["request_id"], ack["last_seq"]) == ("ack", "s", 0)
    assert (event["type"], event["seq"], event["message"]["payload"]) == ("event", 1, {"n": 1})
    (publish_ack,) = queued(writer.sub)
    assert (publish_ack["type"], publish_ack["request_id"], publish_ack["seq"], publish_ack["duplicate"]) == ("ack", "w", 1, False)


async def test_unsubscribe_ends_delivery_and_is_acked_even_when_not_subscribed(broker):
    await broker.create_topic("t")
    session = open_session(broker)
    await feed(session, subscribe("t"))
    for request_id in ("u1", "u2"):  # the second: no longer subscribed, acked all the same
        await feed(session, {"type": "unsubscribe", "topic": "t", "client_id": "tester", "request_id": request_id})
    await broker.publish("t", "unseen")
    assert [(f["type"], f.get("request_id")) for f in queued(session.sub)] == [("ack", None), ("ack", "u1"), ("ack", "u2")]


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame, request_id, fragment",
    [
        ("{not json", None, "invalid JSON"),
        (b'{"type":"ping"}', None, "binary frames are not supported"),
        ('{"type":"nope","request_id":"r"}', "r", "type must be one of"),
        ('{"type":"publish","topic":"t","message":{"id":"x","payload":1},"request_id":"r"}', "r", "message.id"),
    ],
    ids=["not-json", "binary", "unknown-type", "bad-uuid"],
)
async def test_unreadable_frame_is_answered_bad_request(broker, frame, request_id, fragment):
    session = open_session(broker)
    await feed(session, frame)
    (error,) = queued(session.sub)
    assert error["type"] == "error" and error.get("request_id") == request_id
    assert error["error"]["code"] == "BAD_REQUEST" and fragment in error["error"]["message"]


async def test_invalid_utf8_text_is_answered_bad_request(broker):
    session = open_session(broker)
    session.feed_invalid_text()
    (error,) = queued(session.sub)
    assert error["error"]["code"] == "BAD_REQUEST" and "UTF-8" in error["error"]["message"]


async def test_publish_to_a_missing_topic_is_topic_not_found(broker):
    session = open_session(broker)
    await feed(session, publish("nowhere", request_id="r"))
    (error,) = queued(session.sub)
    assert (error["request_id"], error["error"]["code"]) == ("r", "TOPIC_NOT_FOUND")


async def test_frames_over_the_rate_budget_are_refused_unrouted(broker):
    await broker.create_topic("t")
    session = open_session(broker, rate=2)
    for n in range(3):
        await feed(session, publish("t", n, request_id=f"p{n}"))
    replies = queued(session.sub)
    assert [r["type"] for r in replies] == ["ack", "ack", "error"]
    assert replies[2]["request_id"] == "p2" and replies[2]["error"]["code"] == "LIMIT_EXCEEDED"
    assert (await broker.topic_stats())["t"]["messages"] == 2


async def test_a_fault_in_a_route_is_internal_and_the_next_frame_is_served(broker, monkeypatch):
    async def broken(self, sub, frame):
        raise KeyError("detail that must not reach the client")

    monkeypatch.setitem(Session.routes, "ping", broken)
    session = open_session(broker)
    await feed(session, {"type": "ping", "request_id": "boom"})
    monkeypatch.undo()
    await feed(session, {"type": "ping", "request_id": "fine"})
    error, pong = queued(session.sub)
    assert error["error"] == {"code": "INTERNAL", "message": "internal server error"} and error["request_id"] == "boom"
    assert pong["type"] == "pong"


async def test_a_flood_of_errors_is_answered_in_full_and_logged_in_moderation(broker, caplog):
    caplog.set_level(logging.INFO, logger="tornado_pubsub")
    session = open_session(Broker(queue_size=1000))
    for _ in range(200):
        await feed(session, b"garbage")
    assert len(queued(session.sub)) == 200
    session.end(None, "client closed")
    logged = [r for r in caplog.records if r.getMessage() == "error"]
    (closed,) = [r for r in caplog.records if r.getMessage() == "disconnect"]
    assert 0 < len(logged) < 100 and len(logged) + closed.errors_unlogged == 200


# -- authorization ------------------------------------------------------------------------


async def test_identity_is_asked_before_the_topic_exists_so_refusals_reveal_nothing(broker):
    await broker.create_topic("open")
    identity = Only(("subscribe", "open"))
    session = open_session(broker, identity=identity)
    await feed(session, subscribe("open"))
    await feed(session, subscribe("secret", request_id="s"))  # does not exist: still FORBIDDEN
    await feed(session, publish("open", request_id="p"))
    ack, refused_subscribe, refused_publish = queued(session.sub)
    assert ack["type"] == "ack"
    assert (refused_subscribe["request_id"], refused_subscribe["error"]["code"]) == ("s", "FORBIDDEN")
    assert "subscribe" in refused_subscribe["error"]["message"] and "secret" in refused_subscribe["error"]["message"]
    assert (refused_publish["request_id"], refused_publish["error"]["code"]) == ("p", "FORBIDDEN")
    assert "publish" in refused_publish["error"]["message"] and "open" in refused_publish["error"]["message"]
    assert identity.asked == [("subscribe", "open"), ("subscribe", "secret"), ("publish", "open")]
    assert (await broker.topic_stats())["open"]["messages"] == 0


# -- order, suspension and bursts ---------------------------------------------------------


def numbered_then_slow(broker: Broker, monkeypatch: pytest.MonkeyPatch, delays: list[float]) -> None:
    """Make ``broker.publish`` behave like Redis's: each publish takes its
    number at once, in the order it was called, then comes back after its
    own delay (so later ones can come back first)."""
    real_publish = broker.publish
    waits = iter(delays)

    async def slow_publish(*args: Any, **kwargs: Any) -> Any:
        result = await real_publish(*args, **kwargs)
        await asyncio.sleep(next(waits))
        return result

    monkeypatch.setattr(broker, "publish", slow_publish)


async def test_publishes_run_beside_each_other_and_every_reply_keeps_the_frames_order(broker, monkeypatch):
    await broker.create_topic("t")
    numbered_then_slow(broker, monkeypatch, [0.03, 0.02, 0.0, 0.01])
    session = open_session(broker, identity=Only(("publish", "t")))
    fed = [session.feed(json.dumps(publish("t", n, request_id=f"p{n}"))) for n in range(2)]
    fed.append(session.feed(json.dumps(publish("secret", request_id="refused"))))
    fed += [session.feed(json.dumps(publish("t", n, request_id=f"p{n}"))) for n in range(2, 4)]
    assert fed[:2] == [None, None] and fed[3:] == [None, None]  # the transport reads on
    pending = session.feed(json.dumps({"type": "ping", "request_id": "last"}))
    assert pending is not None  # anything but a publish waits for the publishes before it
    await pending
    replies = [(r["type"], r.get("seq") or r.get("error", {}).get("code"), r["request_id"]) for r in queued(session.sub)]
    assert replies == [
        ("ack", 1, "p0"),
        ("ack", 2, "p1"),
        ("error", "FORBIDDEN", "refused"),
        ("ack", 3, "p2"),
        ("ack", 4, "p3"),
        ("pong", None, "last"),
    ]


async def test_a_publish_that_may_have_to_auto_create_its_topic_runs_alone_then_the_rest_pipeline(monkeypatch):
    # Publishes sent beside one that finds the topic missing could reach the
    # store after the create and before its retry, and overtake it.
    broker = Broker(queue_size=1000, auto_create_topics=True)
    numbered_then_slow(broker, monkeypatch, [0.01] * 3)
    session = open_session(broker)
    first = session.feed(json.dumps(publish("fresh", 0, request_id="p0")))
    assert first is not None  # the transport must wait: nothing runs beside it
    await first
    assert session.feed(json.dumps(publish("fresh", 1, request_id="p1"))) is None  # the topic exists now
    await feed(session, {"type": "ping", "request_id": "last"})
    replies = [(r["type"], r.get("seq"), r["request_id"]) for r in queued(session.sub)]
    assert replies == [("ack", 1, "p0"), ("ack", 2, "p1"), ("pong", None, "last")]


async def test_a_connection_stops_being_read_at_its_pipeline_bound(monkeypatch):
    broker = Broker(queue_size=1000)
    await broker.create_topic("t")
    numbered_then_slow(broker, monkeypatch, [0.05] + [0.0] * (PIPELINE_MAX * 2))
    session = open_session(broker, rate=1e9)
    fed = [session.feed(json.dumps(publish("t", n))) for n in range(PIPELINE_MAX)]
    held = [n for n, result in enumerate(fed) if result is not None]
    assert held and held[-1] == PIPELINE_MAX - 1  # full: the transport must wait
    await fed[-1]  # the oldest publish, which came back last
    await feed(session, {"type": "ping"})  # waits for every publish before it
    assert [r.get("seq") for r in queued(session.sub)] == [*range(1, PIPELINE_MAX + 1), None]


async def test_the_in_memory_broker_is_served_inline_with_a_yield_after_each_burst(broker):
    session = open_session(Broker(queue_size=1000))
    results = [session.feed('{"type":"ping"}') for _ in range(INLINE_BURST * 2)]
    yields = [n for n, result in enumerate(results) if result is not None]
    assert yields == [INLINE_BURST - 1, 2 * INLINE_BURST - 1]
    for result in results:
        if result is not None:
            await result
    assert len(queued(session.sub)) == INLINE_BURST * 2


# -- admission and the end ------------------------------------------------------------------


async def test_open_beyond_max_connections_is_refused_and_counted():
    broker = Broker(max_connections=1)
    open_session(broker)
    with pytest.raises(PubSubError) as refused:
        open_session(broker)
    assert refused.value.code == "LIMIT_EXCEEDED" and broker.counters.errors == {"LIMIT_EXCEEDED": 1}


async def test_end_releases_every_subscription(broker):
    for name in ("a", "b"):
        await broker.create_topic(name)
    session = open_session(broker)
    await feed(session, subscribe("a"))
    await feed(session, subscribe("b"))
    session.end(1000, "client closed")
    assert broker.subscriptions == 0 and broker.connections == {}
    assert (await broker.publish("a", 1)).seq == 1  # nobody left to deliver to, nothing raised


# -- how the core ends a connection: a close instruction in its queue --------------------------


async def test_slow_consumer_gets_its_error_then_a_1013_close_and_nothing_else():
    broker = Broker(queue_size=2, overflow_policy="disconnect")
    await broker.create_topic("t")
    slow = open_session(broker)
    await feed(slow, subscribe("t"))
    for n in range(3):
        await broker.publish("t", n)
    error, close = queued(slow.sub)
    assert error["type"] == "error" and error["error"]["code"] == "SLOW_CONSUMER"
    assert close == {"type": "close", "code": 1013, "reason": "slow consumer", "abort": False}
    assert slow.sub.closed and broker.subscriptions == 0


async def test_shutdown_closes_flushed_connections_and_aborts_the_unflushed(broker):
    flushed, backlogged = open_session(broker), open_session(broker)
    broker.begin_shutdown()
    queued(flushed.sub)  # its writer took and wrote everything
    broker.close_all(SHUTDOWN)
    assert queued(flushed.sub) == [{"type": "close", "code": 1001, "reason": "server shutting down", "abort": False}]
    # Its shutting_down notice was never written: nothing more is, the socket is dropped.
    assert queued(backlogged.sub) == [{"type": "close", "code": 1001, "reason": "server shutting down", "abort": True}]


async def test_a_close_does_not_wait_for_a_write_the_reader_never_finishes(broker):
    session = open_session(broker)
    queue = session.sub.queue
    session.sub.send(b'{"type":"pong"}')
    assert await queue.get() == b'{"type":"pong"}'  # the writer takes it ...
    stalled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    interrupted: list[list[dict[str, Any]]] = []
    # ... and the socket does not take it all: the writer waits, interruptible.
    assert queue.wait_sent(stalled, lambda: interrupted.append(queued(session.sub))) is stalled
    assert not queue.idle()
    queue.close(SHUTDOWN)
    assert interrupted == [[{"type": "close", "code": 1001, "reason": "server shutting down", "abort": False}]]


async def test_the_queue_is_idle_only_once_the_writer_has_written_what_it_took(broker):
    session = open_session(broker)
    queue = session.sub.queue
    taking = asyncio.ensure_future(queue.get())  # the writer waits
    await asyncio.sleep(0)
    session.sub.send(b'{"type":"pong"}')  # handed straight to it: out of the queue, not yet written
    assert await taking == b'{"type":"pong"}'
    assert queue.qsize() == 0 and not queue.idle()
    queue.sent()
    assert queue.idle()


# -- frames a transport builds itself (SSE) --------------------------------------


async def test_request_queues_like_feed_but_raises_refusals_instead_of_queueing_them(broker):
    await broker.create_topic("orders")
    await broker.publish("orders", "old")
    session = open_session(broker, identity=Only(("subscribe", "orders")))
    await session.request(subscribe("orders", last_n=1))
    kinds = [f["type"] for f in queued(session.sub)]
    assert kinds == ["ack", "event"]
    for frame, code in (
        (subscribe("secret"), "FORBIDDEN"),
        (subscribe("orders", last_n=-1), "BAD_REQUEST"),
        ({"type": "subscribe", "topic": "orders"}, "BAD_REQUEST"),  # no client_id
    ):
        with pytest.raises(PubSubError) as raised:
            await session.request(frame)
        assert raised.value.code == code
    assert queued(session.sub) == []  # nothing queued for a refusal


def test_frames_kind_names_every_control_frame_without_parsing_it():
    from tornado_pubsub.core import frames

    assert frames.kind(frames.ack("t", "r1", seq=1)) == "ack"
    assert frames.kind(frames.pong("r")) == "pong"
    assert frames.kind(frames.error(PubSubError("SLOW_CONSUMER", "x"))) == "error"
    for msg in ("ping", "topic_deleted", "shutting_down", "history_gap"):
        assert frames.kind(frames.info(msg, topic="t", epoch="e")) == f"info:{msg}"
