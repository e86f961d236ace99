"""The Redis broker: any number of processes, on any number of machines, act
as one tornado-pubsub server.

Redis holds what must be shared: the topic table (name -> epoch), each
topic's seq counter, its history (a stream whose entry ids are the seqs,
trimmed to ``history_size``) and each process's subscriber and drop figures.
Every change is one Lua script (``redis_scripts``), so a publish is numbered,
retained and announced on the bus atomically; that gives one per-topic order
for every process.

Each process holds one pub/sub connection to one channel (the bus) and fans
each event out to its own subscribers through the shared ``hub.Hub``: an event
is rendered once per process and queued for every local subscriber, exactly
once and in seq order (an event at or below a topic's delivered seq is never
fanned out again).

Subscribing reads the history with an await, so live events that arrive
meanwhile are buffered per subscribe and queued after the replay, deduplicated
by seq: the seam has no gap and no duplicate, as in memory.

Faults: while the bus connection is down the broker is ``degraded``:
operations get an ``INTERNAL`` error (HTTP 503) instead of being dropped, and
/health answers 503.  The bus reconnects with backoff, re-reads every topic
this process has subscribers for and queues what they missed from the
history; when the history no longer covers the outage (or Redis lost the
topic's incarnation) they get ``info history_gap`` first.  If Redis restarted
empty, the processes put back the topics they knew (same epoch, seq counter
never going backwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
import uuid
from typing import Any, Iterator, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tornado_pubsub.core import frames
from tornado_pubsub.backends.redis import scripts as redis_scripts
from tornado_pubsub.core.errors import INTERNAL, PubSubError, topic_exists, topic_limit, topic_not_found
from tornado_pubsub.core.history import Event, id_key
from tornado_pubsub.core.hub import Hub, PublishResult, Subscriber, Subscribers, SubscribeResult, plan_resume
from tornado_pubsub.logs import log_op
from tornado_pubsub.backends.redis.figures import NodeFigures
from tornado_pubsub.settings import Settings

# Reconnect backoff of the bus: doubles from MIN up to MAX seconds.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
# How long start() waits for Redis before serving degraded (and retrying).
STARTUP_WAIT = 5.0
# How long an operation waits for this process's own bus to catch up with
# Redis before acking anyway (the bus is normally sub-millisecond behind).
BUS_WAIT = 5.0

_UNAVAILABLE = "the message store (redis) is unavailable; retry later"
_UNAVAILABLE_STATUS = 503


def _without_password(url: str) -> str:
    """``redis_url`` fit for a log line: a password in it becomes ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _unavailable() -> PubSubError:
    return PubSubError(INTERNAL, _UNAVAILABLE, _UNAVAILABLE_STATUS)


class LocalTopic:
    """This process's view of one topic incarnation: its subscribers here,
    the newest seq fanned out to them, and their drops."""

    __slots__ = ("name", "epoch", "last_seq", "subscribers", "dropped")

    def __init__(self, name: str, epoch: str, last_seq: int = 0) -> None:
        self.name = name
        self.epoch = epoch
        self.last_seq = last_seq
        self.subscribers: Subscribers = {}
        self.dropped = 0


class RedisBroker(Hub):
    """Topics, history and fan-out shared by every process on one Redis.

    Same interface and guarantees as the in-memory ``Broker``, cluster-wide:
    one seq order per topic, each event queued exactly once for each
    subscriber of any process, gapless replay and resume; /topics, /stats and
    /health sum every live process.  A publish is acked once it is in the
    queues of this process's subscribers; other processes get it from the
    bus at the same time.
    """

    def __init__(self, *, redis_url: str = "redis://127.0.0.1:6379/0", prefix: str = "pubsub:", **options: Any) -> None:
        """``redis_url`` and the key ``prefix``, plus ``Hub``'s keyword arguments."""
        super().__init__(**options)
        self.redis_url = redis_url
        self.last_error: str | None = None  # why the bus last failed
        self.keys = redis_scripts.Keys(prefix)
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.connected = False
        self._local: dict[str, LocalTopic] = {}
        # Every topic this process knows of: name -> [epoch, newest seq seen on the bus].
        self._known: dict[str, list[Any]] = {}
        # Subscribes reading history: topic -> {id(buffer): [(epoch, Event | None), ...]}.
        self._pending: dict[str, dict[int, list[tuple[str, Event | None]]]] = {}
        # Callers waiting for the bus to reach a seq: (topic, epoch) -> [(seq, future)].
        self._waiters: dict[tuple[str, str], list[tuple[float, asyncio.Future[None]]]] = {}
        self._deletes: dict[str, list[asyncio.Future[int]]] = {}
        # Subscriptions being made here, already counted in this process's figures.
        self._joining: dict[str, int] = {}
        self.figures = NodeFigures(
            self.keys, self.node_id, self._figures_of, lambda: set(self._local) | set(self._joining), lambda: self.connected
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._run_id: str | None = None
        self._closing = False
        self._connects = 0
        self._redis: aioredis.Redis | None = None
        self._bus_redis: aioredis.Redis | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "RedisBroker":
        """A broker configured from ``Settings``."""
        return cls(redis_url=settings.redis_url, **cls.options(settings))

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect the bus; serve degraded (and keep retrying) if Redis is not up yet."""
        # One immediate retry replaces a pooled connection that died with a
        # Redis restart; a Redis that is really down fails at once.
        self._redis = self._client(retries=1)
        # The bus must never reconnect behind our back (redis-py would, and
        # silently re-subscribe): a lost bus means missed events to catch up on.
        self._bus_redis = self._client(retries=0)
        self.figures.redis = self._redis
        r = self._redis
        self._create = r.register_script(redis_scripts.CREATE)
        self._delete = r.register_script(redis_scripts.DELETE)
        self._publish = r.register_script(redis_scripts.PUBLISH)
        self._snapshot = r.register_script(redis_scripts.SNAPSHOT)
        self._restore = r.register_script(redis_scripts.RESTORE)
        self._tasks = [asyncio.ensure_future(self._bus()), asyncio.ensure_future(self.figures.refresh_forever())]
        try:
            await asyncio.wait_for(self._ready.wait(), STARTUP_WAIT)
        except asyncio.TimeoutError:
            log_op(
                "redis",
                logging.WARNING,
                node=self.node_id,
                redis_url=_without_password(self.redis_url),
                error=self.last_error,
                outcome="unreachable_at_startup",
            )

    def _client(self, retries: int) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.redis_url,
            retry=Retry(NoBackoff(), retries),
            socket_connect_timeout=2,
            socket_timeout=5,
            socket_keepalive=True,
            # Shows which process a connection belongs to in CLIENT LIST.
            client_name=f"tornado-pubsub:{self.node_id}",
        )

    async def stop(self) -> None:
        """Stop the bus and remove this process's figures from the cluster totals."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.figures.leave()
        if self._redis is None:
            return
        await self._redis.aclose()
        if self._bus_redis is not None:
            await self._bus_redis.aclose()

    # -- Redis calls ---------------------------------------------------------------

    def _check_redis(self) -> aioredis.Redis:
        if not self.connected or self._redis is None:
            raise _unavailable()
        return self._redis

    @contextlib.contextmanager
    def _commands(self) -> Iterator[None]:
        """Around Redis commands: a lost Redis becomes an error for the caller
        (and a log record), never a silent drop."""
        try:
            yield
        except (RedisError, OSError) as exc:
            log_op("redis", logging.ERROR, node=self.node_id, detail=str(exc), outcome="command_failed")
            raise _unavailable() from None

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script (see ``_commands``)."""
        self._check_redis()
        with self._commands():
            return await script(keys=keys, args=args)

    def _topic_keys(self, name: str) -> list[str]:
        return [self.keys.topics, *self.keys.topic(name)]

    # -- hub hooks -------------------------------------------------------------------

    def _subscribers_of(self, name: str) -> Subscribers | None:
        lt = self._local.get(name)
        return None if lt is None else lt.subscribers

    def _subscriptions_changed(self, name: str) -> None:
        self.figures.changed(name)

    def _figures_of(self, name: str) -> tuple[int, int]:
        lt = self._local.get(name)
        subscribers = (len(lt.subscribers) if lt is not None else 0) + self._joining.get(name, 0)
        return subscribers, lt.dropped if lt is not None else 0

    def topic_count(self) -> int:
        return len(self._known)

    # -- topics --------------------------------------------------------------------

    async def create_topic(self, name: str) -> LocalTopic:
        """Create a topic cluster-wide with a fresh epoch; TOPIC_EXISTS or LIMIT_EXCEEDED."""
        self._check_open()
        epoch = secrets.token_hex(8)
        created = await self._run(self._create, self._topic_keys(name), [name, epoch, self.max_topics, self.keys.bus])
        if created == 0:
            raise topic_exists(name)
        if created == -1:
            raise topic_limit(self.max_topics)
        return LocalTopic(name, epoch)

    async def delete_topic(self, name: str) -> int:
        """Delete a topic cluster-wide; every process tells its subscribers
        ``topic_deleted``.  Returns how many were told here."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._deletes.setdefault(name, []).append(done)
        try:
            epoch = await self._run(self._delete, self._topic_keys(name), [name, self.keys.bus])
            if epoch is None:
                raise topic_not_found(name)
            try:
                return await asyncio.wait_for(asyncio.shield(done), BUS_WAIT)
            except asyncio.TimeoutError:
                return 0
        finally:
            waiting = self._deletes.get(name, [])
            if done in waiting:
                waiting.remove(done)
            if not waiting:
                self._deletes.pop(name, None)

    # -- publish / subscribe ---------------------------------------------------------

    async def publish(self, topic_name: str, payload: Any, message_id: str | None = None) -> PublishResult:
        """Number, retain and announce one message atomically in Redis; returns
        once it is in the queues of this process's subscribers.

        A ``message_id`` still held in the topic's history is not published
        again: the result carries the original seq and ``duplicate=True``.
        """
        self._check_open()
        message_id = message_id or str(uuid.uuid4())
        body = frames.encode_published({"id": message_id, "ts": frames.timestamp(), "payload": payload})
        args = [topic_name, id_key(message_id), body, self.history_size, self.keys.bus]
        reply = await self._run(self._publish, self._topic_keys(topic_name), args)
        if reply is None:
            raise topic_not_found(topic_name)
        epoch, seq, duplicate = reply[0].decode(), int(reply[1]), bool(reply[2])
        if not duplicate:
            self.counters.published += 1
            await self._bus_reached(topic_name, epoch, seq)
        return PublishResult(topic_name, message_id, seq, duplicate)

    async def subscribe(
        self,
        sub: Subscriber,
        topic_name: str,
        client_id: str,
        *,
        last_n: int | None = None,
        since_seq: int | None = None,
        epoch: str | None = None,
        request_id: str | None = None,
    ) -> SubscribeResult:
        """Subscribe ``sub`` and queue, in order: the ack, a ``history_gap`` notice
        when a resume cannot be complete, the replayed events, then live events.

        Subscribing again to a topic already held is acked and replays nothing.
        A resume without ``epoch`` is taken to mean the current epoch.
        """
        self._check_open()
        self._check_room(sub, topic_name)
        if topic_name in sub.topics:
            mode, n = "none", 0
        elif since_seq is not None:
            mode, n = "after", since_seq
        elif last_n:
            mode, n = "last", last_n
        else:
            mode, n = "none", 0
        # Live events that arrive while the history is read wait here.
        buffer: list[tuple[str, Event | None]] = []
        pending = self._pending.setdefault(topic_name, {})
        pending[id(buffer)] = buffer
        joining = topic_name not in sub.topics
        if joining:
            self._joining[topic_name] = self._joining.get(topic_name, 0) + 1
        try:
            snap, _ = await asyncio.gather(
                self._run(self._snapshot, self._topic_keys(topic_name)[:3], [topic_name, mode, n, epoch or ""]),
                self._count_joining(topic_name),
            )
            if snap is None:
                raise topic_not_found(topic_name)
            current, last_seq, first = snap[0].decode(), int(snap[1]), int(snap[2]) or None
            # Everything up to the snapshot has been fanned out here before
            # the subscription joins, so later fan-outs are all after it.
            await self._bus_reached(topic_name, current, last_seq)
        finally:
            pending.pop(id(buffer), None)
            if not pending:
                self._pending.pop(topic_name, None)
            if joining:
                left = self._joining[topic_name] - 1
                if left:
                    self._joining[topic_name] = left
                else:
                    del self._joining[topic_name]
                self._subscriptions_changed(topic_name)
        if sub.closed:
            return SubscribeResult(topic_name, current, last_seq, 0, None, False)

        lt = self._incarnation(topic_name, current, last_seq)
        history = [self._entry_event(lt, entry) for entry in snap[3]]
        recovered: bool | None = None
        replay: list[Event] = []
        already = sub in lt.subscribers
        if already:
            recovered = True if since_seq is not None else None
        elif since_seq is not None:
            recovered, after = plan_resume(current, last_seq, first, since_seq, epoch)
            replay = [e for e in history if e.seq > after]
        elif last_n:
            replay = history[::-1]
        result = self.admit(
            sub,
            lt.subscribers,
            lt.name,
            client_id,
            epoch=current,
            last_seq=last_seq,
            first_seq=first,
            replay=replay,
            recovered=recovered,
            request_id=request_id,
        )
        if not already and sub in lt.subscribers:
            self._flush_buffer(sub, lt, last_seq, buffer)
        return result

    def _flush_buffer(self, sub: Subscriber, lt: LocalTopic, last_seq: int, buffer: list[tuple[str, Event | None]]) -> None:
        """Queue the live events that arrived during the history read (the seam)."""
        for epoch, event in buffer:
            if epoch != lt.epoch:
                continue
            if event is None:  # deleted while we read its history
                self._end_local(lt)
                return
            if event.seq > last_seq:  # part of the seam: queued whole, like the replay
                sub.queue.offer_replay(Event(event.seq, event.id, event.data, lt))

    async def _count_joining(self, name: str) -> None:
        # Counted in this process's figures before the ack is queued, so a
        # /stats anywhere right after the ack includes the new subscriber.
        self.figures.changed(name)
        await self.figures.sync()

    async def unsubscribe(self, sub: Subscriber, topic_name: str) -> bool:
        """End ``sub``'s subscription; acked even if there was none (returns False then)."""
        self._check_open()
        if topic_name in sub.topics:
            self._detach(sub, topic_name)
            await self.figures.sync()
            return True
        redis = self._check_redis()
        with self._commands():
            exists = await redis.hexists(self.keys.topics, topic_name)
        if not exists:
            raise topic_not_found(topic_name)
        return False

    # -- local incarnations ------------------------------------------------------------

    def _incarnation(self, name: str, epoch: str, last_seq: int) -> LocalTopic:
        """The local view of ``name`` at ``epoch``, ending an older incarnation here.

        A new view starts after ``last_seq`` (what the subscribe read) or what
        the bus already carried, whichever is newer: nothing up to there may
        be fanned out to the subscriber that created it.
        """
        lt = self._local.get(name)
        if lt is not None and lt.epoch != epoch:
            self._end_local(lt)
            lt = None
        if lt is None:
            known = self._known.get(name)
            seen = known[1] if known is not None and known[0] == epoch else 0
            lt = self._local[name] = LocalTopic(name, epoch, max(seen, last_seq))
        return lt

    def _end_local(self, lt: LocalTopic) -> int:
        if self._local.get(lt.name) is lt:
            del self._local[lt.name]
        self.figures.changed(lt.name)
        return self.end_topic(lt.name, lt.subscribers)

    @staticmethod
    def _event(owner: LocalTopic, seq: int, body: bytes) -> Event:
        message = json.loads(body)
        data = frames.event(owner.name, message["id"], message["payload"], message["ts"], seq)
        return Event(seq, message["id"], data, owner)

    def _entry_event(self, owner: LocalTopic, entry: Any) -> Event:
        entry_id, fields = entry
        seq = int(entry_id.split(b"-")[1])
        return self._event(owner, seq, fields[1])  # a script reply: fields as a flat [name, value] list

    # -- the bus -----------------------------------------------------------------------

    async def _bus(self) -> None:
        """Hold the one pub/sub connection; reconnect with backoff for as long as we run."""
        assert self._bus_redis is not None
        delay = BACKOFF_MIN
        while not self._closing:
            pubsub = self._bus_redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.bus)
                await self._confirmed(pubsub)
                await self._resync()
                self._connected()
                delay = BACKOFF_MIN
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._dispatch(message["data"])
                raise ConnectionError("bus subscription ended")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._lost(str(exc) or type(exc).__name__)
            except Exception:  # a bug must not stop the bus for good
                log_op("internal", logging.ERROR, exc_info=True, node=self.node_id)
                self._lost("internal error")
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), 1.0)
                except (RedisError, OSError, asyncio.TimeoutError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    @staticmethod
    async def _confirmed(pubsub: Any) -> None:
        # Only once Redis confirmed the SUBSCRIBE is every later publish
        # guaranteed to reach us; reading state before that could miss one.
        for _ in range(50):
            message = await pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "subscribe":
                return
        raise ConnectionError("no confirmation of the bus subscription")

    def _connected(self) -> None:
        self._connects += 1
        self.connected = True
        self._ready.set()
        log_op("redis", node=self.node_id, connects=self._connects, topics=len(self._known), outcome="connected")

    def _lost(self, detail: str) -> None:
        self.last_error = detail  # named by the start-up warning
        if self.connected:
            log_op("redis", logging.ERROR, node=self.node_id, detail=detail, outcome="lost")
        self.connected = False
        for (name, epoch) in list(self._waiters):
            self._progress(name, epoch, float("inf"))  # nobody waits on a dead bus
        for waiting in self._deletes.values():  # deletes acked with "0 told here", as on BUS_WAIT's expiry
            for done in waiting:
                if not done.done():
                    done.set_result(0)

    async def _resync(self) -> None:
        """After (re)connecting: put back topics if Redis lost them, reload the
        topic table, catch local subscribers up on what they missed, rewrite
        this process's figures."""
        assert self._redis is not None
        run_id = (await self._redis.info("server"))["run_id"]
        if self._run_id is not None and run_id != self._run_id and self._known:
            restored = 0
            for name, (epoch, seq) in list(self._known.items()):
                restored += int(await self._restore(keys=self._topic_keys(name)[:2], args=[name, epoch, seq]))
            log_op("redis", logging.WARNING, node=self.node_id, restored=restored, outcome="redis_restarted")
        self._run_id = run_id
        table = await self._redis.hgetall(self.keys.topics)
        pipe = self._redis.pipeline(transaction=False)
        for name in table:
            pipe.get(self.keys.topic(name.decode())[0])
        seqs = await pipe.execute()
        self._known = {n.decode(): [e.decode(), int(s or 0)] for (n, e), s in zip(table.items(), seqs)}
        if self._connects:
            await self._catch_up()
        self.figures.rewrite()
        await self.figures.write()

    async def _catch_up(self) -> None:
        """Queue, for each local topic, the events published while the bus was down."""
        caught = gaps = 0
        for lt in list(self._local.values()):
            if not lt.subscribers:
                self._end_local(lt)
                continue
            snap = await self._snapshot(keys=self._topic_keys(lt.name)[:3], args=[lt.name, "after", lt.last_seq, lt.epoch])
            if snap is None:  # deleted while we were away
                self._end_local(lt)
                continue
            current, last_seq, first = snap[0].decode(), int(snap[1]), int(snap[2]) or None
            recovered, after = plan_resume(current, last_seq, first, lt.last_seq, lt.epoch)
            if not recovered:
                gaps += 1
                lt.epoch = current
                notice = self.gap_notice(lt.name, current, first, last_seq)
                for sub in list(lt.subscribers):
                    sub.send(notice)
            for entry in snap[3]:
                event = self._entry_event(lt, entry)
                if event.seq > after:
                    caught += 1
                    self.fan_out(lt.subscribers, event)
            lt.last_seq = last_seq
        log_op("redis", node=self.node_id, caught_up=caught, history_gaps=gaps, outcome="resynced")

    def _dispatch(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"e":
            _, name, epoch, seq, body = data.split(b"\n", 4)
            self._on_event(name.decode(), epoch.decode(), int(seq), body)
        elif kind == b"c":
            _, name, epoch = data.decode().split("\n")
            self._known[name] = [epoch, 0]
            self._progress(name, epoch, 0)
        elif kind == b"d":
            _, name, epoch = data.decode().split("\n")
            self._on_deleted(name, epoch)

    def _on_event(self, name: str, epoch: str, seq: int, body: bytes) -> None:
        known = self._known.get(name)
        if known is not None and known[0] == epoch:
            known[1] = seq
        else:
            self._known[name] = [epoch, seq]
        lt = self._local.get(name)
        pending = self._pending.get(name)
        if lt is not None and lt.epoch == epoch and seq > lt.last_seq:
            lt.last_seq = seq
            if lt.subscribers or pending:
                event = self._event(lt, seq, body)
                self.fan_out(lt.subscribers, event)
                if pending:
                    for buffer in pending.values():
                        buffer.append((epoch, event))
        elif pending:
            event = self._event(lt if lt is not None and lt.epoch == epoch else LocalTopic(name, epoch), seq, body)
            for buffer in pending.values():
                buffer.append((epoch, event))
        if self._waiters:
            self._progress(name, epoch, seq)

    def _on_deleted(self, name: str, epoch: str) -> None:
        known = self._known.get(name)
        if known is not None and known[0] == epoch:
            del self._known[name]
        lt = self._local.get(name)
        told = self._end_local(lt) if lt is not None and lt.epoch == epoch else 0
        for buffer in self._pending.get(name, {}).values():
            buffer.append((epoch, None))
        for done in self._deletes.pop(name, []):
            if not done.done():
                done.set_result(told)
        self._progress(name, epoch, float("inf"))

    # -- waiting for the bus ---------------------------------------------------------------

    async def _bus_reached(self, name: str, epoch: str, seq: int) -> None:
        """Return once this process's bus has processed ``seq`` of ``name``
        (or BUS_WAIT passed, or the bus is down)."""
        known = self._known.get(name)
        if known is not None and known[0] == epoch and known[1] >= seq:
            return
        if not self.connected:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((name, epoch), []).append((seq, future))
        try:
            await asyncio.wait_for(future, BUS_WAIT)
        except asyncio.TimeoutError:
            log_op("redis", logging.WARNING, node=self.node_id, topic=name, seq=seq, outcome="bus_behind")

    def _progress(self, name: str, epoch: str, seq: float) -> None:
        waiting = self._waiters.get((name, epoch))
        if not waiting:
            return
        still = []
        for target, future in waiting:
            if target <= seq:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        if still:
            self._waiters[(name, epoch)] = still
        else:
            del self._waiters[(name, epoch)]

    async def _cluster(self) -> tuple[dict[str, list[Any]], dict[str, list[int]], int]:
        """``({topic: [epoch, last_seq]}, {topic: [subscribers, dropped]}, live processes)``."""
        redis = self._check_redis()
        self.figures.rewrite()  # this process's drop counts as of now, not of the last refresh
        await self.figures.sync()
        with self._commands():
            pipe = redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.topics)
            self.figures.read_live(pipe, time.time())
            table, _, nodes = await pipe.execute()
            names = sorted(n.decode() for n in table)
            pipe = redis.pipeline(transaction=False)
            for name in names:
                pipe.get(self.keys.topic(name)[0])
            self.figures.read_figures(pipe, nodes)
            replies = await pipe.execute()
        topics = {name: [table[name.encode()].decode(), int(seq or 0)] for name, seq in zip(names, replies)}
        return topics, NodeFigures.sum(replies[len(names):]), len(nodes)

    # -- introspection ---------------------------------------------------------------------------

    async def list_topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]`` over every process, sorted by name."""
        topics, figures, _ = await self._cluster()
        return [{"name": name, "subscribers": figures.get(name, [0, 0])[0]} for name in topics]

    async def topic_stats(self) -> dict[str, dict[str, Any]]:
        """Per-topic counters over every process: messages, subscribers, dropped, last_seq, epoch."""
        topics, figures, _ = await self._cluster()
        stats = {}
        for name, (epoch, last_seq) in topics.items():
            subscribers, dropped = figures.get(name, [0, 0])
            stats[name] = {
                "messages": last_seq,
                "subscribers": subscribers,
                "dropped": dropped,
                "last_seq": last_seq,
                "epoch": epoch,
            }
        return stats

    async def health(self) -> dict[str, Any]:
        """Cluster-wide topic and subscription counts; ``status: degraded`` without Redis."""
        uptime = int(time.monotonic() - self.started)
        if self.connected:
            try:
                topics, figures, nodes = await self._cluster()
                return {
                    "uptime_sec": uptime,
                    "topics": len(topics),
                    "subscribers": sum(pair[0] for pair in figures.values()),
                    "processes": nodes,
                    "node": self.node_id,
                }
            except PubSubError:
                pass
        return {
            "status": "degraded",
            "uptime_sec": uptime,
            "topics": len(self._known),
            "subscribers": self.subscriptions,
            "node": self.node_id,
        }
