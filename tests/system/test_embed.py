"""Pub/sub embedded in a host Tornado application: routes under a prefix, in-process
publishing, and the runnable example in examples/embedded_app.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys

import pytest
import tornado.httpclient
import tornado.web

from tests.kit.procs import ROOT
from tornado_pubsub import PubSub
from tornado_pubsub.client.connection import Message, PubSubClient

EXAMPLE = str(ROOT / "examples" / "embedded_app.py")
WAIT = 10.0


class HostHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("host page")


@pytest.fixture
def pubsub(settings):
    embedded = PubSub(settings, prefix="/pubsub/")
    yield embedded
    embedded.close()


@pytest.fixture
def app(pubsub):
    """Overrides conftest's standalone app: a host application with pub/sub mounted under /pubsub."""
    host = tornado.web.Application([(r"/", HostHandler)] + pubsub.routes)
    host.pubsub = pubsub.context  # where conftest's teardown finds the sockets left open
    return host


async def test_host_routes_and_prefixed_pubsub_routes_share_one_server(rest):
    assert (await rest.call("GET", "/"))[1] == "host page"
    status, body = await rest.call("POST", "/pubsub/topics", {"name": "orders"})
    assert (status, body) == (201, {"status": "created", "topic": "orders"})
    status, body = await rest.call("GET", "/pubsub/health")
    assert status == 200 and body["topics"] == 1
    assert (await rest.call("GET", "/topics"))[0] == 404  # nothing leaks outside the prefix


async def test_in_process_publish_reaches_websocket_subscribers_and_is_logged(pubsub, ws_connect, caplog):
    await pubsub.create_topic("orders")
    assert await pubsub.create_topic("orders", exist_ok=True) is False
    sub = await ws_connect("/pubsub/ws")
    await sub.subscribe("orders")
    with caplog.at_level(logging.INFO, logger="tornado_pubsub"):
        result = await pubsub.publish("orders", {"n": 1})
    assert (result.seq, result.duplicate) == (1, False)
    (event,) = await sub.events(1)
    assert (event["seq"], event["message"]["payload"]) == (1, {"n": 1})
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "publish"]
    assert (record.topic, record.seq, record.via, record.message_id) == ("orders", 1, "inprocess", result.id)


@pytest.mark.pubsub(heartbeat_interval=0.2, heartbeat_timeout=5)
async def test_heartbeat_runs_for_embedded_sockets(ws_connect):
    sock = await ws_connect("/pubsub/ws")
    info = await sock.recv_type("info", timeout=WAIT)
    assert info["msg"] == "ping"


@pytest.mark.pubsub(max_message_size=1024)
async def test_max_message_size_holds_without_the_standalone_app_settings(ws_connect):
    sock = await ws_connect("/pubsub/ws")
    sock.send(json.dumps({"type": "ping", "request_id": "x" * 2048}))
    assert await sock.closed() == 1009


async def test_metrics_count_in_process_publishes(pubsub, rest):
    await pubsub.create_topic("orders")
    await pubsub.publish("orders", 1)
    status, text = await rest.call("GET", "/pubsub/metrics")
    assert status == 200 and re.search(r"^pubsub_messages_published_total 1\.0$", text, re.M), text


def test_prefix_is_a_literal_path():
    routes = PubSub(prefix="/v1.0/").routes
    health = next(r for r in routes if r.handler_class.__name__ == "HealthHandler")
    assert health.regex.match("/v1.0/health") and not health.regex.match("/v1x0/health")
    with pytest.raises(ValueError):
        PubSub(prefix="pubsub")


async def test_example_app_runs_as_documented():
    """``python examples/embedded_app.py``: a POST to the host's /orders handler reaches a
    client subscribed under /pubsub, and SIGTERM stops it cleanly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, EXAMPLE, "--port=0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output: list[str] = []
    client = None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
            assert line, f"example exited early: {''.join(output)}"
            output.append(line)
            if "listening on" in line:
                base = line.split("listening on ")[1].strip()
                break
        client = await PubSubClient(base + "/pubsub").connect()
        seen: asyncio.Queue[Message] = asyncio.Queue()
        await client.subscribe("orders", seen.put_nowait)
        http = tornado.httpclient.AsyncHTTPClient()
        response = await http.fetch(base + "/orders", method="POST", body=json.dumps({"item": "book"}))
        assert response.code == 201 and json.loads(response.body) == {"status": "accepted", "seq": 1}
        message = await asyncio.wait_for(seen.get(), WAIT)
        assert (message.seq, message.payload) == (1, {"order": {"item": "book"}})
        home = json.loads((await http.fetch(base + "/")).body)
        assert home["service"] == "shop"
    finally:
        if client is not None:
            await client.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest_of_output = await asyncio.wait_for(proc.stdout.read(), WAIT)
        output.append(rest_of_output.decode())
        code = await asyncio.wait_for(proc.wait(), WAIT)
    log = "".join(output)
    assert code == 0, log
    assert re.search(r"publish topic='orders' .*seq=1 .*via='inprocess'", log), log
