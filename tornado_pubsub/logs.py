"""Structured logging: one record per operation, JSON by default.

``log_op`` is the single way the server reports an operation; every record
carries an ``event`` name and whatever context is known (client_id, topic,
request_id, remote, outcome, ...).  Every formatted line passes through
``redact``, so an API key can never reach the log, whoever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from tornado_pubsub.core.frames import timestamp

LOGGER_NAME = "tornado_pubsub"
log = logging.getLogger(LOGGER_NAME)

#: This process's worker number under ``--processes N`` (1..N), None otherwise.
_worker: int | None = None

_API_KEY_PARAM = re.compile(r"(api_key=)[^&\s\"'#]*", re.IGNORECASE)
REDACTED = "[REDACTED]"


class Redactor:
    """Removes the ``api_key`` query parameter and the configured key itself."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret

    def __call__(self, text: str) -> str:
        text = redact_uri(text)
        if self.secret and self.secret in text:
            text = text.replace(self.secret, REDACTED)
        return text


def redact_uri(uri: str) -> str:
    """A request URI with the ``api_key`` parameter's value replaced."""
    return _API_KEY_PARAM.sub(r"\1" + REDACTED, uri)


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


class _WorkerField(logging.Filter):
    """Adds ``worker`` to every record of a worker process, Tornado's included,
    so the interleaved output of N workers can be told apart."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _worker is not None:
            record.worker = _worker
        return True


def set_worker(worker: int | None) -> None:
    """Label every later log record of this process with ``worker`` (called after the fork)."""
    global _worker
    _worker = worker


def configure_logging(level: str = "info", fmt: str = "json", secret: str | None = None) -> None:
    """Route every logger (ours and Tornado's) to stdout in ``fmt``, redacting ``secret``."""
    redactor = Redactor(secret)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_WorkerField())
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
