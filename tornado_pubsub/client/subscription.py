"""One topic's subscription on the client side: its position (epoch, last seq),
in-order delivery to a handler or an ``async for`` loop, and how it ends.

No socket here: ``PubSubClient`` feeds frames in (``on_ack``, ``on_event``,
``on_history_gap``) in the order it reads them, and this module sorts them
(drops repeats, detects jumps) and buffers them for the consumer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import logging
from typing import Any, Awaitable, Callable, Union

from tornado_pubsub.core.errors import PubSubError

log = logging.getLogger("tornado_pubsub.client")

#: Messages one subscription buffers for a consumer that has not taken them yet.
DEFAULT_MAX_BUFFERED = 10000

#: Why a subscription ended.  Every reason but UNSUBSCRIBED (the owner asked for
#: it) makes ``async for`` raise ``SubscriptionEnded``.
UNSUBSCRIBED = "unsubscribed"
TOPIC_DELETED = "topic_deleted"  # the server said so (info topic_deleted)
REVOKED = "revoked"  # a refreshed token no longer allows it (info subscription_revoked)
# Others come from the client: "closed" (close() or reconnect=False and the
# connection dropped), "gave_up" (max_attempts), "unauthorized", or a
# resubscribe refused after a reconnect, named for its code: "topic_not_found",
# "limit_exceeded", "forbidden", ...


@dataclasses.dataclass(frozen=True)
class Message:
    """One event as the handler sees it; ``seq`` is meaningful with ``epoch``."""

    topic: str
    id: str
    payload: Any
    seq: int | None
    ts: str
    epoch: str | None


@dataclasses.dataclass(frozen=True)
class Gap:
    """Messages the handler will never see.

    ``reason`` is ``epoch_changed`` (the topic was recreated or the server
    restarted: seqs start again), ``evicted`` (seqs ``after_seq+1 ..
    first_seq-1`` left the server's history while disconnected), ``dropped``
    (the server dropped them for a slow reader) or ``overflow`` (this
    client's own buffer dropped them: the consumer fell ``max_buffered``
    messages behind).  The next message delivered has seq ``first_seq`` in
    ``epoch``.
    """

    topic: str
    reason: str
    epoch: str | None
    after_seq: int | None
    first_seq: int


class SubscriptionEnded(PubSubError):
    """Raised by ``async for`` over a subscription that ended for any reason
    but ``unsubscribe()``, and passed to ``on_end`` for every end.  ``reason``
    is one of the reasons above; ``code`` is it in capitals."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(reason.upper(), f"subscription to {topic!r} ended: {reason.replace('_', ' ')}")
        self.topic = topic
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


Handler = Callable[[Message], Union[None, Awaitable[None]]]
GapHandler = Callable[[Gap], Union[None, Awaitable[None]]]
EndHandler = Callable[[SubscriptionEnded], Union[None, Awaitable[None]]]


async def call_back(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Run a user callback (plain or coroutine function); its failure is logged, never raised:
    one bad callback must not stop the client's reader or a subscription."""
    if callback is None:
        return
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("callback %r failed on %r", callback, args)


class Subscription:
    """One topic's subscription: position (epoch, last seq) and in-order delivery.

    Frames are sorted here on the reader's side (dedupe, gap detection) and
    buffered for the consumer: a ``handler`` run by a per-subscription task
    (so a slow or awaiting handler never stops the client from reading acks
    and pongs), or, without a handler, ``async for message in subscription``.

    Memory: the buffer holds at most ``max_buffered`` messages.  A consumer
    that falls further behind (or never iterates) loses the oldest buffered
    messages, reported as one ``Gap`` with reason ``overflow`` just before
    the first message after them: the newest data wins, as under the server's
    ``drop_oldest`` policy, and the position (for resume) is unaffected.

    Ending: ``ended`` resolves to the reason, ``on_end`` receives a
    ``SubscriptionEnded`` (every reason, including ``unsubscribed``), and
    ``async for`` raises it after the buffered messages (it simply stops
    after ``unsubscribe()``).
    """

    def __init__(
        self,
        topic: str,
        handler: Handler | None,
        on_gap: GapHandler | None,
        last_n: int | None = None,
        *,
        on_end: EndHandler | None = None,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        wait_for_topic: bool = False,
    ) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self.topic = topic
        self.handler = handler
        self.on_gap = on_gap
        self.on_end = on_end
        self.last_n = last_n  # messages to replay when subscribing without a known position
        self.max_buffered = max_buffered
        #: Keep the subscription when the topic is deleted or missing after a
        #: reconnect, and subscribe again once it exists (the client retries).
        self.wait_for_topic = wait_for_topic
        self.waiting = False  # the topic is gone and the client is retrying
        self.epoch: str | None = None
        #: seq of the last message buffered for the consumer (None: not known yet).
        self.last_seq: int | None = None
        self.acked = False
        self.duplicates = 0  # events ignored because their seq was already seen
        self.gaps = 0
        self.overflowed = 0  # messages this client dropped for a consumer that fell behind
        self._resume_from = 0  # since_seq for a resume before the first event arrived
        self._before_resume: tuple[str | None, int | None] = (None, None)
        self._buffer: collections.deque[Message | Gap] = collections.deque()
        self._buffered = 0  # Messages (not Gaps) in _buffer
        self._ready = asyncio.Event()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._deliver()) if handler is not None else None

    # -- reader side: called synchronously, in frame order -------------------------

    def subscribe_frame(self) -> dict[str, Any]:
        """The subscribe frame: a resume when a position is known, else ``last_n``."""
        frame: dict[str, Any] = {"type": "subscribe", "topic": self.topic}
        if self.epoch is not None or self.last_seq is not None:
            since = self.last_seq if self.last_seq is not None else self._resume_from
            frame["since_seq"] = since
            if self.epoch is not None:
                frame["epoch"] = self.epoch
            self._before_resume = (self.epoch, since)
        elif self.last_n:
            frame["last_n"] = self.last_n
        return frame

    def on_ack(self, frame: dict[str, Any]) -> None:
        resumed = "recovered" in frame
        self.epoch = frame.get("epoch")
        last = frame.get("last_seq")
        if not resumed and isinstance(last, int):
            if self.last_n:  # a replay of up to last_n messages follows; a resume would ask for the same
                self._resume_from = max(0, last - self.last_n)
            else:
                self.last_seq = last
        self.acked = True
        self.waiting = False

    def on_history_gap(self, frame: dict[str, Any]) -> None:
        old_epoch, after = self._before_resume
        epoch = frame.get("epoch")
        first = int(frame.get("first_seq") or 1)
        reason = "epoch_changed" if old_epoch is not None and old_epoch != epoch else "evicted"
        self._gap(Gap(self.topic, reason, epoch, after, first))

    def on_event(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int) and self.last_seq is not None:
            if seq <= self.last_seq:
                self.duplicates += 1
                return
            if seq > self.last_seq + 1:
                self._gap(Gap(self.topic, "dropped", self.epoch, self.last_seq, seq))
        if isinstance(seq, int):
            self.last_seq = seq
        message = frame.get("message") or {}
        self._put(Message(self.topic, message.get("id"), message.get("payload"), seq, frame.get("ts", ""), self.epoch))

    def _gap(self, gap: Gap) -> None:
        self.gaps += 1
        self.last_seq = gap.first_seq - 1
        self._put(gap)

    def _put(self, item: Message | Gap) -> None:
        self._buffer.append(item)
        if isinstance(item, Message):
            self._buffered += 1
            if self._buffered > self.max_buffered:
                self._drop_oldest()
        self._ready.set()

    def _drop_oldest(self) -> None:
        """Drop the oldest buffered message; one Gap at the head then covers
        everything dropped (merged with a gap that was already there)."""
        reason, epoch, after = "overflow", None, None
        while True:  # the buffer holds more than max_buffered >= 1 messages: one is found
            head = self._buffer.popleft()
            if isinstance(head, Gap):  # a real gap is the stronger news: keep its reason
                reason, after = head.reason, head.after_seq if after is None else after
                continue
            self._buffered -= 1
            self.overflowed += 1
            if after is None and head.seq is not None:
                after = head.seq - 1
            break
        nxt = self._buffer[0]
        if isinstance(nxt, Gap):  # an overflow gap from the previous drop: extend it backwards
            self._buffer.popleft()
            reason = nxt.reason if reason == "overflow" else reason
            nxt_first, epoch = nxt.first_seq, nxt.epoch
        else:
            nxt_first, epoch = nxt.seq or 0, nxt.epoch
        self._buffer.appendleft(Gap(self.topic, reason, epoch, after, nxt_first))

    def end(self, reason: str) -> None:
        """Stop delivering after what is already buffered; ``ended`` resolves to ``reason``."""
        if self.ended.done():
            return
        self.ended.set_result(reason)
        self._ready.set()
        if reason not in (UNSUBSCRIBED, "closed") and self.on_end is None:
            log.warning("subscription to %s ended: %s", self.topic, reason)
        if self.on_end is not None:
            asyncio.ensure_future(call_back(self.on_end, SubscriptionEnded(self.topic, reason)))

    # -- consumer side -----------------------------------------------------------------

    async def _next(self) -> Message | Gap | None:
        """The next buffered item, or None once the subscription ended and the buffer is empty."""
        while not self._buffer:
            if self.ended.done():
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._buffer.popleft()
        if isinstance(item, Message):
            self._buffered -= 1
        return item

    async def _report_gap(self, gap: Gap) -> None:
        if self.on_gap is None:
            log.warning("subscription to %s has a gap: %s", self.topic, gap)
        else:
            await call_back(self.on_gap, gap)

    async def _deliver(self) -> None:
        while (item := await self._next()) is not None:
            if isinstance(item, Gap):
                await self._report_gap(item)
            else:  # one failing message must not end the subscription
                await call_back(self.handler, item)

    def __aiter__(self) -> "Subscription":
        if self.handler is not None:
            raise TypeError(f"the subscription to {self.topic!r} delivers to its handler; subscribe without one to iterate")
        return self

    async def __anext__(self) -> Message:
        """The next message in seq order; gaps go to ``on_gap`` first, in stream order.

        Raises ``StopAsyncIteration`` after ``unsubscribe()``, ``SubscriptionEnded``
        after any other end (topic deleted, client closed, resume refused)."""
        while True:
            item = await self._next()
            if item is None:
                reason = self.ended.result()
                if reason == UNSUBSCRIBED:
                    raise StopAsyncIteration
                raise SubscriptionEnded(self.topic, reason)
            if isinstance(item, Gap):
                await self._report_gap(item)
                continue
            return item

    async def wait(self) -> str:
        """Wait until the subscription ends and a handler has handled what was buffered; returns why it ended."""
        reason = await self.ended
        if self._task is not None:
            await asyncio.shield(self._task)
        return reason

    def cancel(self) -> None:
        """End as ``closed`` and drop what is still buffered."""
        self.end("closed")
        self._buffer.clear()
        self._buffered = 0
        if self._task is not None:
            self._task.cancel()
