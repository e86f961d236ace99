"""Inbound validation: marshmallow schemas for every WebSocket frame and REST
body, and the one function that turns raw text into a validated frame.

Every rejection is a ``PubSubError(BAD_REQUEST)`` whose message names the
field and says why, e.g. ``message.id must be a valid UUID``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from tornado_pubsub.core.errors import BAD_REQUEST, PubSubError
from tornado_pubsub.core.frames import LONE_SURROGATE

# Deepest nesting of arrays and objects accepted in a frame or body.  Python
# itself gives up near 1000 levels, and clients in other languages earlier
# (serde_json at 128): an event must stay readable by every subscriber.
MAX_DEPTH = 128

# \Z, not $: "$" also matches before a trailing newline, which would let "a\n" in.
TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
MAX_ID_LENGTH = 128

# Doubled braces: marshmallow's Regexp runs str.format on its error message.
_TOPIC_RULE = "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}$ (1-128 letters, digits, '.', '_', ':', '-')"


def _string(**kw: Any) -> fields.String:
    return fields.String(
        error_messages={"required": "is required", "invalid": "must be a string", "null": "must be a string"},
        **kw,
    )


class _Count(fields.Integer):
    """A non-negative JSON integer; booleans and floats are refused."""

    default_error_messages = {
        "invalid": "must be an integer",
        "required": "is required",
        "null": "must be an integer",
    }

    def __init__(self, **kw: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=0, error="must be 0 or more"), **kw)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):  # bool is an int subclass; JSON true is not a count
            raise self.make_error("invalid")
        return super()._validated(value)


class _Flag(fields.Boolean):
    """A JSON ``true`` or ``false``; strings and numbers are refused."""

    default_error_messages = {"invalid": "must be true or false", "null": "must be true or false"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kw: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _topic(**kw: Any) -> fields.String:
    return _string(validate=validate.Regexp(TOPIC_RE, error=_TOPIC_RULE), **kw)


def _request_id() -> fields.String:
    return _string(validate=validate.Length(max=MAX_ID_LENGTH, error="must be at most 128 characters"))


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def _uuid(**kw: Any) -> fields.String:
    # Kept as the client's string (echoed verbatim on events); only the
    # canonical 8-4-4-4-12 form is accepted, as the contract says.
    return _string(validate=validate.Regexp(_UUID_RE, error="must be a valid UUID"), **kw)


def _payload() -> fields.Raw:
    # Any JSON value, null included; only the key itself is mandatory.
    return fields.Raw(required=True, allow_none=True, error_messages={"required": "is required"})


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE  # the contract says unknown extra fields are ignored

    # Field errors say "must be an object" rather than marshmallow's "Invalid input type."
    error_messages = {"type": "must be an object"}


class MessageSchema(_Strict):
    """``message`` of a publish frame: ``{id, payload}``."""

    id = _uuid(required=True)
    payload = _payload()


def _nested(schema: type[Schema]) -> fields.Nested:
    return fields.Nested(
        schema,
        required=True,
        error_messages={"required": "is required", "type": "must be an object", "null": "must be an object"},
    )


class SubscribeSchema(_Strict):
    """``subscribe``: topic and client_id, optional last_n or since_seq/epoch."""

    topic = _topic(required=True)
    client_id = _string(
        required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH, error="must be 1 to 128 characters")
    )
    request_id = _request_id()
    last_n = _Count()
    since_seq = _Count()
    epoch = _string(validate=validate.Length(max=MAX_ID_LENGTH, error="must be at most 128 characters"))
    presence = _Flag()  # ext2: join/leave notices for this subscription (PROTOCOL.md 6)

    @validates_schema
    def _one_start_point(self, data: Mapping[str, Any], **_: Any) -> None:
        if "last_n" in data and "since_seq" in data:
            raise ValidationError("last_n and since_seq cannot be used together", "since_seq")


class UnsubscribeSchema(_Strict):
    """``unsubscribe``: topic and client_id."""

    topic = _topic(required=True)
    client_id = _string(
        required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH, error="must be 1 to 128 characters")
    )
    request_id = _request_id()


class PublishSchema(_Strict):
    """``publish``: topic and message ``{id, payload}``."""

    topic = _topic(required=True)
    message = _nested(MessageSchema)
    request_id = _request_id()


class PingSchema(_Strict):
    """``ping``: nothing but an optional request_id."""

    request_id = _request_id()


class AuthSchema(_Strict):
    """``auth``: a user token (PROTOCOL.md 5.3).  Its messages never quote the
    value: the token is a credential and error messages reach the log."""

    token = _string(required=True, validate=validate.Length(min=1, error="must not be empty"))
    request_id = _request_id()


class PresenceSchema(_Strict):
    """``presence`` (ext2): who is subscribed to a topic."""

    topic = _topic(required=True)
    request_id = _request_id()


class CreateTopicSchema(_Strict):
    """Body of ``POST /topics``."""

    name = _topic(required=True)


class PublishBodySchema(_Strict):
    """Body of ``POST /topics/{name}/messages``; ``id`` is generated when absent."""

    id = _uuid()
    payload = _payload()


FRAME_SCHEMAS: dict[str, Schema] = {
    "subscribe": SubscribeSchema(),
    "unsubscribe": UnsubscribeSchema(),
    "publish": PublishSchema(),
    "ping": PingSchema(),
    "auth": AuthSchema(),
    "presence": PresenceSchema(),
}
_TYPES = ", ".join(FRAME_SCHEMAS)


def _first_error(messages: Any, path: str = "") -> str:
    """Flatten marshmallow's nested error dict to one sentence naming the field."""
    if isinstance(messages, dict):
        # Prefer the schema-level problem, then fields in a stable order.
        for key in sorted(messages, key=lambda k: (k != "_schema", str(k))):
            field = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            return _first_error(messages[key], field)
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], path)
    text = str(messages).rstrip(".")
    if path and not text.startswith(("last_n ", "since_seq ")):
        return f"{path} {text}"
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


# Built once: json.loads with hooks builds a JSONDecoder per call.
_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_decode = _decoder.decode
_raw_decode = _decoder.raw_decode
_WHITESPACE = re.compile(r"[ \t\n\r]*").match  # JSON's whitespace, as the decoder skips it


_INF = float("inf")


def parse_json(text: str | bytes) -> Any:
    """Decode strict JSON: no NaN or Infinity, and no string (key or value)
    holding a lone surrogate, none of which another client could read back
    (a surrogate cannot be sent as UTF-8: the event carrying it would go out
    in ``\\u`` escapes, up to three times its size)."""
    try:
        if text.__class__ is str and text.startswith("{"):
            # What decode() does, minus its match for leading whitespace (there
            # is none) and, when the object ends the text, for trailing whitespace.
            value, end = _raw_decode(text)
            if end != len(text):
                end = _WHITESPACE(text, end).end()
                if end != len(text):
                    raise json.JSONDecodeError("Extra data", text, end)
        elif text.__class__ is str and not text.startswith("\ufeff"):
            value = _decode(text)  # what json.loads does for str, minus building a decoder
        else:  # bytes (any UTF), and the BOM json.loads names in its error
            value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise PubSubError(BAD_REQUEST, "invalid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        # exc.msg alone: its str() would add a hint meant for Python programmers.
        reason = "unexpected byte order mark" if "BOM" in exc.msg else exc.msg.lower()
        raise PubSubError(BAD_REQUEST, f"invalid JSON: {reason} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise PubSubError(BAD_REQUEST, "invalid JSON: not valid UTF-8") from None
    except ValueError as exc:
        # Our own non-finite-number refusals, or Python's limit on integer digits.
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise PubSubError(BAD_REQUEST, f"invalid JSON: {reason}") from None
    if _may_hold_surrogates(text):
        where = _lone_surrogate_at(value)
        if where is not None:
            raise PubSubError(BAD_REQUEST, LONE_SURROGATE.format(where=where))
    return value


# Strict UTF-8 cannot carry a surrogate, so a decoded string can hold one only
# through a \uD800-\uDFFF escape; text without one (nearly every frame) is
# not walked.  Bytes in UTF-16 or UTF-32 (json.loads reads those too) are
# always walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _may_hold_surrogates(text: str | bytes) -> bool:
    if isinstance(text, str):
        return "\\" in text and _SURROGATE_ESCAPE.search(text) is not None
    if json.detect_encoding(text) != "utf-8":  # the escape's bytes are spread out
        return True
    return _SURROGATE_ESCAPE_BYTES.search(text) is not None  # UTF-8 never reuses the byte of "\\"


def _lone_surrogate_at(value: Any) -> str | None:
    """Where in ``value`` a string holds a lone surrogate ("message.payload.k",
    "a key in message.payload"), or None.

    Paths are kept as (parent, key) links and spelled out only for the
    answer: building each node's path as a string would cost the depth times
    the key lengths per node, quadratic in a hostile frame.
    """
    stack: list[tuple[Any, Any]] = [(value, None)]
    while stack:  # iterative, like _check_depth
        node, link = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if not _utf8_safe(key):
                    return f"a key in {_spell(link) or 'the JSON'}"
                stack.append((child, (link, key)))
        elif isinstance(node, list):
            stack.extend((child, (link, index)) for index, child in enumerate(node))
        elif isinstance(node, str) and not _utf8_safe(node):
            return _spell(link) or "the JSON"
    return None


def _spell(link: Any) -> str:
    """``(((None, "message"), "payload"), 0)`` -> ``message.payload[0]``, keys
    shortened and surrogates shown as escapes, so the message is itself sendable."""
    parts: list[str] = []
    while link is not None:
        link, key = link
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            shown = key[:40].encode("utf-8", "backslashreplace").decode("utf-8")
            parts.append(f".{shown}" if link is not None else shown)
    return "".join(reversed(parts))[-200:]


def _utf8_safe(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_depth(value: Any) -> None:
    """Refuse ``value`` if arrays and objects nest deeper than ``MAX_DEPTH``."""
    stack = [(value, 1)]
    while stack:  # iterative: a deep value must not exhaust our own stack
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PubSubError(BAD_REQUEST, f"JSON nested more than {MAX_DEPTH} levels deep")
        depth += 1
        # A plain loop, not a generator: this runs on every frame (the hot path).
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth))


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate ``data`` with ``schema``; raise ``BAD_REQUEST`` naming the bad field."""
    if not isinstance(data, dict):
        raise PubSubError(BAD_REQUEST, "body must be a JSON object")
    _check_depth(data)
    return _load_checked(schema, data)


def _load_checked(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise PubSubError(BAD_REQUEST, _first_error(exc.messages)) from None


_REQUEST_ID = re.compile(r'"request_id"\s*:\s*"([^"\\]{0,128})"')


def peek_request_id(message: str | bytes) -> str | None:
    """The request_id of a frame that will not be parsed (over its budget),
    found by one linear scan, without decoding the JSON: a plain string
    ``"request_id": "..."`` (no escapes, at most 128 characters), or None.
    Best effort, as the contract allows ("if it could be read")."""
    if isinstance(message, bytes):
        return None
    match = _REQUEST_ID.search(message)
    return match.group(1) if match else None


def request_id_of(frame: Any) -> str | None:
    """The request_id to echo on an error, if the frame carried a string one."""
    if isinstance(frame, dict):
        rid = frame.get("request_id")
        if isinstance(rid, str):
            return rid
    return None


def validate_frame(data: Any) -> tuple[str, dict[str, Any]]:
    """Validate a frame decoded by ``parse_json`` into ``(type, fields)``;
    raises ``PubSubError(BAD_REQUEST)`` naming the field.

    A well-formed ``publish`` (the hot frame) is checked by ``_fast_publish``;
    everything else, and every frame it is unsure of, goes through the schema.
    """
    if not isinstance(data, dict):
        raise PubSubError(BAD_REQUEST, "frame must be a JSON object")
    _check_depth(data)
    if data.get("type") == "publish":
        frame = _fast_publish(data)
        if frame is not None:
            return "publish", frame
    return validate_frame_schema(data)


def validate_frame_schema(data: Any) -> tuple[str, dict[str, Any]]:
    """Validate a decoded frame with the marshmallow schemas (the schema of record);
    ``validate_frame`` has already refused non-objects and deep nesting."""
    if not isinstance(data, dict):
        raise PubSubError(BAD_REQUEST, "frame must be a JSON object")
    kind = data.get("type")
    if kind is None:
        raise PubSubError(BAD_REQUEST, "type is required")
    schema = FRAME_SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise PubSubError(BAD_REQUEST, f"type must be one of {_TYPES}")
    return kind, _load_checked(schema, data)


def _fast_publish(data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``PublishSchema().load(data)`` returns, when ``data`` is plainly valid;
    None (ask the schema) for anything else, so errors always come from the schema.

    The same rules as the schema, in plain Python: topic matches ``TOPIC_RE``,
    ``message`` is an object with a canonical UUID ``id`` and a ``payload`` key,
    ``request_id`` (if present) is a string of at most 128 characters; unknown
    fields are dropped.  ``tests/test_schemas_fast_path.py`` checks both agree.
    """
    topic = data.get("topic")
    message = data.get("message")
    if topic.__class__ is not str or message.__class__ is not dict or not TOPIC_RE.match(topic):
        return None
    message_id = message.get("id")
    if message_id.__class__ is not str or "payload" not in message or not _UUID_RE.match(message_id):
        return None
    frame = {"topic": topic, "message": {"id": message_id, "payload": message["payload"]}}
    if "request_id" in data:
        request_id = data["request_id"]
        if request_id.__class__ is not str or len(request_id) > MAX_ID_LENGTH:
            return None
        frame["request_id"] = request_id
    return frame
