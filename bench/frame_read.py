"""What reading one client frame costs the server (README, Cost model).

    python bench/frame_read.py            # Tornado's reader and ours, alternately
    python bench/frame_read.py --rounds 40 --size 300

A WebSocket handler that does nothing with its frames, served with the
protocol the server uses (``tornado_patches.patched_protocol``), reads
masked text frames of ``--size`` bytes that a raw client sends in 64 KB
writes, as a publisher's frames arrive.  Each round reads them once with
``one_pass_read`` on and once with it off (Tornado's own frame reader),
in one process so both see the same machine; the client is in the same
process too, but its share (one ``sendall`` per 64 KB) is the same for
both.  Reports the best round of each, in microseconds per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tornado.web  # noqa: E402
import tornado.websocket  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402

from tornado_pubsub.server import tornado_patches  # noqa: E402

CHUNK = 64 * 1024


class Sink(tornado.websocket.WebSocketHandler):
    """Counts frames; wakes the bench once ``expected`` have arrived."""

    expected = 0
    done: "asyncio.Future[None] | None" = None
    seen = 0

    def get_websocket_protocol(self) -> Any:
        return tornado_patches.patched_protocol(self, super().get_websocket_protocol())

    def on_message(self, message: str | bytes) -> None:
        cls = Sink
        cls.seen += 1
        if cls.seen == cls.expected and cls.done is not None:
            cls.done.set_result(None)


def masked_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def connect(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(
        sock,
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += await loop.sock_recv(sock, 4096)
    assert reply.startswith(b"HTTP/1.1 101"), reply[:80]
    return sock


async def read_round(sock: socket.socket, frame: bytes, frames: int) -> float:
    loop = asyncio.get_running_loop()
    per_chunk = max(1, CHUNK // len(frame))
    chunk = frame * per_chunk
    Sink.seen, Sink.expected = 0, frames
    Sink.done = loop.create_future()
    start = time.process_time()
    sent = 0
    while sent < frames:
        n = min(per_chunk, frames - sent)
        await loop.sock_sendall(sock, chunk if n == per_chunk else frame * n)
        sent += n
    await Sink.done
    return (time.process_time() - start) / frames * 1e6


async def measure(rounds: int, frames: int, size: int) -> dict[str, float]:
    app = tornado.web.Application([(r"/ws", Sink)])
    server = HTTPServer(app)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    server.add_sockets([listener])
    port = listener.getsockname()[1]
    text = b'{"type":"publish","topic":"bench","message":{"id":"6f1b2a9e-2c1d-4a8e-9b7f-1c2d3e4f5a6b","payload":"'
    frame = masked_frame(text + b"x" * max(0, size - len(text) - 4) + b'"}}')
    best = {"one pass": float("inf"), "Tornado's": float("inf")}
    enabled = tornado_patches.ENABLED["one_pass_read"]
    try:
        for _ in range(rounds):
            for way in best:
                tornado_patches.ENABLED["one_pass_read"] = enabled and way == "one pass"
                sock = await connect(port)  # the protocol is chosen at the handshake
                best[way] = min(best[way], await read_round(sock, frame, frames))
                sock.close()
    finally:
        tornado_patches.ENABLED["one_pass_read"] = enabled
        server.stop()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--frames", type=int, default=20000, help="frames read per round and way")
    parser.add_argument("--size", type=int, default=300, help="bytes of each frame's payload")
    args = parser.parse_args()
    if not tornado_patches.ENABLED["one_pass_read"]:
        print("one_pass_read is off on this Tornado: only Tornado's reader can be measured", file=sys.stderr)
    best = asyncio.run(measure(args.rounds, args.frames, args.size))
    print("  ".join(f"{way}: {us:.2f} us/frame" for way, us in best.items()))


if __name__ == "__main__":
    main()
