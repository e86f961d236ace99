"""REST about who is connected (PROTOCOL.md 5.4, 6): presence of a topic,
every connection, and an administrator's disconnect of a user.  Thin: each
handler makes one node call (``Node.presence``, ``connections``,
``disconnect_user``), which asks every process under the Redis broker."""

from __future__ import annotations

from tornado_pubsub.core import schemas
from tornado_pubsub.core.caps import PRESENCE
from tornado_pubsub.core.errors import BAD_REQUEST, TOPIC_NOT_FOUND, PubSubError
from tornado_pubsub.core.identity import Identity, require
from tornado_pubsub.logs import log_op

from tornado_pubsub.handlers.base import JsonHandler


class TopicPresenceHandler(JsonHandler):
    """``GET /topics/{name}/presence``: the admin key, or an identity allowed
    ``presence`` on the topic; the permission is checked before the topic is
    looked up, so a refused caller cannot probe which topics exist."""

    def authorize(self, identity: Identity | None) -> None:
        require(identity, PRESENCE, self.path_args[0])

    async def get(self, name: str) -> None:
        if not schemas.TOPIC_RE.match(name):  # such a topic cannot exist
            raise PubSubError(TOPIC_NOT_FOUND, "topic does not exist (invalid topic name)")
        members, truncated = await self.broker.presence(name)
        body = {"topic": name, "subscribers": members}
        if truncated:
            body["truncated"] = True
        self.send_json(body)


class ConnectionsHandler(JsonHandler):
    """``GET /connections`` (admin key): every connection of every process."""

    async def get(self) -> None:
        rows, truncated = await self.broker.connection_rows()
        body = {"connections": rows}
        if truncated:
            body["truncated"] = True
        self.send_json(body)


class UserDisconnectHandler(JsonHandler):
    """``POST /users/{sub}/disconnect`` (admin key): every connection of that
    user, on every process, is closed with 4403; 200 with the count (0 when none)."""

    async def post(self, user: str) -> None:
        if not user or len(user) > schemas.MAX_ID_LENGTH:  # no token's sub is longer
            raise PubSubError(BAD_REQUEST, f"user must be 1 to {schemas.MAX_ID_LENGTH} characters")
        closed = await self.broker.disconnect_user(user)
        log_op("user_disconnect", user=user, connections=closed, remote=self.request.remote_ip, outcome="ok")
        self.send_json({"status": "disconnected", "user": user, "connections": closed})


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [
        (rf"{prefix}/topics/([^/]+)/presence", TopicPresenceHandler),
        (rf"{prefix}/connections", ConnectionsHandler),
        (rf"{prefix}/users/([^/]+)/disconnect", UserDisconnectHandler),
    ]
