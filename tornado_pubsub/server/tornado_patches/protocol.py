"""The WebSocket protocol: how frames are read, refused and closed on.

``patched_protocol`` builds the protocol class from every patch whose check
passed (``checks.ENABLED``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.websocket
from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

from tornado_pubsub.core.errors import CLOSE_TOO_BIG, MESSAGE_TOO_BIG, PROTOCOL_ERROR, Disconnect
from tornado_pubsub.logs import log_op
from tornado_pubsub.server.tornado_patches.checks import _BUFFER_POS, ENABLED

_WS13 = tornado.websocket.WebSocketProtocol13

# After refusing a frame, how long we keep reading (and discarding) what the
# client still sends, so our close frame is not destroyed by a TCP reset:
# closing a socket with unread input makes the kernel send RST.
LINGER = 2.0


class _FrameLoopTask(_WS13):
    """Gain: ~1.5 KB per idle connection (tests/test_idle_footprint.py, bench
    ``connections``).  Tornado awaits its frame loop at the bottom of the
    handshake's coroutine chain (the handler's _execute task -> get ->
    accept_connection -> _accept_connection), which keeps those four
    suspended frames and their locals alive for the connection's whole life.
    Running the loop as a task of its own lets the handshake chain finish.
    Relies on: ``_receive_frame_loop(self)`` being that awaited coroutine,
    and the handler's ``on_ws_connection_close`` (told if the loop crashes).
    """

    def _receive_frame_loop(self) -> "asyncio.Future[None]":  # type: ignore[override]
        loop_task = asyncio.ensure_future(super()._receive_frame_loop())
        loop_task.add_done_callback(self._frame_loop_ended)
        handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handshake_done.set_result(None)
        return handshake_done

    def _frame_loop_ended(self, loop_task: "asyncio.Future[None]") -> None:
        # An exception escaping the loop (not one from on_message: Tornado
        # catches those) is a bug: log it, and drop the connection rather than
        # leave it open and unread.
        if loop_task.cancelled() or loop_task.exception() is None:
            return
        log_op("internal", logging.ERROR, exc_info=loop_task.exception(), outcome="frame loop crashed")
        self._abort()
        # Tornado >= 6.3 tells the handler from the loop's finally clause;
        # 6.2 only on a clean end.  The handler ignores a second call.
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)


class _Done:
    """An awaitable that is already done: what a frame read in one pass
    returns when handling it left nothing to wait for."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_DONE = _Done()
_websocket_mask = getattr(tornado.websocket, "_websocket_mask", None)


class _OnePassRead(_WS13):
    """Gain: 4.3-4.6 instead of 18.5-20 us per frame read
    (``bench/frame_read.py``; 9.2 with the buffered reads it replaced), about
    a tenth of a lone publisher's cost per publish.  Tornado reads
    every frame in three or four ``_read_bytes`` coroutines (header, length,
    mask, payload), each a trip through IOStream's read machinery even when
    the bytes are already buffered, as a client's frames mostly are (often
    several in one read).  A whole, final, masked text or binary frame that
    is in the buffer is taken here with one ``_consume`` and handed to
    ``_handle_message``; one whose header says it is over
    ``max_message_size`` (1009), or that has reserved bits set (1002), is
    refused as soon as that header is here, after the replies already
    queued (``refuse``).  Every other frame (control, fragmented, unmasked,
    not all here yet) goes Tornado's way, so Tornado and the other patches
    meet it exactly as before.
    Relies on: ``_receive_frame()``, ``_handle_message(opcode, data)``,
    ``_decompressor``, ``_fragmented_message_buffer``, ``_wire_bytes_in``,
    ``params.max_message_size``, ``_websocket_mask``, and IOStream's
    ``bytearray`` read buffer (``_read_buffer``, from ``_read_buffer_pos``
    where that exists), ``_read_buffer_size``, ``_consume(loc)`` and
    ``_read_future``/``_user_read_buffer`` (no other read in progress).
    """

    def _receive_frame(self) -> Any:
        stream = self.stream
        size = stream._read_buffer_size
        if (
            size >= 6
            and stream._read_future is None
            and not stream._user_read_buffer
            and self._fragmented_message_buffer is None
            and self._decompressor is None
        ):
            buf = stream._read_buffer
            at = stream._read_buffer_pos if _BUFFER_POS else 0
            first, second = buf[at], buf[at + 1]
            opcode = first & 0x0F
            if first & 0x80 and (opcode == 0x1 or opcode == 0x2) and second & 0x80:  # final, masked, data
                length = second & 0x7F
                head = 6
                if length == 126:
                    head = 8
                    length = buf[at + 2] << 8 | buf[at + 3]  # (size >= 6: both bytes are there)
                elif length == 127:
                    head = 14
                    length = int.from_bytes(buf[at + 2 : at + 10], "big") if size >= 10 else -1
                if first & 0x70 or length > self.params.max_message_size:
                    return refuse(self, *refusal(self, first, length))  # type: ignore[misc]
                if 0 <= length and head + length <= size:
                    frame = stream._consume(head + length)
                    self._wire_bytes_in += head + length
                    handled = self._handle_message(opcode, _websocket_mask(frame[head - 4 : head], frame[head:]))
                    return _DONE if handled is None else handled
        return super()._receive_frame()


class _InvalidUtf8Reply(_WS13):
    """Gain: correctness the client can see (tests/test_fuzz_ws.py).  A text
    frame that is not valid UTF-8 is answered like any other unreadable frame
    (``BAD_REQUEST``, the connection stays usable, via the handler's
    ``on_invalid_text``) instead of Tornado's silent TCP abort.
    Relies on: ``_handle_message(opcode, data)``, ``_frame_compressed``,
    ``_message_bytes_in`` and ``_run_callback``.  Fallback: Tornado aborts.
    """

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x1 and not self._frame_compressed and not self.client_terminated:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self._message_bytes_in += len(data)
                return self._run_callback(self.handler.on_invalid_text)  # type: ignore[attr-defined]
        return super()._handle_message(opcode, data)


class _LingerAfter1009(_WS13):
    """Gain: a frame over ``max_message_size`` that Tornado refuses itself
    (only with ``strict_frames`` off) gets its close frame 1009 delivered
    (tests/test_ws_bad_input.py).  Tornado aborts at once, and the
    unread rest of the frame turns the close into a reset that discards the
    1009 on the client side; here we keep reading (and discarding) for
    ``LINGER`` seconds first.  Relies on: ``_abort()``, ``close(code,
    reason)``, ``stream``, ``server_terminated``, ``client_terminated``.
    Fallback: the client may see a reset instead of 1009.
    """

    _close_sent: int | None = None
    _lingering = False

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated:
            self._close_sent = code
        super().close(code, reason)

    def _abort(self) -> None:
        if self._lingering:
            return
        if self._close_sent == CLOSE_TOO_BIG and self.stream is not None and not self.stream.closed():
            self._lingering = True
            self.client_terminated = self.server_terminated = True
            asyncio.ensure_future(_drain_then_close(self.stream))
            return
        super()._abort()


async def _drain_then_close(stream: IOStream) -> None:
    deadline = IOLoop.current().time() + LINGER
    try:
        while True:
            await gen.with_timeout(deadline, stream.read_bytes(65536, partial=True))
    except (StreamClosedError, gen.TimeoutError, OSError):
        pass
    finally:
        stream.close()


async def refuse(protocol: _WS13, problem: str, disconnect: Disconnect) -> None:
    """End a connection whose frame the reader refuses (``problem`` says
    why): the replies to the frames before it are written first, then the
    close frame, and the connection stops being read.

    Tornado writes its close frame at once, ahead of the replies still
    queued for the writer, and a peer may not send data after its close
    frame, so they were lost (a publish delivered to its subscribers but
    never acknowledged to its publisher).  Here the handler's session logs
    the refusal and closes through the connection's queue
    (``on_refused_frame``), as every other close the server makes does;
    what the peer still sends is read and discarded for ``LINGER`` seconds,
    so closing with input unread does not turn the close frame into a
    reset.  Awaited by the frame loop, which ends after it.  Without a
    session, the refusal is logged here and the close is at once.
    """
    hook = getattr(protocol.handler, "on_refused_frame", None)
    if hook is None or not hook(disconnect, problem):
        log_op("ws_protocol", logging.INFO, detail=problem, outcome=f"closed_{disconnect.code}")
        protocol.close(disconnect.code, disconnect.reason)
    if protocol.stream is not None:
        await _drain_then_close(protocol.stream)
    protocol.client_terminated = True


def refusal(protocol: _WS13, first: int, length: int) -> tuple[str, Disconnect] | None:
    """Why a client frame whose header starts with the byte ``first`` and
    whose payload is ``length`` bytes is refused, if it is: reserved bits
    without an extension (1002), or over ``max_message_size`` (1009), with
    the fragments before it counted as Tornado counts them."""
    if first & (0x30 if protocol._decompressor is not None else 0x70):  # RSV1 is compression's
        return "reserved bits set without an extension", PROTOCOL_ERROR
    if protocol._fragmented_message_buffer is not None:
        length += len(protocol._fragmented_message_buffer)
    if length > protocol.params.max_message_size:
        return f"frame of {length} bytes over max_message_size", MESSAGE_TOO_BIG
    return None


def close_code_allowed(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 7.4): not
    1004-1006, 1015, below 1000, 1016-2999 nor 5000 and above."""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


class _StrictFrames(_WS13):
    """Gain: RFC 6455 on the wire (tests/test_close_frames.py), and no reply
    lost to a refusal.  A client frame that is not masked (5.1) or has
    reserved bits set (5.2), and a close frame whose code a peer may not
    send (7.4) or whose reason is not UTF-8 (5.5.1), are answered with
    close 1002 instead of being accepted, echoed back, dropped without a
    close frame, or crashing the frame loop with a traceback
    (``to_unicode`` on the reason).  A frame over ``max_message_size``
    (alone, or with the fragments before it) is refused with 1009 as soon
    as its length is read, before Tornado's own check would close at once.
    Each refusal closes after the replies already queued (``refuse``).
    This covers the frames ``one_pass_read`` leaves to Tornado's reader: a
    header split across reads, fragments, everything when it is off.
    Relies on: ``_receive_frame`` reading through ``_read_bytes`` the 2-byte
    header first, then a 16- or 64-bit length (payload length 126 or 127 of
    a data frame) before its ``max_message_size`` check, counting
    ``_fragmented_message_buffer``; ``_decompressor``, ``_handle_message``,
    ``close(code, reason)``, ``client_terminated``, ``stream``.
    Fallback: Tornado's behaviour (unmasked frames accepted, codes echoed,
    reserved bits dropped, 1009 ahead of the queued replies).
    """

    # In slots, not the instance dict: Tornado's own attributes nearly fill
    # the 30 keys an instance dict can share with its class, and a key past
    # them turned every connection's dict into a table of its own (1.6 KB).
    __slots__ = ("_header_next", "_length_next", "_peer_closed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_next = False
        self._length_next = False
        self._peer_closed = False  # the refused frame was the peer's close frame

    def _receive_frame(self) -> Any:
        self._header_next = True
        return super()._receive_frame()

    def _read_bytes(self, n: int) -> Any:
        if self._header_next:
            self._header_next = False
            return self._read_header(super()._read_bytes(n))
        if self._length_next:
            self._length_next = False
            return self._read_length(super()._read_bytes(n))
        return super()._read_bytes(n)

    async def _read_header(self, reading: Any) -> bytes:
        header: bytes = await reading
        first, length = header[0], header[1] & 0x7F
        if length >= 126:  # the length follows the header (a control frame's: Tornado aborts)
            self._length_next = not first & 0x08
            length = 0
        why = ("unmasked frame", PROTOCOL_ERROR) if not header[1] & 0x80 else refusal(self, first, length)
        await self._refuse(why)
        return header

    async def _read_length(self, reading: Any) -> bytes:
        data: bytes = await reading
        await self._refuse(refusal(self, 0, int.from_bytes(data, "big")))  # (the header's bits passed)
        return data

    async def _refuse(self, why: tuple[str, Disconnect] | None) -> None:
        if why is not None:
            await refuse(self, *why)
            raise StreamClosedError()  # ends the frame loop (the stream is closed by now)

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x8 and not self.client_terminated:
            problem = None
            if len(data) == 1:
                problem = "close frame with a 1-byte body"
            elif len(data) >= 2 and not close_code_allowed(int.from_bytes(data[:2], "big")):
                problem = f"close code {int.from_bytes(data[:2], 'big')} is not allowed on the wire"
            else:
                try:
                    data[2:].decode("utf-8")
                except UnicodeDecodeError:
                    problem = "close reason is not UTF-8"
            if problem is not None:
                self._peer_closed = True
                return refuse(self, problem, PROTOCOL_ERROR)
        return super()._handle_message(opcode, data)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        super().close(code, reason)
        if self._peer_closed and self.stream is not None:
            # Both close frames are sent: the server closes the TCP
            # connection first (RFC 6455 7.1.1), no lingering for more.
            self.stream.close()



# Listed outermost first (the class's MRO): one_pass_read takes the frames
# it can and leaves the rest to strict_frames' header check and Tornado.
_MIXINS = {
    "one_pass_read": _OnePassRead,
    "strict_frames": _StrictFrames,
    "invalid_utf8_reply": _InvalidUtf8Reply,
    "linger_after_1009": _LingerAfter1009,
    "frame_loop_task": _FrameLoopTask,
}
_classes: dict[tuple[type, ...], type] = {}


def patched_protocol(handler: tornado.websocket.WebSocketHandler, protocol: Any) -> Any:
    """``protocol`` (what ``get_websocket_protocol`` made), replaced by one
    with every patch whose check passed; unchanged when none did or it is
    not an RFC 6455 protocol."""
    if protocol.__class__ is not _WS13:
        return protocol
    mixins = tuple(cls for name, cls in _MIXINS.items() if ENABLED[name])
    if not mixins:
        return protocol
    cls = _classes.get(mixins)
    if cls is None:
        cls = _classes[mixins] = type("PubSubProtocol", mixins, {})
    return cls(handler, False, protocol.params)
