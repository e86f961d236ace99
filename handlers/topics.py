"""REST: create, list and delete topics; publish over HTTP."""

from __future__ import annotations

from tornado_pubsub.core import schemas
from tornado_pubsub.core.caps import PUBLISH
from tornado_pubsub.core.identity import Identity, require
from tornado_pubsub.core.errors import BAD_REQUEST, TOPIC_NOT_FOUND, PubSubError
from tornado_pubsub.logs import log_op

from tornado_pubsub.handlers.base import JsonHandler

_CREATE = schemas.CreateTopicSchema()
_PUBLISH = schemas.PublishBodySchema()


def existing_name(name: str) -> str:
    """``name`` if it can name a topic; TOPIC_NOT_FOUND otherwise (a malformed name cannot exist)."""
    # A name that breaks the topic rule cannot exist: 404, like any unknown topic.
    if not schemas.TOPIC_RE.match(name):
        raise PubSubError(TOPIC_NOT_FOUND, "topic does not exist (invalid topic name)")
    return name


class TopicsHandler(JsonHandler):
    """``GET /topics`` lists topics; ``POST /topics`` creates one."""

    async def get(self) -> None:
        self.send_json({"topics": await self.broker.list_topics()})

    async def post(self) -> None:
        name = self.body_json(_CREATE)["name"]
        topic = await self.broker.create_topic(name)
        log_op("topic_created", topic=name, epoch=topic.epoch, remote=self.request.remote_ip, outcome="ok")
        self.send_json({"status": "created", "topic": name}, 201)


class TopicHandler(JsonHandler):
    """``DELETE /topics/{name}``: its subscribers get ``info topic_deleted``."""

    async def delete(self, name: str) -> None:
        name = existing_name(name)
        notified = await self.broker.delete_topic(name)
        log_op("topic_deleted", topic=name, subscribers=notified, remote=self.request.remote_ip, outcome="ok")
        self.send_json({"status": "deleted", "topic": name})


class TopicMessagesHandler(JsonHandler):
    """``POST /topics/{name}/messages``: publish over HTTP.

    Open to the admin key and to any identity (token or anonymous_caps)
    allowed ``publish`` on the topic; the permission is checked before the
    topic is looked up, so a refused caller cannot probe which topics exist.
    """

    def authorize(self, identity: Identity | None) -> None:
        require(identity, PUBLISH, self.path_args[0])

    async def post(self, name: str) -> None:
        name = existing_name(name)
        limit = self.config.max_message_size
        if self.body_size > limit:
            # The same bound as a WebSocket publish frame, so no path admits
            # a message that a WebSocket publisher could not send.
            raise PubSubError(BAD_REQUEST, f"message is larger than max_message_size ({limit} bytes)", 413)
        body = self.body_json(_PUBLISH)
        result = await self.broker.publish(name, body["payload"], body.get("id"))
        result.log(remote=self.request.remote_ip, via="http", user=self.identity.user if self.identity else None)
        self.send_json(
            {"status": "published", "topic": name, "id": result.id, "seq": result.seq, "duplicate": result.duplicate},
            201,
        )


def routes(prefix: str = "") -> list[tuple[str, type]]:
    """This module's URL patterns under ``prefix``."""
    return [
        (rf"{prefix}/topics", TopicsHandler),
        (rf"{prefix}/topics/([^/]+)", TopicHandler),
        (rf"{prefix}/topics/([^/]+)/messages", TopicMessagesHandler),
    ]
