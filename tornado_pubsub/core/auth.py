"""API-key and origin checks shared by the REST and WebSocket handlers."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit


def key_matches(expected: str | None, given: str | None) -> bool:
    """True when no key is configured, or ``given`` equals it.

    The comparison takes the same time wherever the strings differ, so the key
    cannot be guessed byte by byte from response times.
    """
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "surrogatepass"))


def normalize_origin(origin: str) -> str:
    """``Origin`` as compared: no surrounding space or trailing slash, lower case."""
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Same-origin handshakes always pass; others only if listed (or ``*`` is listed).

    Browsers send ``Origin`` on every WebSocket handshake, and a page on any
    site can open a socket to us with the user's cookies and network position;
    refusing unknown origins stops such cross-site use.  Non-browser clients
    send no ``Origin`` and are not affected.
    """
    normalized = normalize_origin(origin)
    # ``allowed`` is normalized too: Settings built in code (embedding) skip the loader.
    if "*" in allowed or any(normalized == normalize_origin(entry) for entry in allowed):
        return True
    return urlsplit(normalized).netloc == host.lower()
