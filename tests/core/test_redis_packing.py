"""The publish lane's EVALSHA bytes (backends.redis.scripts.PublishPacking)
are exactly what hiredis's pack_command makes of the same arguments."""

import uuid

import pytest

pytest.importorskip("hiredis")

from hiredis import pack_command  # noqa: E402

from tornado_pubsub.backends.redis.scripts import Keys, PublishPacking  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"


def expected(keys: Keys, name: str, history_size: int, id_key: str, head: bytes) -> bytes:
    return pack_command(("EVALSHA", SHA, 4, keys.topics, *keys.topic(name), name, id_key, head, history_size, keys.bus))


@pytest.mark.parametrize("name", ["orders", "ü-ñ-日本", "a" * 300, "x:y\r\nz"])
@pytest.mark.parametrize("history_size", [0, 100, 10**9])
@pytest.mark.parametrize("head", [b"", b'{"type":"event","topic":"orders","seq":', bytes(range(256)) * 40])
def test_packed_publish_matches_pack_command(name, history_size, head):
    keys = Keys("pfx:")
    packing = PublishPacking(keys)
    for _ in range(2):  # the second time from the cached ends
        id_key = str(uuid.uuid4())
        assert packing.pack(SHA, name, history_size, id_key, head) == expected(keys, name, history_size, id_key, head)


def test_the_cache_of_topic_ends_is_bounded():
    keys = Keys()
    packing = PublishPacking(keys)
    for i in range(PublishPacking.MAX_TOPICS * 2 + 3):
        name = f"t{i}"
        assert packing.pack(SHA, name, 100, "id", b"h") == expected(keys, name, 100, "id", b"h")
        assert len(packing._ends) <= PublishPacking.MAX_TOPICS
