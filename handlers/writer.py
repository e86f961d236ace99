"""The one writer per connection: drains its bounded queue onto a transport.

A transport is anything that frames and writes bytes and closes with a code
(``Transport``); ``/ws`` is one, the SSE stream (``handlers.sse``) another.  The writer
owns no protocol logic: the queue holds finished frames, and ends with a
close instruction when the core wants the connection gone.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from tornado_pubsub.core.errors import Disconnect
from tornado_pubsub.core.hub import Counters
from tornado_pubsub.core.inline import spawn
from tornado_pubsub.core.outbound import Close, Item, OutboundQueue
from tornado_pubsub.server.tornado_patches import AnsweringStream

CLOSED_ERRORS = (tornado.websocket.WebSocketClosedError, StreamClosedError)


class Transport(Protocol):
    """What the writer needs of a connection: frame, write, close.

    ``end`` may be called while a ``send`` is still pending (a close does
    not wait for a reader that stopped reading); the transport then queues
    its close behind the pending bytes, or drops the connection (``abort``).
    """

    #: A batch of queued items as the one write that carries them, and how
    #: many events it holds (see ``framing``).  Called once per batch.
    frame: Callable[[list[Item]], tuple[bytes, int]]

    def writable(self) -> bool:
        """False once the connection is closing or closed."""
        ...

    def send(self, data: bytes) -> "asyncio.Future[None] | None":
        """Write ``data``; None when it was written at once, else a future for
        when it is.  Raises one of ``CLOSED_ERRORS`` once not ``writable``."""
        ...

    def end(self, disconnect: Disconnect, abort: bool) -> None:
        """Close with ``disconnect``; ``abort``: drop the connection at once."""
        ...


def send_direct(stream: IOStream, data: bytes) -> "asyncio.Future[None] | None":
    """Write ``data`` to ``stream``; None when the kernel took all of it at once.

    With Tornado's write buffer empty the bytes go straight to the socket: one
    ``send`` and no Future or buffer bookkeeping per batch.  What the kernel
    does not take, and any socket error, goes through ``stream.write``, so
    Tornado buffers, reports and closes exactly as usual.  Valid only for
    bytes Tornado would write unchanged (no per-message compression, no TLS).
    """
    cls = stream.__class__
    if (cls is IOStream or cls is AnsweringStream) and not stream.writing():
        try:
            sent = stream.socket.send(data)
        except OSError:  # EAGAIN, or an error stream.write will meet and report
            sent = 0
        if sent == len(data):
            return None
        if sent:
            data = memoryview(data)[sent:]  # type: ignore[assignment]
    return stream.write(data)


def framing(header: Callable[[int], bytes]) -> Callable[[list[Item]], tuple[bytes, int]]:
    """``Transport.frame`` for a transport that writes every item as
    ``header(size)`` followed by the item's bytes (WebSocket frames)."""

    def frame(batch: list[Item]) -> tuple[bytes, int]:
        events = 0
        parts: list[bytes] = []
        for item in batch:
            if item.__class__ is not bytes:  # an event (live or replayed), shared by all
                item = item.data  # type: ignore[union-attr]
                events += 1
            parts.append(header(len(item)))  # type: ignore[arg-type]
            parts.append(item)  # type: ignore[arg-type]
        return b"".join(parts), events

    return frame


def _close_now(queue: OutboundQueue, transport: Transport, batch: list[Item | Close]) -> None:
    """Carry out the queue's close instruction: write ``batch`` up to it
    (without waiting for the write), then end the transport."""
    close = queue.closing
    assert close is not None
    for index, item in enumerate(batch):
        if item is close:
            batch = batch[:index]
            break
    if batch and transport.writable():
        pending = transport.send(transport.frame(batch)[0])
        if pending is not None:
            pending.add_done_callback(retrieve_error)
    transport.end(close.disconnect, close.abort)


def _close_unwaited(queue: OutboundQueue, transport: Transport) -> None:
    """A close met a write the peer is not taking: send the frames queued
    before the close (unfinished replays are left out: they could be any
    size, and the peer is not reading) and end the connection now."""
    _close_now(queue, transport, queue.drain_nowait(replays=False))


def start_writer(queue: OutboundQueue, transport: Transport, counters: Counters) -> "asyncio.Future[None]":
    """Start ``write_loop`` (from the next loop pass); the future of its end.
    Cancel it when the connection is gone."""
    return spawn(write_loop(queue, transport, counters))


async def write_loop(queue: OutboundQueue, transport: Transport, counters: Counters) -> None:
    """Drain ``queue`` onto ``transport`` until it closes; run it with
    ``start_writer`` (it waits with ``queue.next_item()``, which only a
    coroutine run by ``inline.spawn`` may await).

    What is queued goes out in batches of at most ``WRITE_MAX`` bytes (a
    single larger frame alone), one write each, and the next batch waits
    until the transport took this one, so the queue stays the only buffer: a
    reader that stops reading costs the queue's bound plus one write.
    Replays are read from the history batch by batch (``OutboundQueue.take``).
    A close instruction (``OutboundQueue.close``) is carried out after the
    frames queued before it, at once even while a write waits on a reader
    that stopped reading.  ``counters.delivered`` counts events written.
    """
    frame = transport.frame
    next_item = queue.next_item()
    try:
        while True:
            first = await next_item
            batch = queue.take(first)
            if not batch:  # a replay at the head reads its next page from the store first
                await queue.refill()
                queue.sent()
                continue
            closing = queue.closing
            if closing is not None and any(item is closing for item in batch):  # checked once a batch: a close is rare
                _close_now(queue, transport, batch)
                break
            data, events = frame(batch)
            pending = transport.send(data)  # raises a CLOSED_ERRORS once closing
            if pending is not None:
                await queue.wait_sent(pending, lambda: _close_unwaited(queue, transport))
            counters.delivered += events
            queue.sent()
    except CLOSED_ERRORS:
        pass


def retrieve_error(future: "asyncio.Future[None]") -> None:
    # A write fails when the peer has gone; that is expected, and retrieving the
    # error keeps asyncio from logging "Task exception was never retrieved".
    if not future.cancelled():
        future.exception()
