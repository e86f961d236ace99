"""How ``PubSubClient`` presents its credentials and keeps a token fresh on
the same connection (PROTOCOL.md 5.3): the key and the token for every
handshake and REST call, and an ``auth`` frame when the server warns
``token_expiring``.  Neither the key nor a token is ever logged."""

from __future__ import annotations

import asyncio
import calendar
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Union

from tornado_pubsub.client.errors import TOKEN_FAILED, ClientError

log = logging.getLogger("tornado_pubsub.client")

#: A token, or a function (plain or coroutine) returning a fresh one each time it is called.
TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]

#: The latest a refresh waits after ``token_expiring``: half the server's 30 s warning.
MAX_REFRESH_DELAY = 15.0


def refresh_delay(expires_at: Any, now: float | None = None) -> float:
    """Seconds to wait before refreshing a token that expires at ``expires_at``
    (the notice's ISO-8601 ``Z`` timestamp): half of what is left, at most
    ``MAX_REFRESH_DELAY``, 0 when it cannot be read or has passed.

    Why wait at all: the server warns at once when less than 30 s are left,
    so a client minting short tokens that refreshed at once would be warned
    again at once, in a loop.  Halving keeps a margin for a slow token
    function; the cap keeps a client whose clock runs behind from waiting
    past the real ``exp``.
    """
    if not isinstance(expires_at, str):
        return 0.0
    try:
        whole, _, fraction = expires_at.rstrip("Z").partition(".")
        exp = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")
    except ValueError:
        return 0.0
    left = exp - (time.time() if now is None else now)
    return min(MAX_REFRESH_DELAY, max(0.0, left / 2))


class TokenAuth:
    """Credentials for a client with ``api_key``, ``token`` and ``_request``.

    ``token`` is a string (sent as is; the server's warning cannot be
    answered, so the connection closes with 4401 at expiry and the
    reconnect presents the same, expired, token) or a function called for
    every handshake and every refresh.
    """

    api_key: str | None
    token: TokenSource | None
    _refreshing: "asyncio.Task[None] | None"

    async def _request(self, frame: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def _fresh_token(self) -> str | None:
        """The token to present now (the function is called each time); raises
        ``ClientError`` ``TOKEN_FAILED`` when the function fails (its message is
        not shown: it might hold the token)."""
        if self.token is None or isinstance(self.token, str):
            return self.token
        try:
            token = self.token()
            return await token if inspect.isawaitable(token) else token
        except Exception as exc:
            raise ClientError(TOKEN_FAILED, f"the token function raised {type(exc).__name__}") from None

    async def _headers(self) -> dict[str, str]:
        headers = {"X-API-Key": self.api_key} if self.api_key is not None else {}
        token = await self._fresh_token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _on_token_expiring(self, frame: dict[str, Any]) -> None:
        """Schedule the one refresh for this warning (a later warning replaces it)."""
        if self.token is None or isinstance(self.token, str):
            log.warning("the server says the token expires soon; give token= a function to refresh it")
            return
        self._cancel_refresh()
        self._refreshing = asyncio.ensure_future(self._refresh_token(refresh_delay(frame.get("expires_at"))))

    def _cancel_refresh(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None

    async def _refresh_token(self, delay: float) -> None:
        """Ask the token function for a new token and send it in an ``auth``
        frame.  A failure is logged (without the token): the server closes
        with 4401 at expiry and the reconnect asks the function again."""
        await asyncio.sleep(delay)
        try:
            await self._request({"type": "auth", "token": await self._fresh_token()})
        except ClientError as exc:
            log.warning("token refresh failed: %s", exc)
        else:
            log.info("token refreshed")
