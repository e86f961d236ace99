"""PROTOCOL.md 8 in the node, with no socket: ``topics`` created at start-up,
and ``auto_create_topics`` deciding, in one place, what a missing topic means."""

from __future__ import annotations

import pytest

from tornado_pubsub.backends.memory import Broker
from tornado_pubsub.core.errors import TOPIC_NOT_FOUND, PubSubError
from tornado_pubsub.settings import Settings, SettingsError, load_settings


async def test_start_creates_the_topics_from_settings_and_keeps_existing_ones():
    broker = Broker(topics=("orders", "billing"))
    await broker.start()
    assert [t["name"] for t in await broker.list_topics()] == ["billing", "orders"]
    await broker.publish("orders", "kept")
    assert await broker.ensure_topics(["orders", "audit"]) == ["audit"]  # orders exists: untouched
    assert (await broker.topic_stats())["orders"]["last_seq"] == 1


async def test_start_with_more_topics_than_max_topics_logs_and_still_starts(caplog):
    broker = Broker(topics=("a", "b"), max_topics=1)
    await broker.start()
    assert [t["name"] for t in await broker.list_topics()] == ["a"]
    failed = [r for r in caplog.records if r.getMessage() == "topic_created" and r.outcome == "failed"]
    assert [(r.topic, r.code) for r in failed] == [("b", "LIMIT_EXCEEDED")]


async def test_without_auto_create_a_missing_topic_is_topic_not_found():
    broker = Broker()
    sub = broker.connect("test")
    for operation in (broker.publish("nowhere", 1), broker.subscribe(sub, "nowhere", "c")):
        with pytest.raises(PubSubError) as raised:
            await operation
        assert raised.value.code == TOPIC_NOT_FOUND
    assert await broker.list_topics() == []


async def test_auto_create_makes_the_topic_on_publish_and_on_subscribe():
    broker = Broker(auto_create_topics=True)
    assert (await broker.publish("orders", 1)).seq == 1
    sub = broker.connect("test")
    result = await broker.subscribe(sub, "news", "c", last_n=5)
    assert result.topic == "news" and result.last_seq == 0
    assert [t["name"] for t in await broker.list_topics()] == ["news", "orders"]


async def test_auto_create_is_still_bounded_by_max_topics():
    broker = Broker(auto_create_topics=True, max_topics=1)
    await broker.publish("a", 1)
    with pytest.raises(PubSubError) as raised:
        await broker.publish("b", 1)
    assert raised.value.code == "LIMIT_EXCEEDED"


def test_settings_read_topics_comma_separated_and_refuse_bad_names():
    settings = load_settings(["--topics=orders, billing,orders", "--auto_create_topics=true"], {})
    assert settings.topics == ("orders", "billing") and settings.auto_create_topics
    assert load_settings([], {"PUBSUB_TOPICS": "a,b"}).topics == ("a", "b")
    assert Settings().topics == () and Settings().auto_create_topics is False
    with pytest.raises(SettingsError, match="not a topic name"):
        load_settings(["--topics=ok,bad name"], {})
    with pytest.raises(SettingsError, match="max_topics"):
        Settings(topics=("a", "b"), max_topics=1)
