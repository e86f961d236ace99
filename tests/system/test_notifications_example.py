"""examples/notifications_app.py runs as the README says: a real login over
HTTP gives a real signed cookie, and that cookie alone decides what the
browser may do on the embedded /pubsub/ws."""

from __future__ import annotations

import http.cookiejar
import re
import shlex
import sys
import urllib.request
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
import tornado.httpclient

from tests.handlers.test_redaction import forms_to_grep
from tests.kit.clients import handshake_status
from tests.kit.procs import ROOT, ServerProcess, http_status
from tests.system.test_dashboard import HOSTILE, WAIT, browser  # noqa: F401  (fixture)

COOKIE_SECRET = "example-cookie-secret-for-this-test-0123456789"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def readme_command() -> list[str]:
    """The example's command line, exactly as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(r"^python examples/notifications_app\.py.*$", readme, re.M)
    return shlex.split(line)


class Example(ServerProcess):
    """The README's command (``python`` being this interpreter), plus the kit's
    ``--port=0 --address=127.0.0.1`` after it (the last flag wins)."""

    def __init__(self) -> None:
        command = readme_command()
        assert command[0] == "python"
        super().__init__(command=(sys.executable, *command[1:]), env={"NOTIFY_COOKIE_SECRET": COOKIE_SECRET}, name="notifications")

    def ready(self) -> bool:
        return http_status(self.base + "/pubsub/health") == 200


class Browser:
    """A cookie jar over Tornado's HTTP client, as much browser as the login needs."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar: dict[str, str] = {}
        self.http = tornado.httpclient.AsyncHTTPClient()

    @property
    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.jar.items())} if self.jar else {}

    async def fetch(self, path: str, form: dict[str, str] | None = None) -> tornado.httpclient.HTTPResponse:
        if form is not None and "_xsrf" in self.jar:
            form = {**form, "_xsrf": self.jar["_xsrf"]}
        response = await self.http.fetch(
            self.base + path,
            method="GET" if form is None else "POST",
            body=None if form is None else urlencode(form),
            headers=self.cookie_header,
            follow_redirects=False,
            raise_error=False,
        )
        for header in response.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(header).items():
                self.jar[name] = morsel.coded_value
        return response

    async def login(self, name: str, password: str) -> tornado.httpclient.HTTPResponse:
        await self.fetch("/login")  # the form sets the _xsrf cookie
        return await self.fetch("/login", {"name": name, "password": password})


@pytest.fixture
def example():
    with Example() as process:
        yield process


@pytest.mark.timeout(seconds=90)
async def test_example_logs_users_in_and_their_cookie_opens_only_their_own_topic(example, ws_at):
    alice, bob = Browser(example.base), Browser(example.base)
    response = await alice.login("alice", PASSWORDS["alice"])
    assert response.code == 302 and "user" in alice.jar, response
    assert "alice" in (await alice.fetch("/")).body.decode()
    assert (await bob.login("bob", PASSWORDS["bob"])).code == 302

    sock = await ws_at(example.port, "/pubsub/ws", headers=alice.cookie_header)
    assert (await sock.subscribe("user.alice"))["status"] == "ok"
    reply = await sock.subscribe("user.bob")
    assert reply["error"]["code"] == "FORBIDDEN", reply
    reply = await sock.publish("user.alice", "spoofed")
    assert reply["error"]["code"] == "FORBIDDEN", reply

    # The app's server side publishes: bob sends alice a note through the app.
    assert (await bob.fetch("/notify", {"to": "alice", "text": "hi alice"})).code == 302
    (event,) = await sock.events(1)
    assert event["message"]["payload"] == {"from": "bob", "text": "hi alice"}

    example.terminate()
    assert await example.exit_code() == 0
    output = example.log()
    assert "notifications app listening on" in output
    cookies = [browser.jar["user"].strip('"') for browser in (alice, bob)]
    for secret in (*cookies, *(c.rsplit("|", 1)[1] for c in cookies), COOKIE_SECRET, *PASSWORDS.values()):
        for form in forms_to_grep(secret):  # raw, escaped, percent-encoded every way
            assert form not in output, "a cookie, the cookie secret or a password reached the output"


async def test_example_refuses_handshakes_without_a_login(example):
    anonymous = Browser(example.base)
    status, body = await handshake_status(example.port, "/pubsub/ws")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", body
    assert (await anonymous.login("alice", "not-her-password")).code == 403
    assert "user" not in anonymous.jar
    status, body = await handshake_status(example.port, "/pubsub/ws", anonymous.cookie_header)
    assert status == 401, body
    forged = {"Cookie": "user=" + "2|1:0|10:1796301515|4:user|8:YWxpY2U=|" + "0" * 64}  # alice, unsigned
    status, body = await handshake_status(example.port, "/pubsub/ws", forged)
    assert status == 401, body
    page = await anonymous.fetch("/")
    assert page.code == 302 and page.headers["Location"].startswith("/login")


def send_note_as(base: str, name: str, to: str, text: str) -> None:
    """Log in as ``name`` and send a note through the app's form, blocking (urllib)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def submit(page: str, action: str, form: dict[str, str]) -> None:
        html = opener.open(base + page, timeout=WAIT).read().decode()
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', html).group(1)  # the form's own XSRF field
        opener.open(base + action, urlencode({**form, "_xsrf": xsrf}).encode(), timeout=WAIT).read()

    submit("/login", "/login", {"name": name, "password": PASSWORDS[name]})
    submit("/", "/notify", {"to": to, "text": text})


@pytest.mark.browser
def test_example_page_shows_a_users_notes_live_in_chromium(example, browser):
    """The page as written: log in through the form, and its script (the cookie
    riding on the handshake) shows a note another user sent, as text."""
    browser.open(example.base + "/")  # not logged in: redirected to the form
    browser.wait(lambda: browser.all("input[name=password]"), "the login form")
    browser.type("input[name=name]", "alice")
    browser.type("input[name=password]", PASSWORDS["alice"])
    browser.click("form button")
    browser.wait_text("p", "Logged in as alice")
    send_note_as(example.base, "bob", "alice", HOSTILE)
    browser.wait_text("#notes", f"bob: {HOSTILE}")  # live, or replayed by last_n if it beat the subscribe
    assert browser.js("return window.__pwned") is None
    assert [e for e in browser.console_errors() if "favicon.ico" not in e] == []
