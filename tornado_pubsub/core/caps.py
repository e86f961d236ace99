"""Capabilities: which actions an identity may take on which topics.

A capability list is JSON, ``[{"topics": [pattern, ...], "allow": [action, ...]}, ...]``
(PROTOCOL.md 5.2).  A pattern is an exact topic name, a prefix followed by
``*`` (``orders.*`` matches ``orders.eu`` and ``orders.eu.1``, not ``orders``:
the ``*`` stands for at least one character), or ``*`` alone (every topic).
``{sub}`` in a pattern stands for the token's subject; for an identity
without one (anonymous) a pattern holding ``{sub}`` matches nothing.

Threat: capabilities arrive inside tokens, so a hostile or buggy issuer can
send huge ones.  ``parse_caps`` bounds the number of entries, patterns and
actions and the length of each pattern *before* marshmallow deserializes the
items, so a list of 100,000 patterns or a 1 MB pattern is refused at the
cost of a ``len()``.  ``Grants`` compiles the list once per identity into a
set of exact names and a tuple of prefixes per action, so checking a frame
is one set lookup and one ``str.startswith`` in C, however the list was
written.
"""

from __future__ import annotations

import json
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from tornado_pubsub.core.schemas import _first_error

SUBSCRIBE = "subscribe"
PUBLISH = "publish"
PRESENCE = "presence"
ACTIONS = (SUBSCRIBE, PUBLISH, PRESENCE)

SUB_PLACEHOLDER = "{sub}"
WILDCARD = "*"

# Bounds on what one capability list may hold.  Generous for real policies
# (a handful of entries), small enough that parsing and compiling a hostile
# list stays in microseconds to a few milliseconds.
MAX_ENTRIES = 32
MAX_PATTERNS = 64  # per entry
MAX_ACTIONS = 8  # per entry (duplicates allowed, so more than len(ACTIONS))
MAX_PATTERN_LENGTH = 256  # a topic is at most 128 characters; room for {sub}

# What a pattern may hold once ``{sub}`` and a trailing ``*`` are taken out:
# the topic alphabet, so a typo ("orders/*", "orders.* ") is an error at
# start-up or at the token, not a rule that silently never matches.
_PATTERN_BODY = re.compile(r"[A-Za-z0-9._:-]*\Z")


class CapsError(ValueError):
    """A capability list is malformed or over a bound; the message says where."""


def _check_pattern(text: str) -> None:
    body = text[:-1] if text.endswith(WILDCARD) else text
    if not _PATTERN_BODY.match(body.replace(SUB_PLACEHOLDER, "")):
        raise ValidationError(
            "must be a topic name, a prefix followed by '*', or '*'; '{sub}' may stand for the user"
        )
    if not body and text != WILDCARD:
        raise ValidationError("must not be empty")


class CapSchema(Schema):
    """One entry: ``{"topics": [pattern, ...], "allow": [action, ...]}``.

    Unknown keys are refused: caps are a security policy, and a misspelled
    key ("alow") must be an error, not a rule that quietly grants nothing.
    """

    class Meta:
        unknown = RAISE

    error_messages = {"type": "must be an object", "unknown": "is not a capability key (topics, allow)"}

    topics = fields.List(
        fields.String(
            validate=_check_pattern,
            error_messages={"invalid": "must be a string"},
        ),
        required=True,
        validate=validate.Length(min=1, error="must hold at least one pattern"),
        error_messages={"required": "is required", "invalid": "must be a list"},
    )
    allow = fields.List(
        fields.String(
            validate=validate.OneOf(ACTIONS, error=f"must be one of {', '.join(ACTIONS)}"),
            error_messages={"invalid": "must be a string"},
        ),
        required=True,
        validate=validate.Length(min=1, error="must hold at least one action"),
        error_messages={"required": "is required", "invalid": "must be a list"},
    )


_SCHEMA = CapSchema(many=True)

Caps = tuple[tuple[tuple[str, ...], frozenset[str]], ...]
"""A validated capability list: ``((patterns, actions), ...)``, immutable."""


def parse_caps(raw: Any) -> Caps:
    """Validate a decoded capability list; ``CapsError`` names the bad part.

    ``None`` (no caps given) is the empty list.  Cost is bounded before any
    item is read (see the module docstring).
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CapsError("caps must be a list of {topics, allow} objects")
    if len(raw) > MAX_ENTRIES:
        raise CapsError(f"caps must hold at most {MAX_ENTRIES} entries")
    for index, entry in enumerate(raw):
        _check_bounds(index, entry)
    try:
        entries = _SCHEMA.load(raw)
    except ValidationError as exc:
        raise CapsError("caps" + _where(exc.messages)) from None
    return tuple((tuple(e["topics"]), frozenset(e["allow"])) for e in entries)


def _check_bounds(index: int, entry: Any) -> None:
    # Before marshmallow reads an item: a list of 100,000 patterns or a 1 MB
    # pattern costs a len(), not a validation pass.
    if not isinstance(entry, dict):
        return  # the schema says "must be an object"
    for name, limit in (("topics", MAX_PATTERNS), ("allow", MAX_ACTIONS)):
        value = entry.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise CapsError(f"caps[{index}].{name} must hold at most {limit} items")
    topics = entry.get("topics")
    for position, pattern in enumerate(topics if isinstance(topics, list) else ()):
        if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_LENGTH:
            raise CapsError(f"caps[{index}].topics[{position}] must be at most {MAX_PATTERN_LENGTH} characters")


def _where(messages: Any) -> str:
    # marshmallow keys list errors by index: {0: {"topics": {1: [...]}}} -> "[0].topics[1] ..."
    if isinstance(messages, dict) and len(messages) == 1:
        (key, inner), = messages.items()
        if isinstance(key, int):
            return f"[{key}]" + _where(inner)
        if key != "_schema":
            return f".{key}" + _where(inner)
        return _where(inner)
    return " " + _first_error(messages)


def parse_caps_json(text: str) -> Caps:
    """``parse_caps`` of a JSON text (the ``default_caps`` / ``anonymous_caps`` settings)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CapsError(f"caps are not valid JSON: {exc}") from None
    return parse_caps(raw)


def merge(*lists: Caps) -> Caps:
    """Several capability lists granted together (a token's caps plus ``default_caps``)."""
    return tuple(entry for caps in lists for entry in caps)


class Grants:
    """A capability list compiled for one subject; ``allows`` is the per-frame check.

    Built once when an identity is established (handshake, ``auth`` frame), so
    ``{sub}`` substitution and pattern sorting never happen per frame.
    ``{sub}`` is substituted after the ``*`` was recognised, so a subject
    holding ``*`` cannot turn an exact pattern into a wildcard.
    """

    __slots__ = ("_everything", "_exact", "_prefixes")

    def __init__(self, caps: Caps, sub: str | None) -> None:
        everything: set[str] = set()
        exact: dict[str, set[str]] = {a: set() for a in ACTIONS}
        prefixes: dict[str, set[str]] = {a: set() for a in ACTIONS}
        for patterns, actions in caps:
            for pattern in patterns:
                wildcard = pattern.endswith(WILDCARD)
                body = pattern[:-1] if wildcard else pattern
                if SUB_PLACEHOLDER in body:
                    if sub is None:
                        continue  # {sub} never matches an identity without a subject
                    body = body.replace(SUB_PLACEHOLDER, sub)
                for action in actions:
                    if wildcard and not body:
                        everything.add(action)
                    else:
                        (prefixes if wildcard else exact)[action].add(body)
        self._everything = frozenset(everything)
        self._exact = {a: frozenset(v) for a, v in exact.items()}
        self._prefixes = {a: tuple(sorted(v)) for a, v in prefixes.items()}

    def allows(self, action: str, topic: str) -> bool:
        """True when some entry lists ``action`` with a pattern matching ``topic``."""
        if action in self._everything:
            return True
        if topic in self._exact.get(action, ()):
            return True
        prefixes = self._prefixes.get(action)
        # topic[:-1].startswith(p) <=> topic starts with p and is longer than p:
        # the "*" stands for at least one character.
        return bool(prefixes) and topic[:-1].startswith(prefixes)  # type: ignore[arg-type]
