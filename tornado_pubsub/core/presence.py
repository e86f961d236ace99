"""Who is here (PROTOCOL.md 5.4 and 6), on this process: presence lists,
``join``/``leave`` notices for the subscriptions that asked for them, the
rows of ``GET /connections`` and an administrator's disconnect of a user.

The hub calls ``joined``/``left`` whenever a local subscription starts or
ends, whatever ended it (unsubscribe, disconnect, a reset TCP connection,
slow-consumer eviction, revocation).  The node asks the backend for the
other processes' answers (``Backend.gather``) and adds this one's
(``answer``); with the Redis backend the notices of other processes arrive
through ``remote``.

Threat and cost: a topic may have 10,000 subscribers of which few watch.
Watchers are kept in a per-topic set, so a join or leave costs one frame
render plus one queue offer per *watcher*, never a walk over the topic's
subscribers.  Listings are bounded (``PRESENCE_LIMIT``, ``CONNECTIONS_LIMIT``)
so one request cannot build a reply as large as the server's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import ADMIN_DISCONNECT

if TYPE_CHECKING:
    from tornado_pubsub.core.hub import Hub, Subscriber

#: Most entries a presence reply lists; past it the reply says ``truncated: true``.
PRESENCE_LIMIT = 1000
#: Most rows ``GET /connections`` lists; past it the reply says ``truncated: true``.
CONNECTIONS_LIMIT = 10000

#: One presence entry: ``{"conn_id", "client_id", "user"}``.
Entry = dict[str, Any]
#: Where a local join or leave goes to reach the other processes (the backend).
Share = Callable[[str, str, Entry], None]


def _no_share(msg: str, topic: str, entry: Entry) -> None:
    """The default: one process, nobody else to tell."""


def entry(sub: "Subscriber", client_id: str) -> Entry:
    """The presence entry of ``sub``'s subscription labelled ``client_id``."""
    return {"conn_id": sub.id, "client_id": client_id, "user": sub.user}


class Presence:
    """This process's presence watchers and the local answers about who is here.

    Contract: ``joined``/``left`` never suspend, and queue each notice as a
    control frame (``Subscriber.send``: never dropped by ``drop_oldest``; a
    watcher whose queue holds only control frames is evicted like any slow
    consumer).  A watcher is never told about its own subscription.
    """

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.share: Share = _no_share  # set by the node to its backend's
        #: topic -> watching subscribers (a dict as an ordered set).
        self.watchers: dict[str, dict["Subscriber", None]] = {}

    # -- watchers --------------------------------------------------------------

    def watch(self, sub: "Subscriber", name: str, on: bool) -> None:
        """``sub`` (subscribed to ``name``) wants join/leave notices, or no longer."""
        if on:
            self.watchers.setdefault(name, {})[sub] = None
        else:
            self._unwatch(sub, name)

    def _unwatch(self, sub: "Subscriber", name: str) -> None:
        watching = self.watchers.get(name)
        if watching is not None:
            watching.pop(sub, None)
            if not watching:
                del self.watchers[name]

    def joined(self, name: str, sub: "Subscriber", client_id: str) -> None:
        """A local subscription to ``name`` started: tell watchers here and elsewhere."""
        found = entry(sub, client_id)
        self.notify("join", name, found, sub)
        self.share("join", name, found)

    def left(self, name: str, sub: "Subscriber", client_id: str) -> None:
        """A local subscription to ``name`` ended: it stops watching, the others are told."""
        self._unwatch(sub, name)
        gone = entry(sub, client_id)
        self.notify("leave", name, gone, sub)
        self.share("leave", name, gone)

    def forget(self, name: str) -> None:
        """The topic's view ended here (deleted): its watchers were told ``topic_deleted``."""
        self.watchers.pop(name, None)

    def remote(self, msg: str, name: str, found: Entry) -> None:
        """A join or leave on another process."""
        self.notify(msg, name, found, None)

    def notify(self, msg: str, name: str, found: Entry, source: "Subscriber | None") -> None:
        """Queue ``info <msg>`` for every watcher of ``name`` but ``source``; rendered once."""
        watching = self.watchers.get(name)
        if not watching:
            return
        notice = frames.info(msg, topic=name, **found)
        for watcher in list(watching):  # sending may evict a watcher, which mutates the set
            if watcher is not source:
                watcher.send(notice)

    # -- local answers -------------------------------------------------------------

    def members(self, name: str, limit: int = PRESENCE_LIMIT + 1) -> list[Entry]:
        """At most ``limit`` entries of ``name``'s subscribers here, in subscription order."""
        lt = self.hub.view(name)
        if lt is None:
            return []
        found = []
        for sub, client_id in lt.subscribers.items():
            if len(found) >= limit:
                break
            found.append(entry(sub, client_id))
        return found

    def rows(self, limit: int = CONNECTIONS_LIMIT + 1) -> list[dict[str, Any]]:
        """At most ``limit`` rows of ``GET /connections`` for this process's connections."""
        rows = []
        for sub in self.hub.connections.values():
            if len(rows) >= limit:
                break
            rows.append(
                {
                    "conn_id": sub.id,
                    "user": sub.user,
                    "remote": sub.remote,
                    "connected_at": frames.timestamp(sub.connected_at),
                    "topics": list(sub.topics),
                    "queued": sub.queue.qsize(),
                    "dropped": sub.dropped,
                }
            )
        return rows

    def disconnect_user(self, user: str) -> int:
        """Close every connection of ``user`` here with 4403; returns how many.

        Each is forgotten at once (its subscriptions end, so watchers get
        ``leave``, and it is gone from ``rows``), then its writer sends what
        was queued and the close; a peer that stopped reading is aborted.
        """
        hub = self.hub
        mine = [sub for sub in hub.connections.values() if sub.user == user and not sub.closed]
        for sub in mine:
            hub.force_close(sub, "admin_disconnect", ADMIN_DISCONNECT, abort=not sub.queue.idle())
        return len(mine)

    def answer(self, kind: str, arg: str) -> Any:
        """This process's answer to another's question (``Backend.gather``)."""
        if kind == "presence":
            return self.members(arg)
        if kind == "connections":
            return self.rows()
        if kind == "disconnect":
            return self.disconnect_user(arg)
        return None
