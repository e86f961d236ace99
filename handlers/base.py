"""The base class of every REST handler: JSON bodies, JSON errors, the API key."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web
from marshmallow import Schema
from tornado.httputil import responses

from tornado_pubsub.core import frames, schemas
from tornado_pubsub.core.auth import host_allowed, host_refused, write_allowed
from tornado_pubsub.core.identity import Identity, _bearer, require_admin
from tornado_pubsub.server.context import Context
from tornado_pubsub.core.errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, PubSubError, code_for_status, error_body
from tornado_pubsub.logs import log_op, redact_uri

# Tornado's own body limit, lifted per request: JsonHandler counts bodies and
# refuses them itself with a JSON 413, where Tornado would answer a bare 400.
_UNBOUNDED = 1 << 62


@tornado.web.stream_request_body
class JsonHandler(tornado.web.RequestHandler):
    """JSON in, JSON out; every failure becomes ``{"error": {code, message}}``.

    Bodies are streamed so an oversized one is refused with a JSON 413 as soon
    as its Content-Length is known (the connection then closes), and a chunked
    one is counted, never held beyond ``max_body_size``.
    Subclasses set ``public = True`` to skip the credential check, or
    override ``authorize`` to admit more than the admin key.
    """

    public = False
    identity: Identity | None = None

    def initialize(self, context: Context) -> None:
        self.context = context
        self.broker = context.broker
        self.config = context.settings
        self._body = bytearray()
        self._body_size = 0

    async def prepare(self) -> None:
        self._bound_body()
        self.check_browser_safety()
        if not self.public:
            self.identity = await self.presented_identity()
            # Before the body and the topic are looked at: a refused caller learns nothing.
            self.authorize(self.identity)
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.config.max_body_size:
            raise self._too_large()

    async def presented_identity(self) -> Identity | None:
        """Who the caller is (``Credentials.resolve_for``: the host's
        ``authenticate`` hook, then the credentials).

        Headers only: the api_key and token query parameters are for
        browsers' /ws and SSE, where a URL is the only place to put them
        (the SSE handler overrides this to read them too).
        """
        return await self.context.credentials.resolve_for(self)

    def check_xsrf_cookie(self) -> None:
        """Tornado's XSRF check, which runs when an embedding host application
        sets ``xsrf_cookies``, for cookie-borne callers only.

        A forged cross-site request carries only what the browser adds by
        itself (cookies, cached Basic credentials), never ``X-API-Key`` or a
        ``Bearer`` token, so a backend using those needs no ``_xsrf`` value;
        a caller the host's ``authenticate`` hook knows by its cookie must send
        one, like any write to the host.  The ``Origin`` check
        (``check_browser_safety``) applies to everyone either way.
        """
        headers = self.request.headers
        if "X-API-Key" in headers or _bearer(headers.get("Authorization", "")) is not None:
            return
        super().check_xsrf_cookie()

    def authorize(self, identity: Identity | None) -> None:
        """Raise unless ``identity`` may use this route; by default the admin key only.

        No credential: 401; a valid token: 403 (PROTOCOL.md 5.4).
        ``self.path_args`` are available for per-topic rules.
        """
        require_admin(identity)

    def check_browser_safety(self) -> None:
        """PROTOCOL §10: a ``Host`` outside ``allowed_hosts`` is refused on every
        route (DNS rebinding), and a state-changing call from another origin
        whatever its Content-Type (cross-site writes); see ``core.auth``."""
        request = self.request
        if not host_allowed(request.host, self.config.allowed_hosts):
            raise PubSubError(FORBIDDEN, host_refused(request.host))
        origin = request.headers.get("Origin")
        if not write_allowed(request.method or "", origin, request.host, self.config.allowed_origins):
            raise PubSubError(FORBIDDEN, f"cross-origin {request.method} from origin {origin[:200]!r} not allowed")

    def _bound_body(self) -> None:
        # Our count in data_received enforces the limit; Tornado's would close
        # the connection with a bare 400 instead of our JSON error.  Refusing
        # before the body is read makes Tornado close the connection after
        # the reply, so a huge declared body is never read.
        self.request.connection.set_max_body_size(_UNBOUNDED)  # type: ignore[union-attr]

    def _too_large(self) -> PubSubError:
        return PubSubError(BAD_REQUEST, f"request body is larger than max_body_size ({self.config.max_body_size} bytes)", 413)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= self.config.max_body_size:
            self._body += chunk

    @property
    def body_size(self) -> int:
        """Bytes of request body received (counted even past ``max_body_size``)."""
        return self._body_size

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    def send_json(self, body: Any, status: int = 200) -> None:
        """Finish the request with ``body`` as JSON."""
        self.set_status(status)
        self.finish(frames.encode(body))  # UTF-8, like every frame

    def body_json(self, schema: Schema) -> dict[str, Any]:
        """The request body, decoded and validated; BAD_REQUEST otherwise."""
        if self._body_size > self.config.max_body_size:
            raise self._too_large()
        if not self._body:
            raise PubSubError(BAD_REQUEST, "request body must be a JSON object")
        return schemas.load(schema, schemas.parse_json(bytes(self._body)))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        # Tornado sends 500 for any exception that is not its HTTPError; a
        # PubSubError carries its own status.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PubSubError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Every failure lands here: our PubSubErrors, Tornado's own errors
        # (404, 405, bad request line) and unexpected exceptions; never leak a
        # traceback or a path.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, PubSubError):
            if status_code >= 500:
                message = "internal server error"
            elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code != 404:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            else:
                message = responses.get(status_code, "Unknown")
            exc = PubSubError(code_for_status(status_code), message, status_code)
        if status_code == 405:  # RFC 9110: a 405 must list the methods that would work
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        send_error_body(self, exc, finish=False)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this handler implements."""
        base = tornado.web.RequestHandler
        return [m for m in cls.SUPPORTED_METHODS if getattr(cls, m.lower()) is not getattr(base, m.lower())]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (PubSubError, tornado.web.HTTPError)):
            return  # already logged as an "error" record
        log_op(
            "internal",
            logging.ERROR,
            exc_info=(typ, value, tb),
            method=self.request.method,
            path=redact_uri(self.request.uri or ""),
            remote=self.request.remote_ip,
        )


def send_error_body(
    handler: tornado.web.RequestHandler,
    exc: PubSubError,
    *,
    event: str = "error",
    outcome: str = "rejected",
    level: int | None = None,
    finish: bool = True,
) -> None:
    """Answer ``handler``'s request with ``exc``: the one place an HTTP error
    (a REST failure, a refused WebSocket handshake) is counted, logged and
    rendered (``errors.error_body``)."""
    handler.context.broker.counters.error(exc.code)  # type: ignore[attr-defined]
    request = handler.request
    if level is None:
        level = logging.WARNING if exc.status < 500 else logging.ERROR
    log_op(
        event,
        level,
        method=request.method,
        path=redact_uri(request.uri or ""),
        remote=request.remote_ip,
        user=getattr(getattr(handler, "identity", None), "user", None),
        code=exc.code,
        status=exc.status,
        outcome=outcome,
        detail=exc.message,
        # What went wrong inside (e.g. the host's authenticate hook), for the
        # operator only: one line, never a traceback, never in the body.
        cause=f"{type(exc.__cause__).__name__}: {str(exc.__cause__)[:300]}" if exc.__cause__ is not None else None,
    )
    handler.set_status(exc.status)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    if finish:
        handler.finish(error_body(exc))
    else:
        handler.write(error_body(exc))


class NotFoundHandler(JsonHandler):
    """Unknown routes: a JSON 404 instead of Tornado's HTML page."""

    public = True

    def prepare(self) -> None:
        self._bound_body()
        self.check_browser_safety()
        raise PubSubError(NOT_FOUND, f"no route for {self.request.path}", 404)


