"""JSON encoding without ``json.JSONEncoder.encode``'s setup on every call.

Each ``JSONEncoder.encode`` call builds a C encoder (from the encoder's nine
settings) and a dict of the ids of every container it enters, to detect a
cycle.  Every publish encodes three things (its event, its ack, its log
record), so ``compiled`` builds the C encoder once, with no cycle check:
what we encode is parsed JSON, or frames and log records we build, none of
which can hold a cycle; if one ever did, Python's recursion limit stops it
(``RecursionError``, where ``encode`` raises ``ValueError``).

``json.encoder.c_make_encoder`` is what ``JSONEncoder`` itself calls, but it
is not documented: without it (another Python), or if the compiled encoder
renders a sample differently, ``compiled`` returns ``encoder.encode`` itself.
"""

from __future__ import annotations

import json
from json import encoder as _std
from typing import Any, Callable

# Every kind of value a frame or a record holds, and the escapes both
# string encoders apply: the compiled encoder must render it exactly so.
_SAMPLE: Any = {
    "s": 'a "quoted" \\ line\n\t\u00e9\u4e2d\U0001f600\x7f',
    "n": [0, -1, 2**70, 1.5, -0.0, 1e300, True, False, None],
    "nested": {"list": [], "dict": {}, "deep": [[{"k": "v"}]]},
    "\u00e9key": "",
}


def compiled(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, built once: the same text for every value it can
    encode, the same ``TypeError`` (from ``encoder.default``) and
    ``ValueError`` (non-finite floats when ``allow_nan`` is off) for those it
    cannot; a cycle raises ``RecursionError`` (see the module docstring)."""
    make = getattr(_std, "c_make_encoder", None)
    if make is None or encoder.indent is not None:
        return encoder.encode
    strings = _std.encode_basestring_ascii if encoder.ensure_ascii else _std.encode_basestring
    join = "".join
    try:
        run = make(
            None,  # no cycle check
            encoder.default,
            strings,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )

        def encode(obj: Any) -> str:
            return join(run(obj, 0))

        if encode(_SAMPLE) == encoder.encode(_SAMPLE):
            return encode
    except Exception:  # a C encoder that takes other arguments
        pass
    return encoder.encode
