"""The dashboard page over plain HTTP (its behaviour in a browser is in
tests/system/test_dashboard.py)."""

from __future__ import annotations

import tornado.httpclient


async def fetch(port: int, method: str, path: str) -> tornado.httpclient.HTTPResponse:
    return await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", method=method, raise_error=False, follow_redirects=False
    )


async def test_head_dashboard_answers_like_get_without_a_body(port):
    get = await fetch(port, "GET", "/dashboard")
    head = await fetch(port, "HEAD", "/dashboard")
    assert (get.code, head.code) == (200, 200)
    assert head.body == b""
    for header in ("Content-Type", "Content-Length", "Content-Security-Policy", "Etag"):
        assert head.headers.get(header) == get.headers.get(header), header
