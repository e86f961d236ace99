"""The store: every Redis command and script the backend sends, each one
answered with a typed value or a ``PubSubError``.

Threat: Redis may stall (SIGSTOP, a full disk, a long script elsewhere) or
vanish mid-command, and a hostile client may send one frame after another
into that.  ``call`` runs each piece of Redis work in its own task, so the
Redis client's timeouts cancel that task only, never the caller's (a caller
driven outside a task, like the WebSocket handler's inline frames, would
otherwise be cancelled in someone else's name); a failure becomes one
``INTERNAL`` error naming Redis, and the ERROR records it causes are
throttled for the whole process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from typing import Any, Awaitable, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tornado_pubsub.backends.base import Published, Snapshot, Wanted
from tornado_pubsub.backends.redis import scripts
from tornado_pubsub.backends.redis.bus import Position, stored_event
from tornado_pubsub.backends.redis.figures import NodeFigures
from tornado_pubsub.core.errors import INTERNAL, PubSubError, topic_not_found
from tornado_pubsub.core.history import Event, page_of
from tornado_pubsub.core.outbound import WRITE_MAX
from tornado_pubsub.core.ratelimit import TokenBucket
from tornado_pubsub.logs import log_op

T = TypeVar("T")

#: A publish waiting for the lane: (packed EVALSHA, topic, id key, head,
#: history size, the caller's reply).
Pending = tuple[bytes, str, str, bytes, int, "asyncio.Future[Any]"]

#: Connections one process opens to Redis for commands, at most; more
#: concurrent commands wait for one (at most POOL_WAIT seconds, then the
#: command fails as INTERNAL like any other Redis fault).
POOL_SIZE = 64
POOL_WAIT = 5.0
#: A command's reply (or a pipeline's) may take this long, then it fails as INTERNAL.
COMMAND_TIMEOUT = 5.0

#: Entries one replay page reads at most (with at most WRITE_MAX bytes).
PAGE_COUNT = 64

# redis-py 5.3 made get_connection()'s command name optional (and deprecated
# passing it); the oldest redis-py we support still requires one.
_POOL_ARGS: tuple[str, ...] = (
    ()
    if inspect.signature(aioredis.BlockingConnectionPool.get_connection).parameters["command_name"].default is None
    else ("EVALSHA",)
)

UNAVAILABLE = "the message store (redis) is unavailable; retry later"
UNAVAILABLE_STATUS = 503
# At most this many ERROR records per second about failed commands, process-wide.
FAILURE_LOGS_PER_SECOND = 1.0


def unavailable() -> PubSubError:
    """The error every Redis fault becomes (HTTP 503)."""
    return PubSubError(INTERNAL, UNAVAILABLE, UNAVAILABLE_STATUS)


class Store:
    """Redis commands and Lua scripts, with typed replies.

    ``open()`` makes two clients: one for commands (one immediate retry on a
    dead connection, a 5 s read timeout) and one for the bus (no retry: the
    bus must never reconnect behind our back; no read timeout: see ``open``).
    """

    def __init__(self, redis_url: str, keys: scripts.Keys, node_id: str) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self.node_id = node_id
        self.redis: aioredis.Redis | None = None
        self.bus_redis: aioredis.Redis | None = None
        self._logs = TokenBucket(FAILURE_LOGS_PER_SECOND)
        self._unlogged = 0
        # Publishes waiting for the lane (packed, topic, reply), and the lane's task while it runs.
        self._publishes: list[Pending] = []
        self._lane: asyncio.Task[None] | None = None
        self._packing = scripts.PublishPacking(keys)

    def open(self) -> None:
        """Make the clients and register the scripts (connects lazily)."""
        self.redis = r = self._client(retries=1, read_timeout=COMMAND_TIMEOUT)
        # The bus waits for its next message for as long as the channel is
        # quiet.  redis-py before the fix of its issue 4098 (2026) applies the
        # client's read timeout to pubsub.listen() too: with one here, a bus
        # quiet for 5 s was "lost" and resynced every 5 s, and the remote
        # joins a dead process owed leaves for were forgotten each time.
        # Bus.run bounds the (re)subscription's handshake instead.
        self.bus_redis = self._client(retries=0, read_timeout=None)
        self._create = r.register_script(scripts.CREATE)
        self._delete = r.register_script(scripts.DELETE)
        self._publish = r.register_script(scripts.PUBLISH)
        self._snapshot = r.register_script(scripts.SNAPSHOT)
        self._restore = r.register_script(scripts.RESTORE)
        self._page = r.register_script(scripts.PAGE)

    def _client(self, retries: int, read_timeout: float | None) -> aioredis.Redis:
        # A blocking pool: when every connection is busy (a burst of
        # subscribes, each a script round trip), a command waits up to
        # POOL_WAIT for one instead of failing at once with "Too many
        # connections" (the plain pool's answer once it holds its maximum).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT,
            # A retry replaces a connection that died with a Redis restart.
            # Never on a timeout: the command may have run (a stalled Redis
            # runs it when it wakes), and a second run would answer
            # "duplicate" or "exists" for what the client did only once.
            retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
            socket_connect_timeout=2,
            socket_timeout=read_timeout,
            socket_keepalive=True,
            # Shows which process a connection belongs to in CLIENT LIST.
            client_name=f"tornado-pubsub:{self.node_id}",
            # RESP2: the scripts reply in its shapes, and its pub/sub messages are
            # plain replies (no push-message path per bus message).
            protocol=2,
        )
        return aioredis.Redis.from_pool(pool)  # the client closes its pool

    async def close(self) -> None:
        """Close both clients."""
        for client in (self.redis, self.bus_redis):
            if client is not None:
                await client.aclose()

    async def call(self, work: Awaitable[T]) -> T:
        """Run ``work`` (Redis commands) in a task of its own; its result, or
        ``PubSubError`` INTERNAL for any fault (never a Redis exception, and
        a ``CancelledError`` only when the caller itself is cancelled)."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled():
            self._failed("redis command cancelled")
            raise unavailable()
        exc = task.exception()
        if exc is None:
            return task.result()
        raise self._fault(exc)

    def _fault(self, exc: BaseException) -> PubSubError:
        """The ``PubSubError`` a caller gets for ``exc`` from Redis work (logged, throttled)."""
        if isinstance(exc, PubSubError):
            return exc
        if isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)):
            self._failed(str(exc) or type(exc).__name__)
            return unavailable()
        log_op("internal", logging.ERROR, exc_info=exc, node=self.node_id)
        return PubSubError(INTERNAL, "internal server error")

    def _failed(self, detail: str) -> None:
        # One stalled Redis fails every frame of every client: log the fault,
        # not each frame (the client gets its own error frame regardless).
        if not self._logs.take():
            self._unlogged += 1
            return
        unlogged, self._unlogged = self._unlogged, 0
        log_op("redis", logging.ERROR, node=self.node_id, detail=detail, unlogged=unlogged or None, outcome="command_failed")

    def _topic_keys(self, name: str) -> list[str]:
        return [self.keys.topics, *self.keys.topic(name)]

    def _every_topic_key(self, name: str) -> list[str]:
        # What creating or deleting a topic clears: its keys and the id hash
        # older versions kept.
        return [*self._topic_keys(name), self.keys.legacy_ids(name)]

    def _ready(self) -> aioredis.Redis:
        if self.redis is None:
            raise unavailable()
        return self.redis

    # -- scripts (each one atomic) -----------------------------------------------

    async def create(self, name: str, epoch: str, max_topics: int) -> int:
        """1 created, 0 exists, -1 topic limit reached."""
        self._ready()
        return int(await self.call(self._create(keys=self._every_topic_key(name), args=[name, epoch, max_topics, self.keys.bus])))

    async def delete(self, name: str) -> str | None:
        """The deleted incarnation's epoch, or None when there was none."""
        self._ready()
        epoch = await self.call(self._delete(keys=self._every_topic_key(name), args=[name, self.keys.bus]))
        return None if epoch is None else epoch.decode()

    async def publish(self, name: str, id_key: str, head: bytes, history_size: int) -> Published:
        """Number, retain and announce ``head`` (``bus.encode_head``); TOPIC_NOT_FOUND.

        Order: publishes run in Redis in the order this method was called.
        They go through one lane: the publishes made while a batch is in
        flight wait, then go together as the next pipeline (one round trip,
        one write), each still its own atomic script.  So one connection may
        have many publishes in flight and keep its order, and many
        connections' publishes share round trips.
        """
        self._ready()
        packed = self._packing.pack(self._publish.sha, name, history_size, id_key, head)
        # A caller cancelled while its publish waits or is sent only stops
        # waiting (the script may still run, as with any command already sent).
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._publishes.append((packed, name, id_key, head, history_size, reply))
        if self._lane is None:
            self._lane = asyncio.ensure_future(self._run_lane())
        outcome = await reply
        if outcome is None:
            raise topic_not_found(name)
        return Published(outcome[0].decode(), int(outcome[1]), bool(outcome[2]))

    async def _run_lane(self) -> None:
        # Its first step runs at the end of the loop pass that queued the
        # first publish, so it takes every publish of that pass at once.
        # The lane keeps one pooled connection while it has work: taking and
        # returning it per batch cost 16-25 us (the pool's lock, its timeout
        # and a check of the socket), once per round trip.
        pool = self._ready().connection_pool
        conn: AbstractConnection | None = None
        try:
            while self._publishes:
                batch, self._publishes = self._publishes, []
                try:
                    if conn is None:
                        conn = await pool.get_connection(*_POOL_ARGS)
                    replies = await self._pipelined(batch, conn)
                except asyncio.CancelledError:
                    for *_, reply in batch:
                        reply.cancel()
                    raise
                except Exception as exc:  # the whole batch failed (connection, timeout)
                    replies = [exc] * len(batch)
                    if conn is not None:  # its unread replies would answer the next batch
                        await conn.disconnect()
                        await pool.release(conn)
                        conn = None
                self._settle(batch, replies)
        except asyncio.CancelledError:
            for *_, reply in self._publishes:  # nobody would send them
                reply.cancel()
            self._publishes = []
            if conn is not None:
                await conn.disconnect()
            raise
        finally:
            self._lane = None
            if conn is not None:
                await pool.release(conn)

    def _settle(self, batch: list[Pending], replies: list[Any]) -> None:
        """Hand each caller of ``batch`` its own reply or error (a
        ``PubSubError``, as ``call`` would raise)."""
        for pending, outcome in zip(batch, replies):
            reply = pending[-1]
            if reply.done():  # its caller was cancelled and stopped waiting
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(self._fault(outcome))
            else:
                reply.set_result(outcome)

    async def _pipelined(self, batch: list[Pending], conn: AbstractConnection) -> list[Any]:
        # Sent as one write; each EVALSHA packed by ``PublishPacking``, not by
        # redis-py's pipeline (which packs each argument in Python, measured
        # 23 us a publish against 3.4 for hiredis's pack_command, and asks
        # SCRIPT EXISTS before a Script).
        replies = await self._round_trip(conn, b"".join([pending[0] for pending in batch]), len(batch))
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # Redis lost its scripts (restart, SCRIPT FLUSH)
                _, name, id_key, head, history_size, _ = batch[index]
                args = [name, id_key, head, history_size, self.keys.bus]
                try:
                    replies[index] = await self._publish(keys=self._topic_keys(name), args=args, client=self._ready())
                except Exception as exc:
                    replies[index] = exc
        return replies

    @staticmethod
    async def _round_trip(conn: AbstractConnection, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands on ``conn`` and read their replies,
        an error reply as its ``ResponseError`` (a pipeline's
        ``raise_on_error=False``).

        As a pipeline: a send that finds the connection dead (Redis
        restarted) is retried once on a new one; a failure after the send
        is not retried (the commands may have run).  On any exception the
        connection's remaining replies are unread: the caller must drop it.
        """
        await conn.retry.call_with_retry(lambda: conn.send_packed_command(packed), lambda _: conn.disconnect())
        replies: list[Any] = []
        # One deadline for the batch, not redis-py's timer per reply (a
        # timer armed and cancelled per publish).  math.inf: no timer of
        # its own (redis-py 8; older versions arm one that never fires).
        try:
            async with asyncio.timeout(conn.socket_timeout):
                for _ in range(count):
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        replies.append(exc)
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout reading from {conn.host}:{conn.port}") from None
        return replies

    async def snapshot(self, name: str, wanted: Wanted) -> Snapshot:
        """Epoch, last seq, oldest retained seq and the wanted events, oldest
        first, in one atomic read; TOPIC_NOT_FOUND."""
        return await self.call(self._read(name, wanted))

    async def _read(self, name: str, wanted: Wanted) -> Snapshot:
        args = [name, wanted.mode, wanted.n, wanted.epoch or ""]
        snap = await self._snapshot(keys=self._topic_keys(name)[:3], args=args, client=self._ready())
        if snap is None:
            raise topic_not_found(name)
        entries = snap[3][::-1] if wanted.mode == "last" else snap[3]  # 'last' reads newest first
        # Rendered here, inside ``call``: a corrupt entry is an error too, never an escape.
        events = [stored_event(name, int(entry_id.split(b"-")[1]), fields) for entry_id, fields in entries]
        epoch, last_seq, first_seq = snap[0].decode(), int(snap[1]), int(snap[2]) or None
        # A replay keeps the first page it read; the rest it reads page by page.
        return Snapshot(epoch, last_seq, first_seq, events, RedisPages(self, name, epoch, events))

    async def page(self, name: str, epoch: str, after: int, upto: int, max_bytes: int) -> tuple[int | None, list[Event]] | None:
        """One page of a replay: ``(oldest retained seq, events after..upto
        within max_bytes, at least one)``; None when ``epoch`` of ``name`` is gone."""
        return await self.call(self._read_page(name, epoch, after, upto, max_bytes))

    async def _read_page(self, name: str, epoch: str, after: int, upto: int, max_bytes: int) -> tuple[int | None, list[Event]] | None:
        keys = self._topic_keys(name)
        reply = await self._page(keys=[keys[0], keys[2]], args=[name, epoch, after, upto, max_bytes, PAGE_COUNT], client=self._ready())
        if reply is None:
            return None
        events = [stored_event(name, int(entry_id.split(b"-")[1]), fields) for entry_id, fields in reply[1]]
        return int(reply[0]) or None, events

    async def restore(self, name: str, position: Position) -> bool:
        """Put back a topic Redis lost (same epoch, seq never backwards); True if it was missing."""
        keys = self._topic_keys(name)[:2]
        return bool(await self.call(self._restore(keys=keys, args=[name, position.epoch, position.seq])))

    # -- plain commands ---------------------------------------------------------------

    async def exists(self, name: str) -> bool:
        """Whether topic ``name`` exists."""
        return bool(await self.call(self._ready().hexists(self.keys.topics, name)))

    async def run_id(self) -> str:
        """The Redis server's run id (it changes when Redis restarts)."""
        return str((await self.call(self._ready().info("server")))["run_id"])

    async def table(self) -> dict[str, Position]:
        """Every topic with its epoch and last seq."""
        return await self.call(self._table())

    async def _table(self) -> dict[str, Position]:
        redis = self._ready()
        table = await redis.hgetall(self.keys.topics)
        pipe = redis.pipeline(transaction=False)
        for name in table:
            pipe.get(self.keys.topic(name.decode())[0])
        seqs = await pipe.execute()
        return {n.decode(): Position(e.decode(), int(s or 0)) for (n, e), s in zip(table.items(), seqs)}

    async def cluster(self, figures: NodeFigures) -> tuple[dict[str, Position], dict[str, list[int]], int]:
        """``({topic: position}, {topic: [subscribers, dropped]}, live processes)``, sorted by name."""
        return await self.call(self._cluster(figures))

    async def _cluster(self, figures: NodeFigures) -> tuple[dict[str, Position], dict[str, list[int]], int]:
        redis = self._ready()
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.topics)
        figures.read_live(pipe, time.time())
        table, _, nodes = await pipe.execute()
        names = sorted(n.decode() for n in table)
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.get(self.keys.topic(name)[0])
        figures.read_figures(pipe, nodes)
        replies = await pipe.execute()
        topics = {name: Position(table[name.encode()].decode(), int(seq or 0)) for name, seq in zip(names, replies)}
        return topics, NodeFigures.sum(replies[len(names):]), len(nodes)


class RedisPages:
    """A replay's ``EventSource`` on Redis: the page it holds now, and the
    next one read from the topic's stream when the writer has sent it
    (``fill``), so a replay pins one write's worth of events, not the
    snapshot.  A page read that fails ends the replay as if the history were
    gone (the client gets ``history_gap``), never the connection."""

    __slots__ = ("store", "name", "epoch", "held", "first", "closed", "waiting")

    def __init__(self, store: Store, name: str, epoch: str, events: list[Event]) -> None:
        self.store = store
        self.name = name
        self.epoch = epoch
        self.held = page_of(events, -1, 1 << 62, WRITE_MAX, True)  # the first page only
        self.first: int | None = 0  # as of the last read: 0 until one finds events lost
        self.closed = False
        self.waiting = False  # the held page is spent: ``fill`` before reading on

    def page(self, after: int, upto: int, max_bytes: int, at_least_one: bool) -> tuple[int | None, list[Event] | None]:
        """See ``EventSource.page``; ``None`` events: await ``fill`` first."""
        events = page_of(self.held, after, upto, max_bytes, at_least_one)
        if events or not at_least_one:
            return self.first, events
        if self.first is None or after >= upto:
            return self.first, []
        self.waiting = True
        return self.first, None

    async def fill(self, after: int, upto: int) -> None:
        """Read the page after ``after`` (in place of the spent one)."""
        self.waiting = False
        self.held = []
        try:
            read = await self.store.page(self.name, self.epoch, after, upto, WRITE_MAX)
        except PubSubError:
            self.first = None  # unreadable now: the rest is reported lost
            return
        if read is None:
            self.closed = True  # deleted (or recreated): its topic_deleted notice follows
            return
        first, self.held = read
        self.first = first if first is not None and first > after + 1 else 0
        if not self.held:
            self.first = None

    def pending(self, after: int, upto: int) -> int:
        """See ``EventSource.pending``: the held page, plus an estimate of the
        rest at the held page's mean size."""
        held = page_of(self.held, after, upto, 1 << 62, True)
        size = sum(len(e.data) for e in held)
        rest = upto - (held[-1].seq if held else after)
        return size + (rest * size // len(held) if held else 0)
