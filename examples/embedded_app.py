"""An existing Tornado service that adds pub/sub without a second server.

The shop below has its own handlers; it mounts tornado-pubsub's routes under
``/pubsub`` and publishes an event from a normal ``RequestHandler`` each time
an order is placed.  Browsers and services subscribe over ``/pubsub/ws``.

    python examples/embedded_app.py --port=8888
    python -m tornado_pubsub.client.cli --url http://127.0.0.1:8888/pubsub sub orders   # in a 2nd terminal
    curl -X POST http://127.0.0.1:8888/orders -d '{"item": "book"}'            # in a 3rd
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

# Lets ``python examples/embedded_app.py`` run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tornado.web  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402
from tornado.options import define, options, parse_command_line  # noqa: E402

from tornado_pubsub import PubSub, Settings  # noqa: E402
from tornado_pubsub.logs import configure_logging  # noqa: E402

define("port", default=8888, type=int, help="port to listen on (0: any free port)")


class HomeHandler(tornado.web.RequestHandler):
    """The service's own page, untouched by pub/sub."""

    def get(self) -> None:
        self.write({"service": "shop", "subscribe": "/pubsub/ws", "topic": "orders"})


class OrdersHandler(tornado.web.RequestHandler):
    """``POST /orders``: accept an order and tell every subscriber about it."""

    def initialize(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    async def post(self) -> None:
        try:
            order = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "body must be JSON")
        result = await self.pubsub.publish("orders", {"order": order})  # in-process, same IOLoop
        self.set_status(201)
        self.write({"status": "accepted", "seq": result.seq})


def make_shop(pubsub: PubSub) -> tornado.web.Application:
    """The host application: its own routes plus the pub/sub routes."""
    return tornado.web.Application(
        [
            (r"/", HomeHandler),
            (r"/orders", OrdersHandler, {"pubsub": pubsub}),
        ]
        + pubsub.routes
    )


async def main() -> None:
    parse_command_line()
    # Pub/sub logs one record per operation with its fields as extras; this
    # formatter prints them (Tornado's default one shows only the event name).
    configure_logging("info", "text")
    pubsub = PubSub(Settings(history_size=1000), prefix="/pubsub")
    await pubsub.create_topic("orders", exist_ok=True)
    sockets = bind_sockets(options.port, "127.0.0.1")
    server = HTTPServer(make_shop(pubsub))
    server.add_sockets(sockets)
    print(f"shop listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    pubsub.close()  # subscribers get a 1001 close and reconnect elsewhere


if __name__ == "__main__":
    asyncio.run(main())
