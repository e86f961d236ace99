"""A connection's token over its life (PROTOCOL.md 5.3): the ``auth`` frame
that sets or refreshes it, the subscriptions a refresh revokes, and the one
timer that warns before ``exp`` and closes with 4401 at it.

A mixin of ``core.session.Session``, kept apart so the session module holds
the frame path and this one the identity's lifetime; it reads the session's
``identity``, ``credentials``, ``broker``, ``sub`` and error-log budget.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from tornado.ioloop import IOLoop

from tornado_pubsub.core import frames
from tornado_pubsub.core.errors import LIMIT_EXCEEDED, SHUTTING_DOWN, TOKEN_EXPIRED, UNAUTHORIZED, PubSubError
from tornado_pubsub.core.hub import Subscriber
from tornado_pubsub.core.ratelimit import TokenBucket
from tornado_pubsub.logs import log_op

if TYPE_CHECKING:
    from tornado_pubsub.core.session import Identity

#: Seconds before a token's ``exp`` that ``info token_expiring`` is sent (PROTOCOL.md 5.3).
EXPIRY_WARNING = 30.0

#: ``auth`` frames one connection may have verified: one a second, in
#: bursts of five.  Checking a signature costs far more than any other frame
#: (an ES256 verify ~100 us), and a client needs one per token lifetime, so
#: a flood of forged tokens must not ride on the general frame budget
#: (10,000 a second by default).
AUTH_FRAMES_PER_SECOND = 1.0
AUTH_BURST = 5.0


class TokenLife:
    """The ``auth`` route and the expiry timer of a ``Session`` (see the module)."""

    __slots__ = ()

    async def _auth(self, sub: Subscriber, frame: dict[str, Any]) -> None:
        """Set (no credential yet) or replace (same ``sub``) the connection's token.

        Atomic as seen by the client: a refused token (bad, another user's, the
        user's connection limit reached) changes nothing.  On success the ack
        is queued, then ``subscription_revoked`` for each subscription the new
        capabilities no longer allow (really unsubscribed), and the expiry timer
        is re-armed for the new token.  Threat: the frame carries a credential,
        so no message or log record here quotes it (``Credentials.token``).
        """
        current = self.identity
        if current.admin:
            raise PubSubError(UNAUTHORIZED, "this connection holds the API key; auth frames carry user tokens")
        if self.credentials is None:
            raise PubSubError(UNAUTHORIZED, "this server accepts no tokens (no token key is configured)")
        if self.broker.draining:
            raise PubSubError(SHUTTING_DOWN, "the server is shutting down")
        if self._auth_budget is None:
            self._auth_budget = TokenBucket(AUTH_FRAMES_PER_SECOND, AUTH_BURST)
        if not self._auth_budget.take():
            raise PubSubError(LIMIT_EXCEEDED, f"more than {AUTH_BURST:g} auth frames in a row (then {AUTH_FRAMES_PER_SECOND:g} a second); token not checked")
        identity = self._verify(frame["token"])
        if current.user is not None and identity.user != current.user:
            raise PubSubError(UNAUTHORIZED, "the token is for another user; a connection keeps its user")
        if current.user is None:
            self.broker.set_user(sub, identity.user)  # LIMIT_EXCEEDED: nothing changed
        self.identity = identity
        # The old token's timer must not fire while revocations await a backend.
        self._cancel_expiry()
        request_id = frame.get("request_id")
        sub.send(frames.auth_ack(identity.user, identity.expires_at, request_id))
        revoked = await self._revoke(sub, request_id)
        log_op(
            "auth",
            conn_id=sub.id,
            user=identity.user,
            client_id=sub.client_id(),
            remote=sub.remote,
            request_id=request_id,
            expires_at=None if identity.expires_at is None else frames.timestamp(identity.expires_at),
            revoked=revoked or None,
            outcome="refreshed" if current.user is not None else "ok",
        )
        self._arm_expiry()

    def _verify(self, token: str) -> Identity:
        assert self.credentials is not None
        try:
            return self.credentials.token(token)
        except PubSubError:
            raise
        except Exception as exc:
            # Not the generic INTERNAL path: a traceback's messages could quote the token.
            if self.error_logs.take():
                log_op(
                    "internal",
                    logging.ERROR,
                    conn_id=self.sub.id,
                    user=self.identity.user,
                    remote=self.sub.remote,
                    error=type(exc).__name__,
                    detail="token verification failed",
                )
            else:
                self.errors_unlogged += 1
            raise PubSubError(UNAUTHORIZED, "invalid token: malformed") from None

    async def _revoke(self, sub: Subscriber, request_id: str | None) -> int:
        """End each subscription the identity no longer allows, telling the client; returns how many.

        Each is detached from the hub before anything awaits, so no event of
        it is queued after its notice; with a backend that suspends (Redis),
        one still waiting its turn may get events until its own notice."""
        revoked = 0
        for topic in [t for t in sub.topics if not self.identity.allows("subscribe", t)]:
            if sub.closed or topic not in sub.topics:  # gone while an earlier one was unsubscribed
                continue
            client_id = sub.topics[topic]
            await self.broker.unsubscribe(sub, topic)
            sub.send(frames.info("subscription_revoked", topic=topic))
            log_op(
                "revoke",
                conn_id=sub.id,
                user=self.identity.user,
                client_id=client_id,
                topic=topic,
                request_id=request_id,
                remote=sub.remote,
                outcome="revoked",
            )
            revoked += 1
        return revoked

    def _arm_expiry(self) -> None:
        """Watch the current token's ``exp`` with one timer: it fires
        ``EXPIRY_WARNING`` seconds before (``info token_expiring``, at once if
        less is left), then re-arms itself for ``exp`` (close 4401).  One
        timer handle per connection, none without ``exp``, so 10,000 idle
        connections cost 10,000 heap entries and no task or polling."""
        self._cancel_expiry()
        expires_at = getattr(self.identity, "expires_at", None)
        if expires_at is None:
            return
        left = expires_at - time.time()
        if left > EXPIRY_WARNING:
            self._expiry = self._call_in(left - EXPIRY_WARNING, self._warn_expiry)
        else:
            self._warn_expiry()

    def _warn_expiry(self) -> None:
        self._expiry = None
        expires_at = getattr(self.identity, "expires_at", None)
        if expires_at is None or self.sub.closed or self.sub.queue.closing is not None:
            return
        self.sub.send(frames.info("token_expiring", expires_at=frames.timestamp(expires_at)))
        log_op("token_expiring", conn_id=self.sub.id, user=self.identity.user, remote=self.sub.remote, outcome="warned")
        self._expiry = self._call_in(expires_at - time.time(), self._expire)

    def _expire(self) -> None:
        """``exp`` passed with no successful ``auth``: UNAUTHORIZED, then close 4401."""
        self._expiry = None
        sub = self.sub
        if sub.closed or sub.queue.closing is not None:
            return
        self.reply_error(PubSubError(UNAUTHORIZED, "token expired"), None)
        sub.queue.close(TOKEN_EXPIRED)

    @staticmethod
    def _call_in(delay: float, callback: Callable[[], None]) -> object:
        loop = IOLoop.current()
        return loop.call_at(loop.time() + max(0.0, delay), callback)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            IOLoop.current().remove_timeout(self._expiry)
            self._expiry = None
