"""How ``PubSubClient`` gets its subscriptions back: resubscribing after a
reconnect, and, for a subscription with ``wait_for_topic``, waiting for a
vanished topic to exist again.  A subscription that cannot come back is
ended with the reason, never dropped silently."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from tornado_pubsub.client.errors import CLOSED, CONNECTION_LOST, TIMEOUT, ClientError
from tornado_pubsub.client.subscription import Subscription
from tornado_pubsub.core.errors import SHUTTING_DOWN, TOPIC_NOT_FOUND

log = logging.getLogger("tornado_pubsub.client")

# A request that failed for one of these reasons may be sent again once the
# client has reconnected; for a publish this is safe because a resent message
# id is acked as a duplicate, never stored twice.
RETRYABLE = (CONNECTION_LOST, SHUTTING_DOWN)


class Recovery:
    """Resubscription for a client with ``subscriptions``, a ``_closing`` event,
    ``connected``, backoff settings and ``_subscribe_request``."""

    subscriptions: dict[str, Subscription]
    backoff_min: float
    backoff_max: float
    _closing: asyncio.Event

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def _subscribe_request(self, sub: Subscription) -> dict[str, Any]:
        raise NotImplementedError

    async def _resubscribe_all(self) -> None:
        for sub in [s for s in self.subscriptions.values() if s.acked and not s.waiting]:
            try:
                await self._subscribe_request(sub)
            except ClientError as exc:
                if exc.code in RETRYABLE or exc.code == CLOSED:
                    continue  # the next connection resubscribes it again
                if exc.code == TOPIC_NOT_FOUND and sub.wait_for_topic:
                    self._await_topic(sub)
                    continue
                # Anything else (TOPIC_NOT_FOUND, LIMIT_EXCEEDED, ...) would leave it
                # silently dead: end it, so its owner hears why.
                log.warning("cannot resume %s: %s", sub.topic, exc.message)
                self._end(sub, exc.code.lower())

    def _end(self, sub: Subscription, reason: str) -> None:
        if self.subscriptions.get(sub.topic) is sub:
            del self.subscriptions[sub.topic]
        sub.end(reason)

    def _await_topic(self, sub: Subscription) -> None:
        """The topic of ``sub`` is gone (deleted, or missing after a restart): keep
        the subscription and its position, and subscribe again, with backoff,
        until the topic exists; the new incarnation's epoch makes the server
        report the gap (``history_gap``), which reaches ``on_gap``."""
        if sub.waiting:
            return
        sub.waiting = True
        log.warning("topic %s does not exist; resubscribing once it exists again", sub.topic)
        asyncio.ensure_future(self._resubscribe_when_created(sub))

    async def _resubscribe_when_created(self, sub: Subscription) -> None:
        attempt = 0
        while self.subscriptions.get(sub.topic) is sub and not self._closing.is_set() and sub.waiting:
            delay = min(self.backoff_max, self.backoff_min * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
                return  # closed while waiting
            except asyncio.TimeoutError:
                pass
            if not self.connected:
                continue  # never mind the reconnect here: the next attempt uses the new connection
            try:
                await self._subscribe_request(sub)
            except ClientError as exc:
                if exc.code in (TOPIC_NOT_FOUND, TIMEOUT, CLOSED) or exc.code in RETRYABLE:
                    continue
                log.warning("cannot resume %s: %s", sub.topic, exc.message)
                self._end(sub, exc.code.lower())
                return
            log.info("topic %s exists again; subscription resumed", sub.topic)
