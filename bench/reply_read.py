"""Reading a batch of Redis replies: redis-py's timer per reply against one
deadline for the batch (``store.Store._round_trip``), alternately in one
process.

    python bench/reply_read.py                                # redis://127.0.0.1:6379/15
    python bench/reply_read.py --redis-url redis://127.0.0.1:6380/0

Sends batches of 1, 8 and 64 PINGs packed as one write on one connection and
reads the replies both ways; reports the best of seven rounds as this
process's CPU microseconds per reply (pin it: ``taskset -c 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.connection import AbstractConnection


async def timer_per_reply(conn: AbstractConnection, count: int) -> list[Any]:
    return [await conn.read_response() for _ in range(count)]


async def one_deadline(conn: AbstractConnection, count: int) -> list[Any]:
    async with asyncio.timeout(conn.socket_timeout):
        return [await conn.read_response(timeout=math.inf) for _ in range(count)]


async def main(url: str, replies: int) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=1, socket_timeout=5.0, protocol=2)
    conn = await pool.get_connection("_")
    ways: dict[str, Callable[[AbstractConnection, int], Awaitable[list[Any]]]] = {
        "timer per reply": timer_per_reply,
        "one deadline": one_deadline,
    }
    try:
        for count in (1, 8, 64):
            packed = pack_command(("PING",)) * count
            best: dict[str, float] = {}
            for _ in range(7):
                for name, read in ways.items():
                    batches = replies // count
                    start = time.process_time()
                    for _ in range(batches):
                        await conn.send_packed_command(packed)
                        await read(conn, count)
                    us = (time.process_time() - start) / (batches * count) * 1e6
                    best[name] = min(best.get(name, math.inf), us)
            print(f"batch of {count:>2}: " + ", ".join(f"{name} {us:.2f} us" for name, us in best.items()) + " per reply")
    finally:
        await pool.release(conn)
        await pool.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--replies", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.redis_url, args.replies))
