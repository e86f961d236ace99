"""Structured logging: one record per operation, JSON by default.

``log_op`` is the single way the server reports an operation; every record
carries an ``event`` name and whatever context is known (client_id, topic,
request_id, remote, outcome, ...).  Every formatted line passes through
``Redactor``, so neither the API key, the token secret nor a token can reach
the log, whoever logged it and however it was encoded.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import urllib.parse
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from tornado_pubsub.core.frames import timestamp

LOGGER_NAME = "tornado_pubsub"
log = logging.getLogger(LOGGER_NAME)

# The query parameters that carry credentials (api_key on /ws; token on /ws and SSE).
_CREDENTIAL_PARAM = re.compile(r"((?<![A-Za-z0-9_])(?:api_key|token)=)[^&\s\"'#]*", re.IGNORECASE)
# A JWT wherever it appears: its header always starts with base64url('{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A run of URL text holding percent-escapes, decoded to look for hidden secrets.
_ESCAPED_RUN = re.compile(r"[^\s\"'<>]*%[0-9A-Fa-f]{2}[^\s\"'<>]*")
_DECODE_ROUNDS = 3  # %252D decodes twice; more rounds than this is not a key any more
REDACTED = "[REDACTED]"


def _variants(secret: str) -> set[str]:
    """Spellings of ``secret`` a log line could hold: raw, escaped, percent-encoded, base64."""
    raw = secret.encode("utf-8", "surrogatepass")
    # As JSON lines (ASCII-escaped) and text lines (repr) print it, and as a query string would.
    spellings = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], urllib.parse.quote_plus(secret)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        spellings.update({text, text.rstrip("=")})
    return {v for v in spellings if v}


class Redactor:
    """Removes credentials from a formatted log line, however they were encoded.

    Gone are: the ``api_key`` and ``token`` query parameters' values, anything
    shaped like a JWT, and each configured secret (the API key, the token
    secret) raw, JSON-escaped or base64-encoded; a run of URL text whose
    percent-decoding (up to three rounds: ``%2D``, ``%252D``) shows a secret
    or a JWT is replaced whole.  Threat: a client that puts the key in a
    path, a topic name or an odd parameter spelling (``api%5Fkey``) to make
    the server write it where operators, log shippers and their vendors read.
    """

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self._spellings = sorted({v for s in self.secrets for v in _variants(s)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if "%" in text:
            text = _ESCAPED_RUN.sub(self._decoded_run, text)
        text = _JWT.sub(REDACTED, redact_uri(text))
        for spelling in self._spellings:
            if spelling in text:
                text = text.replace(spelling, REDACTED)
        return text

    def _decoded_run(self, match: re.Match[str]) -> str:
        run = decoded = match.group(0)
        for _ in range(_DECODE_ROUNDS):
            decoded = urllib.parse.unquote(decoded)
            # "+" is a space in a query string: check both readings.
            if any(self._holds_secret(view) or _JWT.search(view) for view in (decoded, decoded.replace("+", " "))):
                return REDACTED
            if "%" not in decoded:
                break
        # A credential parameter whose name was escaped (api%5Fkey=...) hides from redact_uri.
        if len(_CREDENTIAL_PARAM.findall(decoded)) > len(_CREDENTIAL_PARAM.findall(run)):
            return REDACTED
        return run

    def _holds_secret(self, text: str) -> bool:
        return any(s in text for s in self.secrets)


def redact_uri(uri: str) -> str:
    """A request URI with the ``api_key`` and ``token`` parameters' values replaced."""
    return _CREDENTIAL_PARAM.sub(r"\1" + REDACTED, uri)


class _FrameTime(logging.Formatter):
    """Timestamps in the same form as every frame's ``ts``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return timestamp(record.created)


class _RedactingJson(_FrameTime, JsonFormatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            json_ensure_ascii=True,  # one physical line whatever a client_id holds
        )
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _RedactingText(_FrameTime):
    """``ts level event key=value ...`` for people reading a terminal."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and k != "event"
        )
        # repr() escapes newlines, so a hostile client_id cannot forge a line.
        line = line.replace("\n", "\\n") if not record.exc_info else line
        return self.redactor(f"{line} {extra}" if extra else line)


def configure_logging(level: str = "info", fmt: str = "json", *secrets: str | None) -> None:
    """Route every logger (ours and Tornado's) to stdout in ``fmt``, redacting ``secrets``."""
    redactor = Redactor(*secrets)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_RedactingJson(redactor) if fmt == "json" else _RedactingText(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_op(event: str, level: int = logging.INFO, exc_info: Any = False, **context: Any) -> None:
    """Emit the one record for an operation; ``None`` context values are left out."""
    if not log.isEnabledFor(level):
        return
    extra = {k: v for k, v in context.items() if v is not None}
    extra["event"] = event
    log.log(level, event, extra=extra, exc_info=exc_info)
