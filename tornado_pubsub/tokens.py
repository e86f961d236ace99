"""User tokens: verifying JWTs into identities, and minting them for app backends.

The server verifies (``TokenVerifier.verify``); an application backend mints
(``issue``), e.g. after its own login::

    from tornado_pubsub.tokens import issue
    token = issue(SECRET, sub=str(user.id),
                  caps=[{"topics": ["user.{sub}"], "allow": ["subscribe"]}], ttl=3600)

All JWT work is PyJWT's; this module only decides which key and algorithms a
token may use, and words each refusal (PROTOCOL.md 5.1).

Threats: algorithm confusion (``alg: none``, or an ``HS256`` token signed
with the RSA public key's text, which anyone can read): a token's ``alg``
selects one configured key and only the algorithms of that key's family;
a token naming any other is refused before a signature is checked.  Huge
tokens: refused by length before decoding.  Clock tricks: ``exp`` and
``nbf`` are enforced with no leeway.  No refusal message ever quotes the
token, so a token cannot reach a log through an error.

PyJWT and cryptography are imported where they are used: they take ~80 ms to
import, a fifth of a server's start, and a server without tokens (and the
``pubsub`` client) never needs them.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from tornado_pubsub.core.caps import Caps, CapsError, merge, parse_caps, parse_caps_json
from tornado_pubsub.core.errors import UNAUTHORIZED, PubSubError
from tornado_pubsub.core.identity import MAX_USER_LENGTH, USER, Authenticate, Credentials, Identity

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# RFC 7518 3.2: an HMAC key at least as long as the hash.  A secret too short
# for HS384/HS512 only verifies the algorithms it is long enough for.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
# An EC key has one curve and so one algorithm (RFC 7518 3.4).
_EC_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

MAX_SUB_LENGTH = MAX_USER_LENGTH
# Far above a real token (a few hundred bytes to a few KiB), far below what
# would make decoding and caps validation cost anything.
MAX_TOKEN_LENGTH = 16384
MIN_SECRET_LENGTH = _HMAC_MIN_BYTES["HS256"]


def split_secrets(text: str) -> tuple[str, ...]:
    """A ``token_secret`` value as its secrets: comma-separated, blanks trimmed.

    Rotation (README "Security model"): the server verifies with every
    secret listed, and the first is the one new tokens are signed with
    (``issue``, ``pubsub token``), so ``NEW,OLD`` accepts both while the old
    tokens run out.  A secret therefore cannot contain a comma.
    """
    return tuple(part.strip() for part in text.split(","))


class TokenKeyError(ValueError):
    """A configured or given key cannot be used; the message says why."""


def load_public_key(path: str) -> tuple[Any, tuple[str, ...]]:
    """The PEM public key at ``path`` and the algorithms it verifies.

    ``TokenKeyError`` (one line) when the file is missing, not PEM, or neither
    RSA nor one of the P-256/P-384/P-521 curves.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
    except OSError as exc:
        raise TokenKeyError(f"cannot read token_public_key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TokenKeyError(f"token_public_key {path} is not a PEM public key") from None
    return key, _algorithms_for(key, "token_public_key")


def _algorithms_for(key: Any, what: str) -> tuple[str, ...]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return RSA_ALGORITHMS
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and key.curve.name in _EC_ALGORITHM:
        return (_EC_ALGORITHM[key.curve.name],)
    raise TokenKeyError(f"{what} must be an RSA key or an EC key on P-256, P-384 or P-521")


def _hmac_algorithms(secret: bytes) -> tuple[str, ...]:
    return tuple(alg for alg in HMAC_ALGORITHMS if len(secret) >= _HMAC_MIN_BYTES[alg])


def _refused(reason: str) -> PubSubError:
    return PubSubError(UNAUTHORIZED, f"invalid token: {reason}")


def _reason(exc: Exception) -> str | None:
    """How the contract words one of PyJWT's refusals (None: no specific word)."""
    import jwt

    # Most specific first.
    for kind, reason in (
        (jwt.ExpiredSignatureError, "expired"),
        (jwt.ImmatureSignatureError, "not yet valid"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidAlgorithmError, "algorithm not accepted"),
        (jwt.exceptions.InvalidSubjectError, "sub must be a string"),
    ):
        if isinstance(exc, kind):
            return reason
    return None


class TokenVerifier:
    """Verifies tokens against the configured keys; ``verify`` returns an ``Identity``.

    ``secret``: the HMAC key (HS256, and HS384/HS512 when it is at least
    48/64 bytes long), or several comma-separated (``split_secrets``): a
    token is accepted if any of them signed it, tried in order, so during a
    rotation a forged token costs one HMAC per listed secret.
    ``public_key``: a loaded RSA or EC public key (RS*/ES*).  At least one
    is required.  ``default_caps`` are granted to every token on top of its
    own ``caps``.  ``verify`` is pure CPU (no I/O), safe to call on the IOLoop.
    """

    def __init__(
        self,
        secret: str | None = None,
        public_key: Any = None,
        issuer: str | None = None,
        audience: str | None = None,
        default_caps: Caps = (),
    ) -> None:
        if secret is None and public_key is None:
            raise TokenKeyError("a token verifier needs token_secret or token_public_key")
        import jwt  # noqa: F401  (loaded here, at start-up, rather than inside the first handshake)

        # alg -> the keys that may have signed it, in the order they are tried.
        self._keys: dict[str, tuple[Any, ...]] = {}
        for one in split_secrets(secret) if secret is not None else ():
            for alg in _hmac_algorithms(one.encode("utf-8")):
                self._keys[alg] = (*self._keys.get(alg, ()), one)
        if public_key is not None:
            self._keys.update(dict.fromkeys(_algorithms_for(public_key, "token_public_key"), (public_key,)))
        self.issuer = issuer
        self.audience = audience
        self.default_caps = default_caps

    @classmethod
    def from_settings(cls, settings: Any) -> "TokenVerifier | None":
        """The verifier ``settings`` configure, or None when no token key is set."""
        if settings.token_secret is None and settings.token_public_key is None:
            return None
        public_key = load_public_key(settings.token_public_key)[0] if settings.token_public_key else None
        return cls(
            settings.token_secret,
            public_key,
            settings.token_issuer,
            settings.token_audience,
            parse_caps_json(settings.default_caps) if settings.default_caps else (),
        )

    def verify(self, token: str) -> Identity:
        """The user ``token`` names, with its caps plus ``default_caps``.

        Raises ``PubSubError(UNAUTHORIZED)`` saying why: malformed, algorithm
        not accepted, bad signature, expired, not yet valid, wrong issuer or
        audience, sub missing or invalid, caps invalid.
        """
        import jwt

        if len(token) > MAX_TOKEN_LENGTH:
            raise _refused(f"malformed (longer than {MAX_TOKEN_LENGTH} characters)")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise _refused("malformed") from None
        keys = self._keys.get(alg) if isinstance(alg, str) else None
        if keys is None:
            # alg "none", an HS* token on an RSA-only server, an unknown name...
            raise _refused(f"algorithm {str(alg)[:16]!r} not accepted")
        claims = self._decode(token, keys, alg)
        sub = claims.get("sub")
        if sub is None:
            raise _refused("sub missing")
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH:
            raise _refused(f"sub must be a string of 1 to {MAX_SUB_LENGTH} characters")
        try:
            caps = parse_caps(claims.get("caps"))
        except CapsError as exc:
            raise _refused(f"caps invalid: {exc}") from None
        exp = claims.get("exp")
        return Identity(USER, user=sub, caps=merge(caps, self.default_caps), expires_at=None if exp is None else float(exp))

    def _decode(self, token: str, keys: tuple[Any, ...], alg: str) -> dict[str, Any]:
        import jwt

        options = {
            # iat is informational: an issuer whose clock runs a second ahead
            # must not have its fresh tokens refused.  exp and nbf are enforced.
            "verify_iat": False,
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
        }

        def decode(key: Any) -> dict[str, Any]:
            return jwt.decode(
                token, key, algorithms=[alg], options=options, audience=self.audience, issuer=self.issuer, leeway=0
            )

        try:
            for key in keys[:-1]:
                try:
                    return decode(key)
                except jwt.InvalidSignatureError:
                    continue  # a rotation: a secret further down the list may have signed it
            return decode(keys[-1])
        except jwt.MissingRequiredClaimError as exc:
            which = {"iss": "wrong issuer", "aud": "wrong audience"}.get(exc.claim, "claim")
            raise _refused(f"{which} ({exc.claim} missing)") from None
        except jwt.PyJWTError as exc:
            reason = _reason(exc)
            if reason is not None:
                raise _refused(reason) from None
            # A claim of the wrong type (exp not a number, ...) or a broken segment.
            claim = next((c for c in ("exp", "nbf", "iat") if f"({c})" in str(exc)), None)
            raise _refused(f"malformed ({claim} must be a number)" if claim else "malformed") from None


def credentials_for(settings: Any, authenticate: Authenticate | None = None) -> Credentials:
    """The credential resolver ``settings`` configure (api_key, token keys,
    anonymous_caps), asking the host's ``authenticate`` hook first when given."""
    verifier = TokenVerifier.from_settings(settings)
    anonymous = parse_caps_json(settings.anonymous_caps) if settings.anonymous_caps else None
    return Credentials(settings.api_key, verifier.verify if verifier else None, anonymous, authenticate)


def _signing_key(secret_or_key: str | bytes, algorithm: str | None) -> tuple[Any, str]:
    if isinstance(secret_or_key, str) and not secret_or_key.lstrip().startswith("-----BEGIN"):
        secret_or_key = split_secrets(secret_or_key)[0]  # a token_secret value: its first secret signs
    raw = secret_or_key.encode("utf-8") if isinstance(secret_or_key, str) else secret_or_key
    if raw.lstrip().startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError):
            raise TokenKeyError("the key is PEM but not an unencrypted private key") from None
        algorithms = _algorithms_for(key, "the signing key")
        if algorithm is not None and algorithm not in algorithms:
            raise TokenKeyError(f"algorithm {algorithm} does not fit this key (use one of {', '.join(algorithms)})")
        return key, algorithm or algorithms[0]
    if algorithm is not None and algorithm not in HMAC_ALGORITHMS:
        raise TokenKeyError(f"algorithm {algorithm} needs a PEM private key; a secret signs {', '.join(HMAC_ALGORITHMS)}")
    alg = algorithm or "HS256"
    if alg not in _hmac_algorithms(raw):
        raise TokenKeyError(f"an HMAC secret for {alg} must be at least {_HMAC_MIN_BYTES[alg]} bytes")
    return raw, alg


def issue(
    secret_or_key: str | bytes,
    sub: str,
    caps: list[dict[str, Any]] | None = None,
    ttl: float | datetime.timedelta | None = 3600,
    *,
    algorithm: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    claims: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A signed token for user ``sub`` allowed ``caps``, valid for ``ttl`` seconds.

    ``secret_or_key``: the server's ``token_secret`` (signs HS256 unless
    ``algorithm`` says HS384/HS512; of a comma-separated rotation list given
    as a ``str``, the first secret signs), or a PEM private key (RS256 for RSA,
    ES256/384/512 by the EC curve).  ``ttl=None`` mints a token that never
    expires (then revoking it means rotating the key).  ``sub`` and ``caps``
    are checked as the server will check them, so a token this returns is
    never refused for its shape.  Raises ``ValueError`` otherwise.
    """
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH:
        raise ValueError(f"sub must be a string of 1 to {MAX_SUB_LENGTH} characters")
    parse_caps(caps)  # CapsError is a ValueError
    key, alg = _signing_key(secret_or_key, algorithm)
    now = time.time() if now is None else now
    payload: dict[str, Any] = {**(claims or {}), "sub": sub, "iat": int(now)}
    if caps:
        payload["caps"] = caps
    if ttl is not None:
        seconds = ttl.total_seconds() if isinstance(ttl, datetime.timedelta) else float(ttl)
        if seconds <= 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        payload["exp"] = int(now + seconds)
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    import jwt

    return jwt.encode(payload, key, algorithm=alg)
