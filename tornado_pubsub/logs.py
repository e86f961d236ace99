"""Structured logging: one record per operation, JSON by default.

``log_op`` is the single way the server reports an operation; every record
carries an ``event`` name and whatever context is known (client_id, topic,
request_id, remote, outcome, ...).  Every formatted line passes through
``Redactor``, so neither the API key, the token secret nor a token can reach
the log, whoever logged it and however it was encoded.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import sys
import time
from typing import Any, Iterable
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from tornado_pubsub.core.frames import timestamp
from tornado_pubsub.core.jsonenc import compiled

LOGGER_NAME = "tornado_pubsub"
log = logging.getLogger(LOGGER_NAME)

#: This process's worker number under ``--processes N`` (1..N), None otherwise.
_worker: int | None = None
REDACTED = "[REDACTED]"

#: Query parameters whose values are credentials (PROTOCOL §5.1).
SECRET_PARAMS = ("api_key", "token")

# How many layers of percent-encoding a parameter name is peeled of: the
# server decodes once; more is for what a confused client double-encoded.
_NAME_DECODINGS = 3


def _base64_spellings(secret: str) -> set[str]:
    """``secret`` base64-encoded (standard and URL-safe, padded or not): how it
    shows when a client smuggles it inside a Basic header or a token-like blob."""
    raw = secret.encode("utf-8", "surrogatepass")
    spellings: set[str] = set()
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        spellings.update({text, text.rstrip("=")})
    return spellings


class Redactor:
    """Removes credentials from a formatted log line, whoever logged it.

    Three nets, from precise to broad: ``api_key`` and ``token`` query
    parameter values (the name in any percent-encoding); each configured
    secret (the API key, the token secret) in any encoding a log line can
    carry it in (see ``secret_pattern``, plus base64); and anything shaped
    like a JWT.

    Threat: a key reaching the log is a key handed to everyone who can read
    logs; a client (or a curious user) picks the encoding, so literal matching
    is not enough.
    """

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = tuple(s for s in secrets if s)
        forms = [secret_pattern(s).pattern for s in self.secrets]
        forms += [re.escape(b) for s in self.secrets for b in sorted(_base64_spellings(s), key=len, reverse=True)]
        self._secret = re.compile("|".join(forms), re.IGNORECASE) if forms else None
        # Without "%", "\\" or "+" in a line no encoded form can be there, so
        # the patterns (tens of microseconds a line) run only if a plain,
        # case-folded form is: most lines are checked with a few ``in`` tests.
        self._plain: set[str] = set()
        for s in self.secrets:
            self._plain |= {s.lower(), s.encode("utf-8", "surrogatepass").decode("latin-1").lower()}
            self._plain |= {b.lower() for b in _base64_spellings(s)}

    def __call__(self, text: str) -> str:
        folded = text.lower()
        encoded = "%" in text or "\\" in text or "+" in text
        if encoded or any(name in folded for name in SECRET_PARAMS):
            text = _SECRET_PARAM_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)
        if self._secret is not None and (encoded or any(form in folded for form in self._plain)):
            text = self._secret.sub(REDACTED, text)
        if encoded or "eyj" in folded:
            text = _JWT.sub(REDACTED, text)
        return text


def redact_uri(uri: str) -> str:
    """A request URI with the value of every ``api_key`` and ``token`` query
    parameter replaced by ``[REDACTED]``.

    The query string is parsed, not pattern-matched: a parameter counts as a
    secret when its name, percent-decoded (``api%5Fkey``, ``%61pi_key``,
    ``+`` as space, several layers), stripped and lower-cased, is one of
    ``SECRET_PARAMS``; repeated parameters are each redacted, and ``;`` is
    treated as a separator too (some parsers do).  Everything else is kept
    byte for byte.
    """
    path, sep, rest = uri.partition("?")
    if not sep:
        return uri
    query, hash_sep, fragment = rest.partition("#")
    fields = re.split(r"([&;])", query)
    for i in range(0, len(fields), 2):  # separators sit at the odd indexes
        name, eq, _ = fields[i].partition("=")
        if eq and _is_secret_name(name):
            fields[i] = f"{name}={REDACTED}"
    return f"{path}?{''.join(fields)}{hash_sep}{fragment}"


def _is_secret_name(name: str) -> bool:
    for _ in range(_NAME_DECODINGS):
        decoded = unquote_plus(name, errors="replace")
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() in SECRET_PARAMS


def _name_pattern(name: str) -> str:
    # Each character literally or percent-encoded (any hex case, optionally
    # itself percent-encoded as %25XX).
    return "".join(f"(?:{re.escape(c)}|%(?:25)?{ord(c):02x})" for c in name)


# Backstop for URIs that reach a log line without passing redact_uri (a
# library's own message): the parameter, its name in any encoding, up to the
# end of the value.  A backslash escape (JSON, repr) is part of the value.
_SECRET_PARAM_IN_TEXT = re.compile(
    r"((?:^|[?&;\s\"'])(?:" + "|".join(_name_pattern(n) for n in SECRET_PARAMS) + r")(?:=|%(?:25)?3d))"
    r"(?:\\.|[^&;\s\"'#\\])*",
    re.IGNORECASE,
)

# A JWT: base64url of '{"' opens its header, three dot-separated segments;
# any character may be percent-encoded.
_B64 = r"(?:[A-Za-z0-9_-]|%(?:25)?[0-9a-f]{2})"
_DOT = r"(?:\.|%(?:25)?2e)"
_JWT = re.compile(rf"{_name_pattern('eyJ')}{_B64}{{2,}}{_DOT}{_B64}{{2,}}{_DOT}{_B64}*", re.IGNORECASE)


def secret_pattern(secret: str) -> re.Pattern[str]:
    """A pattern matching ``secret`` in every form a log line can show it in.

    Per character: itself; its UTF-8 bytes percent-encoded (any hex case,
    also double-encoded as ``%25XX``); those bytes read as Latin-1 (how
    Tornado decodes a raw non-ASCII request line); ``+`` for a space.  Each
    of those characters is then allowed as it appears after up to two layers
    of JSON or ``repr`` escaping (``\\"``, ``\\\\``, ``\\u00e9``, ``\\xe9``),
    which is what the JSON and text formatters (and a ``!r`` inside a
    message) add.  Case is ignored, which can only redact more.
    """
    return re.compile("".join(_char_forms(c) for c in secret), re.IGNORECASE)


def _char_forms(c: str) -> str:
    data = c.encode("utf-8", "surrogatepass")
    # Byte by byte, each percent-encoded or raw (read as Latin-1), in any mix.
    per_byte = "".join(f"(?:%(?:25)?{b:02x}|{_escaped(chr(b))})" for b in data)
    alternatives = [_escaped(c), per_byte] + ([r"\+"] if c == " " else [])
    return "(?:" + "|".join(alternatives) + ")"


def _escaped(x: str) -> str:
    """Regex for ``x`` as it may appear after 0, 1 or 2 layers of JSON/repr escaping."""
    forms = {x}
    for _ in range(2):
        # repr() escapes a quote only when the string holds both kinds: allow both spellings.
        forms |= {json.dumps(f)[1:-1] for f in forms} | {repr(f)[1:-1] for f in forms} | {f.replace("'", "\\'") for f in forms}
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")"


class _FrameTime(logging.Formatter):
    """Timestamps in the same form as every frame's ``ts``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return timestamp(record.created)


# One encoder for every record: ``json.dumps`` with keyword arguments builds
# a new encoder per call (and ``encode`` a C encoder: ``jsonenc``).
# python-json-logger's own encoder class, so odd values (datetimes,
# exceptions) render as they always did; ASCII, so a record is one physical
# line whatever a client_id holds.
_encode_record = compiled(JsonEncoder(ensure_ascii=True))


class _RedactingJson(_FrameTime, JsonFormatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
        self.redactor = redactor
        self._renamed = [(field, self._get_rename(field)) for field in self._required_fields]

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        """python-json-logger's ``add_fields`` for this configuration (the four
        fields renamed; no defaults, static fields or timestamp) in one pass
        over the record: the same keys in the same order (test_logs.py
        compares the two), a quarter of a record's cost less."""
        fields = record.__dict__
        for field, name in self._renamed:
            log_data[name] = fields.get(field)
        if message_dict:
            log_data.update(message_dict)
        skip = self._skip_fields
        items: Iterable[tuple[str, Any]] = fields.items()
        if record.__class__ is OpRecord:  # its standard attributes come first: pass over them unread
            items = itertools.islice(items, len(OpRecord.template or ()), None)
        for key, value in items:
            if key not in skip and not (key.__class__ is str and key.startswith("_")):
                log_data[key] = value

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        # python-json-logger's extension point for the encoding: our one
        # encoder, called directly rather than through json_serializer's
        # keyword arguments, which it would ignore.
        return _encode_record(log_data)

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


#: Records held at most before they are written even within one loop pass
#: (a flood of operations in one pass must not grow the buffer unbounded).
MAX_PENDING = 256


class BufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes once per event-loop pass, not once per record.

    Contract: records reach the stream in the order they were logged; a
    record is held at most until the end of the current loop pass (a
    callback scheduled with the first one), or until ``MAX_PENDING`` are
    held.  Without a running loop (start-up, exit, plain scripts and tests),
    and for every ERROR or CRITICAL record, the write is immediate.
    ``flush()`` writes what is held: ``logging.shutdown`` calls it at
    interpreter exit, and a worker calls ``flush_logs`` before ``os._exit``.

    Threat: a process killed outright (SIGKILL, OOM) loses at most the
    records of the pass it died in; a graceful SIGTERM and a crash that
    unwinds lose none.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:  # logging's contract: a bad record never raises
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR or len(self._pending) >= MAX_PENDING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled_on is not loop:  # (a new loop: the old one's callback may never run)
            self._scheduled_on = loop
            loop.call_soon(self._end_of_pass)

    def _end_of_pass(self) -> None:
        self._scheduled_on = None
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            pending = self._pending
            if pending:
                self._pending = []
                try:
                    self.stream.write(self.terminator.join(pending) + self.terminator)
                except Exception:  # a closed or broken stdout: drop, as logging would
                    pass
            super().flush()


def flush_logs() -> None:
    """Write every held record now (before ``os._exit``, which skips ``logging.shutdown``)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


class OpRecord(logging.LogRecord):
    """A record ``log_op`` made directly (``_op_record``): a ``LogRecord``
    whose first ``len(template)`` attributes are the standard ones."""

    #: The attributes of every such record, in ``LogRecord``'s own order,
    #: with the values of all that are the same for each (made once by
    #: ``configure_logging``; None until it owns the process's logging).
    template: dict[str, Any] | None = None
    #: Context keys that would overwrite a record attribute, which
    #: ``Logger.makeRecord`` refuses with a ``KeyError``.
    taken: frozenset[str] = frozenset()
    #: When ``logging`` was imported, as the template's record counts it.
    start = 0.0


def _op_record(template: dict[str, Any], level: int, event: str, extra: dict[str, Any]) -> logging.LogRecord:
    """The ``LogRecord`` ``Logger.log`` would make for an operation, made
    directly: the attributes are copied, in their order, from one record
    made at configuration (no caller lookup, no thread or process names:
    ``configure_logging`` switched them off), and the seven that differ per
    record are set.  A record costs a dict copy, not ``LogRecord.__init__``'s
    path splitting and ``makeRecord``'s checks; every standard attribute is
    there, so any handler or formatter reads it as a stdlib record."""
    record = OpRecord.__new__(OpRecord)
    fields = record.__dict__
    fields.update(template)
    now = time.time()
    fields["msg"] = event
    fields["levelname"] = logging.getLevelName(level)
    fields["levelno"] = level
    fields["exc_info"] = None
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0
    fields["relativeCreated"] = (now - OpRecord.start) * 1000
    fields.update(extra)
    return record


def configure_logging(level: str = "info", fmt: str = "json", *secrets: str | None) -> None:
    """Route every logger (ours and Tornado's) to stdout in ``fmt``, redacting ``secrets``.

    Takes over the process's logging, so it also switches off what no
    formatter here prints and every record would otherwise pay for: the
    caller lookup (a stack walk) and thread, process and multiprocessing
    names (the "Optimization" table of the logging documentation); and
    ``log_op`` then makes its records directly (``_op_record``)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
    # What Logger.log makes without a caller lookup.
    made = logging.LogRecord(LOGGER_NAME, logging.INFO, "(unknown file)", 0, "", (), None, "(unknown function)")
    OpRecord.template = dict(vars(made))
    OpRecord.taken = frozenset(OpRecord.template) | {"message", "asctime"}
    OpRecord.start = made.created - made.relativeCreated / 1000
    redactor = Redactor(*secrets)
    handler = BufferedHandler(sys.stdout)
    handler.addFilter(_WorkerField())
    handler.setFormatter(_RedactingJson(redactor) if fmt == "json" else _RedactingText(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_op(event: str, level: int = logging.INFO, exc_info: Any = False, **context: Any) -> None:
    """Emit the one record for an operation; ``None`` context values are left out.

    Once ``configure_logging`` has run, and while no other record factory is
    set (``logging.setLogRecordFactory``), the record is made by
    ``_op_record``; otherwise, and for a record carrying an exception, by
    ``Logger.log`` as usual.  Either way it goes through the logger's
    filters and handlers (``Logger.handle``)."""
    if not log.isEnabledFor(level):
        return
    extra = {k: v for k, v in context.items() if v is not None}
    extra["event"] = event
    template = OpRecord.template
    if (
        template is None
        or exc_info
        or logging.getLogRecordFactory() is not logging.LogRecord
        or not OpRecord.taken.isdisjoint(extra)  # a clash: Logger.log's KeyError, as before
    ):
        log.log(level, event, extra=extra, exc_info=exc_info)
        return
    log.handle(_op_record(template, level, event, extra))
