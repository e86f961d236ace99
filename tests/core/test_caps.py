"""Capability lists: parsing and bounds, and the compiled matcher checked
against a plain reference implementation (PROTOCOL.md 5.2). No sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_pubsub.core.caps import (
    ACTIONS,
    MAX_ENTRIES,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    CapsError,
    Grants,
    merge,
    parse_caps,
    parse_caps_json,
)
from tornado_pubsub.core.identity import ADMIN_IDENTITY, ANONYMOUS, OPEN_IDENTITY, USER, Identity


def reference_allows(caps: list[dict], sub: str | None, action: str, topic: str) -> bool:
    """PROTOCOL.md 5.2 read literally, one pattern at a time, no precompilation."""
    for entry in caps:
        if action not in entry["allow"]:
            continue
        for pattern in entry["topics"]:
            if "{sub}" in pattern:
                if sub is None:
                    continue
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                if "{sub}" in prefix:
                    prefix = prefix.replace("{sub}", sub)
                if len(topic) > len(prefix) and topic[: len(prefix)] == prefix:
                    return True
            else:
                if "{sub}" in pattern:
                    pattern = pattern.replace("{sub}", sub)
                if topic == pattern:
                    return True
    return False


def grants(caps: list[dict], sub: str | None = "42") -> Grants:
    return Grants(parse_caps(caps), sub)


@pytest.mark.parametrize(
    "pattern, topic, allowed",
    [
        ("orders", "orders", True),
        ("orders", "orders.eu", False),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.1", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.", False),  # "*" stands for at least one character
        ("orders.*", "ordersX", False),
        ("*", "anything", True),
        ("*", "a", True),
        ("user.{sub}", "user.42", True),
        ("user.{sub}", "user.43", False),
        ("user.{sub}", "user.420", False),
        ("user.{sub}.*", "user.42.inbox", True),
        ("user.{sub}.*", "user.43.inbox", False),
        ("{sub}", "42", True),
    ],
)
def test_pattern_matches_as_the_contract_says(pattern, topic, allowed):
    assert grants([{"topics": [pattern], "allow": ["subscribe"]}]).allows("subscribe", topic) is allowed


def test_action_must_be_listed_by_the_matching_entry():
    g = grants([{"topics": ["a"], "allow": ["subscribe"]}, {"topics": ["b"], "allow": ["publish", "presence"]}])
    assert g.allows("subscribe", "a") and not g.allows("publish", "a") and not g.allows("presence", "a")
    assert g.allows("publish", "b") and g.allows("presence", "b") and not g.allows("subscribe", "b")


def test_sub_pattern_never_matches_for_an_identity_without_a_subject():
    g = grants([{"topics": ["user.{sub}", "{sub}*", "public"], "allow": ["subscribe"]}], sub=None)
    assert not g.allows("subscribe", "user.") and not g.allows("subscribe", "user.{sub}")
    assert not g.allows("subscribe", "x") and g.allows("subscribe", "public")


def test_a_subject_holding_a_star_does_not_become_a_wildcard():
    g = grants([{"topics": ["user.{sub}"], "allow": ["subscribe"]}], sub="*")
    assert not g.allows("subscribe", "user.42") and not g.allows("subscribe", "user.x")


def test_merge_grants_both_lists():
    g = Grants(merge(parse_caps([{"topics": ["a"], "allow": ["publish"]}]), parse_caps([{"topics": ["b"], "allow": ["publish"]}])), "u")
    assert g.allows("publish", "a") and g.allows("publish", "b") and not g.allows("publish", "c")


def test_identity_kinds():
    user = Identity(USER, user="42", caps=parse_caps([{"topics": ["user.{sub}"], "allow": ["subscribe"]}]))
    assert user.allows("subscribe", "user.42") and not user.allows("publish", "user.42") and not user.admin
    anonymous = Identity(ANONYMOUS, caps=parse_caps([{"topics": ["user.{sub}", "news"], "allow": ["subscribe"]}]))
    assert anonymous.allows("subscribe", "news") and not anonymous.allows("subscribe", "user.None")
    assert ADMIN_IDENTITY.admin and ADMIN_IDENTITY.allows("publish", "x") and OPEN_IDENTITY.allows("presence", "y")


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not a list", "caps must be a list"),
        ({"topics": ["a"], "allow": ["publish"]}, "caps must be a list"),
        ([{"topics": ["a"], "allow": ["publish"]}] * (MAX_ENTRIES + 1), f"at most {MAX_ENTRIES} entries"),
        ([{"topics": ["a"] * 100_000, "allow": ["publish"]}], f"caps[0].topics must hold at most {MAX_PATTERNS} items"),
        ([{"topics": ["a" * 1_000_000], "allow": ["publish"]}], f"caps[0].topics[0] must be at most {MAX_PATTERN_LENGTH} characters"),
        ([{"topics": ["a"], "allow": ["publish"] * 100_000}], "caps[0].allow must hold at most 8 items"),
        ([{"topics": ["a"], "allow": ["delete"]}], "caps[0].allow[0] must be one of subscribe, publish, presence"),
        ([{"topics": [], "allow": ["publish"]}], "caps[0].topics must hold at least one pattern"),
        ([{"topics": ["a"], "allow": []}], "caps[0].allow must hold at least one action"),
        ([{"allow": ["publish"]}], "caps[0].topics is required"),
        ([{"topics": ["a"]}], "caps[0].allow is required"),
        ([{"topics": ["a"], "allow": ["publish"], "alow": ["x"]}], "caps[0].alow is not a capability key"),
        ([{"topics": "a", "allow": ["publish"]}], "caps[0].topics must be a list"),
        ([{"topics": [7], "allow": ["publish"]}], "caps[0].topics[0] must be a string"),
        (["a"], "caps[0] must be an object"),
        ([{"topics": ["a", "orders/*"], "allow": ["publish"]}], "caps[0].topics[1] must be a topic name"),
        ([{"topics": ["a*b"], "allow": ["publish"]}], "caps[0].topics[0] must be a topic name"),
        ([{"topics": ["**"], "allow": ["publish"]}], "caps[0].topics[0] must be a topic name"),
        ([{"topics": [""], "allow": ["publish"]}], "caps[0].topics[0] must not be empty"),
        ([{"topics": ["a"], "allow": ["publish"]}, {"topics": ["b"], "allow": ["write"]}], "caps[1].allow[0]"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_invalid_or_oversized_caps_refused_with_a_message_naming_the_part(raw, message):
    with pytest.raises(CapsError) as err:
        parse_caps(raw)
    assert message in str(err.value), str(err.value)


def test_caps_json_setting_errors_are_one_line():
    with pytest.raises(CapsError, match="not valid JSON"):
        parse_caps_json("[{")
    assert parse_caps_json("[]") == () and parse_caps(None) == ()


# Small alphabets so patterns and topics collide often enough to matter.
_piece = st.sampled_from(["a", "b", ".", "ab", "a.", "{sub}", "4", "42", ":", "-"])
_pattern = st.one_of(
    st.just("*"),
    st.builds(lambda parts, star: "".join(parts) + ("*" if star else ""), st.lists(_piece, min_size=1, max_size=4), st.booleans()),
)
_entry = st.fixed_dictionaries(
    {"topics": st.lists(_pattern, min_size=1, max_size=4), "allow": st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3)}
)
_topic = st.text(alphabet="ab.42:-", min_size=1, max_size=8)
_sub = st.one_of(st.none(), st.sampled_from(["4", "42", "a", "*", "a.b", "{sub}"]))


def _near(pattern: str, sub: str | None, suffix: str) -> str:
    """A topic at the edge of ``pattern``: its literal text, with the wildcard
    replaced by ``suffix`` (possibly empty, the case "*" must not match)."""
    text = pattern.rstrip("*").replace("{sub}", sub if sub is not None else "{sub}")
    return text + suffix


@given(caps=st.lists(_entry, max_size=4), sub=_sub, action=st.sampled_from(ACTIONS), data=st.data())
def test_compiled_grants_agree_with_the_reference(caps, sub, action, data):
    compiled = Grants(parse_caps(caps), sub)  # every generated pattern is valid
    patterns = [p for e in caps for p in e["topics"]]
    # Random topics, and topics made from the patterns themselves so the edges
    # (exact prefix, prefix plus one character, another subject) are tried.
    topics = data.draw(st.lists(_topic, min_size=1, max_size=5))
    if patterns:
        near = st.builds(_near, st.sampled_from(patterns), _sub, st.sampled_from(["", "", "a", ".b", "42"]))
        topics += data.draw(st.lists(near.filter(bool), min_size=1, max_size=10))
    for topic in topics:
        assert compiled.allows(action, topic) == reference_allows(caps, sub, action, topic), (caps, sub, action, topic)
