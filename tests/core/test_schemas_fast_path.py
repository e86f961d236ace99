"""The fast publish validator agrees with the marshmallow schema of record.

``schemas.validate_frame`` checks plainly valid publish frames without
marshmallow; on every generated frame, valid or not, it must return exactly
what ``validate_frame_schema`` returns, or raise the same error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tornado_pubsub.core import schemas
from tornado_pubsub.core.errors import PubSubError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
odd = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)

topics = st.from_regex(schemas.TOPIC_RE, fullmatch=True) | st.sampled_from(["", "a\n", "-a", "a" * 128, "a" * 129, "ä", "a b"]) | st.text(max_size=6) | odd
ids = (
    st.uuids().map(str)
    | st.uuids().map(lambda u: str(u).upper())
    | st.uuids().map(lambda u: str(u) + "\n")
    | st.uuids().map(lambda u: u.hex)
    | st.uuids().map(lambda u: "{" + str(u) + "}")
    | st.text(max_size=8)
    | odd
)
request_ids = st.text(max_size=130) | st.sampled_from(["r" * 128, "r" * 129, "é" * 128]) | odd


@st.composite
def messages(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(odd | st.text(max_size=4))
    message: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        message["id"] = draw(ids)
    if draw(st.integers(0, 9)):
        message["payload"] = draw(json_values)
    message.update(draw(st.dictionaries(st.sampled_from(["extra", "seq", "ts"]), json_values, max_size=2)))
    return message


@st.composite
def publish_frames(draw: st.DrawFn) -> Any:
    frame: dict[str, Any] = {"type": "publish"}
    if draw(st.integers(0, 9)):
        frame["topic"] = draw(topics)
    if draw(st.integers(0, 9)):
        frame["message"] = draw(messages())
    if draw(st.booleans()):
        frame["request_id"] = draw(request_ids)
    frame.update(draw(st.dictionaries(st.sampled_from(["client_id", "last_n", "unknown"]), json_values, max_size=2)))
    return frame


def outcome(validate: Any, data: Any) -> tuple[Any, ...]:
    try:
        return ("ok", validate(data))
    except PubSubError as exc:
        return ("error", exc.code, exc.message)


VALID = {"type": "publish", "topic": "orders", "message": {"id": str(uuid.uuid4()), "payload": None}, "request_id": "p1"}


# As many frames as the Hypothesis profile asks (300 in CI, 5,000 with
# --hypothesis-profile=long).
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(publish_frames())
@example(VALID)
@example({**VALID, "request_id": "r" * 129})
@example({**VALID, "topic": "a\n"})
@example({**VALID, "message": {"id": VALID["message"]["id"]}})
def test_fast_path_matches_the_schema(frame):
    # Through JSON and back, as frames arrive: only JSON types reach the validator.
    data = json.loads(json.dumps(frame))
    assert outcome(schemas.validate_frame, data) == outcome(schemas.validate_frame_schema, data)


def test_plain_publish_frames_take_the_fast_path():
    frame = {**VALID, "extra": 1}
    assert schemas._fast_publish(frame) == schemas.validate_frame_schema(frame)[1]
    assert schemas._fast_publish({**VALID, "topic": 5}) is None
