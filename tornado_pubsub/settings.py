"""Settings: defined once, read once from config file < environment < flags,
validated, and frozen.

Every setting is a ``tornado.options`` option on a private parser (so tests
and embedders can build several), a ``PUBSUB_<NAME>`` environment variable
and a line in the config file.  ``Settings`` is the typed, immutable result
that the rest of the server reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any, Mapping, Sequence

from tornado.options import Error as OptionsError
from tornado.options import OptionParser

from tornado_pubsub.core.auth import normalize_origin
from tornado_pubsub.core.caps import CapsError, parse_caps_json
from tornado_pubsub.core.schemas import TOPIC_RE
from tornado_pubsub.tokens import MIN_SECRET_LENGTH, TokenKeyError, load_public_key, split_secrets

ENV_PREFIX = "PUBSUB_"
DEFAULT_CONFIG = "conf/pubsub.conf"
#: Read instead when the working directory has no DEFAULT_CONFIG: the copy
#: shipped inside the package (package data through the symlink
#: tornado_pubsub/conf), so an installed server started from any folder reads
#: the same documented defaults as one started in a checkout.
PACKAGED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf", "pubsub.conf")
OVERFLOW_POLICIES = ("drop_oldest", "disconnect")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
BROKERS = ("memory", "redis")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class SettingsError(ValueError):
    """A setting is missing, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The server's configuration, typed and immutable."""

    port: int = 8080
    address: str = "127.0.0.1"
    queue_size: int = 1000
    queue_max_bytes: int = 1048576
    overflow_policy: str = "drop_oldest"
    history_size: int = 100
    history_max_bytes: int = 1048576
    max_retained_bytes: int = 268435456
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 60.0
    max_message_size: int = 65536
    max_subscriptions_per_connection: int = 1000
    max_connections: int = 20000
    max_topics: int = 10000
    topics: tuple[str, ...] = ()
    auto_create_topics: bool = False
    max_frames_per_second: float = 10000.0
    max_body_size: int = 1048576
    handshake_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    # repr=False: a settings dump (a traceback, a debug print) must not show secrets.
    api_key: str | None = dataclasses.field(default=None, repr=False)
    token_secret: str | None = dataclasses.field(default=None, repr=False)
    token_public_key: str | None = None
    token_issuer: str | None = None
    token_audience: str | None = None
    default_caps: str | None = None
    anonymous_caps: str | None = None
    max_connections_per_user: int = 100
    allowed_origins: tuple[str, ...] = ()
    # None: derived where the server is built (auth.default_allowed_hosts for
    # the standalone server, any host when embedded).
    allowed_hosts: tuple[str, ...] | None = None
    behind_proxy: bool = False
    broker: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    processes: int = 1
    log_level: str = "info"
    log_format: str = "json"

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> "Settings":
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def token_secrets(self) -> tuple[str, ...]:
        """``token_secret`` split at commas: every secret that verifies tokens,
        the first being the one to sign new tokens with (rotation; see
        ``tokens.split_secrets``).  Empty when unset."""
        return split_secrets(self.token_secret) if self.token_secret is not None else ()


# name -> (type, help). Defaults come from the dataclass so they live in one place.
_HELP = {
    "port": (int, "TCP port to listen on"),
    "address": (str, "address to bind (0.0.0.0 for all interfaces)"),
    "queue_size": (int, "max frames queued per connection"),
    "queue_max_bytes": (int, "max bytes queued per connection"),
    "overflow_policy": (str, "on a full queue: drop_oldest (drop oldest event) or disconnect"),
    "history_size": (int, "messages kept per topic for replay and resume"),
    "history_max_bytes": (int, "bytes of event frames kept per topic (oldest evicted beyond)"),
    "max_retained_bytes": (int, "bytes of history kept across all topics (oldest anywhere evicted beyond)"),
    "heartbeat_interval": (float, "seconds between heartbeat info pings and WebSocket pings"),
    "heartbeat_timeout": (float, "seconds without a pong or frame before a peer is closed"),
    "max_message_size": (int, "largest inbound WebSocket frame in bytes (larger: close 1009)"),
    "max_subscriptions_per_connection": (int, "subscriptions one connection may hold"),
    "max_connections": (int, "concurrent WebSocket connections (0: unlimited)"),
    "max_topics": (int, "topics that may exist at once (0: unlimited)"),
    "topics": (str, "comma-separated topics created at start-up if missing (with Redis: once, cluster-wide)"),
    "auto_create_topics": (bool, "subscribe or publish (WS, REST, SSE) on a missing topic creates it instead of TOPIC_NOT_FOUND"),
    "max_frames_per_second": (float, "inbound frames per second one connection may send (burst: one second's worth); admin-key connections are exempt"),
    "max_body_size": (int, "largest REST request body in bytes (larger: 413)"),
    "handshake_timeout": (float, "seconds a client may take to send its HTTP request, and after the upgrade to answer the first ping (and to authenticate, if it came with no credential)"),
    "shutdown_timeout": (float, "seconds to flush queues on SIGTERM/SIGINT before closing"),
    "api_key": (str, "API key required on REST and the WebSocket handshake (unset: no auth)"),
    "token_secret": (str, "HMAC secret (at least 32 bytes) verifying HS256/384/512 user tokens (unset: no HMAC tokens); during a rotation a comma-separated list, new first"),
    "token_public_key": (str, "path of a PEM RSA or EC public key verifying RS*/ES* user tokens"),
    "token_issuer": (str, "when set, a token's iss claim must equal it"),
    "token_audience": (str, "when set, a token's aud claim must include it"),
    "default_caps": (str, 'JSON capabilities every token holder gets, e.g. [{"topics":["news.*"],"allow":["subscribe"]}]'),
    "anonymous_caps": (str, "JSON capabilities of a client with no credential (unset: it must authenticate)"),
    "max_connections_per_user": (int, "concurrent WebSocket connections one token user may hold"),
    "allowed_origins": (str, "comma-separated origins allowed for cross-origin WebSocket handshakes ('*' for any)"),
    "allowed_hosts": (str, "comma-separated Host names served, port ignored ('*' for any; unset: loopback names when listening on loopback without behind_proxy, else any)"),
    "behind_proxy": (bool, "trust X-Real-IP / X-Forwarded-For from a reverse proxy"),
    "broker": (str, "memory (one process, no dependencies) or redis (several processes act as one server)"),
    "redis_url": (str, "Redis to use with --broker=redis, e.g. redis://127.0.0.1:6379/0"),
    "processes": (int, "worker processes sharing the port (more than 1 needs --broker=redis)"),
    "log_level": (str, "debug, info, warning, error or critical"),
    "log_format": (str, "json (one JSON object per line) or text"),
}


def _validate(s: Settings) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise SettingsError(message)

    need(0 <= s.port <= 65535, f"port must be between 0 and 65535, got {s.port}")
    need(s.queue_size >= 1, f"queue_size must be at least 1, got {s.queue_size}")
    need(s.queue_max_bytes >= 1, f"queue_max_bytes must be at least 1, got {s.queue_max_bytes}")
    need(
        s.overflow_policy in OVERFLOW_POLICIES,
        f"overflow_policy must be one of {', '.join(OVERFLOW_POLICIES)}, got {s.overflow_policy!r}",
    )
    need(s.history_size >= 0, f"history_size must be 0 or more, got {s.history_size}")
    need(s.history_max_bytes >= 0, f"history_max_bytes must be 0 or more, got {s.history_max_bytes}")
    need(s.max_retained_bytes >= 0, f"max_retained_bytes must be 0 or more, got {s.max_retained_bytes}")
    need(s.heartbeat_interval > 0, f"heartbeat_interval must be positive, got {s.heartbeat_interval}")
    need(s.heartbeat_timeout > 0, f"heartbeat_timeout must be positive, got {s.heartbeat_timeout}")
    need(s.max_message_size >= 256, f"max_message_size must be at least 256, got {s.max_message_size}")
    need(
        s.max_subscriptions_per_connection >= 1,
        f"max_subscriptions_per_connection must be at least 1, got {s.max_subscriptions_per_connection}",
    )
    need(s.max_connections >= 0, f"max_connections must be 0 or more, got {s.max_connections}")
    need(s.max_topics >= 0, f"max_topics must be 0 or more, got {s.max_topics}")
    for name in s.topics:
        need(TOPIC_RE.match(name) is not None, f"topics: {name[:140]!r} is not a topic name (1-128 letters, digits, '.', '_', ':', '-', not starting with a symbol)")
    need(
        not s.max_topics or len(set(s.topics)) <= s.max_topics,
        f"topics names {len(set(s.topics))} topics, more than max_topics ({s.max_topics})",
    )
    need(s.max_frames_per_second > 0, f"max_frames_per_second must be positive, got {s.max_frames_per_second}")
    need(s.max_body_size >= 256, f"max_body_size must be at least 256, got {s.max_body_size}")
    need(s.handshake_timeout > 0, f"handshake_timeout must be positive, got {s.handshake_timeout}")
    need(s.shutdown_timeout >= 0, f"shutdown_timeout must be 0 or more, got {s.shutdown_timeout}")
    _validate_identity(s, need)
    need(s.broker in BROKERS, f"broker must be one of {', '.join(BROKERS)}, got {s.broker!r}")
    need(
        s.redis_url.startswith(REDIS_SCHEMES),
        f"redis_url must start with {', '.join(REDIS_SCHEMES)}, got {s.redis_url.split('@')[-1]!r}",
    )
    need(1 <= s.processes <= 256, f"processes must be between 1 and 256, got {s.processes}")
    # Each process would keep its own topics: a publish on one would never
    # reach subscribers on another, and a topic made on one is a 404 on the next.
    need(
        s.processes == 1 or s.broker == "redis",
        f"processes={s.processes} needs --broker=redis: with the memory broker each process would be an island",
    )
    need(s.log_level in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    need(s.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}, got {s.log_format!r}")


_OPTIONAL_STRINGS = (
    "api_key",
    "token_secret",
    "token_public_key",
    "token_issuer",
    "token_audience",
    "default_caps",
    "anonymous_caps",
)


def _validate_identity(s: Settings, need: Any) -> None:
    for name in _OPTIONAL_STRINGS:
        need(getattr(s, name) != "", f"{name} must not be empty (leave it unset instead)")
    tokens = s.token_secret is not None or s.token_public_key is not None
    for secret in s.token_secrets:
        # RFC 7518 3.2: a shorter HMAC key makes tokens guessable offline.
        # Each secret of a rotation list is checked: a list is as weak as its weakest.
        need(len(secret.encode("utf-8")) >= MIN_SECRET_LENGTH, f"token_secret must be at least {MIN_SECRET_LENGTH} bytes (each, when comma-separated)")
    if s.token_public_key is not None:
        try:
            load_public_key(s.token_public_key)
        except TokenKeyError as exc:
            raise SettingsError(str(exc)) from None
    for name in ("token_issuer", "token_audience", "default_caps"):
        need(getattr(s, name) is None or tokens, f"{name} needs token_secret or token_public_key")
    # With no credential configured everything is open, so anonymous_caps would limit nothing.
    need(
        s.anonymous_caps is None or tokens or s.api_key is not None,
        "anonymous_caps needs api_key, token_secret or token_public_key (with none of them everyone may do everything)",
    )
    for name in ("default_caps", "anonymous_caps"):
        text = getattr(s, name)
        if text is not None:
            try:
                parse_caps_json(text)
            except CapsError as exc:
                raise SettingsError(f"{name}: {exc}") from None
    need(s.max_connections_per_user >= 1, f"max_connections_per_user must be at least 1, got {s.max_connections_per_user}")


def _parser() -> OptionParser:
    parser = OptionParser()
    defaults = Settings()
    for name, (kind, help_text) in _HELP.items():
        default = getattr(defaults, name)
        if name in ("allowed_origins", "topics"):
            default = ",".join(default)
        if name == "allowed_hosts":
            default = ""
        parser.define(name, default=default, type=kind, help=help_text)
    parser.define(
        "config",
        default=DEFAULT_CONFIG,
        type=str,
        help=f"config file in tornado.options syntax (default: {DEFAULT_CONFIG} if present, else the packaged one)",
    )
    return parser


#: PUBSUB_* variables that are not server settings but are read by the
#: ``pubsub`` command line (an operator's shell often has them set).
CLIENT_VARIABLES = ("PUBSUB_URL",)


def help_text(prog: str = "python -m tornado_pubsub") -> str:
    """``--help``: every setting with its flag, environment variable and default.

    Written here rather than by ``tornado.options`` so it shows no machine
    paths (Tornado groups options under the file that defined them)."""
    defaults = Settings()
    lines = [
        f"usage: {prog} [--name=value ...]",
        "",
        "A WebSocket publish/subscribe server. Every setting is a flag (--name=value, '-' or '_'),",
        f"an environment variable {ENV_PREFIX}NAME and a line in the config file; flag > variable > file.",
        "",
        "settings:",
    ]
    for name, (_kind, text) in _HELP.items():
        default = getattr(defaults, name)
        shown = "unset" if default in (None, ()) else ",".join(default) if isinstance(default, tuple) else default
        lines.append(f"  --{name.replace('_', '-')}=VALUE  ({ENV_PREFIX}{name.upper()})")
        lines.append(f"      {text} (default {shown})")
    lines += [
        f"  --config=PATH  ({ENV_PREFIX}CONFIG)",
        f"      config file in tornado.options syntax, read if present (default {DEFAULT_CONFIG})",
        "",
        "other options:",
        "  -h, --help     show this help and exit",
        "  --version      show the version and exit",
    ]
    return "\n".join(lines)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``PUBSUB_*`` variables that name no setting (a typo is otherwise silently
    ignored), each with the closest known name or None."""
    known = [ENV_PREFIX + name.upper() for name in _HELP] + [ENV_PREFIX + "CONFIG"]
    unknown = []
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in known and variable not in CLIENT_VARIABLES:
            # Compared without the shared prefix, which would make every name look close.
            names = {v[len(ENV_PREFIX) :]: v for v in known}
            close = difflib.get_close_matches(variable[len(ENV_PREFIX) :], names, n=1, cutoff=0.6)
            unknown.append((variable, names[close[0]] if close else None))
    return unknown


def _flag_names(argv: Sequence[str]) -> set[str]:
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            names.add(arg[2:].split("=", 1)[0].replace("-", "_"))
    return names


def _read_config_file(path: str, required: bool) -> dict[str, Any]:
    if not os.path.exists(path):
        if required:
            raise SettingsError(f"config file not found: {path}")
        return {}
    scope: dict[str, Any] = {"__file__": os.path.abspath(path)}
    try:
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), scope, scope)  # tornado.options syntax is Python
    except Exception as exc:  # a config typo must be one clear line, not a traceback
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    return {k: v for k, v in scope.items() if not k.startswith("__")}


def _as_flag_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build ``Settings`` from the config file, ``PUBSUB_*`` variables and flags.

    Precedence is flag > environment > file > default.  The file is
    ``--config`` or ``PUBSUB_CONFIG`` (which must exist), else
    ``conf/pubsub.conf`` in the working directory, else the packaged copy
    (``PACKAGED_CONFIG``).  ``--help`` prints every
    setting with its default and exits.  Raises ``SettingsError`` with a
    one-line reason for anything invalid.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    parser = _parser()
    known = set(parser.as_dict())

    flags = _flag_names(argv)
    unknown = sorted(flags - known - {"help"})
    if unknown:
        raise SettingsError(f"unknown option --{unknown[0]} (see --help)")

    config_path = DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else PACKAGED_CONFIG
    config_required = False
    for arg in argv:
        if arg.startswith("--config="):
            config_path, config_required = arg.split("=", 1)[1], True
    if "config" not in flags and ENV_PREFIX + "CONFIG" in environ:
        config_path, config_required = environ[ENV_PREFIX + "CONFIG"], True

    file_values = _read_config_file(config_path, config_required)
    for name in file_values:
        if name not in known:
            raise SettingsError(f"unknown setting {name!r} in config file {config_path}")

    # (argument, where it came from); later entries override earlier ones.
    layered: list[tuple[str, str]] = []
    for name in _HELP:
        if name in flags:
            continue
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            layered.append((f"--{name}={environ[env_name]}", f"environment variable {env_name}"))
        elif name in file_values:
            layered.append((f"--{name}={_as_flag_value(file_values[name])}", f"config file {config_path}"))
    layered += [(arg, "command line") for arg in argv]

    # One parser for every source, so a bad value reads the same wherever it came from.
    for arg, source in layered:
        try:
            rest = parser.parse_command_line(["tornado-pubsub", arg], final=False)
        except (OptionsError, ValueError) as exc:
            name, _, value = arg[2:].partition("=")
            raise SettingsError(f"invalid value {value!r} for {name.replace('-', '_')} ({source}): {exc}") from None
        if rest:
            raise SettingsError(f"unexpected argument {rest[0]!r} (settings are --name=value)")

    values = parser.as_dict()
    origins = tuple(normalize_origin(o) for o in (values["allowed_origins"] or "").split(",") if o.strip())
    fields = {f.name for f in dataclasses.fields(Settings)}
    kwargs = {k: v for k, v in values.items() if k in fields}
    kwargs["allowed_origins"] = origins
    kwargs["topics"] = tuple(dict.fromkeys(t.strip() for t in (values["topics"] or "").split(",") if t.strip()))
    hosts = tuple(h.strip().lower() for h in (values["allowed_hosts"] or "").split(",") if h.strip())
    kwargs["allowed_hosts"] = hosts or None
    kwargs["overflow_policy"] = str(kwargs["overflow_policy"]).lower()
    kwargs["log_level"] = str(kwargs["log_level"]).lower()
    kwargs["log_format"] = str(kwargs["log_format"]).lower()
    kwargs["broker"] = str(kwargs["broker"]).lower()
    for name in _OPTIONAL_STRINGS:  # unset stays None; an explicit "" is refused by validation
        if kwargs[name] == "" and name not in flags and ENV_PREFIX + name.upper() not in environ:
            kwargs[name] = None
    return Settings(**kwargs)
