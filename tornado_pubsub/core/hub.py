"""The local side of a node: connections, their queues, local subscriptions
and fan-out into queues.

A backend (``backends.base.Backend``: in memory, or on Redis) decides *what*
is published and in which order, and hands each event to the hub; the hub
puts it into the queues of this process's subscribers, never waiting on any
of them.  The transport drains each queue; one slow reader cannot slow a
publisher or any other reader.  ``core.node.Node`` composes the two.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import LIMIT_EXCEEDED, SHUTTING_DOWN, SLOW, SLOW_CONSUMER, Disconnect, PubSubError
from tornado_pubsub.core.history import Event, EventList
from tornado_pubsub.logs import log_op
from tornado_pubsub.core.outbound import EventSource, OutboundQueue, Replay
from tornado_pubsub.core.results import PublishResult, SubscribeResult

__all__ = ["Counters", "Hub", "Join", "LocalTopic", "PublishResult", "SubscribeResult", "Subscriber", "plan_resume"]

if TYPE_CHECKING:
    from tornado_pubsub.backends.base import Snapshot

#: A topic's local subscribers: Subscriber -> client_id, in subscription order.
Subscribers = dict["Subscriber", str]


class Subscriber:
    """One connection as the broker sees it: queue, subscriptions, counters.

    The core talks to the connection's transport only through ``queue``:
    frames to write, and at the end a close instruction (``OutboundQueue.close``).
    """

    __slots__ = ("id", "remote", "user", "queue", "topics", "closed", "dropped", "_broker")

    def __init__(self, hub: "Hub", conn_id: str, remote: str | None, user: str | None = None) -> None:
        self._broker = hub
        self.id = conn_id
        self.remote = remote
        self.user = user  # a token's sub; None for admin, anonymous and open connections
        self.closed = False
        self.dropped = 0
        self.topics: dict[str, str] = {}  # topic name -> client_id
        self.queue = OutboundQueue(
            hub.queue_size, hub.queue_max_bytes, hub.drop_oldest, self._count_drop
        )

    def _count_drop(self, event: Event) -> None:
        self.dropped += 1
        if event.owner is not None:  # a live event always has one (see Hub.deliver)
            event.owner.dropped += 1
        self._broker.counters.dropped += 1

    def send(self, frame: bytes) -> bool:
        """Queue a control frame for this connection; False if it was evicted instead."""
        if self.closed:
            return False
        if self.queue.offer(frame):
            return True
        self._broker.evict_slow(self)
        return False

    def idle(self) -> bool:
        """True when nothing is queued or being written."""
        return self.queue.idle()

    def client_id(self) -> str | None:
        """A label for logs: the client_id of the first subscription, if any."""
        return next(iter(self.topics.values()), None)

    def __repr__(self) -> str:
        return f"Subscriber({self.id!r}, topics={len(self.topics)})"


@dataclasses.dataclass
class Counters:
    """Process-wide totals behind /metrics (monotonic, never reset)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    slow_consumers: int = 0
    connections_total: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)

    def error(self, code: str) -> None:
        """Count one error reply with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1


def plan_resume(epoch: str, last_seq: int, first_seq: int | None, since_seq: int, given_epoch: str | None) -> tuple[bool, int]:
    """Decide a ``since_seq`` resume: ``(recovered, replay every retained seq above this)``.

    Another incarnation's position (other epoch, or a seq the topic never
    reached) replays everything retained; a resume without an epoch is taken
    to mean the current one.
    """
    if (given_epoch is not None and given_epoch != epoch) or since_seq > last_seq:
        return False, 0
    if since_seq == last_seq:
        return True, last_seq
    return first_seq is not None and first_seq <= since_seq + 1, since_seq


class LocalTopic:
    """This process's view of one topic incarnation: its subscribers here, the
    newest seq handed to the hub, and the drops of its live events here."""

    __slots__ = ("name", "epoch", "last_seq", "subscribers", "dropped")

    def __init__(self, name: str, epoch: str, last_seq: int = 0) -> None:
        self.name = name
        self.epoch = epoch
        self.last_seq = last_seq
        # Subscriber -> client_id; a dict keeps fan-out in subscription order.
        self.subscribers: Subscribers = {}
        self.dropped = 0

    def __repr__(self) -> str:
        return f"LocalTopic({self.name!r}, epoch={self.epoch!r}, last_seq={self.last_seq})"


class Join:
    """One subscribe in flight: the live events of its topic that reached the
    hub while the backend read the history, queued after the replay (the seam).

    ``arrivals`` holds ``(epoch, event)`` in arrival order; ``(epoch, None)``
    marks the deletion of that incarnation.  ``counted``: the subscription is
    new, so the figures count it from the moment the read starts.
    """

    __slots__ = ("name", "counted", "arrivals")

    def __init__(self, name: str, counted: bool) -> None:
        self.name = name
        self.counted = counted
        self.arrivals: list[tuple[str, Event | None]] = []

    def newest(self, epoch: str) -> int:
        """The newest seq of ``epoch`` that arrived meanwhile (0: none)."""
        if not self.arrivals:  # always so in memory: nothing arrives during its read
            return 0
        return max((e.seq for ep, e in self.arrivals if ep == epoch and e is not None), default=0)


def _unchanged(name: str) -> None:
    """The default ``on_change``: nobody outside the hub counts subscriptions."""


class Hub:
    """Connections, local subscriptions and local fan-out for one process.

    The backend calls ``wants``/``deliver`` for each event of a topic, in seq
    order, and ``ended`` when a topic incarnation is deleted; the node calls
    the rest.  Nothing here suspends: every method completes on the IOLoop in
    one step, so callers may rely on "no event is fanned out between two
    calls of mine that do not await".

    Threat: a hostile client controls how many connections, subscriptions
    and frames it makes, never how long the hub works per event: fan-out is
    one ``offer`` per local subscriber, and a subscriber that cannot keep up
    is dropped or evicted by its own queue, not waited for.
    """

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        queue_max_bytes: int = 1048576,
        overflow_policy: str = "drop_oldest",
        max_subscriptions_per_connection: int = 1000,
        max_connections: int = 0,
        max_connections_per_user: int = 0,
        on_change: Callable[[str], None] = _unchanged,
    ) -> None:
        self.queue_size = queue_size
        self.queue_max_bytes = queue_max_bytes
        self.drop_oldest = overflow_policy == "drop_oldest"
        self.max_subscriptions = max_subscriptions_per_connection
        self.max_connections = max_connections
        self.max_per_user = max_connections_per_user
        #: user -> open connections of that user here (users with none are absent).
        self.users: dict[str, int] = {}
        self.started = time.monotonic()
        self.draining = False
        self.counters = Counters()
        self.subscriptions = 0
        self.connections: dict[str, Subscriber] = {}
        self._ids = itertools.count(1)
        self._local: dict[str, LocalTopic] = {}
        self._joins: dict[str, list[Join]] = {}
        self._on_change = on_change  # the backend's figures follow local subscriptions
        #: Prepended to every conn_id: a worker's own (``w2-``) under ``--processes``,
        #: so ids stay unique across the workers sharing a port and a Redis.
        self.id_prefix = ""

    # -- connections -------------------------------------------------------

    def check_open(self) -> None:
        """Raise SHUTTING_DOWN once draining has begun."""
        if self.draining:
            raise PubSubError(SHUTTING_DOWN, "the server is shutting down")

    def check_admission(self, user: str | None = None) -> None:
        """Raise SHUTTING_DOWN or LIMIT_EXCEEDED if a new connection (of
        ``user``, if a token's) would be refused (the transport asks before
        its handshake, ``connect`` again after it)."""
        self.check_open()
        if self.max_connections and len(self.connections) >= self.max_connections:
            raise PubSubError(LIMIT_EXCEEDED, f"connection limit of {self.max_connections} reached")
        self.check_user_room(user)

    def check_user_room(self, user: str | None) -> None:
        """Raise LIMIT_EXCEEDED if ``user`` already holds ``max_connections_per_user``
        connections on this process (the count is per process: see README)."""
        if user is not None and self.max_per_user and self.users.get(user, 0) >= self.max_per_user:
            raise PubSubError(LIMIT_EXCEEDED, f"connection limit of {self.max_per_user} per user reached")

    def connect(self, remote: str | None, user: str | None = None) -> Subscriber:
        """Admit a connection of ``user`` (None: not a token's); raises LIMIT_EXCEEDED or SHUTTING_DOWN."""
        self.check_admission(user)
        sub = Subscriber(self, f"{self.id_prefix}c{next(self._ids)}", remote, user)
        self.connections[sub.id] = sub
        self.counters.connections_total += 1
        if user is not None:
            self.users[user] = self.users.get(user, 0) + 1
        return sub

    def set_user(self, sub: Subscriber, user: str) -> None:
        """A connection with no user authenticated as ``user`` (an ``auth`` frame):
        counted against that user's limit from now on; raises LIMIT_EXCEEDED
        (and changes nothing) when the user has no room left."""
        if sub.user == user:
            return
        self.check_user_room(user)
        self._forget_user(sub)
        sub.user = user
        self.users[user] = self.users.get(user, 0) + 1

    def _forget_user(self, sub: Subscriber) -> None:
        user = sub.user
        if user is None:
            return
        left = self.users.get(user, 0) - 1
        if left > 0:
            self.users[user] = left
        else:
            self.users.pop(user, None)

    def disconnect(self, sub: Subscriber) -> int:
        """Forget a connection and every subscription it held; returns how many."""
        sub.closed = True
        names = list(sub.topics)
        for name in names:
            self.detach(sub, name)
        sub.queue.clear()
        if self.connections.pop(sub.id, None) is not None:
            self._forget_user(sub)
        return len(names)

    def evict_slow(self, sub: Subscriber) -> None:
        """Disconnect a consumer whose queue overflowed: what it had queued is
        discarded, it gets SLOW_CONSUMER and is closed with 1013."""
        if sub.closed:
            return
        client_id = sub.client_id()
        topics = list(sub.topics)
        self.disconnect(sub)
        self.counters.slow_consumers += 1
        self.counters.error(SLOW_CONSUMER)
        log_op(
            "slow_consumer",
            logging.WARNING,
            conn_id=sub.id,
            user=sub.user,
            client_id=client_id,
            remote=sub.remote,
            topics=topics,
            outcome="disconnected",
        )
        sub.queue.close(SLOW, frames.error(PubSubError(SLOW_CONSUMER, "outbound queue overflowed; disconnecting")))

    # -- local topics ---------------------------------------------------------------

    def local_topics(self) -> list[LocalTopic]:
        """Every topic incarnation this process holds a view of."""
        return list(self._local.values())

    def local_names(self) -> set[str]:
        """Topics with subscriptions here, or with a new one being made."""
        return set(self._local) | {name for name, joins in self._joins.items() if any(j.counted for j in joins)}

    def local_figures(self, name: str) -> tuple[int, int]:
        """``(subscribers, dropped)`` of ``name`` here; a subscription being
        made already counts, so /stats right after its ack includes it."""
        lt = self._local.get(name)
        joining = sum(j.counted for j in self._joins.get(name, ()))
        if lt is None:
            return joining, 0
        return len(lt.subscribers) + joining, lt.dropped

    def incarnation(self, name: str, epoch: str, last_seq: int) -> LocalTopic:
        """The local view of ``name`` at ``epoch``, ending an older incarnation here.

        A new view starts at ``last_seq``: nothing up to there is fanned out
        by it (whoever created it got those events some other way).
        """
        lt = self._local.get(name)
        if lt is not None and lt.epoch != epoch:
            self.end(lt)
            lt = None
        if lt is None:
            lt = self._local[name] = LocalTopic(name, epoch, last_seq)
        return lt

    def end(self, lt: LocalTopic) -> int:
        """Drop the view ``lt``, telling each of its subscribers ``topic_deleted``; returns how many."""
        if self._local.get(lt.name) is lt:
            del self._local[lt.name]
        notice = frames.info("topic_deleted", topic=lt.name)
        ended = list(lt.subscribers)
        lt.subscribers.clear()
        self.subscriptions -= len(ended)
        for sub in ended:
            sub.topics.pop(lt.name, None)
            sub.send(notice)
        self._on_change(lt.name)
        return len(ended)

    def ended(self, name: str, epoch: str) -> int:
        """Incarnation ``epoch`` of ``name`` was deleted: end its view here and
        tell subscribes in flight; returns how many subscribers were told."""
        lt = self._local.get(name)
        told = self.end(lt) if lt is not None and lt.epoch == epoch else 0
        for join in self._joins.get(name, ()):
            join.arrivals.append((epoch, None))
        return told

    # -- events from the backend ---------------------------------------------------------

    def wants(self, name: str, epoch: str, seq: int) -> bool:
        """Record that event ``seq`` of ``name`` at ``epoch`` reached this
        process; True when someone here must get it (then call ``deliver``).

        An event at or below the view's newest seq is never delivered again.
        """
        lt = self._local.get(name)
        if lt is not None and lt.epoch == epoch:
            if seq <= lt.last_seq:
                return False
            lt.last_seq = seq
            return bool(lt.subscribers) or name in self._joins
        return name in self._joins

    def deliver(self, name: str, epoch: str, event: Event) -> None:
        """Queue ``event`` (that ``wants`` accepted) for every local subscriber,
        and keep it for every subscribe in flight on the topic."""
        lt = self._local.get(name)
        if lt is not None and lt.epoch == epoch:
            event.owner = lt  # its drops count against this topic
            if lt.subscribers:
                self.fan_out(lt.subscribers, event)
        joins = self._joins.get(name)
        if joins:
            for join in joins:
                join.arrivals.append((epoch, event))

    def fan_out(self, subscribers: Subscribers, event: Event) -> None:
        """Put ``event`` in every subscriber's queue, evicting those that overflow."""
        slow = None
        size = len(event.data)
        for sub in subscribers:
            if not sub.queue.offer(event, size):
                slow = slow or []
                slow.append(sub)
        if slow:  # evicting mutates ``subscribers``, so never inside the loop
            for sub in slow:
                self.evict_slow(sub)

    # -- local subscriptions ------------------------------------------------------------

    def check_room(self, sub: Subscriber, name: str) -> None:
        """Raise LIMIT_EXCEEDED if ``sub`` may not take one more subscription."""
        if name not in sub.topics and len(sub.topics) >= self.max_subscriptions:
            raise PubSubError(
                LIMIT_EXCEEDED, f"subscription limit of {self.max_subscriptions} per connection reached"
            )

    def detach(self, sub: Subscriber, name: str) -> bool:
        """End ``sub``'s local subscription to ``name``; False if it had none."""
        sub.topics.pop(name, None)
        lt = self._local.get(name)
        if lt is None or lt.subscribers.pop(sub, None) is None:
            return False
        self.subscriptions -= 1
        self._on_change(name)
        return True

    def open_join(self, name: str, counted: bool) -> Join:
        """Start keeping ``name``'s live events for a subscribe that reads history."""
        join = Join(name, counted)
        self._joins.setdefault(name, []).append(join)
        if counted:
            self._on_change(name)
        return join

    def close_join(self, join: Join) -> None:
        """Stop keeping events for ``join`` (in a ``finally``: it may have failed)."""
        joins = self._joins.get(join.name)
        if joins is not None and join in joins:
            joins.remove(join)
            if not joins:
                del self._joins[join.name]
        if join.counted:
            self._on_change(join.name)

    def admit(
        self,
        sub: Subscriber,
        lt: LocalTopic,
        client_id: str,
        *,
        last_seq: int,
        first_seq: int | None,
        replay: tuple[EventSource, int] | None,
        recovered: bool | None,
        request_id: str | None,
    ) -> SubscribeResult:
        """Queue, in order, the subscribe ack, a ``history_gap`` notice when
        ``recovered`` is False, and ``replay`` (``(source, after)``: the events
        after that seq up to ``last_seq``, as a ``Replay`` position the writer
        reads as it has room); then register the subscription.

        The caller guarantees that no live event of the topic is fanned out
        between reading ``replay`` and this call (or that it is in the join it
        ``flush``es next), so the seam has no gap and no duplicate.
        """
        name, epoch = lt.name, lt.epoch
        already = sub in lt.subscribers
        extra: dict[str, Any] = {"epoch": epoch, "last_seq": last_seq}
        if recovered is not None:
            extra["recovered"] = recovered
        if not sub.send(frames.ack(name, request_id, **extra)):
            # Evicted: its queue was full of control frames it never read.
            return SubscribeResult(name, epoch, last_seq, 0, recovered, already)
        if recovered is False:
            sub.send(self.gap_notice(name, epoch, first_seq, last_seq))
        if not already:
            lt.subscribers[sub] = client_id
            sub.topics[name] = client_id
            self.subscriptions += 1
            self._on_change(name)
        replayed = 0
        if replay is not None:
            # From the oldest retained seq at most: a loss already told by the
            # notice above is not told again by the replay.
            source, after = replay
            after = max(after, (first_seq if first_seq is not None else last_seq + 1) - 1)
            if after < last_seq:  # the whole replay, whatever the queue's bounds
                sub.queue.offer_replay(Replay(name, epoch, source, after, last_seq))
                replayed = last_seq - after
        return SubscribeResult(name, epoch, last_seq, replayed, recovered, already)

    def flush(self, sub: Subscriber, lt: LocalTopic, join: Join, last_seq: int) -> None:
        """Queue for a new subscription the live events its join kept (the seam),
        whole like the replay; a deletion among them ends the view."""
        kept: list[Event] = []
        for epoch, event in join.arrivals:
            if epoch != lt.epoch:
                continue
            if event is None:  # deleted while we read its history
                self.end(lt)
                return
            if event.seq > last_seq:
                kept.append(event)
        if kept:
            sub.queue.offer_replay(Replay(lt.name, lt.epoch, EventList(kept), last_seq, kept[-1].seq))

    def resume(self, lt: LocalTopic, snap: Snapshot) -> tuple[int, bool]:
        """Catch ``lt``'s subscribers up after the backend missed events for a
        while; ``snap`` read what is retained after ``lt.last_seq``.  Queues a
        ``history_gap`` notice first when it does not cover the loss (or the
        incarnation changed).  Returns ``(events queued, gap)``."""
        recovered, after = plan_resume(snap.epoch, snap.last_seq, snap.first_seq, lt.last_seq, lt.epoch)
        if not recovered:
            lt.epoch = snap.epoch
            notice = self.gap_notice(lt.name, snap.epoch, snap.first_seq, snap.last_seq)
            for sub in list(lt.subscribers):
                sub.send(notice)
        caught = 0
        for event in snap.events:
            if event.seq > after:
                event.owner = lt
                self.fan_out(lt.subscribers, event)
                caught += 1
        lt.last_seq = snap.last_seq
        return caught, not recovered

    @staticmethod
    def gap_notice(name: str, epoch: str, first_seq: int | None, last_seq: int) -> bytes:
        """``info history_gap``: events before ``first_seq`` are gone."""
        first = first_seq if first_seq is not None else last_seq + 1
        return frames.info("history_gap", topic=name, epoch=epoch, first_seq=first)

    # -- introspection and lifecycle -----------------------------------------------

    def queued_frames(self) -> int:
        """Frames waiting in every connection's queue (for /metrics)."""
        return sum(s.queue.qsize() for s in self.connections.values())

    def queued_bytes(self) -> int:
        """Bytes waiting for every connection: its queued frames and what its
        replays have still to send (for /metrics: a stalled replay shows here)."""
        return sum(s.queue.nbytes + s.queue.replay_pending() for s in self.connections.values())

    def begin_shutdown(self) -> None:
        """Refuse new operations and tell every connection ``shutting_down``."""
        if self.draining:
            return
        self.draining = True
        notice = frames.info("shutting_down")
        for sub in list(self.connections.values()):
            sub.send(notice)

    def idle(self) -> bool:
        """True when every connection's queue is flushed."""
        return all(sub.idle() for sub in self.connections.values())

    def close_all(self, disconnect: Disconnect) -> None:
        """Close every connection with ``disconnect``.  One whose queue is not
        flushed by now (a peer that stopped reading) is aborted: it would not
        read our close frame either, and waiting for its reply would hold a
        shutdown past its deadline."""
        for sub in self.connections.values():
            sub.queue.close(disconnect, abort=not sub.queue.idle())
