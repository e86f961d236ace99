"""The live dashboard (one static page and its assets) and the browser client
``/client.js``, served by the server itself.

The page and its files hold no data, so they are served without the API key;
the page then asks for the key when a REST call answers 401.  Everything it
shows comes from ``/stats``, ``/health`` and ``/ws``, which keep their own
checks.  A strict Content-Security-Policy (scripts and connections to this
origin only, no inline script) backs up the page's rule of rendering topic
names and payloads as text, never as markup.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import tornado.web
from tornado.httputil import responses

from tornado_pubsub.core.auth import host_allowed, host_refused
from tornado_pubsub.core.errors import FORBIDDEN, PubSubError, code_for_status, error_body
from tornado_pubsub.server.context import Context

# Shipped inside the tornado_pubsub package, wherever it is installed.
STATIC_ROOT = Path(str(importlib.resources.files("tornado_pubsub") / "static"))
STATIC_DIR = STATIC_ROOT / "dashboard"

# 'self' covers same-origin ws:/wss: in current browsers (CSP level 3).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def refuse_foreign_host(handler: tornado.web.RequestHandler, allowed_hosts: tuple[str, ...] | None) -> None:
    """Like every route: a Host outside ``allowed_hosts`` gets 403 (DNS rebinding)."""
    if not host_allowed(handler.request.host, allowed_hosts):
        handler.set_status(403)
        handler.set_header("Content-Type", "application/json; charset=UTF-8")
        handler.finish(error_body(PubSubError(FORBIDDEN, host_refused(handler.request.host), 403)))


class DashboardAsset(tornado.web.StaticFileHandler):
    """``GET /dashboard/static/<file>``: the page's CSS, JS and icon. No key needed."""

    def initialize(self, context: Context) -> None:  # type: ignore[override]
        # _bind hands every handler the shared context; files need only their root.
        super().initialize(path=str(STATIC_DIR))
        self.allowed_hosts = context.settings.allowed_hosts

    def prepare(self) -> None:
        refuse_foreign_host(self, self.allowed_hosts)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        # Revalidate on each load (the ETag makes that a 304) so an upgraded
        # server never runs with a stale script.
        self.set_header("Cache-Control", "no-cache")


class DashboardPage(DashboardAsset):
    """``GET /dashboard``: the single page (``/dashboard/`` redirects here)."""

    @tornado.web.removeslash
    async def get(self, path: str = "", include_body: bool = True) -> None:
        # The page's relative URLs (stats, ws, dashboard/static/...) assume no
        # trailing slash, so they resolve under any mount prefix.
        await super().get("index.html", include_body)

    async def head(self, path: str = "") -> None:
        # StaticFileHandler.head passes a path this route does not capture (a 500 before).
        await self.get(path, include_body=False)


class ClientScript(tornado.web.StaticFileHandler):
    """``GET /client.js`` and the modules it imports (``/client/<name>.js``):
    the browser client, for any page to import.

    Public code with no secret in it, so it needs no key and carries
    ``Access-Control-Allow-Origin: *``: module scripts are fetched with CORS,
    and a page on another origin may import it (its WebSocket still needs
    that origin in ``allowed_origins``).  The URLs are not versioned, so they
    are revalidated on each load (ETag, 304) and an upgraded server never
    runs with a stale client.
    """

    def initialize(self, context: Context) -> None:  # type: ignore[override]
        super().initialize(path=str(STATIC_ROOT))
        self.allowed_hosts = context.settings.allowed_hosts

    def prepare(self) -> None:
        refuse_foreign_host(self, self.allowed_hosts)

    async def get(self, path: str = "", include_body: bool = True) -> None:
        # The routes only match client.js and client/<name>.js, never another static file.
        await super().get(f"client/{path}" if path else "client.js", include_body)

    async def head(self, path: str = "") -> None:
        await self.get(path, include_body=False)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A JSON error like every other route's, not StaticFileHandler's HTML page.
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(error_body(PubSubError(code_for_status(status_code), responses.get(status_code, "Unknown"), status_code)))

    def get_content_type(self) -> str:
        # Not left to the mimetypes table, which says application/javascript on some systems.
        return "text/javascript; charset=utf-8"

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")
        self.set_header("Cache-Control", "no-cache")


def routes(prefix: str = "") -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """This module's URL patterns under ``prefix``."""
    return [
        (rf"{prefix}/dashboard/?", DashboardPage),
        (rf"{prefix}/dashboard/static/(.+)", DashboardAsset),
        (rf"{prefix}/client\.js", ClientScript),
        (rf"{prefix}/client/([a-z]+\.js)", ClientScript),
    ]

