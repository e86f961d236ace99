"""The API key and tokens never reach the log, in any encoding (PROTOCOL §5.1,
issue 11 finding 10): a real server is sent its own key, and a JWT, in every
way a client can spell them in a URL, and its whole output is searched for
them, raw, escaped and encoded, and after decoding every line every way."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from tornado_pubsub.logs import redact_uri

from tests.kit.rawws import RawWs, raw_http
from tests.kit.procs import ServerProcess

# A key with a quote, a backslash, a percent sign, a space and non-ASCII.
KEY = 'Sé"cr\\et %41 ü😀-x'
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyNDIifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def value_spellings(secret: str) -> list[str]:
    """The secret as a query value: percent-encoded every way, half-encoded, doubled."""
    utf8 = secret.encode("utf-8")
    every_byte = "".join(f"%{b:02X}" for b in utf8)
    mixed = "".join(f"%{b:02x}" if i % 2 else (chr(b) if 0x30 <= b < 0x7B and chr(b).isalnum() else f"%{b:02X}") for i, b in enumerate(utf8))
    return [
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        quote_plus(secret, safe=""),
        every_byte,
        mixed,
        quote(quote(secret, safe=""), safe=""),  # double-encoded
    ]


NAMES = ["api_key", "api%5Fkey", "api%5fkey", "%61pi_key", "%61%70%69%5F%6B%65%79", "API_KEY", "Api_Key", "api%255Fkey", "token", "%74oken", "TOKEN"]


def forms_to_grep(secret: str) -> set[str]:
    """What a leaked secret would look like in a log line."""
    raw = {secret, secret.encode("utf-8").decode("latin-1")}
    forms = set(raw)
    for r in raw:
        forms |= {json.dumps(r)[1:-1], json.dumps(r, ensure_ascii=False)[1:-1], repr(r)[1:-1]}
    forms |= set(value_spellings(secret))
    return forms


def decodings(text: str) -> set[str]:
    """``text`` percent-decoded up to three times, each also read back from Latin-1."""
    out = {text}
    current = text
    for _ in range(3):
        current = unquote_plus(current, errors="replace")
        out.add(current)
    for t in list(out):
        try:
            out.add(t.encode("latin-1").decode("utf-8"))
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return out


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_in(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


async def send_everything(port: int) -> int:
    """Send KEY and JWT every way; returns how many handshakes upgraded (KEY accepted)."""
    upgraded = 0
    for secret in (KEY, JWT):
        for name in NAMES:
            for value in value_spellings(secret):
                for path in (f"/ws?{name}={value}", f"/ws?x=1&{name}=wrong&{name}={value}", f"/topics?{name}={value}"):
                    if path.startswith("/ws"):
                        client = await RawWs.open(port, path)
                        upgraded += client.status == 101
                        client.close()
                    else:
                        await raw_http(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        # Raw UTF-8 in the request line (not percent-encoded), in a named
        # parameter, an unnamed one and the path.
        for target in (f"/ws?api_key={secret}", f"/ws?x={secret}", f"/no/{secret}"):
            await raw_http(port, f"GET {target.replace(' ', '%20')} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("utf-8"))
        for target in (f"/ws?note={quote(secret, safe='')}", f"/{quote(secret, safe='')}"):
            await raw_http(port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return upgraded


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_key_and_token_never_reach_the_log_in_any_encoding(fmt):
    with ServerProcess(f"--log_format={fmt}", "--log_level=debug", env={"PUBSUB_API_KEY": KEY}) as server:
        upgraded = await send_everything(server.port)
        await asyncio.sleep(0.3)  # let the last records be written
        output = server.log()
    assert upgraded > 0, "the key in its encodings must still be accepted"
    assert output.count("[REDACTED]") > 100, output[-2000:]
    for secret in (KEY, JWT):
        for form in forms_to_grep(secret):
            assert form not in output, f"{form!r} leaked"
            assert form.lower() not in output.lower(), f"{form!r} leaked (case changed)"
    for line in output.splitlines():
        texts = strings_in(json.loads(line)) if fmt == "json" else [line]
        for text in texts:
            for decoded in decodings(text):
                assert KEY not in decoded and JWT not in decoded, line


@pytest.mark.parametrize(
    "uri, redacted",
    [
        ("/ws?api%5Fkey=s&x=1", "/ws?api%5Fkey=[REDACTED]&x=1"),
        ("/ws?%61pi_key=s", "/ws?%61pi_key=[REDACTED]"),
        ("/ws?API_KEY=a&api_key=b&x=c;token=d", "/ws?API_KEY=[REDACTED]&api_key=[REDACTED]&x=c;token=[REDACTED]"),
        ("/ws?api+key=not-a-key", "/ws?api+key=not-a-key"),
        ("/ws?x=1", "/ws?x=1"),
        ("/ws", "/ws"),
    ],
)
def test_redact_uri_parses_the_query(uri, redacted):
    assert redact_uri(uri) == redacted


# Every credential path of a server with the key and a rotating token secret:
# upgrades that succeed (so the connection logs as its user), refusals, REST.
ASCII_KEY = 'k3y "with" \\odd %41 chars+/=-0123456789'  # fits in a header
NEW_SECRET = "rotation-new-secret-0123456789abcdef-xyz"
OLD_SECRET = "rotation-old-secret-0123456789abcdef-xyz"
OWN_TOPIC = [{"topics": ["user.{sub}"], "allow": ["subscribe", "publish"]}]


def encoded_token(token: str) -> str:
    return quote(token, safe="").replace(".", "%2E").replace("-", "%2D").replace("_", "%5F")


def jwt_forms(token: str) -> set[str]:
    """A token's forms, and each of its segments: half a token is a leak too."""
    return forms_to_grep(token) | {part for part in token.split(".") if len(part) >= 16}


@pytest.mark.timeout(seconds=120)
async def test_no_credential_reaches_the_output_on_any_path(ws_at):
    from tornado_pubsub.tokens import issue

    from tests.kit.clients import Rest, handshake_status

    new = issue(NEW_SECRET, "42", OWN_TOPIC, ttl=600)
    old = issue(OLD_SECRET, "43", OWN_TOPIC, ttl=600)  # minted before the rotation began
    expired = issue(NEW_SECRET, "42", OWN_TOPIC, ttl=60, now=time.time() - 600)
    forged = issue("a-secret-this-server-never-had-0123456789", "42", OWN_TOPIC)
    accepted = [
        ("/ws", {"X-API-Key": ASCII_KEY}),
        (f"/ws?api_key={quote(ASCII_KEY, safe='')}", {}),
        (f"/ws?api%5Fkey={value_spellings(ASCII_KEY)[3]}", {}),  # every byte percent-encoded
        ("/ws", {"Authorization": f"Bearer {new}"}),
        ("/ws", {"Authorization": f"Bearer {old}"}),
        (f"/ws?token={new}", {}),
        (f"/ws?tok%65n={encoded_token(old)}", {}),
    ]
    refused = [(f"/ws?token={expired}", {}), ("/ws", {"Authorization": f"Bearer {forged}"}), (f"/ws?api_key={quote(ASCII_KEY + 'x', safe='')}", {})]
    flags = ("--log_level=debug",)
    env = {"PUBSUB_API_KEY": ASCII_KEY, "PUBSUB_TOKEN_SECRET": f"{NEW_SECRET},{OLD_SECRET}"}
    with ServerProcess(*flags, env=env) as server:
        rest = Rest(server.port)
        for topic in ("user.42", "user.43"):
            assert (await rest.call("POST", "/topics", {"name": topic}, headers={"X-API-Key": ASCII_KEY}))[0] == 201
        for path, headers in accepted:
            sock = await ws_at(server.port, path, headers=headers)
            own = "user.43" if old in path + str(headers) or encoded_token(old) in path else "user.42"
            assert (await sock.subscribe(own))["status"] == "ok", (path, headers)
            assert (await sock.publish(own, {"n": 1}))["status"] == "ok"
        for path, headers in refused:
            assert (await handshake_status(server.port, path, headers))[0] == 401, path
        status, _ = await rest.call("POST", "/topics/user.42/messages", {"payload": 2}, headers={"Authorization": f"Bearer {old}"})
        assert status == 403  # user 43's token, user 42's topic
        status, _ = await rest.call("POST", "/topics/user.42/messages", {"payload": 2}, headers={"Authorization": f"Bearer {new}"})
        assert status == 201
        ws_at.close_all()
        server.terminate()
        assert await server.exit_code() == 0
        output = server.log()
    records = server.records()
    assert output.count("[REDACTED]") >= 4, "the query credentials never reached a log line"
    users = {r.get("user") for r in records if r.get("event") == "subscribe"}
    assert users >= {"42", "43"}, "the token paths were not exercised"
    assert sum(1 for r in records if r.get("event") == "connect" and r.get("outcome") == "refused") >= len(refused)
    for secret in (ASCII_KEY, NEW_SECRET, OLD_SECRET):
        for form in forms_to_grep(secret):
            assert form not in output, f"{form!r} (a form of a secret) leaked"
    for token in (new, old, expired, forged):
        for form in jwt_forms(token) | {encoded_token(token)}:
            assert form not in output, f"{form!r} (a form of a token) leaked"
    for record in records:
        for text in strings_in(record):
            for decoded in decodings(text):
                assert not any(s in decoded for s in (ASCII_KEY, NEW_SECRET, OLD_SECRET, new, old, expired, forged)), record
