"""Hypothesis fuzzing of the WebSocket protocol.

Every generated frame must get a well-formed reply: an ``error`` frame with
the code the contract prescribes (``request_id`` echoed when it was a string),
or the ack/pong a valid frame earns; and a second, well-behaved client on the
same server must keep receiving every event, gapless, after each frame.

The expected outcome comes from ``expected``, an oracle written from
PROTOCOL.md, not from the server's schemas.  ``pytest --hypothesis-profile=long``
runs thousands of examples instead of the CI few hundred.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import tornado.websocket
from hypothesis import example, given
from hypothesis import strategies as st

from tests.kit.rawws import OP_BINARY as BINARY, OP_CLOSE as CLOSE, OP_TEXT as TEXT, RawWs
from tests.kit.threadserver import ThreadServer
from tests.kit.support import TS_RE
from tornado_pubsub.core.schemas import MAX_DEPTH
from tornado_pubsub.settings import Settings

TOPIC = "fuzz"
TOPIC_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
UUID_RULE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
CODES = {"BAD_REQUEST", "TOPIC_NOT_FOUND", "SLOW_CONSUMER", "UNAUTHORIZED", "LIMIT_EXCEEDED", "SHUTTING_DOWN", "INTERNAL"}
# Python refuses to convert integers longer than this to or from text.
MAX_INT_DIGITS = 4300
LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages")

# -- the oracle ---------------------------------------------------------------

OK = {"subscribe": "ack", "unsubscribe": "ack", "publish": "ack", "ping": "pong"}


def _is_str(v: Any, lo: int = 0, hi: int = 128) -> bool:
    return isinstance(v, str) and lo <= len(v) <= hi


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _topic_ok(v: Any) -> bool:
    return isinstance(v, str) and TOPIC_RULE.fullmatch(v) is not None


def _valid(frame: dict[str, Any]) -> bool:
    kind = frame["type"]
    if "request_id" in frame and not _is_str(frame["request_id"]):
        return False
    if kind == "ping":
        return True
    if "topic" not in frame or not _topic_ok(frame["topic"]):
        return False
    if kind in ("subscribe", "unsubscribe") and not ("client_id" in frame and _is_str(frame["client_id"], 1)):
        return False
    if kind == "subscribe":
        for name in ("last_n", "since_seq"):
            if name in frame and not _is_count(frame[name]):
                return False
        if "epoch" in frame and not _is_str(frame["epoch"]):
            return False
        if "last_n" in frame and "since_seq" in frame:
            return False
    if kind == "publish":
        message = frame.get("message")
        if not isinstance(message, dict) or "payload" not in message:
            return False
        if not (isinstance(message.get("id"), str) and UUID_RULE.fullmatch(message["id"])):
            return False
    return True


def expected(frame: Any) -> str:
    """What the contract says the reply to ``frame`` is: ack, pong or an error code."""
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str) or frame["type"] not in OK:
        return "BAD_REQUEST"
    if not _valid(frame):
        return "BAD_REQUEST"
    if frame["type"] != "ping" and frame["topic"] != TOPIC:
        return "TOPIC_NOT_FOUND"
    return OK[frame["type"]]


def _reject(name: str) -> Any:
    raise ValueError(name)


def decode_like_the_contract(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when ``raw`` is UTF-8 strict JSON the contract accepts."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject)
        if _has_infinity(value) or _has_lone_surrogate(value):
            return False, None
        return True, value
    except (ValueError, RecursionError):
        return False, None


def _has_lone_surrogate(value: Any) -> bool:
    """PROTOCOL §9: a string (key or value) holding a lone surrogate is BAD_REQUEST."""
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


def _has_infinity(value: Any) -> bool:
    if isinstance(value, float):
        return value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(_has_infinity(v) for v in value)
    if isinstance(value, dict):
        return any(_has_infinity(v) for v in value.values())
    return False


# -- the harness ---------------------------------------------------------------


class Rig:
    """The fuzzed connection, a watcher subscribed to TOPIC and a publisher."""

    def __init__(self, server: ThreadServer) -> None:
        self.server = server
        self.fuzzer: RawWs | None = None
        self.watcher: Any = None
        self.publisher: Any = None
        self.last_seq = 0
        self.markers = 0

    async def setup(self) -> None:
        await self.server.broker.create_topic(TOPIC)
        url = f"ws://127.0.0.1:{self.server.port}/ws"
        self.watcher = await tornado.websocket.websocket_connect(url)
        self.watcher.write_message(json.dumps({"type": "subscribe", "topic": TOPIC, "client_id": "watcher"}))
        ack = json.loads(await self.watcher.read_message())
        assert ack["type"] == "ack", ack
        self.publisher = await tornado.websocket.websocket_connect(url)
        await self.reconnect()

    async def reconnect(self) -> None:
        if self.fuzzer is not None:
            self.fuzzer.close()
        self.fuzzer = await RawWs.open(self.server.port)

    async def exchange(self, opcode: int, payload: bytes) -> dict[str, Any] | None:
        """Send one frame on the fuzzed connection; return its reply (None: closed)."""
        assert self.fuzzer is not None
        self.fuzzer.send_frame(opcode, payload)
        reply = await self.fuzzer.reply(timeout=10)
        if reply is None:
            code = self.fuzzer.close_code
            await self.reconnect()
            raise AssertionError(f"connection closed (code {code}) instead of a reply to {payload[:200]!r}")
        return reply

    async def watcher_sees_everything(self) -> None:
        """Publish a marker; the watcher must get every event up to it, seq by seq."""
        self.markers += 1
        marker = str(uuid.uuid4())
        frame = {"type": "publish", "topic": TOPIC, "message": {"id": marker, "payload": self.markers}}
        self.publisher.write_message(json.dumps(frame))
        while True:
            raw = await _read(self.watcher)
            event = json.loads(raw)
            if event["type"] != "event":
                continue
            assert event["seq"] == self.last_seq + 1, f"watcher saw seq {event['seq']} after {self.last_seq}"
            self.last_seq = event["seq"]
            if event["message"]["id"] == marker:
                return


async def _read(conn: Any) -> str:
    import asyncio

    raw = await asyncio.wait_for(conn.read_message(), 10)
    assert raw is not None, "the well-behaved watcher was disconnected"
    return raw


@pytest.fixture(scope="module")
def rig():
    # A generous rate limit: the fuzzer sends as fast as the server answers.
    with ThreadServer(Settings(port=0, max_frames_per_second=1e6, log_level="critical")) as server:
        r = Rig(server)
        server.run(r.setup)
        yield r
        assert server.broker.connections, "the rig's own connections vanished"


def check_reply(reply: dict[str, Any], want: str, request_id: Any) -> None:
    """The reply is the one ``want`` names, well-formed, request_id echoed iff a string."""
    assert isinstance(reply.get("ts"), str) and TS_RE.match(reply["ts"]), reply
    if want in ("ack", "pong"):
        assert reply["type"] == want, f"expected {want}, got {reply}"
    else:
        assert reply["type"] == "error", f"expected error {want}, got {reply}"
        error = reply["error"]
        assert error["code"] == want, f"expected {want}, got {error}"
        assert error["code"] in CODES
        assert isinstance(error["message"], str) and error["message"]
        assert not any(leak in error["message"] for leak in LEAKS), error["message"]
    if request_id is _ANY_RID:
        pass
    elif isinstance(request_id, str):
        assert reply.get("request_id") == request_id, reply
    else:
        assert "request_id" not in reply, reply


_UNSET: Any = object()
_ANY_RID: Any = object()  # the caller checks the request_id itself


def run_text(rig: Rig, raw: bytes, want: str | set[str] | None = None, rid: Any = _UNSET) -> dict[str, Any]:
    """Send ``raw`` as a text frame, check the reply against the oracle and the watcher.

    ``want`` and ``rid`` (the request_id to see echoed) default to what the
    oracle reads from ``raw``.
    """
    ok, value = decode_like_the_contract(raw)
    if want is None:
        want = expected(value) if ok else "BAD_REQUEST"
    if rid is _UNSET:
        rid = value.get("request_id") if ok and isinstance(value, dict) else None

    async def go() -> dict[str, Any]:
        reply = await rig.exchange(TEXT, raw)
        await rig.watcher_sees_everything()
        return reply

    reply = rig.server.run(go)
    wants = {want} if isinstance(want, str) else want
    got = reply["error"]["code"] if reply["type"] == "error" else reply["type"]
    assert got in wants, f"{raw[:300]!r}: expected {wants}, got {reply}"
    check_reply(reply, got, rid)
    return reply


def run_json(rig: Rig, frame: Any) -> dict[str, Any]:
    return run_text(rig, json.dumps(frame).encode("ascii"))


# -- strategies -----------------------------------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
BOUNDARY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "a" * 127,
        "a" * 128,
        "a" * 129,
        "é" * 128,
        "é" * 129,
        "😀" * 128,
        "😀" * 129,
        "\x00",
        "\n",
        "\x1b[31m",
        TOPIC + "\n",
        TOPIC + "\x00",
        "-" + TOPIC,
        TOPIC.upper(),
        "\ud800",
        "\udfff\ud800",
        "a" * 1000,
        "fuzz/../x",
        "%66uzz",
        "fuzz?x=1",
    ]
)
STRINGS = st.one_of(
    BOUNDARY_STRINGS,
    st.text(max_size=140),
    st.text(alphabet=st.one_of(st.characters(), SURROGATES), max_size=20),
    st.just(TOPIC),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    STRINGS,
)
JSON = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(STRINGS, kids, max_size=4),
    max_leaves=12,
)


@st.composite
def valid_frames(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["subscribe", "resume", "unsubscribe", "publish", "ping"]))
    rid = {"request_id": draw(st.text(max_size=8))}
    if kind == "subscribe":
        return {"type": "subscribe", "topic": TOPIC, "client_id": "fz", "last_n": 2, **rid}
    if kind == "resume":
        return {"type": "subscribe", "topic": TOPIC, "client_id": "fz", "since_seq": 1, "epoch": "e", **rid}
    if kind == "unsubscribe":
        return {"type": "unsubscribe", "topic": TOPIC, "client_id": "fz", **rid}
    if kind == "publish":
        message = {"id": str(draw(st.uuids())), "payload": draw(JSON)}
        return {"type": "publish", "topic": TOPIC, "message": message, **rid}
    return {"type": "ping", **rid}


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one contract field replaced by any JSON value, or removed."""
    frame = draw(valid_frames())
    paths = [(k,) for k in frame] + [("message", k) for k in frame.get("message", {})]
    paths += [("last_n",), ("since_seq",), ("epoch",), ("extra",)]
    path = draw(st.sampled_from(paths))
    holder = frame["message"] if path[0] == "message" and len(path) == 2 else frame
    key = path[-1]
    if draw(st.integers(0, 5)) == 0:
        holder.pop(key, None)
    else:
        holder[key] = draw(st.one_of(JSON, BOUNDARY_STRINGS, st.sampled_from(["ping", "publish", "subscribe"])))
    return frame


# -- the properties ----------------------------------------------------------------


@given(value=JSON)
@example(value=[])
@example(value={})
@example(value={"type": None})
@example(value={"type": "PING"})
@example(value={"type": "ping", "request_id": 7})
def test_arbitrary_json_value_gets_the_contract_reply(rig: Rig, value: Any) -> None:
    run_json(rig, value)


@given(frame=mutated_frames())
@example(frame={"type": "subscribe", "topic": "a" * 128, "client_id": "c"})
@example(frame={"type": "subscribe", "topic": "a" * 129, "client_id": "c"})
@example(frame={"type": "subscribe", "topic": TOPIC, "client_id": "c" * 129, "request_id": "r"})
@example(frame={"type": "subscribe", "topic": TOPIC, "client_id": "\ud800\n\"", "request_id": "\udfff"})
@example(frame={"type": "subscribe", "topic": TOPIC, "client_id": "c", "last_n": 1, "since_seq": 0})
@example(frame={"type": "subscribe", "topic": TOPIC, "client_id": "c", "last_n": True})
@example(frame={"type": "publish", "topic": TOPIC, "message": {"id": "not-a-uuid", "payload": 1}})
@example(frame={"type": "publish", "topic": TOPIC, "message": {"id": str(uuid.uuid4())}})
@example(frame={"type": "ping", "request_id": "r" * 129})
def test_contract_field_of_any_json_type_gets_the_contract_reply(rig: Rig, frame: dict[str, Any]) -> None:
    run_json(rig, frame)


@given(digits=st.integers(1, 6000), field=st.sampled_from(["last_n", "since_seq", "payload"]), sign=st.booleans())
@example(digits=MAX_INT_DIGITS, field="payload", sign=False)
@example(digits=MAX_INT_DIGITS + 1, field="payload", sign=False)
@example(digits=MAX_INT_DIGITS + 1, field="last_n", sign=False)
def test_huge_integers_are_read_or_refused_cleanly(rig: Rig, digits: int, field: str, sign: bool) -> None:
    number = ("-" if sign else "") + "9" * digits
    if field == "payload":
        text = f'{{"type":"publish","topic":"{TOPIC}","request_id":"h","message":{{"id":"{uuid.uuid4()}","payload":{number}}}}}'
        want = "ack"
    else:
        text = f'{{"type":"subscribe","topic":"{TOPIC}","client_id":"h","request_id":"h","{field}":{number}}}'
        want = "BAD_REQUEST" if sign else "ack"
    # Beyond Python's int/str conversion limit the number cannot be read
    # (or echoed back): the contract's answer is then BAD_REQUEST, and the
    # request_id cannot be read either.
    too_long = digits > MAX_INT_DIGITS
    run_text(rig, text.encode(), "BAD_REQUEST" if too_long else want, None if too_long else "h")


@given(depth=st.integers(1, 5000), where=st.sampled_from(["top", "payload"]), brackets=st.sampled_from(["[]", "{}"]))
@example(depth=MAX_DEPTH - 2, where="payload", brackets="[]")
@example(depth=MAX_DEPTH - 1, where="payload", brackets="{}")
@example(depth=100_000, where="payload", brackets="[]")
@example(depth=100_000, where="top", brackets="{}")
def test_deep_nesting_is_read_or_refused_cleanly(rig: Rig, depth: int, where: str, brackets: str) -> None:
    opening, closing = ('{"k":', "}") if brackets == "{}" else ("[", "]")
    nested = opening * depth + "0" + closing * depth
    if where == "top":
        text, want, total = nested, "BAD_REQUEST", depth
    else:
        text = f'{{"type":"publish","topic":"{TOPIC}","request_id":"d","message":{{"id":"{uuid.uuid4()}","payload":{nested}}}}}'
        want, total = "ack", depth + 2  # the frame and message objects wrap the payload
    if total > MAX_DEPTH:
        want = "BAD_REQUEST"
    if len(text) > 65536:
        _assert_closed_too_big(rig, text.encode())
        return
    reply = run_text(rig, text.encode(), want, rid=None if where == "top" else _ANY_RID)
    if where == "payload" and "invalid JSON" not in reply.get("error", {}).get("message", ""):
        assert reply.get("request_id") == "d", reply  # readable frames get their request_id back


@given(raw=st.binary(max_size=300))
@example(raw=b"\xff\xfe")
@example(raw=b'{"type":"ping","request_id":"\xc3"}')
@example(raw=b"\xed\xa0\x80")  # a UTF-8-encoded surrogate: not valid UTF-8
@example(raw=b"")
@example(raw=b"NaN")
@example(raw=b'{"type":"publish","topic":"fuzz","message":{"id":"00000000-0000-0000-0000-000000000000","payload":1e999}}')
def test_random_bytes_as_text_frame(rig: Rig, raw: bytes) -> None:
    run_text(rig, raw)


@given(raw=st.binary(max_size=300))
@example(raw=b'{"type":"ping","request_id":"r"}')
def test_random_bytes_as_binary_frame_are_refused(rig: Rig, raw: bytes) -> None:
    async def go() -> dict[str, Any]:
        reply = await rig.exchange(BINARY, raw)
        await rig.watcher_sees_everything()
        return reply

    reply = rig.server.run(go)
    check_reply(reply, "BAD_REQUEST", None)


def _assert_closed_too_big(rig: Rig, raw: bytes) -> None:
    async def go() -> int | None:
        assert rig.fuzzer is not None
        rig.fuzzer.send_frame(TEXT, raw)
        while True:
            frame = await rig.fuzzer.recv_frame(10)
            if frame is None or frame[0] == CLOSE:
                break
        code = rig.fuzzer.close_code
        await rig.reconnect()
        await rig.watcher_sees_everything()
        return code

    assert rig.server.run(go) == 1009


def test_frame_over_max_message_size_closes_1009_and_others_carry_on(rig: Rig) -> None:
    _assert_closed_too_big(rig, json.dumps({"type": "ping", "pad": "x" * 70000}).encode())
    run_json(rig, {"type": "ping", "request_id": "after"})
