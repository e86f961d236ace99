"""``python -m tornado_pubsub.server.healthcheck [PID]``: exit 0 when the server
process ``PID`` (default 1, the container's server) answers ``GET /health``
with 200, else 1.  The container's ``HEALTHCHECK``.

The port is the one that server configured, resolved the way it resolved it:
its own command line, environment and working directory (from ``/proc``) go
through ``load_settings``, so ``--port=9000`` in the container's command, a
``PUBSUB_PORT`` variable or a ``port`` line in its config file are all
followed; a healthcheck with a port of its own would probe the wrong one.
A draining server answers 503: unhealthy, so orchestrators stop routing to it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from typing import Sequence

from tornado_pubsub.server.run import local_url
from tornado_pubsub.settings import Settings, SettingsError, load_settings

TIMEOUT = 2.0  # seconds; Docker's own --timeout should be larger


def server_arguments(cmdline: Sequence[str]) -> list[str]:
    """The settings arguments in a server's command line: whatever follows
    ``-m tornado_pubsub`` (or the program name)."""
    args = list(cmdline)
    for i, arg in enumerate(args[:-1]):
        if arg == "-m" and args[i + 1] == "tornado_pubsub":
            return args[i + 2 :]
    return args[1:]


def settings_of(pid: int) -> Settings:
    """The settings process ``pid`` started with (raises ``OSError`` or ``SettingsError``)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = [part.decode() for part in f.read().split(b"\0") if part]
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = dict(
            part.decode("utf-8", "replace").partition("=")[::2] for part in f.read().split(b"\0") if b"=" in part
        )
    here = os.getcwd()
    os.chdir(f"/proc/{pid}/cwd")  # a relative --config is relative to the server's directory
    try:
        return load_settings(server_arguments(cmdline), environ)
    finally:
        os.chdir(here)


def health_url(settings: Settings) -> str:
    """Where the server answers: loopback when it listens on every interface."""
    return local_url(settings.address, settings.port) + "/health"


def main(argv: list[str] | None = None) -> int:
    """Probe the server; one line on stderr when unhealthy."""
    argv = sys.argv[1:] if argv is None else argv
    pid = int(argv[0]) if argv else 1
    try:
        url = health_url(settings_of(pid))
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return 0 if response.status == 200 else 1
    except (OSError, SettingsError, urllib.error.URLError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
