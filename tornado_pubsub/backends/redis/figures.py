"""Each process's subscriber and drop counts in Redis, and their cluster sums.

Every process keeps one hash (``s:<topic>`` subscribers, ``d:<topic>`` drops)
that expires unless refreshed, and a score in the node set; /topics, /stats
and /health add up the hashes of the live processes.  A crashed process
stops counting within ``NODE_TTL``; one that shuts down removes itself.

One writer task sends the figures, so they reach Redis in the order they
changed; callers that must be counted before they answer (a subscribe before
its ack) await ``sync()``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tornado_pubsub.backends.redis.scripts import Keys

# A process rewrites its figures every NODE_REFRESH s; they expire after NODE_TTL s.
NODE_REFRESH = 5.0
NODE_TTL = 15.0
# How long sync() waits for the writer before giving up (the figures are
# rewritten in full on the next refresh or reconnect anyway).
SYNC_WAIT = 5.0


class NodeFigures:
    """This process's figures in Redis.

    ``counts(name)`` gives ``(subscribers, dropped)`` for a topic here;
    ``names()`` every topic with figures here; ``live()`` whether Redis is
    reachable (nothing is written while it is not).
    """

    def __init__(
        self,
        keys: Keys,
        node_id: str,
        counts: Callable[[str], tuple[int, int]],
        names: Callable[[], Iterable[str]],
        live: Callable[[], bool],
    ) -> None:
        self.keys = keys
        self.node_id = node_id
        self.key = keys.node(node_id)
        self.redis: aioredis.Redis | None = None
        self._counts = counts
        self._names = names
        self._live = live
        self._dirty: set[str] = set()
        self._rewrite = True
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def changed(self, name: str) -> None:
        """The figures of ``name`` changed here; send them soon."""
        self._dirty.add(name)
        self._kick()

    def rewrite(self) -> None:
        """Send every figure again on the next write (drop counts, after a reconnect)."""
        self._rewrite = True

    async def sync(self) -> None:
        """Return once Redis holds this process's figures as they are now (best effort)."""
        writer = self._kick()
        if writer is not None:
            # asyncio.wait never cancels the writer, nor (unlike wait_for on
            # newer Pythons) the caller's task when the wait times out.
            await asyncio.wait((writer,), timeout=SYNC_WAIT)

    async def write(self) -> None:
        """Send what changed (everything after ``rewrite()``); raises on a Redis error."""
        assert self.redis is not None
        rewrite, names = self._rewrite, self._dirty
        self._rewrite, self._dirty = False, set()
        if rewrite:
            names = names | set(self._names())
        pipe = self.redis.pipeline(transaction=True)
        if rewrite:
            pipe.delete(self.key)
        for name in names:
            count, dropped = self._counts(name)
            if count or dropped:
                pipe.hset(self.key, mapping={f"s:{name}": count, f"d:{name}": dropped})
            else:
                pipe.hdel(self.key, f"s:{name}", f"d:{name}")
        pipe.hset(self.key, "alive", 1)
        pipe.expire(self.key, int(NODE_TTL))
        pipe.zadd(self.keys.nodes, {self.node_id: time.time() + NODE_TTL})
        try:
            await pipe.execute()
        except BaseException:
            self._dirty |= names
            self._rewrite = self._rewrite or rewrite
            raise

    async def refresh_forever(self) -> None:
        """Keep this process counted, and its drop counts current, while it runs."""
        while not self._closing:
            await asyncio.sleep(NODE_REFRESH)
            self._rewrite = True
            self._kick()

    async def leave(self) -> None:
        """Stop writing and remove this process from the cluster sums."""
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
        if self.redis is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(self.keys.nodes, self.node_id)
            pipe.delete(self.key)
            await asyncio.wait_for(pipe.execute(), 1.0)
        except (RedisError, OSError, asyncio.TimeoutError):
            pass  # the figures expire after NODE_TTL anyway

    def read_live(self, pipe: Any, now: float) -> None:
        """Queue on ``pipe`` the removal of expired processes and the list of live ones."""
        pipe.zremrangebyscore(self.keys.nodes, "-inf", now)
        pipe.zrangebyscore(self.keys.nodes, now, "+inf")

    def read_figures(self, pipe: Any, nodes: list[bytes]) -> None:
        """Queue on ``pipe`` a read of each live process's hash."""
        for node in nodes:
            pipe.hgetall(self.keys.node(node.decode()))

    @staticmethod
    def sum(hashes: Iterable[dict[bytes, bytes]]) -> dict[str, list[int]]:
        """``{topic: [subscribers, dropped]}`` over the processes' hashes."""
        totals: dict[str, list[int]] = {}
        for fields in hashes:
            for field, value in fields.items():
                kind, _, name = field.decode().partition(":")
                if name and kind in ("s", "d"):
                    pair = totals.setdefault(name, [0, 0])
                    pair[0 if kind == "s" else 1] += int(value)
        return totals

    def _kick(self) -> asyncio.Task[None] | None:
        if self._closing or self.redis is None:
            return None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_loop())
        return self._writer

    async def _write_loop(self) -> None:
        while (self._dirty or self._rewrite) and self._live() and not self._closing:
            try:
                await self.write()
            except (RedisError, OSError):
                return  # rewritten in full after the bus reconnects
