"""Fan-out throughput: 1 process on the memory broker vs N processes on Redis.

Starts everything itself on free loopback ports (redis-server and the
tornado-pubsub processes), spreads ``--subscribers`` WebSocket subscribers
evenly over the processes, sends ``--messages`` publishes from one connection
on the first process as fast as the server acks them, and times until every
subscriber holds every event.  Stops what it started by PID.

    python bench/scaleout.py --mode=memory --subscribers=200 --messages=2000
    python bench/scaleout.py --mode=redis --processes=2 --subscribers=200 --messages=2000

Prints one JSON line.  The client runs on the same machine, so on a small box
it competes with the servers for CPU: compare runs made side by side, and
read the figures as relative, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import tornado.websocket

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 300.0  # seconds any one wait may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return r.status == 200


def start_stack(mode: str, processes: int, tmp: Path) -> tuple[list[subprocess.Popen], list[int]]:
    procs: list[subprocess.Popen] = []
    flags = ["--log_level=warning", "--queue_size=100000", "--queue_max_bytes=268435456", f"--config={tmp / 'empty.conf'}"]
    (tmp / "empty.conf").touch()
    if mode == "redis":
        redis_port = free_port()
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        procs.append(
            subprocess.Popen(
                [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: socket.create_connection(("127.0.0.1", redis_port), 0.2).close() or True, "redis-server")
        flags += ["--broker=redis", f"--redis-url=redis://127.0.0.1:{redis_port}/0"]
    ports = [free_port() for _ in range(processes)]
    for port in ports:
        procs.append(
            subprocess.Popen([sys.executable, "-m", "tornado_pubsub", f"--port={port}", *flags], cwd=ROOT, stdout=subprocess.DEVNULL)
        )
    for port in ports:
        wait_for(lambda: healthy(port), f"server on {port}")
    return procs, ports


async def run(ports: list[int], subscribers: int, messages: int, payload_size: int) -> dict:
    async def connect(port: int) -> tornado.websocket.WebSocketClientConnection:
        return await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws", max_message_size=1 << 24)

    async def request(conn, frame: dict) -> dict:
        await conn.write_message(json.dumps(frame))
        while True:
            reply = json.loads(await asyncio.wait_for(conn.read_message(), DEADLINE))
            if reply["type"] in ("ack", "error"):
                return reply

    admin = await connect(ports[0])
    urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{ports[0]}/topics", data=b'{"name":"bench"}', headers={"Content-Type": "application/json"}
        )
    ).read()
    subs = []
    for i in range(subscribers):
        conn = await connect(ports[i % len(ports)])
        ack = await request(conn, {"type": "subscribe", "topic": "bench", "client_id": f"s{i}"})
        assert ack["type"] == "ack", ack
        subs.append(conn)

    async def count(conn) -> float:
        got = 0
        while got < messages:
            raw = await asyncio.wait_for(conn.read_message(), DEADLINE)
            if raw is None:
                raise SystemExit("a subscriber was disconnected")
            if raw.startswith('{"type":"event"'):
                got += 1
        return time.perf_counter()

    receivers = [asyncio.ensure_future(count(c)) for c in subs]
    payload = "x" * payload_size
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for n in range(messages):
        frame = {"type": "publish", "topic": "bench", "message": {"id": str(uuid.uuid4()), "payload": payload}}
        admin.write_message(json.dumps(frame))
    acks = 0
    while acks < messages:
        reply = json.loads(await asyncio.wait_for(admin.read_message(), DEADLINE))
        if reply["type"] == "error":
            raise SystemExit(f"publish failed: {reply}")
        acks += reply["type"] == "ack"
    published = time.perf_counter()
    finished = max(await asyncio.gather(*receivers), default=published)
    for conn in subs + [admin]:
        conn.close()
    seconds = finished - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "seconds": round(seconds, 3),
        "publish_per_sec": round(messages / (published - started)),
        "deliveries_per_sec": round(subscribers * messages / seconds) if subscribers else None,
        # The share of the wall time this client spent on a CPU: near 1.0 means
        # the client, not the server, was the limit.
        "client_cpu_share": round(client_cpu / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("memory", "redis"), default="memory")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--payload", type=int, default=100, help="payload size in bytes")
    args = parser.parse_args()
    if args.mode == "memory" and args.processes != 1:
        raise SystemExit("the memory broker runs in one process")
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    procs, ports = start_stack(args.mode, args.processes, tmp)
    try:
        result = asyncio.run(run(ports, args.subscribers, args.messages, args.payload))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"mode": args.mode, "processes": args.processes, "subscribers": args.subscribers,
                      "messages": args.messages, "payload_bytes": args.payload, **result}))


if __name__ == "__main__":
    main()
