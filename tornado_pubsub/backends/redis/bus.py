"""The bus: one Redis pub/sub channel that carries every creation, deletion
and event to every process, in one total order; its message protocol, the
reader that holds the subscription, and where each topic has got to here.

Messages (written by the Lua scripts through ``LUA``, read by ``decode``;
this module is the only place that knows the format)::

    f\\n<topic>\\n<epoch>\\n<seq>\\n<head>\\n<id>   an event: head = the event frame up to its seq
    c\\n<topic>\\n<epoch>                       a topic was created
    d\\n<topic>\\n<epoch>                       a topic was deleted
    p\\n<node>\\n<topic>\\n<json>               a join or leave on process <node> (``presence``)
    q\\n<node>\\n<reply key>\\n<kind>\\n<arg>     process <node> asks every other (``presence``)

The publishing process renders the event frame once (``frames.event_head``);
the history stream keeps the same head, so every process, live or on
replay, only appends the seq: no JSON is parsed or rendered per process.

Older versions announced ``e\\n<topic>\\n<epoch>\\n<seq>\\n<body>`` (body =
``{"id","ts","payload"}``) and kept that body in the stream: both are still
read (and rendered as before), so a history written by an older version
replays unchanged.  An older process ignores ``f`` messages, so processes
of both versions must not serve one Redis at the same time (README, Scaling
out: upgrade by stopping them all).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import PubSubError
from tornado_pubsub.core.history import Event
from tornado_pubsub.logs import log_op

# Reconnect backoff of the bus: doubles from MIN up to MAX seconds.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
#: How long connecting and subscribing may take (the bus client has no read
#: timeout, see ``Store.open``, so a Redis that stalls mid-handshake is given up here).
SUBSCRIBE_WAIT = 5.0

#: Lua helpers the scripts announce through (prepended to each script).
LUA = """
local function bus_event(channel, name, epoch, seq, head, id)
  redis.call('PUBLISH', channel, 'f\\n' .. name .. '\\n' .. epoch .. '\\n' .. seq .. '\\n' .. head .. '\\n' .. id)
end
local function bus_created(channel, name, epoch)
  redis.call('PUBLISH', channel, 'c\\n' .. name .. '\\n' .. epoch)
end
local function bus_deleted(channel, name, epoch)
  redis.call('PUBLISH', channel, 'd\\n' .. name .. '\\n' .. epoch)
end
"""


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# and one of these is made per event per process (measured: a tenth of a
# bus-only process's CPU went to that __init__).
@dataclasses.dataclass(slots=True)
class Announced:
    """An event on the bus: seq ``seq`` of ``name`` at ``epoch``; ``event()``
    makes its frame (``head``: appends the seq; an older version's ``body``:
    parses and renders it)."""

    name: str
    epoch: str
    seq: int
    head: bytes | None
    body: bytes | None
    message_id: str

    def event(self) -> Event:
        if self.head is not None:
            return Event(self.seq, self.message_id, frames.event_with_seq(self.head, self.seq), None)
        assert self.body is not None
        return render(self.name, self.seq, self.body)


@dataclasses.dataclass(frozen=True, slots=True)
class Created:
    """Topic ``name`` was created with ``epoch``."""

    name: str
    epoch: str


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    """Incarnation ``epoch`` of topic ``name`` was deleted."""

    name: str
    epoch: str


@dataclasses.dataclass(frozen=True, slots=True)
class Noticed:
    """A join or leave of topic ``name`` on process ``node``; ``body`` is
    ``{"msg","conn_id","client_id","user"}`` JSON, decoded only where someone watches."""

    node: str
    name: str
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Asked:
    """Process ``node`` asks every other one ``kind`` about ``arg``; answers go to list ``reply_key``."""

    node: str
    reply_key: str
    kind: str
    arg: str


Message = Announced | Created | Deleted | Noticed | Asked


def decode(data: bytes) -> Message | None:
    """One bus message, or None for a kind this version does not know."""
    kind = data[:1]
    if kind == b"f":
        _, name, epoch, seq, rest = data.split(b"\n", 4)
        head, _, message_id = rest.partition(b"\n")  # the head holds no newline; an id might
        return Announced(name.decode(), epoch.decode(), int(seq), head, None, message_id.decode())
    if kind == b"e":  # an older version's event
        _, name, epoch, seq, body = data.split(b"\n", 4)
        return Announced(name.decode(), epoch.decode(), int(seq), None, body, "")
    if kind == b"c":
        _, name, epoch = data.decode().split("\n")
        return Created(name, epoch)
    if kind == b"d":
        _, name, epoch = data.decode().split("\n")
        return Deleted(name, epoch)
    if kind == b"p":
        _, node, name, body = data.split(b"\n", 3)
        return Noticed(node.decode(), name.decode(), body)
    if kind == b"q":
        _, node, reply_key, asked, arg = data.decode().split("\n", 4)
        return Asked(node, reply_key, asked, arg)
    return None


def notice(node: str, name: str, body: bytes) -> bytes:
    """The bus message of a join or leave of ``name`` on ``node`` (sent by ``presence``, not by a script)."""
    return b"p\n" + node.encode() + b"\n" + name.encode() + b"\n" + body


def question(node: str, reply_key: str, kind: str, arg: str) -> str:
    """The bus message of a question from ``node`` to every other process."""
    return f"q\n{node}\n{reply_key}\n{kind}\n{arg}"


def encode_head(name: str, message_id: str, payload: Any) -> bytes:
    """What a publish retains and announces: the event frame up to its seq
    (raises BAD_REQUEST for a payload JSON cannot hold)."""
    return frames.event_head(name, message_id, payload, frames.timestamp())


def stored_event(name: str, seq: int, fields: list[bytes]) -> Event:
    """The event of one history stream entry (``h`` head or an older
    version's ``b`` body, then ``i`` id key)."""
    if fields[0] == b"h":
        return Event(seq, fields[3].decode(), frames.event_with_seq(fields[1], seq), None)
    return render(name, seq, fields[1])


def render(name: str, seq: int, body: bytes) -> Event:
    """The event frame for an older version's ``body`` (parsed and rendered
    once per process); its owner is set by the hub when it is delivered live."""
    message = json.loads(body)
    data = frames.event(name, message["id"], message["payload"], message["ts"], seq)
    return Event(seq, message["id"], data, None)


@dataclasses.dataclass(slots=True)
class Position:
    """How far the bus has carried one topic incarnation here."""

    epoch: str
    seq: int


class Progress:
    """Every topic this process knows of, with the newest seq its bus carried,
    and the callers waiting for the bus to reach a seq.

    A publish is acked, and a subscribe joins, only once this process's own
    bus has delivered up to the seq Redis gave them: that is what orders a
    client's ack before the event reaches a subscriber on the same process.
    """

    def __init__(self) -> None:
        self.known: dict[str, Position] = {}
        # Each waiter's future is resolved True when the bus reached its seq,
        # False when its time ran out.
        self._waiters: dict[tuple[str, str], list[tuple[float, asyncio.Future[bool]]]] = {}
        # Deadlines in the order they were set (every wait has the same
        # timeout, so they are also in time order): one timer serves them all.
        self._deadlines: collections.deque[tuple[float, str, str, asyncio.Future[bool]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def reset(self, known: dict[str, Position]) -> None:
        """Replace the topic table (after a resync)."""
        self.known = known

    def carried(self, name: str, epoch: str, seq: int) -> None:
        """The bus delivered ``seq`` of ``name`` at ``epoch``."""
        known = self.known.get(name)
        if known is not None and known.epoch == epoch:
            known.seq = seq
        else:
            self.known[name] = Position(epoch, seq)
        if self._waiters:
            self._release(name, epoch, seq)

    def created(self, name: str, epoch: str) -> None:
        self.known[name] = Position(epoch, 0)
        self._release(name, epoch, 0)

    def deleted(self, name: str, epoch: str) -> None:
        known = self.known.get(name)
        if known is not None and known.epoch == epoch:
            del self.known[name]
        self._release(name, epoch, float("inf"))

    def release_all(self) -> None:
        """Nobody waits on a dead bus."""
        for name, epoch in list(self._waiters):
            self._release(name, epoch, float("inf"))

    async def reached(self, name: str, epoch: str, seq: int, timeout: float) -> bool:
        """Return once the bus carried ``seq`` of ``name`` at ``epoch``; False
        after ``timeout``.  Never cancels its caller (see ``Store.call``)."""
        known = self.known.get(name)
        if known is not None and known.epoch == epoch and known.seq >= seq:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters.setdefault((name, epoch), []).append((seq, future))
        deadlines = self._deadlines
        while deadlines and deadlines[0][3].done():  # most are released within a millisecond
            deadlines.popleft()
        deadlines.append((loop.time() + timeout, name, epoch, future))
        if self._timer is None:
            self._timer = loop.call_at(deadlines[0][0], self._expire)
        return await future

    def _expire(self) -> None:
        self._timer = None
        deadlines = self._deadlines
        loop = asyncio.get_running_loop()
        now = loop.time()
        while deadlines and (deadlines[0][3].done() or deadlines[0][0] <= now):
            _, name, epoch, future = deadlines.popleft()
            if not future.done():
                self._forget(name, epoch, future)
                future.set_result(False)
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)

    def _forget(self, name: str, epoch: str, future: asyncio.Future[bool]) -> None:
        waiting = self._waiters.get((name, epoch), [])
        waiting[:] = [(s, f) for s, f in waiting if f is not future]
        if not waiting:
            self._waiters.pop((name, epoch), None)

    def _release(self, name: str, epoch: str, seq: float) -> None:
        waiting = self._waiters.get((name, epoch))
        if not waiting:
            return
        still = []
        for target, future in waiting:
            if target <= seq:
                if not future.done():
                    future.set_result(True)
            else:
                still.append((target, future))
        if still:
            self._waiters[(name, epoch)] = still
        else:
            del self._waiters[(name, epoch)]


class Bus:
    """Holds the one pub/sub connection, for as long as the process runs.

    After each (re)connection it awaits ``on_up`` (the backend's resync)
    before reading on, then hands each message to ``on_message`` in order;
    ``on_lost`` is told each time the connection goes.  The bus never lets
    redis-py reconnect behind its back: a lost bus means missed events, which
    ``on_up`` must catch up on.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        node_id: str,
        on_up: Callable[[], Awaitable[None]],
        on_message: Callable[[Message], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.node_id = node_id
        self._on_up = on_up
        self._on_message = on_message
        self._on_lost = on_lost
        self.closing = False

    async def run(self) -> None:
        """Subscribe, resync, read; reconnect with backoff until ``closing``."""
        delay = BACKOFF_MIN
        while not self.closing:
            pubsub = self.redis.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), SUBSCRIBE_WAIT)
                await self._confirmed(pubsub)
                await self._on_up()
                delay = BACKOFF_MIN
                # Read off the subscribed connection, not PubSub.listen():
                # every process pays this for every publish in the cluster,
                # and listen() adds per message a retry wrapper, a health
                # check, a dict and (redis-py 8) a metrics hook, none of
                # which a bus that never reconnects behind our back uses.
                # Measured: 12.0-13.7 -> 6.2-7.2 us of CPU per publish in a
                # process with no subscriber (bench/bus_cost.py, B).  No
                # read timeout: the bus client has none (see Store.open).
                conn = pubsub.connection
                on_message = self._on_message
                while True:
                    reply = await conn.read_response(disconnect_on_error=False)
                    if reply[0] == b"message":
                        message = decode(reply[2])
                        if message is not None:
                            on_message(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, PubSubError) as exc:
                self._on_lost(str(exc) or type(exc).__name__)
            except Exception:  # a bug must not stop the bus for good
                log_op("internal", logging.ERROR, exc_info=True, node=self.node_id)
                self._on_lost("internal error")
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
