"""What an idle connection costs, and what happens if its frame loop fails.

Per-connection memory is a benchmark figure (bench/, the ``connections``
scenario); these tests bound the behaviour behind it, which a refactor could
silently undo: an idle subscribed connection keeps at most two tasks alive and
a bounded amount of memory whatever its handshake carried, and a closed
connection leaves no task and no state behind.  They count, never name: the
clients are raw sockets that run no task of their own, so every task and
every allocation measured here is the server's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc

import pytest
import tornado.websocket

from tests.kit.rawws import RawWs
from tests.kit.wait import wait_until
from tornado_pubsub.handlers import ws as ws_handlers
from tornado_pubsub.server.tornado_patches import protocol

CONNECTIONS = 20
#: Tasks an idle connection may keep: its frame reader and its writer.
TASKS_PER_CONNECTION = 2
#: Python heap one idle subscribed connection may hold, in bytes (its raw
#: client's socket objects included; about 14 KB today on Tornado 6.6).  A
#: ceiling against a per-connection buffer or a retained handshake coroutine
#: chain creeping in; the exact figure is the benchmark's.
HEAP_PER_CONNECTION = 20 * 1024
#: Headers a hostile client sends with its handshake, in bytes.
HEADER_BYTES = 8 * 1024


async def open_subscribed(port: int, count: int, topic: str, headers: dict[str, str] | None = None) -> list[RawWs]:
    """``count`` raw clients, each subscribed to ``topic`` (answers pings only when read)."""
    clients = []
    for i in range(count):
        client = await RawWs.connect(port, headers=headers)
        client.send_json({"type": "subscribe", "topic": topic, "client_id": f"idle-{i}", "request_id": "s"})
        reply = await client.reply()
        assert reply is not None and reply["type"] == "ack", reply
        clients.append(client)
    return clients


async def settle() -> None:
    """Let every callback that a previous step scheduled run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_idle_connection_keeps_at_most_two_tasks(rest, port, broker):
    await rest.create("idle")
    await settle()
    before = len(asyncio.all_tasks())
    clients = await open_subscribed(port, CONNECTIONS, "idle")
    await settle()
    try:
        assert len(broker.connections) == CONNECTIONS
        per_connection = (len(asyncio.all_tasks()) - before) / CONNECTIONS
        # Two means the handshake's own task has ended (it would make three).
        assert 0 < per_connection <= TASKS_PER_CONNECTION, per_connection
    finally:
        for client in clients:
            client.close()


async def heap_per_connection(port: int, headers: dict[str, str] | None, clients: list[RawWs]) -> float:
    """Python heap held per idle subscribed connection (``CONNECTIONS`` of them,
    appended to ``clients``), after a warm-up so first-use caches do not count."""
    clients += await open_subscribed(port, 2, "idle", headers)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients += await open_subscribed(port, CONNECTIONS, "idle", headers)
        await settle()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / CONNECTIONS
    finally:
        tracemalloc.stop()


async def test_an_idle_connection_holds_bounded_memory_and_keeps_working(rest, port, broker):
    await rest.create("idle")
    clients: list[RawWs] = []
    try:
        per_connection = await heap_per_connection(port, None, clients)
        assert per_connection < HEAP_PER_CONNECTION, f"{per_connection:.0f} bytes per idle connection"
        assert len(broker.connections) == len(clients)
        # Whatever was released after the handshake, every connection still works.
        await rest.call("POST", "/topics/idle/messages", {"payload": {"n": 1}})
        for client in clients:
            event = await client.recv_json()
            assert event is not None and event["type"] == "event" and event["message"]["payload"] == {"n": 1}
    finally:
        for client in clients:
            client.close()


async def test_the_frame_reading_patches_keep_their_state_out_of_the_protocol_instance_dict(rest, port):
    # Tornado's protocol object sets 29 attributes of its own, and CPython
    # shares an instance dict's keys with the class only up to 30: one more
    # key per connection (the strict frame reader's state, set at the first
    # frame) gave every connection a dict table of its own, 1.6 KB (bench
    # ``connections``: 14.1 -> 12.8 KB per idle connection once in slots).
    await rest.create("idle")
    clients = await open_subscribed(port, 3, "idle")
    try:
        await settle()
        protocols = [
            o.ws_connection for o in gc.get_objects() if isinstance(o, ws_handlers.PubSubSocket) and o.ws_connection
        ]
        assert len(protocols) == len(clients)
        for protocol_object in protocols:
            assert {"_header_next", "_length_next", "_peer_closed"}.isdisjoint(vars(protocol_object)), vars(protocol_object)
    finally:
        for client in clients:
            client.close()


async def test_an_idle_connection_does_not_keep_what_its_handshake_carried(rest, port):
    # A hostile client may send up to Tornado's max_header_size (64 KB) of
    # headers with each handshake; an idle connection must not keep them.
    await rest.create("idle")
    padding = {f"X-Padding-{i}": "p" * 1000 for i in range(HEADER_BYTES // 1000)}
    clients: list[RawWs] = []
    try:
        plain = await heap_per_connection(port, None, clients)
        padded = await heap_per_connection(port, padding, clients)
    finally:
        for client in clients:
            client.close()
    assert padded - plain < HEADER_BYTES / 4, f"{padded - plain:.0f} more bytes per connection with padded headers"


async def test_released_handshake_state_leaves_the_connection_fully_working(rest, ws_connect):
    await rest.create("t")
    sub = await ws_connect(headers={"X-Padding": "p" * 4000})
    await sub.subscribe("t")
    pub = await ws_connect()
    ack = await pub.publish("t", {"n": 1})
    assert ack["seq"] == 1
    (event,) = await sub.events(1)
    assert event["message"]["payload"] == {"n": 1}
    assert (await sub.request({"type": "ping", "request_id": "p"}))["type"] == "pong"
    assert (await sub.unsubscribe("t"))["type"] == "ack"
    assert (await sub.subscribe("t", last_n=1))["type"] == "ack"
    (replayed,) = await sub.events(1)
    assert replayed["seq"] == 1
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
    monkeypatch.setattr(protocol._InvalidUtf8Reply, "_handle_message", broken_frame_handling)
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
async def test_closed_connections_leave_no_task_and_no_state_behind(rest, port, broker, count):
    await rest.create("t")
    await settle()
    before = len(asyncio.all_tasks())
    clients = await open_subscribed(port, count, "t")
    assert len(asyncio.all_tasks()) > before
    for client in clients:
        client.close()
    await wait_until(lambda: len(asyncio.all_tasks()) <= before, 5, "the closed connections' tasks to end")
    await wait_until(lambda: not broker.connections, 5, "the closed connections to be forgotten")
    assert (await rest.call("GET", "/stats"))[1]["topics"]["t"]["subscribers"] == 0
