"""A mixed hostile soak: healthy subscribers must get every message, in
order, while hostile and unlucky clients do their worst beside them.

For ``--seconds`` (default 30) against one fresh server process on a free
loopback port, all at once:

- healthy: ``--healthy`` subscribers on topic ``healthy`` and one publisher
  sending ``--rate`` messages a second to it, each carrying its send time;
  every subscriber checks exact, ordered delivery (seq consecutive, none
  missing, none twice) and records each message's latency;
- junk: two connections sending 60 KB frames that are not JSON, as fast as
  the server takes them;
- stalled replays: connections that subscribe with ``last_n=100`` to ten
  topics holding 60 KB messages and never read again (a new one every
  second);
- flood: one publisher pipelining 60 KB messages to those ten topics;
- churn: connect, subscribe, drop the TCP connection without a close frame,
  again and again;
- bad close frames: close codes RFC 6455 forbids and non-UTF-8 reasons.

Prints one JSON line: the server's peak RSS (from /proc), the healthy p50 /
p99 latency, the healthy loss / duplicate / disorder counts and what each
hostile client managed.  Stops what it started by PID.

    python bench/soak.py
    python bench/soak.py --seconds 10 --healthy 10

The client runs on the same machine, so on a small box it competes with the
server for CPU: read the latency figures as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import tornado.websocket

ROOT = Path(__file__).resolve().parent.parent
BIG = "b" * 60_000
JUNK = b"j" * 60_000
BIG_TOPICS = [f"big{n}" for n in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# -- raw WebSocket peers (hostile clients need frames no library sends) ----------


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame; the all-zero mask key leaves the payload as is
    (valid RFC 6455, and free to build)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


async def raw_peer(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


def text(obj: Any) -> bytes:
    return frame(0x1, json.dumps(obj).encode())


# -- the clients -------------------------------------------------------------------


class Soak:
    def __init__(self, port: int, seconds: float, healthy: int, rate: float) -> None:
        self.port = port
        self.end = time.monotonic() + seconds
        self.healthy = healthy
        self.rate = rate
        self.latencies: list[float] = []
        self.published = 0
        self.lost = self.duplicates = self.disorder = 0
        self.counts = {"junk_frames": 0, "stalled_replayers": 0, "flood_published": 0, "churned": 0, "bad_closes": 0, "bad_close_1002": 0}

    def running(self) -> bool:
        return time.monotonic() < self.end

    async def healthy_subscriber(self, n: int, ready: asyncio.Event, out: list[list[int]]) -> None:
        ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{self.port}/ws", max_message_size=1 << 20)
        ws.write_message(json.dumps({"type": "subscribe", "topic": "healthy", "client_id": f"h{n}"}))
        seqs: list[int] = []
        out.append(seqs)
        ready.set()
        while True:
            msg = await ws.read_message()
            if msg is None:
                return
            f = json.loads(msg)
            if f.get("type") == "event" and f["topic"] == "healthy":
                seqs.append(f["seq"])
                self.latencies.append(time.time() - f["message"]["payload"]["t"])
                if f["message"]["payload"].get("last"):
                    ws.close()
                    return

    async def healthy_publisher(self) -> None:
        ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{self.port}/ws")
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while self.running():
            payload = {"t": time.time()}
            ws.write_message(json.dumps({"type": "publish", "topic": "healthy", "message": {"id": str(uuid.uuid4()), "payload": payload}}))
            self.published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        ws.write_message(json.dumps({"type": "publish", "topic": "healthy", "message": {"id": str(uuid.uuid4()), "payload": {"t": time.time(), "last": True}}}))
        self.published += 1
        ws.close()

    async def junk(self) -> None:
        reader, writer = await raw_peer(self.port)
        data = frame(0x1, JUNK)
        try:
            while self.running():
                writer.write(data)
                await writer.drain()
                self.counts["junk_frames"] += 1
                if reader._buffer:  # type: ignore[attr-defined]  # keep the replies from piling up
                    reader._buffer.clear()  # type: ignore[attr-defined]
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stalled_replayers(self) -> None:
        writers = []
        try:
            while self.running() and len(writers) < 60:
                try:
                    _, writer = await raw_peer(self.port, rcvbuf=4096)
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    await asyncio.sleep(1)
                    continue
                for topic in BIG_TOPICS:
                    writer.write(text({"type": "subscribe", "topic": topic, "client_id": "stalled", "last_n": 100}))
                writers.append(writer)
                self.counts["stalled_replayers"] += 1
                await asyncio.sleep(1)
            while self.running():
                await asyncio.sleep(0.5)
        finally:
            for writer in writers:
                writer.close()

    async def flood(self) -> None:
        ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{self.port}/ws", max_message_size=1 << 20)
        n = 0
        while self.running():
            for _ in range(20):
                ws.write_message(json.dumps({"type": "publish", "topic": BIG_TOPICS[n % 10], "message": {"id": str(uuid.uuid4()), "payload": BIG}}))
                n += 1
            for _ in range(20):
                if await ws.read_message() is None:
                    return
            self.counts["flood_published"] = n
        ws.close()

    async def churn(self) -> None:
        while self.running():
            try:
                reader, writer = await raw_peer(self.port)
                writer.write(text({"type": "subscribe", "topic": "healthy", "client_id": "churn"}))
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                writer.close()
                self.counts["churned"] += 1
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.01)

    async def bad_closes(self) -> None:
        bodies = [struct.pack("!H", c) for c in (1005, 1006, 1015, 999, 5000)] + [struct.pack("!H", 1000) + b"\xff\xfe"]
        n = 0
        while self.running():
            try:
                reader, writer = await raw_peer(self.port)
                writer.write(frame(0x8, bodies[n % len(bodies)]))
                await writer.drain()
                n += 1
                self.counts["bad_closes"] += 1
                data = b""
                with contextlib.suppress(asyncio.TimeoutError):
                    while chunk := await asyncio.wait_for(reader.read(4096), 5):  # up to the server's close
                        data += chunk
                # The server's close frame: 0x88, length, code.
                at = data.find(b"\x88")
                if at >= 0 and len(data) >= at + 4 and struct.unpack("!H", data[at + 2 : at + 4])[0] == 1002:
                    self.counts["bad_close_1002"] += 1
                writer.close()
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.02)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tornado_pubsub", f"--port={port}", "--log_level=warning",
         "--max_message_size=131072", "--history_max_bytes=8388608", *args.server_arg],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                if http(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.05)
        for topic in ["healthy", *BIG_TOPICS]:
            http(port, "POST", "/topics", {"name": topic})
        # Fill the big topics' history first: the replays have ~60 MB to pin.
        filler = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
        for topic in BIG_TOPICS:
            for _ in range(100):
                filler.write_message(json.dumps({"type": "publish", "topic": topic, "message": {"id": str(uuid.uuid4()), "payload": BIG}}))
            for _ in range(100):
                await filler.read_message()
        filler.close()
        base = rss_kib(server.pid)

        soak = Soak(port, args.seconds, args.healthy, args.rate)
        ready = [asyncio.Event() for _ in range(args.healthy)]
        seqs: list[list[int]] = []
        subscribers = [asyncio.ensure_future(soak.healthy_subscriber(n, ready[n], seqs)) for n in range(args.healthy)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        await asyncio.sleep(0.5)  # every subscribe acked before the first publish
        peak = base
        queued_peak = 0.0
        # The hostile clients run in a process of their own, so their work
        # does not show up as healthy latency on this side.
        hostile = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role=hostile", f"--port={port}", f"--seconds={args.seconds}",
            stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        tasks = [asyncio.ensure_future(soak.healthy_publisher())]
        sampled = 0.0
        while soak.running():
            peak = max(peak, rss_kib(server.pid))
            if time.monotonic() - sampled > 2:
                sampled = time.monotonic()
                queued_peak = max(queued_peak, queued_bytes(port))
            await asyncio.sleep(0.25)
        await asyncio.wait(tasks, timeout=15)
        out, _ = await asyncio.wait_for(hostile.communicate(), 60)
        counts = json.loads(out.decode().strip().splitlines()[-1])
        done, pending = await asyncio.wait(subscribers, timeout=30)
        for task in [*tasks, *pending]:
            task.cancel()
        peak = max(peak, rss_kib(server.pid))
        for got in seqs:
            expected = soak.published
            soak.lost += expected - len(set(got))
            soak.duplicates += len(got) - len(set(got))
            soak.disorder += sum(1 for a, b in zip(got, got[1:]) if b != a + 1)
        lat = sorted(soak.latencies) or [0.0]
        return {
            "seconds": args.seconds,
            "rss_base_mib": round(base / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "healthy_subscribers": args.healthy,
            "healthy_published": soak.published,
            "healthy_p50_ms": round(lat[len(lat) // 2] * 1000, 2),
            "healthy_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
            "healthy_lost": soak.lost,
            "healthy_duplicates": soak.duplicates,
            "healthy_out_of_order": soak.disorder,
            "healthy_incomplete": len(pending),
            **counts,
            "queued_bytes_peak_mib": round(queued_peak / (1 << 20), 1),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def queued_bytes(port: int) -> float:
    _, metrics = http(port, "GET", "/metrics")
    for line in metrics.decode().splitlines():
        if line.startswith("pubsub_queued_bytes "):
            return float(line.split()[1])
    return 0.0


async def hostile(args: argparse.Namespace) -> dict[str, Any]:
    soak = Soak(args.port, args.seconds, 0, 1.0)
    clients = [soak.junk(), soak.junk(), soak.stalled_replayers(), soak.flood(), soak.churn(), soak.bad_closes()]
    tasks = [asyncio.ensure_future(c) for c in clients]
    await asyncio.wait(tasks, timeout=args.seconds + 15)
    for task in tasks:
        task.cancel()
    return soak.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--healthy", type=int, default=10, help="healthy subscribers")
    parser.add_argument("--rate", type=float, default=50.0, help="healthy messages per second")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for the server (repeatable)")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(hostile(args) if args.role == "hostile" else run(args))))


if __name__ == "__main__":
    main()
