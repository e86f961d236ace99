"""The live dashboard: one static page and its assets, served by the server itself.

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

import tornado.web

from tornado_pubsub.core.auth import host_allowed, host_refused
from tornado_pubsub.core.errors import FORBIDDEN, PubSubError, error_body
from tornado_pubsub.server.context import Context

# Shipped inside the tornado_pubsub package, wherever it is installed.
STATIC_DIR = Path(str(importlib.resources.files("tornado_pubsub") / "static" / "dashboard"))

# 'self' covers same-origin ws:/wss: in current browsers (CSP level 3).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class DashboardAsset(tornado.web.StaticFileHandler):
    """``GET /dashboard/static/<file>``: the page's CSS, JS and icon. No key needed."""

    def initialize(self, context: Context) -> None:  # type: ignore[override]
        # _bind hands every handler the shared context; files need only their root.
        super().initialize(path=str(STATIC_DIR))
        self.allowed_hosts = context.settings.allowed_hosts

    def prepare(self) -> None:
        # Like every route: a Host outside allowed_hosts gets 403 (DNS rebinding).
        if not host_allowed(self.request.host, self.allowed_hosts):
            self.set_status(403)
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(error_body(PubSubError(FORBIDDEN, host_refused(self.request.host), 403)))

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


def routes(prefix: str = "") -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """This module's URL patterns under ``prefix``."""
    return [
        (rf"{prefix}/dashboard/?", DashboardPage),
        (rf"{prefix}/dashboard/static/(.+)", DashboardAsset),
    ]

