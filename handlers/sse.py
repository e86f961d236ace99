"""Server-sent events: ``GET /topics/{name}/events`` (PROTOCOL.md 7), a second
transport over the session core.

The request (its query, or ``Last-Event-ID``) becomes one ``subscribe`` that a
``Session`` handles exactly as it would a WebSocket frame; the writer
(``handlers.writer``) drains the session's queue onto the response.  Replay,
resume, permissions, queue bounds and the overflow policy are the session's
and the node's.  This module decides only the bytes on the wire (``frame``)
and when the response ends: after ``topic_deleted``, and whenever the queue
ends with its close instruction (slow consumer, shutdown).

Threat: a client that never reads costs what a WebSocket that never reads
costs (the queue's bounds, plus the one write in flight), and is dropped when
a write has not gone out for ``heartbeat_timeout``; a client that vanishes is
forgotten when Tornado notices the closed socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from tornado_pubsub.core import frames
from tornado_pubsub.core.caps import SUBSCRIBE
from tornado_pubsub.core.errors import BAD_REQUEST, TOPIC_ENDED, Disconnect, PubSubError
from tornado_pubsub.core.history import Event
from tornado_pubsub.core.identity import Identity, require
from tornado_pubsub.core.outbound import Item
from tornado_pubsub.core.session import Session
from tornado_pubsub.handlers.base import JsonHandler
from tornado_pubsub.handlers.topics import existing_name
from tornado_pubsub.handlers.writer import start_writer

#: The first bytes of every stream: how long EventSource waits before reconnecting.
RETRY = b"retry: 1000\n\n"
#: A heartbeat: a comment line, ignored by every SSE client, that keeps proxies
#: and the server's own write-progress check (``last_seen``) going.
PING = b": ping\n\n"
_EVENT = b"\nevent: event\ndata: "
_INFO = b"event: info\ndata: "
_ERROR = b"event: error\ndata: "
_END = b"\n\n"
#: After an orderly end, how long a peer may take to read the last bytes
#: before the connection is dropped (Tornado gives a WebSocket close as long).
END_GRACE = 5.0
#: A Last-Event-ID longer than this is not one we sent (epoch and seq are short).
MAX_EVENT_ID = 200


class EventStream(JsonHandler):
    """One topic as ``text/event-stream``: the transport of one ``Session``
    (see ``handlers.writer.Transport`` and ``handlers.heartbeat.Beating``).

    Before the stream starts every refusal is a JSON error (401, 403, 400,
    404, 503), checked in that order: credentials and permission first
    (``prepare``), so a refused client cannot learn which topics exist.
    """

    def initialize(self, context: Any) -> None:  # type: ignore[override]
        super().initialize(context)
        self.session: Session | None = None
        self.last_seen = time.monotonic()
        self.close_cause: str | None = None
        self._id = b"id: :"  # "id: <epoch>:", from the subscribe ack (see frame)
        self._writer: asyncio.Future[None] | None = None
        self._gone = False  # the peer closed the connection
        self._ended = False  # end() or abort() was called

    # -- before the stream --------------------------------------------------------

    async def presented_identity(self) -> Identity | None:
        # EventSource cannot set headers: the key and token may come in the query.
        return await self.context.credentials.resolve_for(self, query=True)

    def authorize(self, identity: Identity | None) -> None:
        require(identity, SUBSCRIBE, self.path_args[0])

    def subscribe_frame(self, name: str) -> dict[str, Any]:
        """The request as a ``subscribe`` frame: ``Last-Event-ID`` wins over
        ``since_seq``/``epoch``, which the frame's schema forbids beside ``last_n``."""
        frame: dict[str, Any] = {"type": "subscribe", "topic": name}
        frame["client_id"] = self.get_query_argument("client_id", None)
        for field in ("last_n", "since_seq"):
            frame[field] = _count(field, self.get_query_argument(field, None))
        frame["epoch"] = self.get_query_argument("epoch", None)
        last_id = self.request.headers.get("Last-Event-ID")
        if last_id is not None:
            frame["epoch"], frame["since_seq"] = _event_id(last_id)
            frame["last_n"] = None
        return {k: v for k, v in frame.items() if v is not None}

    async def get(self, name: str) -> None:
        name = existing_name(name)
        frame = self.subscribe_frame(name)
        try:
            self.broker.check_admission()
            session = Session.open(self.broker, self.request.remote_ip, self.config.max_frames_per_second, self.identity)
        except PubSubError as exc:  # draining, or the connection limit: 503, as at a /ws handshake
            raise PubSubError(exc.code, exc.message, 503) from None
        self.session = session
        frame.setdefault("client_id", f"sse-{session.sub.id}")
        try:
            await session.request(frame)  # queues the ack, a gap notice, the replay
        except BaseException as exc:
            self.session = None
            session.end(None, f"refused: {getattr(exc, 'code', 'INTERNAL')}")
            raise
        if self._gone:  # it went away while a backend read the history
            self._finish_session("connection lost")
            return
        self.start_stream()
        await asyncio.wait([self._writer])  # type: ignore[list-item]
        self._finish_session(self.close_cause or "connection lost")

    def start_stream(self) -> None:
        """Send the headers and ``retry``, stop counting as half-open, start the writer."""
        assert self.session is not None
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        self.write(RETRY)
        self.flush()
        stream = self._stream()
        if stream is not None:
            stream.set_nodelay(True)  # small events must not wait for Nagle's algorithm
        if self.context.half_open is not None and stream is not None:
            self.context.half_open.done(stream)  # a connection of the broker now, like an upgraded WebSocket
        self.context.heartbeat.add(self)
        self._writer = start_writer(self.session.sub.queue, self, self.broker.counters)

    def _finish_session(self, reason: str) -> None:
        self.context.heartbeat.discard(self)
        if self._writer is not None:
            self._writer.cancel()
        session, self.session = self.session, None
        if session is not None:
            session.end(None, reason)

    def on_connection_close(self) -> None:
        self._gone = True
        self.close_cause = self.close_cause or "connection lost"
        self._finish_session(self.close_cause)

    # -- the writer's transport ---------------------------------------------------------

    def frame(self, batch: list[Item]) -> tuple[bytes, int]:
        """The batch as SSE.  Events: ``id: <epoch>:<seq>`` and the event frame
        as /ws sends it, the same bytes every subscriber shares (per event
        only the seq is formatted, as /ws formats a frame header).  Control
        frames by kind (``frames.kind``, no parse): notices as ``event: info``,
        the heartbeat as a comment, errors as ``event: error``; acks and
        pongs answer frames an SSE client never sends, so are not written.
        Only two rare control frames are parsed: the subscribe ack and a
        ``history_gap``, which carry the epoch the ids name."""
        parts: list[bytes] = []
        events = 0
        prefix = self._id
        for item in batch:
            cls = item.__class__
            if cls is not bytes:  # an event, live or replayed (the queue reads replays out as events)
                event: Event = item  # type: ignore[assignment]
                parts += (prefix, b"%d" % event.seq, _EVENT, event.data, _END)
                events += 1
                continue
            kind = frames.kind(item)  # type: ignore[arg-type]
            if kind == "info:ping":
                parts.append(PING)
            elif kind == "ack":
                prefix = self._id = _id_prefix(item, prefix)  # type: ignore[arg-type]
            elif kind.startswith("info:"):
                if kind == "info:history_gap":
                    prefix = self._id = _id_prefix(item, prefix)  # type: ignore[arg-type]
                parts += (_INFO, item, _END)  # type: ignore[arg-type]
                if kind == "info:topic_deleted" and self.session is not None:
                    # The stream carried that topic only: it ends after telling so.
                    self.session.sub.queue.close(TOPIC_ENDED)
            elif kind == "error":
                parts += (_ERROR, item, _END)  # type: ignore[arg-type]
        return b"".join(parts), events

    def _stream(self) -> IOStream | None:
        # HTTP1Connection's stream, as /ws keeps its WebSocket's (None if a
        # server ever hands us another kind of connection).
        return getattr(self.request.connection, "stream", None)

    def writable(self) -> bool:
        stream = self._stream()
        return not (self._gone or self._ended or stream is None or stream.closed())

    def send(self, data: bytes) -> "asyncio.Future[None] | None":
        if not self.writable():
            raise StreamClosedError()
        if not data:  # a batch of acks only
            self.last_seen = time.monotonic()
            return None
        self.write(data)
        written = self.flush()
        written.add_done_callback(self._written)
        return written

    def _written(self, _: object) -> None:
        # The peer took everything written so far: it is reading.
        self.last_seen = time.monotonic()

    def end(self, disconnect: Disconnect, abort: bool) -> None:
        if self._ended:
            return
        if abort or self._gone:
            self.abort(disconnect.reason, disconnect.code, disconnect.reason)
            return
        self._ended = True
        self.close_cause = self.close_cause or disconnect.reason
        self.context.heartbeat.discard(self)
        stream = self._stream()
        finished = self.finish()
        if stream is not None:
            # Close once the end of the response is out (or after END_GRACE, for
            # a peer that stopped reading): the next EventSource request opens
            # a fresh connection anyway, and nothing idles here meanwhile.
            finished.add_done_callback(lambda _: stream.close())
            IOLoop.current().call_later(END_GRACE, stream.close)

    # -- the heartbeat's connection ---------------------------------------------------------

    def heartbeat(self, notice: bytes) -> None:
        """Queue the heartbeat notice (written as ``: ping``)."""
        if self.session is not None and not self.session.sub.closed:
            self.session.sub.send(notice)

    def abort(self, cause: str, code: int, reason: str) -> None:
        """Drop the connection at once (heartbeat timeout, shutdown cut-off)."""
        self._ended = True
        self.close_cause = self.close_cause or cause
        self.context.heartbeat.discard(self)
        stream = self._stream()
        if stream is not None:
            stream.close()  # on_connection_close follows


def _count(field: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise PubSubError(BAD_REQUEST, f"{field} must be a non-negative integer")
    return int(text)


def _event_id(text: str) -> tuple[str, int]:
    """``Last-Event-ID: <epoch>:<seq>`` as ``(epoch, seq)``; BAD_REQUEST otherwise."""
    epoch, sep, seq = text.strip().rpartition(":")
    if not sep or not epoch or len(text) > MAX_EVENT_ID or not (seq.isascii() and seq.isdigit()) or len(seq) > 20:
        raise PubSubError(BAD_REQUEST, "Last-Event-ID must be <epoch>:<seq>, as sent in an event's id")
    return epoch, int(seq)


def _id_prefix(control: bytes, current: bytes) -> bytes:
    """``id: <epoch>:`` from a subscribe ack or ``history_gap`` notice."""
    epoch = json.loads(control).get("epoch")
    return b"id: %s:" % epoch.encode() if isinstance(epoch, str) else current


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [(rf"{prefix}/topics/([^/]+)/events", EventStream)]
