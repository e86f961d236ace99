"""What delivering one event costs when nothing batches (README, Cost model).

    python bench/delivery_cost.py                 # 100 topics x 10 subscribers
    python bench/delivery_cost.py --rounds 5 --topics 100 --subs 10

The server's write path alone: ``--topics`` x ``--subs`` connections, each an
``OutboundQueue`` drained by ``handlers.writer.write_loop`` onto a real
loopback TCP socket whose peer (a Node process on the other core, as the
bench's load generator is) reads and discards.  Events are offered as a
publish fans them out, round-robin over the topics, so each subscriber gets
one event per write, as in ``bench/run.py``'s ``topics`` scenario (where a
counted run wrote 0.99 events per write).  Each round runs twice: writing
to the sockets, and with the socket write left out, so the difference is
what the kernel's ``send`` costs and the rest is Python (the hand-over,
the writer's wake, framing, bookkeeping).  Reports the best round of each,
as user and system CPU microseconds per delivered event, read from
``getrusage`` of this process (pinned to core 0 like the server in
``bench/run.py``).  The publish itself is not included: see
``bench/core_cost.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tornado.iostream import IOStream, StreamClosedError  # noqa: E402

from tornado_pubsub.core.errors import Disconnect  # noqa: E402
from tornado_pubsub.core.history import Event  # noqa: E402
from tornado_pubsub.core.hub import Counters  # noqa: E402
from tornado_pubsub.core.outbound import OutboundQueue  # noqa: E402
from tornado_pubsub.handlers.writer import framing, send_direct, start_writer  # noqa: E402
from tornado_pubsub.handlers.wsframe import text_header  # noqa: E402

DRAIN = """
const net = require('net');
const server = net.createServer((s) => { s.setNoDelay(true); s.on('data', () => {}); s.on('error', () => {}); });
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""
PAYLOAD = 330  # a 256-byte payload's event frame, as the load generator's


class SocketTransport:
    """``handlers.writer.Transport`` over a bare IOStream, writing as
    ``PubSubSocket`` does (``send_direct``), or not at all (``write=False``)."""

    frame = staticmethod(framing(text_header))

    def __init__(self, stream: IOStream, write: bool) -> None:
        self.stream = stream
        self.write = write

    def writable(self) -> bool:
        return not self.stream.closed()

    def send(self, data: bytes) -> "asyncio.Future[None] | None":
        if self.stream.closed():
            raise StreamClosedError()
        return send_direct(self.stream, data) if self.write else None

    def end(self, disconnect: Disconnect, abort: bool) -> None:
        self.stream.close()


async def one_round(streams: list[IOStream], subs: int, publishes: int, write: bool) -> tuple[float, float]:
    counters = Counters()
    queues = [OutboundQueue(1000, 1 << 20, True, lambda event: None) for _ in streams]
    writers = [start_writer(q, SocketTransport(s, write), counters) for q, s in zip(queues, streams)]
    topics = [queues[at : at + subs] for at in range(0, len(queues), subs)]
    await asyncio.sleep(0.1)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for n in range(publishes):
        event = Event(n, "m", b"x" * PAYLOAD, None)
        for queue in topics[n % len(topics)]:
            queue.offer(event, PAYLOAD)
        if n % 20 == 19:  # a loop pass reads a few publishes, as the server's does under load
            await asyncio.sleep(0)
    while counters.delivered < publishes * subs:
        await asyncio.sleep(0.001)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for task in writers:
        task.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    delivered = publishes * subs
    return (
        (after.ru_utime - before.ru_utime) / delivered * 1e6,
        (after.ru_stime - before.ru_stime) / delivered * 1e6,
    )


async def measure(port: int, rounds: int, topics: int, subs: int, publishes: int) -> dict[str, tuple[float, float]]:
    streams = []
    for _ in range(topics * subs):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Tornado's WebSocket does
        streams.append(IOStream(sock))
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for way, write in (("writing", True), ("no write", False)):
            user, system = await one_round(streams, subs, publishes, write)
            if way not in best or user + system < sum(best[way]):
                best[way] = (user, system)
    for stream in streams:
        stream.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--subs", type=int, default=10)
    parser.add_argument("--publishes", type=int, default=10000)
    args = parser.parse_args()
    with drain() as port:
        os.sched_setaffinity(0, {0})
        best = asyncio.run(measure(port, args.rounds, args.topics, args.subs, args.publishes))
    for way, (user, system) in best.items():
        print(f"{way:>8}: {user:.2f} us user + {system:.2f} us system = {user + system:.2f} us per delivered event")


@contextlib.contextmanager
def drain() -> Iterator[int]:
    """The Node peer that reads and discards (on core 1), and its port."""
    proc = subprocess.Popen(["taskset", "-c", "1", "node", "-e", DRAIN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the Node drain did not start")
        yield int(line)
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
