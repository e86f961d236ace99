"""Half-open handshakes are counted and bounded (issue 11 finding 11): with a
low descriptor limit, a flood of TCP connections that never finish their
HTTP request cannot lock a legitimate client out until handshake_timeout."""

from __future__ import annotations

import asyncio

from tests.kit.clients import Rest
from tests.kit.rawws import RawWs
from tests.kit.procs import ServerProcess
from tests.kit.wait import wait_until

DESCRIPTORS = 256
MAX_CONNECTIONS = 200


async def test_unfinished_handshakes_beyond_the_limit_do_not_lock_out_a_real_client(ws_at):
    flags = (f"--max_connections={MAX_CONNECTIONS}", "--handshake_timeout=60", "--log_level=warning")
    with ServerProcess(*flags, nofile=DESCRIPTORS) as server:
        hogs = []
        for _ in range(MAX_CONNECTIONS + 100):  # more than the process has descriptors
            hog = await RawWs.open(server.port, upgrade=False)
            hog.send_raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ...and never the blank line
            hogs.append(hog)
        try:
            # Well before handshake_timeout (60 s), a real client is upgraded and served.
            client = await asyncio.wait_for(ws_at(server.port), 5)
            assert (await client.request({"type": "ping", "request_id": "in"}))["type"] == "pong"
            # The oldest hogs made room: the server closed them.
            assert await hogs[0].at_eof(timeout=5)
            shed = await wait_until(
                lambda: [r for r in server.records() if r.get("event") == "half_open_shed"],
                5,
                "a record of the shed connections",
            )
            # One record a second at most, however many were shed.
            capacity = min(DESCRIPTORS - 32, MAX_CONNECTIONS + 64)  # accept.DESCRIPTOR_HEADROOM, HANDSHAKE_MARGIN
            assert len(shed) <= 3 and sum(r["shed"] for r in shed) >= len(hogs) - capacity
            client.close()
        finally:
            for hog in hogs:
                hog.close()


async def test_an_open_sse_stream_is_a_connection_not_a_half_open_one_to_shed(sse_at):
    # Started before the flood, the stream would be the oldest "half-open"
    # connection and the first one shed, were it still counted as one.
    flags = ("--max_connections=4", "--handshake_timeout=60", "--log_level=warning", "--topics=orders")
    with ServerProcess(*flags) as server:
        stream = await sse_at(server.port, "/topics/orders/events")
        assert stream.status == 200
        hogs = []
        try:
            for _ in range(4 + 64 + 20):  # past max_connections + HANDSHAKE_MARGIN
                hog = await RawWs.open(server.port, upgrade=False)
                hog.send_raw(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                hogs.append(hog)
            assert await hogs[0].at_eof(timeout=5)  # shedding happened...
            status, _ = await Rest(server.port).call("POST", "/topics/orders/messages", {"payload": 1})
            assert status == 201
            assert (await stream.next("event")).frame()["seq"] == 1  # ...and the stream lives on
        finally:
            for hog in hogs:
                hog.close()
