"""The REST API against its OpenAPI document (conf/openapi.json).

schemathesis generates requests from the document (valid and invalid) and
checks, for each: no 5xx, status codes, content types and bodies as
documented.  Hand-written hostile requests (malformed bodies, wrong content
types, huge bodies, odd topic names in paths) are validated against the same
document.
"""

from __future__ import annotations

import json
import re
import socket

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from tornado_pubsub.handlers.ops import OPENAPI_PATH
from tests.kit.threadserver import ThreadServer
from tornado_pubsub.server.app import routes
from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.settings import Settings

KEY = "openapi-test-key"
MAX_BODY = 4096
schema = schemathesis.openapi.from_path(OPENAPI_PATH)


@pytest.fixture(scope="module")
def server():
    settings_ = Settings(port=0, api_key=KEY, max_body_size=MAX_BODY, max_topics=200, log_level="critical")
    with ThreadServer(settings_) as running:
        for name in ("orders", "a" * 128, "x.y:z-1_2"):
            running.run(lambda name=name: running.broker.create_topic(name))
        yield running


@pytest.fixture(scope="module")
def base_url(server) -> str:
    return f"http://127.0.0.1:{server.port}"


@schema.parametrize()
@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
def test_every_generated_request_is_answered_as_documented(case, base_url):
    case.call_and_validate(base_url=base_url, headers={"X-API-Key": KEY})


def test_document_is_served_and_is_the_one_in_conf(base_url):
    response = requests.get(base_url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        assert response.json() == json.load(f)
    assert response.json()["openapi"].startswith("3.")


def send(base_url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One raw request; the response is validated against the document."""
    all_headers = {"X-API-Key": KEY, **(headers or {})}
    response = requests.request(method, base_url + path, data=body, headers=all_headers, timeout=10)
    operation = schema.find_operation_by_path(method, _template(path))
    assert operation is not None, (method, path)
    segments = path.split("?")[0].split("/")
    case = operation.Case(path_parameters={"name": segments[2]} if "{name}" in operation.path else None)
    case.validate_response(response, headers=all_headers)
    assert response.status_code < 500
    return response


def _template(path: str) -> str:
    if path.startswith("/topics/") and path.endswith("/messages"):
        return "/topics/{name}/messages"
    if path.startswith("/topics/"):
        return "/topics/{name}"
    return path.split("?")[0]


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b"null", "application/json"),
        (b'"orders"', "application/json"),
        (b"[]", "application/json"),
        (b'{"name": 5}', "application/json"),
        (b'{"name": ""}', "application/json"),
        (b'{"name": "a b"}', "application/json"),
        (b'{"name": "' + b"a" * 129 + b'"}', "application/json"),
        (b'{"name": "\\ud800"}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"name=orders", "application/x-www-form-urlencoded"),
        (b"<topic>orders</topic>", "text/xml"),
        (b'{"name": "fine"}', "text/plain"),
        (b'{"name": NaN}', "application/json"),
        (b"[" * 200 + b"]" * 200, "application/json"),
    ],
)
def test_malformed_bodies_and_content_types_are_400_or_handled(base_url, body, content_type):
    response = send(base_url, "POST", "/topics", body, {"Content-Type": content_type})
    # Bodies are read as JSON whatever the label says; a valid one creates the topic.
    if body == b'{"name": "fine"}':
        assert response.status_code in (201, 409)
    else:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("path", ["/topics", "/topics/orders/messages"])
def test_body_over_max_body_size_is_413_before_it_is_read(base_url, path):
    body = json.dumps({"name": "big", "payload": "x" * (MAX_BODY * 4)}).encode()
    response = send(base_url, "POST", path, body, {"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BAD_REQUEST"


def test_chunked_body_over_max_body_size_is_413(base_url):
    def chunks():
        yield b'{"payload": "'
        for _ in range(MAX_BODY // 512 + 4):
            yield b"x" * 512
        yield b'"}'

    response = requests.post(
        base_url + "/topics/orders/messages", data=chunks(), headers={"X-API-Key": KEY, "Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "BAD_REQUEST"


def test_a_huge_declared_body_is_refused_without_reading_it(server):
    # Claim 10 GB and send nothing: the reply must come at once, not after a body read.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /topics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 10000000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert json.loads(body)["error"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    "name,status",
    [
        ("orders", 201),
        ("%6Frders", 201),  # percent-encoded "orders" is orders
        ("x.y%3Az-1_2", 201),
        ("a" * 128, 201),
        ("a" * 129, 404),
        ("a" * 5000, 404),
        ("%2E%2E", 404),
        ("..%2Fstats", 404),
        ("%00", 404),
        ("%E2%82%AC", 404),
        ("%ZZ", 404),
        ("or%0Aders", 404),
        ("-orders", 404),
        ("%F0%9F%98%80", 404),
    ],
)
def test_topic_names_in_paths(base_url, name, status):
    body = json.dumps({"payload": {"n": 1}}).encode()
    response = send(base_url, "POST", f"/topics/{name}/messages", body, {"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    if status == 404:
        assert response.json()["error"]["code"] == "TOPIC_NOT_FOUND"
    response = send(base_url, "DELETE", f"/topics/{name}" if status == 404 else "/topics/no-such-topic")
    assert response.status_code == 404


def served_paths() -> set[str]:
    """The REST paths the server routes, as OpenAPI templates (``([^/]+)`` -> ``{name}``);
    the WebSocket endpoint, the SSE stream (an endless response no generated
    request could read to its end), the dashboard and /client.js are not part
    of the REST document."""
    paths = set()
    for spec in routes(Broker(), Settings()):
        pattern = spec.regex.pattern.removesuffix("$")
        path = re.sub(r"\\(.)", r"\1", re.sub(r"\(\[\^/\]\+\)", "{name}", pattern))
        if path in ("/ws", "/client.js", "/topics/{name}/events") or path.startswith(("/dashboard", "/client/")):
            continue
        assert "(" not in path, f"unmapped group in route {pattern!r}"
        paths.add(path)
    return paths


def test_document_names_every_route_the_server_has():
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        documented = set(json.load(f)["paths"])
    expected = served_paths()
    assert {"/topics", "/topics/{name}", "/topics/{name}/messages"} <= expected  # the derivation found the REST routes
    assert documented == expected
