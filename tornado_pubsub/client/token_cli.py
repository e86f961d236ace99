"""``pubsub token``: minting a user token offline, for a test page or a script."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float | None:
    """``90``, ``90s``, ``30m``, ``1h``, ``7d`` in seconds; ``none`` for no expiry."""
    text = text.strip().lower()
    if text == "none":
        return None
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError("must be like 90, 90s, 30m, 1h, 7d or none") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be positive (or none)")
    return seconds


def _grant(text: str) -> dict[str, Any]:
    """``ACTION[,ACTION]:PATTERN``, e.g. ``subscribe,presence:user.{sub}``, as one caps entry."""
    actions, sep, pattern = text.partition(":")
    if not sep or not pattern:
        raise argparse.ArgumentTypeError("must be ACTION[,ACTION]:PATTERN, e.g. subscribe:user.42")
    return {"topics": [pattern], "allow": [a.strip() for a in actions.split(",")]}


def mint_token(args: argparse.Namespace) -> str:
    """The token ``pubsub token`` prints.  The secret comes from --secret,
    PUBSUB_TOKEN_SECRET or --key-file and is never printed; a ValueError's
    message says what is wrong with the arguments."""
    from tornado_pubsub.tokens import issue  # PyJWT is needed by this command only

    if args.key_file:
        try:
            with open(args.key_file, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read --key-file: {exc.strerror or exc}") from None
        key: str | bytes = raw if raw.lstrip().startswith(b"-----BEGIN") else raw.strip()
    else:
        key = args.secret or os.environ.get("PUBSUB_TOKEN_SECRET") or ""
        if not key:
            raise ValueError("token needs --secret, PUBSUB_TOKEN_SECRET or --key-file")
    caps = list(args.allow or [])
    if args.caps:
        try:
            extra = json.loads(args.caps)
        except ValueError as exc:
            raise ValueError(f"--caps is not JSON: {exc}") from None
        caps += extra if isinstance(extra, list) else [extra]
    # ValueError (CapsError, bad keys) propagates: its message never quotes the key.
    return issue(key, args.sub, caps, args.ttl, algorithm=args.alg, issuer=args.issuer, audience=args.audience)



def add_token_arguments(token: argparse.ArgumentParser) -> None:
    """The ``token`` subcommand's options."""
    token.add_argument("--sub", required=True, help="the user (the token's sub claim)")
    token.add_argument(
        "--allow", action="append", type=_grant, metavar="ACTION:PATTERN",
        help="grant, repeatable: subscribe:user.42, publish:orders.*, subscribe,presence:room.{sub}",
    )
    token.add_argument("--caps", help="capabilities as JSON, added to the --allow grants")
    token.add_argument("--ttl", type=_duration, default=3600.0, help="lifetime: 90, 90s, 30m, 1h, 7d or none (default 1h)")
    token.add_argument("--secret", help="HMAC secret; of a comma-separated list (a rotation) the first signs (prefer env PUBSUB_TOKEN_SECRET: arguments show in ps)")
    token.add_argument("--key-file", help="file holding the HMAC secret or a PEM private key (RS*/ES*)")
    token.add_argument("--alg", help="algorithm (default HS256, RS256 for RSA keys, ES* by the EC curve)")
    token.add_argument("--issuer", help="iss claim (the server's token_issuer)")
    token.add_argument("--audience", help="aud claim (the server's token_audience)")
