"""API-key, origin and host checks shared by the REST and WebSocket handlers."""

from __future__ import annotations

import hmac
import ipaddress


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
    return same_origin(origin, host)


# -- browser safety (PROTOCOL §10) ----------------------------------------------

#: What ``allowed_hosts`` is when unset and the server listens on loopback
#: without a proxy in front: the names a local browser reaches it by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

#: Methods that read only; every other one changes state (§10).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(address: str) -> bool:
    """True when ``address`` (a bind address) accepts only local connections."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface) or a name we cannot judge


def default_allowed_hosts(address: str, behind_proxy: bool) -> tuple[str, ...]:
    """``allowed_hosts`` when not configured: loopback names for a server bound
    to loopback with no proxy in front, otherwise any host.

    Behind a proxy, or on a public interface, the names clients use are not
    ours to guess, so the default cannot be stricter than ``*``.
    """
    return LOOPBACK_HOSTS if is_loopback(address) and not behind_proxy else ("*",)


def host_name(host: str) -> str:
    """A ``Host`` header as compared: no port, lower case, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[: host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    """True when ``host`` (the request's ``Host``) is listed, port ignored.

    Threat (DNS rebinding): a page on ``evil.example`` re-points its own name
    at 127.0.0.1; the browser then treats this server as same-origin with the
    attacker's page and lets it read and write, but it still sends
    ``Host: evil.example``.  Refusing unknown names closes that door.
    ``None`` or ``*`` in the list allows every host.
    """
    if allowed is None or "*" in allowed:
        return True
    name = host_name(host)
    return any(name == host_name(entry) for entry in allowed)


def host_refused(host: str) -> str:
    """The FORBIDDEN message for a ``Host`` that ``host_allowed`` refused."""
    return f"host {host[:200]!r} is not in allowed_hosts"


def same_origin(origin: str, host: str) -> bool:
    """True when ``origin`` is ``http://`` or ``https://`` followed by ``host``
    (another scheme, e.g. a ``file://`` page's ``null`` origin, never is)."""
    normalized = normalize_origin(origin)
    scheme, _, rest = normalized.partition("://")
    return scheme in ("http", "https") and rest == host.strip().lower()


def write_allowed(method: str, origin: str | None, host: str, allowed_origins: tuple[str, ...]) -> bool:
    """May a REST request change state, judging by its ``Origin``?

    Safe methods and requests without ``Origin`` (not from a browser) pass;
    otherwise the origin must be same-origin or in ``allowed_origins``
    (``*``: any).  The answer does not depend on ``Content-Type``: browsers
    send a cross-site ``text/plain`` POST without asking first, so checking
    the type would let exactly that request through.
    """
    if method.upper() in SAFE_METHODS or origin is None:
        return True
    return origin_allowed(origin, host, allowed_origins)
