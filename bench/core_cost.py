"""What a publish costs in the session core alone, with no socket (README, Cost model).

    python bench/core_cost.py                  # in-memory broker, 1 subscriber
    python bench/core_cost.py --profile        # and where it goes (cProfile)

Feeds ``publish`` frames like the load generator's (256-byte payload, a
request_id) to one ``Session`` on the in-memory broker, with one subscriber
on the topic, logging configured as the server does (JSON to /dev/null):
parse, validate, authorize, number, render, retain, fan out, ack and log.
Queues are emptied every 20 frames, as a writer would.  Reports the best of
six rounds in microseconds per publish; the rest of a publish's cost in
the server is Tornado's reading and writing (compare ``server_us_per_event``
of ``bench/run.py --scenarios fanout``, S=1).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tornado_pubsub.backends.memory import Broker  # noqa: E402
from tornado_pubsub.core.session import Session  # noqa: E402
from tornado_pubsub.logs import configure_logging  # noqa: E402

PAD = "x" * 220
ROUND = 5000
PER_PASS = 20


def publish_frame(n: int) -> str:
    return json.dumps(
        {
            "type": "publish",
            "topic": "bench.t1",
            "message": {"id": str(uuid.uuid4()), "payload": {"t": 1733250000000 + n, "pad": PAD}},
            "request_id": f"r{n}",
        },
        separators=(",", ":"),
    )


async def run(rounds: int, profile: bool, report: TextIO) -> None:
    broker = Broker(queue_size=100_000, auto_create_topics=True)
    publisher = Session.open(broker, "127.0.0.1", 1e9)
    subscriber = Session.open(broker, "127.0.0.1", 1e9)
    pending = subscriber.feed(json.dumps({"type": "subscribe", "topic": "bench.t1", "client_id": "bench"}))
    if pending is not None:
        await pending
    frames = [publish_frame(n) for n in range(ROUND * (rounds + 4))]
    sent = iter(frames)

    def drain() -> None:
        for session in (publisher, subscriber):
            queue = session.sub.queue
            while not queue.empty():
                queue.get_nowait()
                queue.sent()

    async def one_round(count: int) -> float:
        start = time.perf_counter()
        for i in range(count):
            pending = publisher.feed(next(sent))
            if pending is not None:
                await pending
            if i % PER_PASS == PER_PASS - 1:
                drain()
                await asyncio.sleep(0)
        return (time.perf_counter() - start) / count * 1e6

    best = min([await one_round(ROUND) for _ in range(rounds)])
    print(f"core publish: {best:.1f} us", file=report)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await one_round(ROUND * 4)
        profiler.disable()
        pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    report = sys.stdout
    sys.stdout = open(os.devnull, "w")  # the records' destination (configure_logging binds it)
    configure_logging("info", "json", "a-configured-secret-to-redact")
    asyncio.run(run(args.rounds, args.profile, report))


if __name__ == "__main__":
    main()
