"""What handing one event to an idle writer costs (README, Cost model).

    python bench/wake_cost.py              # the parked writer and a Task waiting in get(), alternately
    python bench/wake_cost.py --rounds 20 --queues 1000

``--queues`` outbound queues, each drained by a writer coroutine shaped like
``handlers.writer.write_loop`` (wait, take, sent) but writing nowhere, so
what is measured is the hand-over alone: ``offer`` to a queue whose writer
waits, the writer's wake, and its next wait.  One event goes to every queue,
then the loop runs once, as a fan-out to subscribers that are not already
being written to does (consecutive publishes to different topics).  Each
round runs both ways, in one process, so both see the same machine: the
writer run by ``inline.spawn`` waiting with ``queue.next_item()`` (as the
server's are), and a Task waiting in ``queue.get()`` (a future per wait and
a Task wake-up per event, as before 2026-12-04).  Reports the best round of
each, in microseconds per event delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tornado_pubsub.core.inline import spawn  # noqa: E402
from tornado_pubsub.core.outbound import OutboundQueue  # noqa: E402

PASSES = 500


async def one_round(queues: int, parked: bool) -> float:
    items = [OutboundQueue(1000, 1 << 20, True, lambda event: None) for _ in range(queues)]
    written = 0

    async def writer(queue: OutboundQueue) -> None:
        nonlocal written
        while True:
            first = await (queue.next_item() if parked else queue.get())
            written += len(queue.take(first))
            queue.sent()

    writers = [spawn(writer(queue)) if parked else asyncio.ensure_future(writer(queue)) for queue in items]
    await asyncio.sleep(0)
    frame = b"x" * 300
    start = time.perf_counter()
    for _ in range(PASSES):
        for queue in items:
            queue.offer(frame, 300)
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    for task in writers:
        task.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    assert written == PASSES * queues, (written, PASSES * queues)
    return elapsed / written * 1e6


async def measure(rounds: int, queues: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for way in ("parked writer", "Task + get()"):
            cost = await one_round(queues, way == "parked writer")
            best[way] = min(best.get(way, cost), cost)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--queues", type=int, default=100)
    args = parser.parse_args()
    best = asyncio.run(measure(args.rounds, args.queues))
    for way, cost in best.items():
        print(f"{way:>14}: {cost:.2f} us per event handed to a waiting writer")


if __name__ == "__main__":
    main()
