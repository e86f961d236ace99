"""Presence across processes on the Redis bus: join/leave notices out and in,
and questions every live process answers (presence of a topic, its
connections, disconnecting a user).

Design: nothing about connections is stored in Redis.  A question is one
bus message; every other live process (the node set ``figures`` keeps)
answers from its own hub into a short-lived reply list, which the asker
pops until it has every answer or ``GATHER_WAIT`` passed.  So a process
that dies takes its entries with it at once (it cannot answer), and its
connections are never listed again; a question asked while the node set
still holds it (at most ``figures.NODE_TTL``) waits ``GATHER_WAIT`` for it.

Notices of local joins and leaves are published in order by one writer
task, from a bounded backlog: when Redis stalls, past ``MAX_BACKLOG`` the
oldest are dropped (counted and logged) rather than held without bound.

A process that dies cannot send the leaves of its subscriptions, so each
process remembers the remote joins it passed on to its watchers (at most
``MAX_REMEMBERED``) and, once the dead process drops out of the node set
(``figures.NODE_TTL``), tells its watchers those subscriptions left.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import time
from typing import Any, Callable

from redis.exceptions import RedisError

from tornado_pubsub.backends.redis.bus import Asked, Noticed, notice, question
from tornado_pubsub.backends.redis.scripts import Keys
from tornado_pubsub.backends.redis.store import Store
from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import LIMIT_EXCEEDED, PubSubError
from tornado_pubsub.core.hub import Hub
from tornado_pubsub.logs import log_op

#: How long a question waits for the other processes' answers.
GATHER_WAIT = 2.0
#: How long an unread reply list lives in Redis.
REPLY_TTL = 10
#: Notices waiting for Redis, at most.
MAX_BACKLOG = 10000
#: Questions in flight from this process, at most: each holds a Redis
#: connection in BLPOP for up to GATHER_WAIT, so clients sending presence
#: frames from many connections at once must not open connections without bound.
MAX_GATHERS = 32
#: Remote joins remembered for a process that might die, at most (a join
#: beyond it is still passed on; its leave then comes only from its process).
MAX_REMEMBERED = 100_000
#: How often the node set is read for processes that died.
REAP_EVERY = 5.0


class ClusterPresence:
    """This process's side of presence on the bus.

    ``hub`` gives the local hub (it is attached after construction);
    ``live`` whether the bus is connected (nothing is sent while it is not).
    """

    def __init__(self, store: Store, keys: Keys, node_id: str, hub: Callable[[], Hub], live: Callable[[], bool]) -> None:
        self.store = store
        self.keys = keys
        self.node_id = node_id
        self._hub = hub
        self._live = live
        self._backlog: collections.deque[bytes] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._gathering = 0
        self.lost = 0  # notices dropped for want of Redis
        # node -> {(topic, conn_id, client_id): entry}: remote joins passed on
        # to watchers here, whose leaves are owed if that node dies.
        self._joined: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
        self._remembered = 0

    async def stop(self) -> None:
        """Stop sending: pending notices and answers are abandoned (the process is leaving)."""
        tasks = [t for t in (self._writer, *self._answers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- notices ---------------------------------------------------------------

    def share(self, msg: str, name: str, entry: dict[str, Any]) -> None:
        """Queue a local join or leave for the other processes (never suspends)."""
        if not self._live():
            return  # after a reconnect nobody can tell what changed meanwhile: presence is re-read, not replayed
        body = frames.encode({"msg": msg, **entry})
        if len(self._backlog) >= MAX_BACKLOG:
            self._backlog.popleft()
            self.lost += 1
        self._backlog.append(notice(self.node_id, name, body))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        redis = self.store.redis
        while self._backlog and redis is not None:
            batch = list(self._backlog)
            self._backlog.clear()
            pipe = redis.pipeline(transaction=False)
            for message in batch:
                pipe.publish(self.keys.bus, message)
            try:
                await pipe.execute()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self.lost += len(batch)
                log_op("redis", logging.WARNING, node=self.node_id, detail=str(exc), lost=len(batch), outcome="presence_not_shared")
                return

    def on_notice(self, message: Noticed) -> None:
        """A join or leave from the bus: tell local watchers (our own were told already)."""
        presence = self._hub().presence
        if message.node == self.node_id:
            return
        watched = message.name in presence.watchers
        if not watched and message.node not in self._joined:
            return  # most notices concern topics nobody here watches: not even decoded
        body = json.loads(message.body)
        msg = body.pop("msg")
        if watched or msg == "leave":  # a leave settles a join remembered while it was watched
            self._remember(message.node, msg, message.name, body)
        if watched:
            presence.remote(msg, message.name, body)

    def _remember(self, node: str, msg: str, name: str, entry: dict[str, Any]) -> None:
        key = (name, str(entry.get("conn_id")), str(entry.get("client_id")))
        joined = self._joined.get(node)
        if msg == "leave":
            if joined is not None and joined.pop(key, None) is not None:
                self._remembered -= 1
                if not joined:
                    del self._joined[node]
        elif msg == "join" and self._remembered < MAX_REMEMBERED:
            if key not in self._joined.setdefault(node, {}):
                self._remembered += 1
            self._joined[node][key] = entry

    def forget_remote(self) -> None:
        """The bus was lost: notices may have been missed, so what was remembered is dropped."""
        self._joined.clear()
        self._remembered = 0

    async def reap_forever(self) -> None:
        """Tell watchers here of the leaves a dead process could not send."""
        while True:
            await asyncio.sleep(REAP_EVERY)
            if not self._joined or not self._live() or self.store.redis is None:
                continue
            try:
                live = await self.store.redis.zrangebyscore(self.keys.nodes, time.time(), "+inf")
            except (RedisError, OSError, asyncio.TimeoutError):
                continue  # read again next time
            self.reap({node.decode() for node in live})

    def reap(self, live: set[str]) -> None:
        """Send the leaves owed for every remembered process not in ``live``."""
        presence = self._hub().presence
        for node in [node for node in self._joined if node not in live]:
            owed = self._joined.pop(node)
            self._remembered -= len(owed)
            for (name, _, _), entry in owed.items():
                presence.remote("leave", name, entry)
            log_op("presence", logging.WARNING, node=self.node_id, dead_node=node, leaves=len(owed), outcome="dead_process_reaped")

    # -- questions --------------------------------------------------------------

    def on_asked(self, message: Asked) -> None:
        """Another process asks: answer from the local hub into its reply list."""
        if message.node == self.node_id:
            return
        answer = self._hub().presence.answer(message.kind, message.arg)
        task = asyncio.ensure_future(self._reply(message.reply_key, frames.encode({"answer": answer})))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _reply(self, key: str, body: bytes) -> None:
        redis = self.store.redis
        if redis is None:
            return
        pipe = redis.pipeline(transaction=True)
        pipe.rpush(key, body)
        pipe.expire(key, REPLY_TTL)
        try:
            await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log_op("redis", logging.WARNING, node=self.node_id, detail=str(exc), outcome="answer_not_sent")

    async def gather(self, kind: str, arg: str) -> list[Any]:
        """Every other live process's answer to ``kind`` about ``arg`` (see the
        module doc); LIMIT_EXCEEDED while ``MAX_GATHERS`` questions are in flight."""
        if self._gathering >= MAX_GATHERS:
            raise PubSubError(LIMIT_EXCEEDED, f"more than {MAX_GATHERS} cluster-wide queries in flight; retry later")
        self._gathering += 1
        try:
            return await self.store.call(self._gather(kind, arg))
        finally:
            self._gathering -= 1

    async def _gather(self, kind: str, arg: str) -> list[Any]:
        redis = self.store.redis
        assert redis is not None
        key = f"{self.keys.prefix}reply:{secrets.token_hex(8)}"
        pipe = redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.nodes, time.time(), "+inf")
        pipe.publish(self.keys.bus, question(self.node_id, key, kind, arg))
        nodes, _ = await pipe.execute()
        expected = sum(1 for node in nodes if node.decode() != self.node_id)
        answers: list[Any] = []
        deadline = time.monotonic() + GATHER_WAIT
        try:
            while len(answers) < expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                popped = await redis.blpop([key], timeout=max(left, 0.01))
                if popped is None:
                    break
                answers.append(json.loads(popped[1])["answer"])
        finally:
            await redis.delete(key)
        return answers
