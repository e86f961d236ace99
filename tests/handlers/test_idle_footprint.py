"""What an idle connection keeps alive, and what happens if its frame loop fails.

Per-connection memory is a benchmark figure (bench/, the ``connections``
scenario); these tests pin down the shape behind it, which a refactor could
silently undo: once upgraded, a connection holds exactly two tasks (its frame
loop and its writer), Tornado's handshake coroutine chain has finished, and
the handshake-only state is gone while the connection keeps working.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from tornado_pubsub.handlers import ws as ws_handlers
from tests.kit.support import wait_until

CONNECTIONS = 20


def server_handlers(broker) -> list[ws_handlers.PubSubSocket]:
    return [o for o in gc.get_objects() if isinstance(o, ws_handlers.PubSubSocket) and o.broker is broker]


def tasks_of(handlers: list[ws_handlers.PubSubSocket]) -> dict[str, int]:
    """Pending tasks whose coroutine belongs to one of ``handlers`` (or its protocol), by coroutine name."""
    owners = {id(o) for h in handlers for o in (h, h.ws_connection) if o is not None}
    counts: dict[str, int] = {}
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and "self" in frame.f_locals and id(frame.f_locals["self"]) in owners:
            counts[coro.__qualname__] = counts.get(coro.__qualname__, 0) + 1
    return counts


async def test_an_idle_connection_holds_its_frame_loop_and_writer_and_nothing_else(rest, ws_connect, broker):
    await rest.create("idle")
    clients = [await ws_connect() for _ in range(CONNECTIONS)]
    for client in clients:
        await client.subscribe("idle")
    handlers = server_handlers(broker)
    assert len(handlers) == CONNECTIONS
    assert tasks_of(handlers) == {
        "WebSocketProtocol13._receive_frame_loop": CONNECTIONS,
        "PubSubSocket._write_loop": CONNECTIONS,
    }
    # Tornado's per-request task (_execute -> get -> accept_connection) has ended.
    assert not [t for t in asyncio.all_tasks() if "RequestHandler._execute" in repr(t.get_coro())]


async def test_released_handshake_state_leaves_the_connection_fully_working(rest, ws_connect, broker):
    await rest.create("t")
    sub = await ws_connect()
    await sub.subscribe("t")
    (handler,) = server_handlers(broker)
    assert len(handler.request.headers) == 0 and len(handler._headers) == 0
    assert handler.ui is None
    pub = await ws_connect()
    ack = await pub.publish("t", {"n": 1})
    assert ack["seq"] == 1
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == {"n": 1}
    assert (await sub.request({"type": "ping", "request_id": "p"}))["type"] == "pong"
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["subscribers"] == 1


async def test_a_crash_in_the_frame_loop_is_logged_and_drops_only_that_connection(
    rest, ws_connect, broker, monkeypatch, caplog
):
    await rest.create("t")
    bystander = await ws_connect()
    await bystander.subscribe("t")
    victim = await ws_connect()
    await victim.subscribe("t")

    def broken_frame_handling(self, opcode, data):
        raise RuntimeError("bug in frame handling")

    # Below on_message (whose exceptions Tornado catches itself): an exception
    # here escapes the frame loop, which used to leave the socket open, unread.
    monkeypatch.setattr(ws_handlers._Protocol, "_handle_message", broken_frame_handling)
    with caplog.at_level(logging.ERROR, logger="tornado_pubsub"):
        victim.send({"type": "ping"})
        await victim.closed()  # times out (and fails) if the socket were left open and unread
    crashes = [r for r in caplog.records if getattr(r, "event", None) == "internal" and r.levelno == logging.ERROR]
    assert len(crashes) == 1 and crashes[0].exc_info is not None
    assert "bug in frame handling" in str(crashes[0].exc_info[1])
    monkeypatch.undo()
    # Everyone else is untouched: the bystander still gets events.
    pub = await ws_connect()
    await pub.publish("t", "after")
    (event,) = await bystander.events(1)
    assert event["message"]["payload"] == "after"
    assert len(broker.connections) == 2  # bystander and publisher: the victim was disconnected
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["subscribers"] == 1


@pytest.mark.parametrize("count", [1, CONNECTIONS])
async def test_closed_connections_leave_no_tasks_behind(rest, ws_connect, broker, count):
    await rest.create("t")
    clients = [await ws_connect() for _ in range(count)]
    for client in clients:
        await client.subscribe("t")
    handlers = server_handlers(broker)
    for client in clients:
        client.close()
    for client in clients:
        await client.closed()
    await wait_until(lambda: not tasks_of(handlers), 1, "the closed connections' tasks to end")
    assert tasks_of(handlers) == {}
