"""The backend interface: what a broker backend decides, and the small typed
values it answers with.

A backend owns what is *shared*: the topic table (name -> epoch), each
topic's seq counter and history, and cluster-wide figures.  It never touches
a connection: the node (``core.node.Node``) composes it with the local hub
(``core.hub.Hub``: connections, their queues, local subscriptions, fan-out),
and the backend hands the hub every event of a topic, in seq order, through
``Hub.wants`` / ``Hub.deliver`` and every deletion through ``Hub.ended``.

Two backends implement it: ``backends.memory.MemoryBackend`` (one process;
no call ever suspends) and ``backends.redis.backend.RedisBackend`` (several
processes on one Redis; calls suspend on Redis and on this process's bus).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from tornado_pubsub.core.history import Event

if TYPE_CHECKING:
    from tornado_pubsub.core.hub import Hub
    from tornado_pubsub.core.outbound import EventSource


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic incarnation just created: its name, epoch and (always 0) last seq."""

    name: str
    epoch: str
    last_seq: int = 0


@dataclasses.dataclass(slots=True)  # not frozen: made per call, and frozen init costs
class Published:
    """What the store did with one publish: the seq it took (or already had)."""

    epoch: str
    seq: int
    duplicate: bool


@dataclasses.dataclass(slots=True)
class Wanted:
    """What a subscribe asks the history for.

    ``after``: every retained event with a seq above ``n`` (all retained
    events when ``n`` is not a position of the current incarnation, i.e.
    ``epoch`` differs or ``n`` is beyond its last seq); ``last``: the newest
    ``n``; ``none``: nothing.
    """

    mode: Literal["none", "after", "last"] = "none"
    n: int = 0
    epoch: str | None = None


#: A subscribe that replays nothing.
NOTHING = Wanted()


@dataclasses.dataclass(slots=True)
class Snapshot:
    """A topic as one atomic read saw it, and the events ``Wanted`` asked for,
    oldest first.  ``first_seq`` is the oldest retained seq (None: none).

    ``source``: where a replay reads those events later, as its writer has
    room (``core.outbound.Replay``) - the topic's own history, so a replay
    pins no copy (``events`` is then empty).  None: read from ``events``."""

    epoch: str
    last_seq: int
    first_seq: int | None
    events: Sequence[Event]
    source: "EventSource | None" = None


@dataclasses.dataclass(frozen=True, slots=True)
class TopicFigures:
    """One topic's figures over every process sharing the backend."""

    name: str
    epoch: str
    last_seq: int
    subscribers: int
    dropped: int
    retained_bytes: int | None = None  # history this process holds (None: kept in the backend's store)


@dataclasses.dataclass(frozen=True, slots=True)
class Totals:
    """Counts behind /health; ``processes`` is None for a one-process backend."""

    topics: int
    subscribers: int
    processes: int | None = None


class Backend(Protocol):
    """Topics, seq numbers, history and figures, behind one node.

    Every method runs on the IOLoop thread.  Every failure is a
    ``PubSubError`` (TOPIC_NOT_FOUND, TOPIC_EXISTS, LIMIT_EXCEEDED, or
    INTERNAL when the store is unreachable): never a store exception and
    never a ``CancelledError`` that the caller did not cause itself.

    Ordering: every event of a topic reaches ``Hub.wants``/``Hub.deliver``
    once, in seq order, on every process; a deletion reaches ``Hub.ended``
    after the topic's last event.  A call that awaits may let other calls and
    deliveries run meanwhile; the node's subscribe seam relies only on
    ``snapshot``'s contract below.
    """

    #: Events kept per topic (``last_n`` is clamped to it).
    history_size: int

    def attach(self, hub: Hub) -> None:
        """Bind the local hub events and deletions are handed to (once, before ``start``)."""

    def local_changed(self, name: str) -> None:
        """The hub's subscriptions to ``name`` changed (or a subscribe began or
        ended); never suspends."""

    async def start(self) -> None:
        """Acquire what the backend needs; may suspend on the store (bounded)."""

    async def stop(self) -> None:
        """Release what ``start`` acquired."""

    async def create(self, name: str) -> TopicInfo:
        """Create ``name`` with a fresh epoch, atomically: TOPIC_EXISTS, or
        LIMIT_EXCEEDED at ``max_topics``."""

    async def delete(self, name: str) -> int:
        """Delete ``name`` everywhere (TOPIC_NOT_FOUND if absent); returns once
        this process's subscribers were told, with how many were."""

    async def publish(self, name: str, message_id: str, payload: Any) -> Published:
        """Number, retain and announce one message atomically (TOPIC_NOT_FOUND).

        Returns once the event is in the queues of this process's subscribers.
        A ``message_id`` still retained is not published again: the original
        seq comes back with ``duplicate=True``.

        Order: a publish takes its place before the call first suspends, so
        publishes called one after another get increasing seqs in that order
        even when several are in flight at once (``Session.feed`` pipelines
        a connection's publishes on that promise).
        """

    async def snapshot(self, name: str, wanted: Wanted) -> Snapshot:
        """Read ``name``'s epoch, last seq and wanted history in one atomic step
        (TOPIC_NOT_FOUND).

        Seam contract: when it returns, every event up to ``last_seq`` has
        already been handed to the hub, and every later one will be, so a
        subscription joined now misses nothing and gets nothing twice.
        """

    async def exists(self, name: str) -> bool:
        """Whether ``name`` exists now."""

    async def counted(self, name: str) -> None:
        """Return once the cluster-wide figures hold this process's current
        subscriptions to ``name`` (best effort, bounded)."""

    def topic_count(self) -> int:
        """Topics this process knows of, without suspending (for /metrics)."""

    def knows(self, name: str) -> bool:
        """Whether this process knows ``name`` exists, without suspending
        (stale while news of a create or delete elsewhere is on its way)."""

    async def topics(self) -> list[TopicFigures]:
        """Every topic with its cluster-wide figures, sorted by name."""

    async def totals(self) -> Totals:
        """Topic and subscription counts for /health (INTERNAL when the store is down)."""

    def identity(self) -> dict[str, Any]:
        """Extra /health fields naming this process (``{}`` for one process)."""

    def share(self, msg: str, name: str, entry: dict[str, Any]) -> None:
        """Tell the other processes' presence watchers of ``name`` about a local
        ``join`` or ``leave`` (``msg``); never suspends, best effort, in order."""

    async def gather(self, kind: str, arg: str) -> list[Any]:
        """Ask every other live process the question ``kind`` ("presence" of
        topic ``arg``, "connections", "disconnect" user ``arg``) and return
        their answers (``Presence.answer``); ``[]`` for one process.  Bounded
        in time: a process that does not answer (killed, stalled) is left out."""
