"""Browser safety (PROTOCOL §10, issue 11 finding 9): a page on another site
cannot change state through a visitor's browser, whatever Content-Type it
sends, and a DNS-rebound name is refused on every route, /ws included."""

from __future__ import annotations

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tornado_pubsub import PubSub
from tornado_pubsub.core.auth import default_allowed_hosts, host_allowed
from tornado_pubsub.settings import Settings, load_settings

from tests.kit.clients import Rest
from tests.kit.clients import handshake_status

EVIL = "https://evil.example"
TEXT_PLAIN = {"Content-Type": "text/plain"}  # a "simple" request: no CORS preflight


def origin(value: str) -> dict[str, str]:
    return {"Origin": value, **TEXT_PLAIN}


async def messages(rest, topic: str) -> int:
    return (await rest.call("GET", "/stats"))[1]["topics"][topic]["messages"]


async def test_cross_site_writes_are_403_whatever_the_content_type(rest):
    await rest.create("t")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json"):
        headers = {"Origin": EVIL, "Content-Type": content_type}
        status, body = await rest.call("POST", "/topics", {"name": "planted"}, headers=headers)
        assert status == 403 and body["error"]["code"] == "FORBIDDEN" and "origin" in body["error"]["message"]
        status, body = await rest.call("POST", "/topics/t/messages", {"payload": 1}, headers=headers)
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"
        status, _ = await rest.call("DELETE", "/topics/t", headers=headers)
        assert status == 403
    status, body = await rest.call("GET", "/topics")
    assert [t["name"] for t in body["topics"]] == ["t"] and await messages(rest, "t") == 0


@pytest.mark.parametrize("scheme_and_origin", ["null", "ws://127.0.0.1:{port}", "http://127.0.0.1:{port}.evil.example", "http://127.0.0.1"])
async def test_not_quite_same_origin_is_refused(rest, port, scheme_and_origin):
    await rest.create("t")
    status, _ = await rest.call("POST", "/topics/t/messages", {"payload": 1}, headers=origin(scheme_and_origin.format(port=port)))
    assert status == 403 and await messages(rest, "t") == 0


@pytest.mark.pubsub(allowed_origins=("https://app.example",))
async def test_same_origin_listed_origin_and_no_origin_may_write(rest, port):
    await rest.create("t")
    for headers in (origin(f"http://127.0.0.1:{port}"), origin(f"https://127.0.0.1:{port}"), origin("https://APP.example/"), TEXT_PLAIN, {}):
        status, body = await rest.call("POST", "/topics/t/messages", {"payload": 1}, headers=headers)
        assert status == 201, (headers, body)
    assert await messages(rest, "t") == 5


async def test_cross_site_reads_are_not_refused(rest):
    # A browser will not let the page read the answer (no CORS headers); a read changes nothing.
    status, _ = await rest.call("GET", "/topics", headers={"Origin": EVIL})
    assert status == 200


@pytest.mark.parametrize("path", ["/topics", "/stats", "/health", "/metrics", "/openapi.json", "/dashboard", "/dashboard/static/app.js", "/nope"])
async def test_dns_rebound_host_is_refused_on_every_route(rest, path):
    status, body = await rest.call("GET", path, headers={"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"})
    assert status == 403, (path, body)
    assert body["error"]["code"] == "FORBIDDEN" and "allowed_hosts" in body["error"]["message"]


async def test_dns_rebound_host_is_refused_at_the_ws_handshake_and_for_writes(rest, port, broker):
    rebound = {"Host": f"rebind.evil.example:{port}", "Origin": f"http://rebind.evil.example:{port}"}
    status, body = await handshake_status(port, headers=rebound)
    assert status == 403 and body["error"]["code"] == "FORBIDDEN" and not broker.connections
    status, _ = await rest.call("POST", "/topics", {"name": "planted"}, headers=rebound)
    assert status == 403 and (await rest.call("GET", "/topics"))[1]["topics"] == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "[::1]"])
async def test_loopback_names_are_served_by_default(rest, port, host):
    status, _ = await rest.call("GET", "/health", headers={"Host": host.format(port=port)})
    assert status == 200
    assert (await handshake_status(port, headers={"Host": host.format(port=port)}))[0] == 101


@pytest.mark.pubsub(allowed_hosts=("pubsub.example",))
async def test_allowed_hosts_lists_the_names_served(rest, port):
    assert (await rest.call("GET", "/health", headers={"Host": f"pubsub.example:{port}"}))[0] == 200
    assert (await rest.call("GET", "/health", headers={"Host": "localhost"}))[0] == 403
    assert (await handshake_status(port, headers={"Host": "pubsub.example"}))[0] == 101


@pytest.mark.pubsub(behind_proxy=True)
async def test_behind_a_proxy_any_host_by_default(rest):
    assert (await rest.call("GET", "/health", headers={"Host": "pubsub.example"}))[0] == 200


def test_default_allowed_hosts_follow_the_listening_address():
    assert default_allowed_hosts("127.0.0.1", False) == ("localhost", "127.0.0.1", "[::1]")
    assert default_allowed_hosts("::1", False) == default_allowed_hosts("localhost", False) == default_allowed_hosts("127.0.0.1", False)
    assert default_allowed_hosts("127.0.0.1", True) == ("*",)
    assert default_allowed_hosts("0.0.0.0", False) == default_allowed_hosts("", False) == ("*",)
    assert load_settings(["--allowed_hosts=A.example, b.example"], {}).allowed_hosts == ("a.example", "b.example")
    assert load_settings([], {}).allowed_hosts is None
    assert host_allowed("anything", ("*",)) and not host_allowed("a.example.evil", ("a.example",))


async def test_embedded_routes_leave_host_checks_to_the_host_application():
    pubsub = PubSub(Settings(), prefix="/pubsub")
    server = HTTPServer(tornado.web.Application(pubsub.routes))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    try:
        rest = Rest(sockets[0].getsockname()[1])
        status, _ = await rest.call("GET", "/pubsub/health", headers={"Host": "www.customer.example"})
        assert status == 200
        status, _ = await rest.call("POST", "/pubsub/topics", {"name": "x"}, headers={"Origin": EVIL, **TEXT_PLAIN})
        assert status == 403  # cross-site writes are refused embedded too
    finally:
        server.stop()
        pubsub.close()
