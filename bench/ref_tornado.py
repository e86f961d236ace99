"""The plain Tornado reference broadcaster: encode once, ``await write_message``
per subscriber.  No validation, history, queue bound or logging.

It is what "just use Tornado" gives: the yardstick for what our contract
(validation, seq, history, stats, bounded queues, logging) costs.

    python bench/ref_tornado.py --port=8102
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

STARTED = time.monotonic()
TOPICS: dict[str, dict] = {}  # name -> {"seq": int, "subs": set}
_dumps = functools.partial(json.dumps, separators=(",", ":"))
_CLOSED = (tornado.websocket.WebSocketClosedError, StreamClosedError)


def _topic(name: str) -> dict:
    return TOPICS.setdefault(name, {"seq": 0, "subs": set()})


def _ts() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class Socket(tornado.websocket.WebSocketHandler):
    def open(self) -> None:
        self.set_nodelay(True)
        self.mine: list[dict] = []

    async def on_message(self, message: str | bytes) -> None:
        f = json.loads(message)
        kind = f.get("type")
        if kind == "publish":
            t = _topic(f["topic"])
            t["seq"] += 1
            seq = t["seq"]
            ts = _ts()
            data = _dumps({"type": "event", "topic": f["topic"], "message": f["message"], "ts": ts, "seq": seq})
            for sub in list(t["subs"]):
                try:
                    await sub.write_message(data)
                except _CLOSED:
                    pass
            ack = {"type": "ack", "request_id": f.get("request_id"), "topic": f["topic"], "status": "ok", "ts": ts}
            await self.write_message(_dumps(ack | {"seq": seq, "duplicate": False}))
        elif kind == "subscribe":
            t = _topic(f["topic"])
            t["subs"].add(self)
            self.mine.append(t)
            ack = {"type": "ack", "request_id": f.get("request_id"), "topic": f["topic"], "status": "ok", "ts": _ts()}
            await self.write_message(_dumps(ack | {"epoch": "ref", "last_seq": t["seq"]}))
        elif kind == "ping":
            await self.write_message(_dumps({"type": "pong", "request_id": f.get("request_id"), "ts": _ts()}))

    def on_close(self) -> None:
        for t in getattr(self, "mine", ()):
            t["subs"].discard(self)


class Topics(tornado.web.RequestHandler):
    def post(self) -> None:
        name = json.loads(self.request.body)["name"]
        _topic(name)
        self.set_status(201)
        self.write({"status": "created", "topic": name})


class Health(tornado.web.RequestHandler):
    def get(self) -> None:
        subs = sum(len(t["subs"]) for t in TOPICS.values())
        self.write({"status": "ok", "uptime_sec": int(time.monotonic() - STARTED), "topics": len(TOPICS), "subscribers": subs})


async def main(port: int) -> None:
    app = tornado.web.Application(
        [("/ws", Socket), ("/topics", Topics), ("/health", Health)],
        websocket_max_message_size=65536,
        log_function=lambda handler: None,
    )
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    port = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--port=")), 8102)
    asyncio.run(main(port))
