"""The encoders built once (``core.jsonenc``) render exactly what
``JSONEncoder.encode`` renders, and refuse what it refuses; the strict JSON
reader's shortcut (``schemas.parse_json``) reads exactly what the decoder
reads, with the same errors."""

from __future__ import annotations

import datetime
import json
from json import encoder as std_encoder
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonEncoder

from tornado_pubsub import logs
from tornado_pubsub.core import frames, jsonenc, schemas
from tornado_pubsub.core.errors import BAD_REQUEST, PubSubError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)

CONFIGURATIONS = [
    json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False),
    JsonEncoder(ensure_ascii=True),
]


def test_the_servers_encoders_are_the_compiled_ones():
    # Otherwise every test below would compare encode with itself.
    for encode in (frames._encode_compact, frames._encode_ascii, logs._encode_record):
        assert encode.__qualname__ == "compiled.<locals>.encode"


@settings(max_examples=300)
@given(json_values)
def test_compiled_encoders_render_every_value_as_encode_does(value: Any):
    for encoder in CONFIGURATIONS:
        assert jsonenc.compiled(encoder)(value) == encoder.encode(value)


def test_what_encode_refuses_is_refused_the_same_way():
    strict = CONFIGURATIONS[0]
    fast = jsonenc.compiled(strict)
    for bad, error in (({"a": float("nan")}, ValueError), ({"a": {1, 2}}, TypeError), ({"a": object()}, TypeError)):
        with pytest.raises(error) as expected:
            strict.encode(bad)
        with pytest.raises(error) as got:
            fast(bad)
        assert str(got.value) == str(expected.value)


def test_a_cycle_is_stopped_by_the_recursion_limit_and_refused_as_bad_request():
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(RecursionError):
        frames._encode_compact({"payload": cycle})
    with pytest.raises(PubSubError) as refused:
        frames.encode_published({"payload": cycle})
    assert refused.value.code == BAD_REQUEST


def test_log_records_keep_python_json_loggers_rendering_of_odd_values():
    record = {"at": datetime.datetime(2026, 1, 2, 3, 4, 5), "error": ValueError("boom"), "raw": b"\xff"}
    assert logs._encode_record(record) == JsonEncoder(ensure_ascii=True).encode(record)


def test_without_the_c_encoder_encode_itself_is_used(monkeypatch):
    monkeypatch.setattr(std_encoder, "c_make_encoder", None)
    encoder = CONFIGURATIONS[0]
    assert jsonenc.compiled(encoder) == encoder.encode


def test_a_c_encoder_that_renders_differently_is_not_used(monkeypatch):
    real = std_encoder.c_make_encoder

    # Another Python's C encoder taking its arguments differently: only the
    # compiled encoder (the one call without a cycle check) renders wrongly.
    def sorting(markers, default, strings, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan):
        return real(markers, default, strings, indent, key_sep, item_sep, markers is None, skipkeys, allow_nan)

    monkeypatch.setattr(std_encoder, "c_make_encoder", sorting)
    encoder = CONFIGURATIONS[0]
    assert jsonenc.compiled(encoder) == encoder.encode
    monkeypatch.setattr(std_encoder, "c_make_encoder", lambda *args: 1 / 0)
    assert jsonenc.compiled(encoder) == encoder.encode


def _read(text: str) -> tuple[str, Any]:
    try:
        return "ok", schemas.parse_json(text)
    except PubSubError as exc:
        return exc.code, exc.message


def _reference(text: str) -> tuple[str, Any]:
    # parse_json without its shortcut: every str through JSONDecoder.decode.
    decoder = schemas._decoder
    try:
        value = decoder.decode(text)
    except json.JSONDecodeError as exc:
        return BAD_REQUEST, f"invalid JSON: {exc.msg.lower()} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return BAD_REQUEST, f"invalid JSON: {exc}"
    return "ok", value


texts = json_values.map(lambda v: json.dumps({"v": v})) | st.text(max_size=12).map(lambda t: "{" + t)
tails = st.sampled_from(["", " ", "\n", "\t \r\n", " x", "}", "{}", ",1"])


@settings(max_examples=300)
@given(texts, tails)
def test_the_shortcut_reads_every_object_text_as_the_decoder_does(text: str, tail: str):
    framed = text + tail
    got, expected = _read(framed), _reference(framed)
    if expected[0] == "ok" and "\\ud" in framed.lower():
        return  # may hold a lone surrogate, refused after decoding (tested elsewhere)
    assert got == expected


def test_an_object_followed_by_junk_is_read_once(monkeypatch):
    # A hostile client's large object with junk after it must not cost two parses.
    def second_parse(text: str) -> Any:
        raise AssertionError("parsed twice")

    monkeypatch.setattr(schemas, "_decode", second_parse)
    big = json.dumps({"payload": [list(range(50))] * 200})
    assert _read(big + " \n")[0] == "ok"
    code, message = _read(big + " junk")
    assert code == BAD_REQUEST and message.startswith("invalid JSON: extra data at line 1 column ")
