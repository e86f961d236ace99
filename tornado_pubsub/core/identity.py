"""Who a connection or request is, what it may do, and the one function that
turns presented credentials into that answer (PROTOCOL.md 5.1).

Every transport (REST now, ``/ws`` and SSE alike) gathers what the client
presented and calls ``Credentials.resolve``; authorization is then
``Identity.allows`` / ``require`` / ``require_admin``.  Nothing here knows
HTTP: the transport decides which sources it reads (the ``api_key`` and
``token`` query parameters only on ``/ws`` and SSE, where browsers cannot
set headers).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from tornado_pubsub.core.auth import key_matches
from tornado_pubsub.core.caps import Caps, Grants
from tornado_pubsub.core.errors import FORBIDDEN, UNAUTHORIZED, PubSubError

ADMIN = "admin"  # the api_key holder: trusted backends
USER = "user"  # a verified token's subject
ANONYMOUS = "anonymous"  # no credential, limited to anonymous_caps
OPEN = "open"  # no credential configured at all: parts 1-4, everything allowed
PENDING = "pending"  # /ws with no credential and no anonymous_caps: may only send auth (or ping)

_MISSING = "a credential is required (the API key or a token)"


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated party: its kind, user (a token's ``sub``) and grants.

    ``allows`` is the per-frame check; its cost does not depend on how the
    capabilities were written (see ``caps.Grants``).  ``expires_at`` is the
    token's ``exp`` in Unix seconds, None when it has none (or for non-tokens).
    """

    kind: str
    user: str | None = None
    caps: Caps = ()
    expires_at: float | None = None
    grants: Grants = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
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


class Credentials:
    """The one place presented credentials become an ``Identity``.

    ``verify`` checks a token (``tokens.TokenVerifier.verify``), or is None
    when no token key is configured.  ``anonymous`` is the identity of a
    client that presents nothing, or None when such a client must
    authenticate (REST and SSE: 401; ``/ws``: an ``auth`` frame).
    """

    def __init__(
        self,
        api_key: str | None,
        verify: Callable[[str], Identity] | None,
        anonymous_caps: Caps | None,
    ) -> None:
        self.api_key = api_key
        self.verify = verify
        if api_key is None and verify is None:
            self.anonymous: Identity | None = OPEN_IDENTITY
        elif anonymous_caps is not None:
            self.anonymous = Identity(ANONYMOUS, caps=anonymous_caps)
        else:
            self.anonymous = None

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
