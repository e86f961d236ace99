"""The REST half of ``PubSubClient``: topic management and the operator
endpoints, as plain HTTP calls beside the WebSocket."""

from __future__ import annotations

import json
from typing import Any

import tornado.httpclient
from tornado.iostream import StreamClosedError

from tornado_pubsub.client.errors import BAD_RESPONSE, ClientError, error_from_http
from tornado_pubsub.core.errors import TOPIC_EXISTS


class RestCalls:
    """REST calls for a client that has ``http_url``, ``connect_timeout``,
    ``request_timeout`` and ``_headers()`` (the key and the token)."""

    http_url: str
    connect_timeout: float
    request_timeout: float

    async def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def rest(self, method: str, path: str, body: Any = None, ok_statuses: tuple[int, ...] = ()) -> Any:
        """One REST call; returns the decoded JSON body or raises ``ClientError``."""
        client = tornado.httpclient.AsyncHTTPClient()
        data = None if body is None else json.dumps(body).encode()
        headers = {**await self._headers(), "Content-Type": "application/json"}
        try:
            response = await client.fetch(
                self.http_url + path,
                method=method,
                body=data,
                headers=headers,
                connect_timeout=self.connect_timeout,
                request_timeout=self.request_timeout,
                raise_error=False,
            )
        except (OSError, StreamClosedError, tornado.httpclient.HTTPClientError) as exc:
            raise error_from_http(exc, f"cannot reach {self.http_url}") from None
        # Timeouts and connection failures were raised above; response.error is the
        # HTTPClientError for the status (a literal 599 is treated like an unreachable server).
        if response.code == 599:
            raise error_from_http(response.error, f"cannot reach {self.http_url}")
        if response.code >= 400 and response.code not in ok_statuses:
            raise error_from_http(response.error, f"{method} {path}")
        try:
            return json.loads(response.body or b"null")
        except ValueError:
            raise ClientError(BAD_RESPONSE, f"{method} {path}: the answer is not JSON", response.code) from None

    async def topics(self) -> list[dict[str, Any]]:
        """``[{name, subscribers}]``."""
        return (await self.rest("GET", "/topics"))["topics"]

    async def create_topic(self, name: str, exist_ok: bool = False) -> bool:
        """Create a topic; returns True if this call created it.  An existing
        topic raises ``ClientError`` ``TOPIC_EXISTS``, or returns False with
        ``exist_ok``."""
        try:
            await self.rest("POST", "/topics", {"name": name})
        except ClientError as exc:
            if exist_ok and exc.code == TOPIC_EXISTS:
                return False
            raise
        return True

    async def delete_topic(self, name: str) -> None:
        """Delete a topic; raises ``ClientError`` ``TOPIC_NOT_FOUND``."""
        await self.rest("DELETE", f"/topics/{name}")

    async def stats(self) -> dict[str, Any]:
        """Per-topic counters (``GET /stats``)."""
        return await self.rest("GET", "/stats")

    async def health(self) -> dict[str, Any]:
        """``GET /health``; a draining server's 503 body is returned, not raised."""
        return await self.rest("GET", "/health", ok_statuses=(503,))
