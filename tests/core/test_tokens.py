"""Token verification and minting (PROTOCOL.md 5.1), without sockets: each
refusal reason, algorithm confusion, keys of every supported kind."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tornado_pubsub.core.caps import parse_caps
from tornado_pubsub.core.errors import PubSubError
from tornado_pubsub.settings import Settings, SettingsError
from tornado_pubsub.tokens import MAX_TOKEN_LENGTH, TokenKeyError, TokenVerifier, issue, load_public_key

from tests.kit.procs import ROOT, clean_env

SECRET = "0123456789abcdef-token-secret-0123456789"
USER_CAPS = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]


def pem_private(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_public(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_file(tmp_path: Path, key) -> str:
    path = tmp_path / "token.pub.pem"
    path.write_bytes(pem_public(key))
    return str(path)


def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(PubSubError) as err:
        verifier.verify(token)
    assert err.value.code == "UNAUTHORIZED" and err.value.status == 401
    return err.value.message


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_hmac_token_round_trip_gives_user_caps_and_expiry():
    token = issue(SECRET, "42", USER_CAPS, ttl=600)
    identity = TokenVerifier(SECRET).verify(token)
    assert identity.user == "42" and not identity.admin
    assert identity.allows("subscribe", "user.42") and not identity.allows("subscribe", "user.43")
    assert identity.expires_at is not None and 590 < identity.expires_at - time.time() <= 600


def test_default_caps_are_added_to_the_tokens_own():
    verifier = TokenVerifier(SECRET, default_caps=parse_caps([{"topics": ["news.*"], "allow": ["subscribe"]}]))
    identity = verifier.verify(issue(SECRET, "42", USER_CAPS))
    assert identity.allows("subscribe", "news.today") and identity.allows("subscribe", "user.42")
    assert verifier.verify(issue(SECRET, "7", None)).allows("subscribe", "news.x")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_every_hmac_algorithm_verifies_with_a_long_enough_secret(alg):
    secret = "k" * 64
    assert TokenVerifier(secret).verify(issue(secret, "u", algorithm=alg)).user == "u"


def test_hmac_algorithm_longer_than_the_secret_refused():
    # RFC 7518 3.2: HS512 needs a 64-byte key; a 40-byte secret verifies HS256 only.
    token = jwt.encode({"sub": "42"}, "z" * 64, algorithm="HS512")  # refused before its signature is read
    assert refusal(TokenVerifier(SECRET), token) == "invalid token: algorithm 'HS512' not accepted"


def test_rsa_token_verifies_with_the_public_key_file(tmp_path, rsa_key):
    verifier = TokenVerifier(public_key=load_public_key(public_file(tmp_path, rsa_key))[0])
    for alg in ("RS256", "RS384", "RS512"):
        assert verifier.verify(issue(pem_private(rsa_key), "r", algorithm=alg)).user == "r"


@pytest.mark.parametrize("curve, alg", [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")])
def test_ec_token_verifies_with_the_algorithm_of_its_curve(tmp_path, curve, alg):
    key = ec.generate_private_key(curve)
    token = issue(pem_private(key), "e")
    assert jwt.get_unverified_header(token)["alg"] == alg
    assert TokenVerifier(public_key=load_public_key(public_file(tmp_path, key))[0]).verify(token).user == "e"


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"sub": "42", "exp": -1}, "invalid token: expired"),
        ({"sub": "42", "nbf": 60}, "invalid token: not yet valid"),
        ({"exp": 60}, "invalid token: sub missing"),
        ({"sub": ""}, "invalid token: sub must be a string of 1 to 128 characters"),
        ({"sub": "x" * 129}, "invalid token: sub must be a string of 1 to 128 characters"),
        ({"sub": 42}, "invalid token: sub must be a string"),
        ({"sub": "42", "exp": "tomorrow"}, "invalid token: malformed (exp must be a number)"),
        ({"sub": "42", "caps": [{"topics": ["a"], "allow": ["delete"]}]}, "invalid token: caps invalid: caps[0].allow[0] must be one of"),
        ({"sub": "42", "caps": [{"topics": ["a"] * 100_000, "allow": ["publish"]}]}, "invalid token: malformed (longer than"),
        ({"sub": "42", "caps": [{"topics": ["a"] * 1000, "allow": ["publish"]}]}, "invalid token: caps invalid: caps[0].topics must hold at most 64 items"),
        ({"sub": "42", "caps": "all"}, "invalid token: caps invalid: caps must be a list"),
    ],
    ids=["expired", "not_yet_valid", "sub_missing", "sub_empty", "sub_long", "sub_number", "exp_text", "caps_action", "caps_huge", "caps_many", "caps_type"],
)
def test_refused_claims_say_why(claims, reason):
    # Integer exp/nbf are offsets from now, turned into times when the test runs.
    claims = {k: int(time.time()) + v if k in ("exp", "nbf") and isinstance(v, int) else v for k, v in claims.items()}
    assert refusal(TokenVerifier(SECRET), jwt.encode(claims, SECRET, algorithm="HS256")).startswith(reason)


def test_exp_is_enforced_without_leeway():
    # One second ago is expired: no grace period an attacker could use.
    token = jwt.encode({"sub": "42", "exp": int(time.time()) - 1}, SECRET, algorithm="HS256")
    assert refusal(TokenVerifier(SECRET), token) == "invalid token: expired"


def test_iat_in_the_future_is_not_refused():
    # An issuer whose clock runs ahead must not have fresh tokens refused; only exp and nbf count.
    token = jwt.encode({"sub": "42", "iat": int(time.time()) + 30}, SECRET, algorithm="HS256")
    assert TokenVerifier(SECRET).verify(token).user == "42"


def test_bad_signature_refused():
    token = issue("another-secret-of-at-least-32-bytes!!", "42")
    assert refusal(TokenVerifier(SECRET), token) == "invalid token: bad signature"
    header, payload, signature = issue(SECRET, "42").split(".")
    forged = ".".join([header, b64({"sub": "admin", "exp": int(time.time()) + 60}), signature])
    assert refusal(TokenVerifier(SECRET), forged) == "invalid token: bad signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJ.eyJ.x", "é.é.é", "\x00"], ids=["empty", "word", "abc", "bad_b64", "non_ascii", "nul"])
def test_malformed_tokens_refused(token):
    assert refusal(TokenVerifier(SECRET), token).startswith("invalid token: malformed")


def test_oversized_token_refused_before_decoding():
    assert "longer than" in refusal(TokenVerifier(SECRET), "e" * (MAX_TOKEN_LENGTH + 1))


def test_alg_none_refused():
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'admin'})}."
    assert refusal(TokenVerifier(SECRET), unsigned) == "invalid token: algorithm 'none' not accepted"


def test_hmac_token_signed_with_the_public_key_text_refused(tmp_path, rsa_key):
    # The classic confusion: anyone can read the public key, so an HS256
    # token keyed with its PEM text must never pass.
    pem = pem_public(rsa_key)
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64({"sub": "admin", "caps": [{"topics": ["*"], "allow": ["publish"]}]})
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    token = f"{header}.{body}.{signature}"
    rsa_only = TokenVerifier(public_key=load_public_key(public_file(tmp_path, rsa_key))[0])
    assert refusal(rsa_only, token) == "invalid token: algorithm 'HS256' not accepted"
    # With an HMAC secret configured as well, the HS256 token meets that secret, not the PEM.
    both = TokenVerifier(SECRET, load_public_key(public_file(tmp_path, rsa_key))[0])
    assert refusal(both, token) == "invalid token: bad signature"


def test_rs_token_refused_by_an_hmac_only_server(rsa_key):
    assert refusal(TokenVerifier(SECRET), issue(pem_private(rsa_key), "42")) == "invalid token: algorithm 'RS256' not accepted"


def test_es_token_of_another_curve_refused(tmp_path, ec_key):
    p384 = ec.generate_private_key(ec.SECP384R1())
    verifier = TokenVerifier(public_key=load_public_key(public_file(tmp_path, ec_key))[0])
    assert refusal(verifier, issue(pem_private(p384), "42")) == "invalid token: algorithm 'ES384' not accepted"


def test_token_signed_by_another_rsa_key_refused(tmp_path, rsa_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = TokenVerifier(public_key=load_public_key(public_file(tmp_path, rsa_key))[0])
    assert refusal(verifier, issue(pem_private(other), "42")) == "invalid token: bad signature"


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"sub": "42", "iss": "https://evil.example", "aud": "pubsub"}, "invalid token: wrong issuer"),
        ({"sub": "42", "aud": "pubsub"}, "invalid token: wrong issuer (iss missing)"),
        ({"sub": "42", "iss": "https://app.example", "aud": "other"}, "invalid token: wrong audience"),
        ({"sub": "42", "iss": "https://app.example"}, "invalid token: wrong audience (aud missing)"),
    ],
    ids=["wrong_iss", "no_iss", "wrong_aud", "no_aud"],
)
def test_issuer_and_audience_enforced_when_configured(claims, reason):
    verifier = TokenVerifier(SECRET, issuer="https://app.example", audience="pubsub")
    assert refusal(verifier, jwt.encode(claims, SECRET, algorithm="HS256")) == reason
    good = issue(SECRET, "42", issuer="https://app.example", audience="pubsub")
    assert verifier.verify(good).user == "42"


def test_issuer_and_audience_ignored_when_not_configured():
    token = issue(SECRET, "42", issuer="anyone", audience="anything")
    assert TokenVerifier(SECRET).verify(token).user == "42"


def test_refusal_messages_never_quote_the_token():
    token = jwt.encode({"sub": "", "exp": "x"}, SECRET, algorithm="HS256")
    for bad in (token, token[:-3], token + "x", token.replace(".", "!")):
        message = refusal(TokenVerifier(SECRET), bad)
        assert not any(part and part in message for part in bad.split(".")), message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sub": ""}, "sub must be a string"),
        ({"sub": "x" * 129}, "sub must be a string"),
        ({"sub": "42", "caps": [{"topics": ["a b"], "allow": ["publish"]}]}, "must be a topic name"),
        ({"sub": "42", "ttl": 0}, "ttl must be positive"),
        ({"sub": "42", "algorithm": "RS256"}, "needs a PEM private key"),
    ],
)
def test_issue_refuses_what_the_server_would_refuse(kwargs, message):
    with pytest.raises(ValueError, match=message):
        issue(SECRET, **kwargs)


def test_issue_refuses_a_short_hmac_secret():
    with pytest.raises(TokenKeyError, match="at least 32 bytes"):
        issue("short", "42")
    with pytest.raises(TokenKeyError, match="HS512 must be at least 64 bytes"):
        issue(SECRET, "42", algorithm="HS512")


def test_issue_without_ttl_has_no_exp():
    claims = jwt.decode(issue(SECRET, "42", ttl=None), SECRET, algorithms=["HS256"])
    assert "exp" not in claims and TokenVerifier(SECRET).verify(issue(SECRET, "42", ttl=None)).expires_at is None


def test_settings_validate_token_keys_and_caps_in_one_line(tmp_path, rsa_key):
    Settings(token_public_key=public_file(tmp_path, rsa_key), default_caps='[{"topics":["a.*"],"allow":["subscribe"]}]')
    ed = tmp_path / "ed.pem"
    ed.write_bytes(pem_public(ed25519.Ed25519PrivateKey.generate()))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    cases = [
        ({"token_secret": "short"}, "token_secret must be at least 32 bytes"),
        ({"token_public_key": str(tmp_path / "missing.pem")}, "cannot read token_public_key"),
        ({"token_public_key": str(garbage)}, "is not a PEM public key"),
        ({"token_public_key": str(ed)}, "must be an RSA key or an EC key"),
        ({"token_secret": SECRET, "default_caps": "[{"}, "default_caps: caps are not valid JSON"),
        ({"token_secret": SECRET, "anonymous_caps": '[{"topics":["*"],"allow":["fly"]}]'}, "anonymous_caps: caps[0].allow[0]"),
        ({"default_caps": "[]"}, "default_caps needs token_secret or token_public_key"),
        ({"token_issuer": "x"}, "token_issuer needs"),
        ({"anonymous_caps": "[]"}, "anonymous_caps needs api_key"),
        ({"token_secret": ""}, "token_secret must not be empty"),
        ({"max_connections_per_user": 0}, "max_connections_per_user must be at least 1"),
    ]
    for overrides, message in cases:
        with pytest.raises(SettingsError) as err:
            Settings(**overrides)
        assert message in str(err.value) and "\n" not in str(err.value), (overrides, str(err.value))


OLD_SECRET = "the-old-secret-being-rotated-out-012345678"


def test_rotation_list_verifies_tokens_of_every_listed_secret_and_no_other():
    verifier = TokenVerifier(f"{SECRET}, {OLD_SECRET}")  # blanks around commas are trimmed
    for secret in (SECRET, OLD_SECRET):
        assert verifier.verify(issue(secret, "42", USER_CAPS)).allows("subscribe", "user.42")
    assert refusal(verifier, issue("a-third-secret-nobody-configured-0123456", "42")) == "invalid token: bad signature"
    # A claim refused under the secret that did sign it is that refusal, not "bad signature".
    expired = issue(OLD_SECRET, "42", now=time.time() - 7200, ttl=60)
    assert refusal(verifier, expired) == "invalid token: expired"


def test_rotation_list_offers_hs512_only_for_the_secrets_long_enough():
    long_secret = "x" * 64
    verifier = TokenVerifier(f"{SECRET},{long_secret}")
    assert verifier.verify(issue(long_secret, "42", algorithm="HS512")).user == "42"
    forged = jwt.encode({"sub": "42"}, SECRET + "!" * 40, algorithm="HS512")
    assert refusal(verifier, forged) == "invalid token: bad signature"


def test_issue_signs_with_the_first_secret_of_a_rotation_list():
    token = issue(f"{SECRET},{OLD_SECRET}", "42")
    assert TokenVerifier(SECRET).verify(token).user == "42"
    assert refusal(TokenVerifier(OLD_SECRET), token) == "invalid token: bad signature"


def test_settings_check_every_secret_of_a_rotation_list():
    assert Settings(token_secret=f"{SECRET},{OLD_SECRET}").token_secrets == (SECRET, OLD_SECRET)
    for value in (f"{SECRET},short", f"{SECRET},", f"{SECRET},,{OLD_SECRET}"):
        with pytest.raises(SettingsError, match="each, when comma-separated"):
            Settings(token_secret=value)


def test_cli_token_signs_with_the_first_secret_of_the_rotation_list():
    result = cli_token("--sub", "42", PUBSUB_TOKEN_SECRET=f"{SECRET},{OLD_SECRET}")
    assert result.returncode == 0, result.stderr
    assert TokenVerifier(SECRET).verify(result.stdout.strip()).user == "42"
    assert SECRET not in result.stdout + result.stderr and OLD_SECRET not in result.stdout + result.stderr


def test_settings_repr_hides_the_secrets():
    text = repr(Settings(api_key="the-admin-key-value", token_secret=SECRET))
    assert "the-admin-key-value" not in text and SECRET not in text


def cli_token(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tornado_pubsub.client.cli", "token", *args],
        cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=30,
    )


def test_cli_token_mints_a_token_the_server_accepts_and_never_prints_the_secret():
    result = cli_token("--sub", "42", "--allow", "subscribe:user.42", "--allow", "publish,presence:room.*", "--ttl", "1h", PUBSUB_TOKEN_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    identity = TokenVerifier(SECRET).verify(token)
    assert identity.user == "42" and identity.allows("subscribe", "user.42") and identity.allows("presence", "room.a")
    assert not identity.allows("publish", "user.42")
    assert 3590 < identity.expires_at - time.time() <= 3600
    assert SECRET not in result.stdout + result.stderr


def test_cli_token_with_a_pem_key_file(tmp_path, ec_key):
    path = tmp_path / "signing.pem"
    path.write_bytes(pem_private(ec_key))
    result = cli_token("--sub", "7", "--key-file", str(path), "--ttl", "none")
    assert result.returncode == 0, result.stderr
    verifier = TokenVerifier(public_key=load_public_key(public_file(tmp_path, ec_key))[0])
    assert verifier.verify(result.stdout.strip()).expires_at is None


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--sub", "42"], {}, "needs --secret, PUBSUB_TOKEN_SECRET or --key-file"),
        (["--sub", "42", "--secret", "short"], {}, "at least 32 bytes"),
        (["--sub", "42", "--allow", "delete:x"], {"PUBSUB_TOKEN_SECRET": SECRET}, "must be one of subscribe, publish, presence"),
        (["--sub", "42", "--allow", "nocolon"], {"PUBSUB_TOKEN_SECRET": SECRET}, "ACTION[,ACTION]:PATTERN"),
        (["--sub", "42", "--ttl", "soon"], {"PUBSUB_TOKEN_SECRET": SECRET}, "--ttl"),
    ],
)
def test_cli_token_usage_errors_exit_2_with_one_reason(args, env, message):
    result = cli_token(*args, **env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == "" and SECRET not in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--token_secret=too-short-secret", "token_secret must be at least 32 bytes"),
        ("--anonymous_caps=[{]", "anonymous_caps: caps are not valid JSON"),
    ],
)
def test_server_start_up_refuses_bad_token_settings_in_one_line_without_the_secret(flag, message):
    result = subprocess.run(
        [sys.executable, "-m", "tornado_pubsub", "--config=/dev/null", "--port=0", f"--api_key={SECRET}", flag],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert SECRET not in result.stderr and "too-short-secret" not in result.stderr
