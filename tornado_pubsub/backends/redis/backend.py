"""The Redis backend: any number of processes, on any number of machines, act
as one tornado-pubsub server.

Redis holds what must be shared: the topic table (name -> epoch), each
topic's seq counter, its history (a stream whose entry ids are the seqs,
trimmed to ``history_size``) and each process's subscriber and drop figures
(``figures``).  Every change is one Lua script (``scripts``, sent by
``store``), so a publish is numbered, retained and announced on the bus
atomically; that gives one per-topic order for every process.

Each process holds one pub/sub connection to one channel (``bus``) and hands
each event to its hub: an event is rendered once per process and queued for
every local subscriber, exactly once and in seq order.

Faults: while the bus connection is down the backend is ``degraded``:
operations get an ``INTERNAL`` error naming Redis (HTTP 503) instead of being
dropped, and /health answers 503.  A command that meets a stalled or lost
Redis gets the same error, on the frame or request that sent it.  The bus
reconnects with backoff, re-reads every topic this process has subscribers
for and queues what they missed from the history; when the history no longer
covers the outage (or Redis lost the topic's incarnation) they get
``info history_gap`` first.  If Redis restarted empty, the processes put back
the topics they knew (same epoch, seq counter never going backwards).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any

from tornado_pubsub.backends.base import Published, Snapshot, TopicFigures, TopicInfo, Totals, Wanted
from tornado_pubsub.backends.redis.bus import (
    Announced,
    Asked,
    Bus,
    Created,
    Deleted,
    Message,
    Noticed,
    Progress,
    encode_head,
)
from tornado_pubsub.backends.redis.figures import NodeFigures
from tornado_pubsub.backends.redis.presence import ClusterPresence
from tornado_pubsub.backends.redis.scripts import Keys
from tornado_pubsub.backends.redis.store import Store, unavailable
from tornado_pubsub.core.errors import TOPIC_NOT_FOUND, PubSubError, topic_exists, topic_limit, topic_not_found
from tornado_pubsub.core.history import id_key
from tornado_pubsub.core.hub import Hub
from tornado_pubsub.logs import log_op
from tornado_pubsub.settings import Settings

# How long start() waits for Redis before serving degraded (and retrying).
STARTUP_WAIT = 5.0
# How long an operation waits for this process's own bus to catch up with
# Redis before acking anyway (the bus is normally sub-millisecond behind).
BUS_WAIT = 5.0


def without_password(url: str) -> str:
    """``redis_url`` fit for a log line: a password in it becomes ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


class RedisBackend:
    """``backends.base.Backend`` on one Redis, shared by every process.

    Same guarantees as the in-memory backend, cluster-wide: one seq order per
    topic, each event handed once to each process's hub, gapless replay and
    resume; /topics, /stats and /health sum every live process.  A publish
    returns once the event is in the queues of this process's subscribers;
    other processes get it from the bus at the same time.
    """

    def __init__(
        self,
        *,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "pubsub:",
        history_size: int = 100,
        max_topics: int = 0,
    ) -> None:
        self.history_size = history_size
        self.max_topics = max_topics
        self.keys = Keys(prefix)
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.connected = False
        self.store = Store(redis_url, self.keys, self.node_id)
        self.redis_url = redis_url
        self.last_error: str | None = None  # why the bus last failed, named by the start-up warning
        self.progress = Progress()
        self.figures = NodeFigures(self.keys, self.node_id, self._counts, self._names, lambda: self.connected)
        self.presence = ClusterPresence(self.store, self.keys, self.node_id, lambda: self._hub, lambda: self.connected)
        # Deletes waiting for their own deletion to come back on the bus.
        self._deletes: dict[str, list[asyncio.Future[int]]] = {}
        self._hub = Hub()  # replaced by attach(); a lone backend fans out to nobody
        self._bus: Bus | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._run_id: str | None = None
        self._connects = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisBackend":
        """A backend configured from ``Settings`` (the node gets the rest)."""
        return cls(redis_url=settings.redis_url, history_size=settings.history_size, max_topics=settings.max_topics)

    def attach(self, hub: Hub) -> None:
        self._hub = hub
        # conn_ids are listed cluster-wide (presence, /connections): this
        # node's random suffix keeps them unique across processes.
        hub.id_prefix += self.node_id.rsplit(":", 1)[1] + "-"

    def local_changed(self, name: str) -> None:
        self.figures.changed(name)

    def _counts(self, name: str) -> tuple[int, int]:
        return self._hub.local_figures(name)

    def _names(self) -> set[str]:
        return self._hub.local_names()

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect the bus; serve degraded (and keep retrying) if Redis is not up yet."""
        self.store.open()
        assert self.store.bus_redis is not None
        self.figures.redis = self.store.redis
        self._bus = Bus(self.store.bus_redis, self.keys.bus, self.node_id, self._up, self._on_message, self._lost)
        self._tasks = [
            asyncio.ensure_future(self._bus.run()),
            asyncio.ensure_future(self.figures.refresh_forever()),
            asyncio.ensure_future(self.presence.reap_forever()),
        ]
        ready = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait((ready,), timeout=STARTUP_WAIT)
        if not done:
            ready.cancel()
            log_op(
                "redis",
                logging.WARNING,
                node=self.node_id,
                redis_url=without_password(self.redis_url),
                error=self.last_error,
                outcome="unreachable_at_startup",
            )

    async def stop(self) -> None:
        """Stop the bus and remove this process's figures from the cluster totals."""
        if self._bus is not None:
            self._bus.closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.presence.stop()
        await self.figures.leave()
        await self.store.close()

    def _check(self) -> None:
        # Without the bus nothing published would reach this process's
        # subscribers, nor could a publish be acked in order: refuse at once.
        if not self.connected:
            raise unavailable()

    # -- topics ----------------------------------------------------------------------

    async def create(self, name: str) -> TopicInfo:
        self._check()
        epoch = secrets.token_hex(8)
        created = await self.store.create(name, epoch, self.max_topics)
        if created == 0:
            raise topic_exists(name)
        if created == -1:
            raise topic_limit(self.max_topics)
        return TopicInfo(name, epoch)

    async def delete(self, name: str) -> int:
        self._check()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._deletes.setdefault(name, []).append(done)
        try:
            if await self.store.delete(name) is None:
                raise topic_not_found(name)
            told, _ = await asyncio.wait((done,), timeout=BUS_WAIT)
            return done.result() if told else 0
        finally:
            waiting = self._deletes.get(name, [])
            if done in waiting:
                waiting.remove(done)
            if not waiting:
                self._deletes.pop(name, None)

    # -- publish / subscribe -----------------------------------------------------------

    async def publish(self, name: str, message_id: str, payload: Any) -> Published:
        self._check()
        head = encode_head(name, message_id, payload)
        done = await self.store.publish(name, id_key(message_id), head, self.history_size)
        if not done.duplicate:
            await self._bus_reached(name, done.epoch, done.seq)
        return done

    async def snapshot(self, name: str, wanted: Wanted) -> Snapshot:
        self._check()
        # The figures count a new subscriber (the node's join told them)
        # before its ack, so a /stats anywhere right after the ack includes it.
        snap, _ = await asyncio.gather(self.store.snapshot(name, wanted), self.figures.sync())
        # Everything up to the snapshot is handed to the hub before the
        # subscription joins, so later deliveries are all after it.
        await self._bus_reached(name, snap.epoch, snap.last_seq)
        return snap

    async def exists(self, name: str) -> bool:
        self._check()
        return await self.store.exists(name)

    async def counted(self, name: str) -> None:
        await self.figures.sync()

    async def _bus_reached(self, name: str, epoch: str, seq: int) -> None:
        """Return once this process's bus has handed ``seq`` of ``name`` to the
        hub (or BUS_WAIT passed, or the bus is down)."""
        if not self.connected:
            return
        if not await self.progress.reached(name, epoch, seq, BUS_WAIT):
            log_op("redis", logging.WARNING, node=self.node_id, topic=name, seq=seq, outcome="bus_behind")

    # -- introspection -------------------------------------------------------------------

    def topic_count(self) -> int:
        return len(self.progress.known)

    def knows(self, name: str) -> bool:
        return name in self.progress.known

    async def topics(self) -> list[TopicFigures]:
        self._check()
        self.figures.rewrite()  # this process's drop counts as of now, not of the last refresh
        await self.figures.sync()
        positions, sums, _ = await self.store.cluster(self.figures)
        return [TopicFigures(name, p.epoch, p.seq, *sums.get(name, (0, 0))) for name, p in positions.items()]

    async def totals(self) -> Totals:
        self._check()
        await self.figures.sync()
        positions, sums, nodes = await self.store.cluster(self.figures)
        return Totals(len(positions), sum(pair[0] for pair in sums.values()), nodes)

    def identity(self) -> dict[str, Any]:
        return {"node": self.node_id}

    # -- who is here, cluster-wide (backends.redis.presence) -----------------------------

    def share(self, msg: str, name: str, entry: dict[str, Any]) -> None:
        self.presence.share(msg, name, entry)

    async def gather(self, kind: str, arg: str) -> list[Any]:
        self._check()
        return await self.presence.gather(kind, arg)

    # -- the bus -----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        hub = self._hub
        if isinstance(message, Announced):
            name, epoch, seq = message.name, message.epoch, message.seq
            if hub.wants(name, epoch, seq):
                hub.deliver(name, epoch, message.event())
            self.progress.carried(name, epoch, seq)
        elif isinstance(message, Created):
            self.progress.created(message.name, message.epoch)
        elif isinstance(message, Deleted):
            told = hub.ended(message.name, message.epoch)
            for done in self._deletes.pop(message.name, []):
                if not done.done():
                    done.set_result(told)
            self.progress.deleted(message.name, message.epoch)
        elif isinstance(message, Noticed):
            self.presence.on_notice(message)
        elif isinstance(message, Asked):
            self.presence.on_asked(message)

    async def _up(self) -> None:
        """The bus (re)connected and confirmed its subscription: resync, then serve."""
        await self._resync()
        self._connects += 1
        self.connected = True
        self._ready.set()
        log_op("redis", node=self.node_id, connects=self._connects, topics=len(self.progress.known), outcome="connected")

    def _lost(self, detail: str) -> None:
        self.last_error = detail
        if self.connected:
            log_op("redis", logging.ERROR, node=self.node_id, detail=detail, outcome="lost")
        self.connected = False
        self.progress.release_all()
        self.presence.forget_remote()  # leaves sent meanwhile are missed: owe none of them
        for waiting in self._deletes.values():  # deletes acked with "0 told here", as on BUS_WAIT's expiry
            for done in waiting:
                if not done.done():
                    done.set_result(0)

    async def _resync(self) -> None:
        """Put back topics if Redis lost them, reload the topic table, catch
        local subscribers up on what they missed, rewrite this process's figures."""
        run_id = await self.store.run_id()
        if self._run_id is not None and run_id != self._run_id and self.progress.known:
            restored = 0
            for name, position in list(self.progress.known.items()):
                restored += await self.store.restore(name, position)
            log_op("redis", logging.WARNING, node=self.node_id, restored=restored, outcome="redis_restarted")
        self._run_id = run_id
        self.progress.reset(await self.store.table())
        if self._connects:
            await self._catch_up()
        self.figures.rewrite()
        await self.figures.write()

    async def _catch_up(self) -> None:
        """Queue, for each local topic, the events published while the bus was down."""
        hub = self._hub
        caught = gaps = 0
        for lt in hub.local_topics():
            if not lt.subscribers:
                hub.end(lt)
                continue
            try:
                snap = await self.store.snapshot(lt.name, Wanted("after", lt.last_seq, lt.epoch))
            except PubSubError as exc:
                if exc.code != TOPIC_NOT_FOUND:
                    raise
                hub.end(lt)  # deleted while we were away
                continue
            more, gap = hub.resume(lt, snap)
            caught += more
            gaps += gap
        log_op("redis", node=self.node_id, caught_up=caught, history_gaps=gaps, outcome="resynced")
