"""Who a connection or request is, what it may do, and the one function that
turns presented credentials into that answer (PROTOCOL.md 5.1).

Every transport (REST, ``/ws`` and SSE alike) calls
``Credentials.resolve_for(handler, query=...)`` once per request or
handshake; authorization is then ``Identity.allows`` / ``require`` /
``require_admin``.  ``resolve_for`` first asks the host application's
``authenticate`` hook (embedding, ``embed.PubSub``), then reads the headers
and, where browsers cannot set headers (``/ws``, SSE), the ``api_key`` and
``token`` query parameters, and hands them to ``resolve``, which knows no HTTP.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Awaitable, Callable, Union

from tornado_pubsub.core.auth import key_matches
from tornado_pubsub.core.caps import Caps, Grants, parse_caps
from tornado_pubsub.core.errors import FORBIDDEN, INTERNAL, UNAUTHORIZED, PubSubError, code_for_status

ADMIN = "admin"  # the api_key holder: trusted backends
USER = "user"  # a verified token's subject
ANONYMOUS = "anonymous"  # no credential, limited to anonymous_caps
OPEN = "open"  # no credential configured at all: parts 1-4, everything allowed
PENDING = "pending"  # /ws with no credential and no anonymous_caps: may only send auth (or ping)

_MISSING = "a credential is required (the API key or a token)"
_HOOK_FAILED = "authentication failed: the application's authenticate hook raised an error"

MAX_USER_LENGTH = 128  # a token's sub, or a host application's user name


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated party: its kind, user (a token's ``sub``) and grants.

    ``allows`` is the per-frame check; its cost does not depend on how the
    capabilities were written (see ``caps.Grants``).  ``expires_at`` is the
    token's ``exp`` in Unix seconds, None when it has none (or for non-tokens).

    The public constructor, for a host application's ``authenticate`` hook
    (``embed.PubSub``)::

        Identity(user="alice", caps=[{"topics": ["user.{sub}"], "allow": ["subscribe"]}])

    ``caps`` may be given as that JSON-shaped list; it is validated and bounded
    exactly like a token's (``caps.parse_caps``), so a mistake raises
    ``CapsError`` (a ``ValueError``) here rather than silently allowing nothing.
    A user identity needs ``user``: a string of 1 to 128 characters.
    """

    kind: str = USER
    user: str | None = None
    caps: Caps = ()
    expires_at: float | None = None
    grants: Grants = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(isinstance(entry, dict) for entry in self.caps):
            object.__setattr__(self, "caps", parse_caps(list(self.caps)))
        if self.kind == USER and not (isinstance(self.user, str) and 1 <= len(self.user) <= MAX_USER_LENGTH):
            raise ValueError(f"a user identity needs user: a string of 1 to {MAX_USER_LENGTH} characters")
        object.__setattr__(self, "grants", Grants(self.caps, self.user))

    @property
    def admin(self) -> bool:
        """True for the admin key: every action on every topic, and management."""
        return self.kind == ADMIN

    def allows(self, action: str, topic: str) -> bool:
        """May this identity take ``action`` (subscribe/publish/presence) on ``topic``?"""
        return self.kind in (ADMIN, OPEN) or self.grants.allows(action, topic)


ADMIN_IDENTITY = Identity(ADMIN)
OPEN_IDENTITY = Identity(OPEN)
#: A /ws connection upgraded without a credential on a token server: allowed
#: nothing until an ``auth`` frame succeeds (PROTOCOL.md 5.3).
PENDING_IDENTITY = Identity(PENDING)


def require(identity: Identity | None, action: str, topic: str) -> Identity:
    """``identity`` if it may take ``action`` on ``topic``; else 401 (no credential) or 403.

    Call it before looking the topic up: a refused client must not learn
    from a 404 which topics exist.
    """
    if identity is None:
        raise PubSubError(UNAUTHORIZED, _MISSING)
    if not identity.allows(action, topic):
        raise PubSubError(FORBIDDEN, f"{action} on topic {topic[:128]!r} is not allowed")
    return identity


def require_admin(identity: Identity | None) -> Identity:
    """``identity`` if it may manage the server (admin key, or nothing configured).

    A valid token gets 403 (it is someone, just not an administrator); no
    credential, or an anonymous one, gets 401.
    """
    if identity is None or identity.kind == ANONYMOUS:
        raise PubSubError(UNAUTHORIZED, _MISSING)
    if identity.kind not in (ADMIN, OPEN):
        raise PubSubError(FORBIDDEN, "this route needs the admin key")
    return identity


#: A host application's hook (``embed.PubSub(authenticate=...)``): given the
#: Tornado ``RequestHandler`` of a handshake or REST call, the caller's
#: ``Identity``, or None to fall back to the key, a token or ``anonymous_caps``.
#: A plain function or a coroutine function.
Authenticate = Callable[[Any], Union[Identity, None, Awaitable[Union[Identity, None]]]]


class Credentials:
    """The one place presented credentials become an ``Identity``.

    ``verify`` checks a token (``tokens.TokenVerifier.verify``), or is None
    when no token key is configured.  ``anonymous`` is the identity of a
    client that presents nothing, or None when such a client must
    authenticate (REST and SSE: 401; ``/ws``: an ``auth`` frame).
    ``authenticate`` is the host application's hook (see ``resolve_for``);
    configuring it closes the server like a key does: a caller it does not
    recognise is no longer allowed everything.
    """

    def __init__(
        self,
        api_key: str | None,
        verify: Callable[[str], Identity] | None,
        anonymous_caps: Caps | None,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.api_key = api_key
        self.verify = verify
        self.authenticate = authenticate
        if api_key is None and verify is None and authenticate is None:
            self.anonymous: Identity | None = OPEN_IDENTITY
        elif anonymous_caps is not None:
            self.anonymous = Identity(ANONYMOUS, caps=anonymous_caps)
        else:
            self.anonymous = None

    async def resolve_for(self, handler: Any, query: bool = False) -> Identity | None:
        """The identity behind a Tornado request ``handler``; None for "no credential".

        Every transport calls this once per request or handshake.  The host's
        ``authenticate`` hook is asked first (it sees the handler, so it can
        read its own secure cookie or session); when it returns None, the
        ``X-API-Key`` and ``Authorization`` headers decide, and with ``query``
        (``/ws``, SSE: browsers cannot set headers there) also the ``api_key``
        and ``token`` query parameters (see ``resolve``).

        When the hook fails: a ``PubSubError`` it raises is the answer (a host
        may refuse on purpose, e.g. ``UNAUTHORIZED`` for a revoked session); a
        Tornado ``HTTPError`` of 4xx becomes that status; anything else, or a
        result that is not an ``Identity``, is ``INTERNAL`` (500) whose cause is
        logged once with the refusal (``send_error_body``), with no traceback:
        a client that can make the hook fail must not be able to flood the log.
        """
        if self.authenticate is not None:
            identity = await self._ask_host(handler)
            if identity is not None:
                return identity
        headers = handler.request.headers
        return self.resolve(
            key=headers.get("X-API-Key"),
            authorization=headers.get("Authorization"),
            query_key=handler.get_query_argument("api_key", None) if query else None,
            query_token=handler.get_query_argument("token", None) if query else None,
        )

    async def _ask_host(self, handler: Any) -> Identity | None:
        assert self.authenticate is not None
        try:
            result = self.authenticate(handler)
            if inspect.isawaitable(result):
                result = await result
        except PubSubError:
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", None)  # tornado.web.HTTPError, duck-typed
            if isinstance(status, int) and 400 <= status < 500:
                raise PubSubError(code_for_status(status), f"refused by the application ({status})", status) from None
            raise PubSubError(INTERNAL, _HOOK_FAILED, 500) from exc
        if result is not None and not isinstance(result, Identity):
            problem = TypeError(f"authenticate returned {type(result).__name__}, not Identity or None")
            raise PubSubError(INTERNAL, _HOOK_FAILED, 500) from problem
        return result

    @property
    def open(self) -> bool:
        """True when nothing is configured: everyone may do everything (parts 1-4)."""
        return self.anonymous is OPEN_IDENTITY

    def resolve(
        self,
        key: str | None = None,
        authorization: str | None = None,
        query_key: str | None = None,
        query_token: str | None = None,
    ) -> Identity | None:
        """The identity behind what a request presented; None for "no credential".

        ``key``/``authorization`` are the ``X-API-Key`` and ``Authorization``
        headers; ``query_key``/``query_token`` the query parameters, which
        only ``/ws`` and SSE pass.  Precedence: a key that matches (either
        source) makes an admin; otherwise a token decides (the Bearer header
        over the query); otherwise a key that did not match is refused.
        Raises ``UNAUTHORIZED`` for a bad key or token, never silently
        downgrading it to anonymous.  Keys are compared in constant time.
        """
        if self.open:
            return OPEN_IDENTITY
        keys = [k for k in (key, query_key) if k is not None]
        if self.api_key is not None and any(key_matches(self.api_key, k) for k in keys):
            return ADMIN_IDENTITY
        token = _bearer(authorization) if authorization is not None else None
        token = token if token is not None else query_token
        if token is not None:
            return self.token(token)
        if keys:
            raise PubSubError(UNAUTHORIZED, "invalid API key")
        return self.anonymous

    def upgrade_without_credential(self) -> Identity | None:
        """What a ``/ws`` handshake that presented nothing (and found no
        ``anonymous_caps``) becomes: ``PENDING_IDENTITY`` when a token key is
        configured, so the client can send an ``auth`` frame; None (401 before
        the upgrade) with only ``api_key`` configured, as part 3 says."""
        return PENDING_IDENTITY if self.verify is not None else None

    def token(self, token: str) -> Identity:
        """The user ``token`` names (the ``auth`` frame's path, and ``resolve``'s);
        ``UNAUTHORIZED`` saying why when it is refused or no token key is
        configured.  The message never quotes the token."""
        if self.verify is None:
            raise PubSubError(UNAUTHORIZED, "this server accepts no tokens (no token key is configured)")
        return self.verify(token)


def _bearer(authorization: str) -> str | None:
    # Other schemes (Basic, ...) may belong to a proxy or the host app: not ours.
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
