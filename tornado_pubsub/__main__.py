"""``python -m tornado_pubsub --port=8080``: run the server."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from tornado_pubsub import __version__
from tornado_pubsub.logs import configure_logging, log_op
from tornado_pubsub.server.run import serve
from tornado_pubsub.settings import SettingsError, help_text, load_settings, unknown_variables
from tornado_pubsub.server.workers import run_workers


def main(argv: list[str] | None = None) -> int:
    """Parse settings, configure logging, serve until drained; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    if "--version" in argv:
        print(f"tornado-pubsub {__version__}")
        return 0
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"tornado-pubsub: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.api_key, *settings.token_secrets)
    for variable, suggestion in unknown_variables(os.environ):  # a typo would be silently ignored
        log_op(
            "settings",
            logging.WARNING,
            variable=variable,
            suggestion=suggestion,
            outcome=f"unknown variable ignored{f'; did you mean {suggestion}?' if suggestion else ''}",
        )
    try:
        if settings.processes > 1:
            return run_workers(settings, serve)
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. the port is taken: one line, not a traceback
        print(f"tornado-pubsub: cannot listen on {settings.address}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
