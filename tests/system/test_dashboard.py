"""The live dashboard at /dashboard, used in a real headless Chromium against a
real server on a loopback port: create a topic, publish, watch the live tail
and the counts change, with and without an API key.

Selenium blocks, and the server runs on this test's IOLoop, so every browser
step runs in a worker thread (``in_browser``) while the loop keeps serving.
Screenshots go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from tornado_pubsub import routes

# The page in a real browser: .ci/run's second pass (the oldest Tornado)
# deselects these, since they exercise the page, not Tornado.
pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT = 10.0  # seconds any one browser condition may take
DESKTOP = (1280, 900)
PHONE = (390, 844)
# Offline and quiet: no updates, sync or background fetches from the browser.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
API_KEY = "s3cret-dashboard-key"
SECURE = "secure:ops.v1"
HOSTILE = "<img src=x onerror=window.__pwned=1>"


def _require_browser() -> None:
    """Fail (never skip) with the install line when the browser stack is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed: pip install -r requirements-dev.txt")
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the dashboard tests drive a real browser; "
            "install it with: apt-get install -y chromium chromium-driver"
        )


@pytest.fixture
def browser(tmp_path: Path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from looking for one online.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield Page(driver)
    driver.quit()


class Page:
    """The dashboard as a user sees it: find, type, click, wait for text."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        texts = self.texts(css)
        return texts[0] if texts else ""

    def texts(self, css: str) -> list[str]:
        """The text of every element matching ``css``, read again if the page
        re-rendered them between finding and reading (it refreshes on a timer)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(10):
            try:
                return [element.text for element in self.all(css)]
            except StaleElementReferenceException:
                time.sleep(0.05)
        raise AssertionError(f"{css!r} kept being re-rendered while read")

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(lambda _: condition())
        except TimeoutException:
            self.screenshot("failure")
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}") from None

    def wait_text(self, css: str, expected: str) -> None:
        self.wait(lambda: expected in self.text(css), f"{css!r} to show {expected!r} (shows {self.text(css)!r})")

    def console_errors(self) -> list[str]:
        """Severe browser console entries since the last call (script errors, failed loads)."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def resize(self, size: tuple[int, int]) -> None:
        self.driver.set_window_size(*size)
        # Headless window sizes include no chrome, but wait for the layout to follow.
        self.wait(lambda: self.js("return window.innerWidth") <= size[0], f"viewport width {size[0]}")

    def screenshot(self, name: str) -> Path:
        """The whole page, not just the viewport, as tests/artifacts/dashboard-<name>.png."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"dashboard-{name}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        # The capture drops the scrollbar, so the page is as wide as the window.
        width = max(size["width"], self.js("return window.innerWidth"))
        clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def color_scheme(self, scheme: str) -> None:
        features = [{"name": "prefers-color-scheme", "value": scheme}]
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})

    def row_cell(self, topic: str, cell: str) -> str:
        return self.text(f'tr[data-topic="{topic}"] .{cell}')


async def in_browser(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking browser steps in a thread so the server's IOLoop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def rest_publish(port: int, topic: str, payload: Any, key: str | None = None) -> dict[str, Any]:
    """Publish over REST from the browser thread (the loop is free to answer)."""
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/topics/{topic}/messages", json.dumps({"payload": payload}).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return json.loads(response.read())


# -- browser steps (blocking; run through in_browser) --------------------------


def create_topic(page: Page, name: str) -> None:
    page.type("#create-name", name)
    page.click("#create-button")
    page.wait(lambda: page.all(f'tr[data-topic="{name}"]'), f"a table row for {name}")
    page.wait_text("#create-msg", f"Created {name}.")


def start_tail(page: Page, topic: str, last_n: int) -> None:
    page.js(f"document.getElementById('tail-topic').value = {json.dumps(topic)}")
    page.type("#tail-last-n", str(last_n))
    page.click("#tail-button")
    page.wait_text("#tail-pill", "LIVE")


def publish(page: Page, payload_text: str) -> None:
    page.type("#publish-payload", payload_text)
    page.wait(lambda: page.find("#publish-button").is_enabled(), "the publish button to enable")
    page.click("#publish-button")


def tail_seqs(page: Page) -> list[str]:
    return [li.get_attribute("data-seq") for li in page.all("#tail-list li.event")]


def use_dashboard(page: Page, url: str, port: int) -> None:
    page.open(url)
    page.wait_text("#health-pill", "healthy")

    create_topic(page, "orders")
    assert page.find("#publish-topic").get_attribute("value") == "orders"
    assert page.row_cell("orders", "c-subs") == "0"
    assert page.row_cell("orders", "c-msgs") == "0"

    start_tail(page, "orders", 5)
    page.wait(lambda: page.row_cell("orders", "c-subs") == "1", "the subscriber count to reach 1")

    # The payload is validated in the browser: invalid JSON cannot be sent.
    page.type("#publish-payload", '{"n": 1,')
    page.wait_text("#payload-msg", "Invalid JSON")
    assert not page.find("#publish-button").is_enabled()

    publish(page, json.dumps({"n": 1, "html": HOSTILE}))
    page.wait_text("#publish-msg", "seq 1")
    page.wait(lambda: tail_seqs(page) == ["1"], "event seq 1 in the live tail")
    shown = page.text('#tail-list li[data-seq="1"] pre')
    assert HOSTILE in shown, shown  # rendered as text...
    assert page.all("#tail-list img") == [] and page.js("return window.__pwned") is None  # ...never as markup
    page.wait(lambda: page.row_cell("orders", "c-msgs") == "1", "the message count to reach 1")
    assert page.row_cell("orders", "c-seq") == "1"

    # Someone else's publish shows up live too.
    assert rest_publish(port, "orders", {"from": "rest"})["seq"] == 2
    page.wait(lambda: tail_seqs(page) == ["2", "1"], "event seq 2 on top of the tail")
    page.wait(lambda: page.row_cell("orders", "c-msgs") == "2", "the message count to reach 2")

    for n in range(3, 7):
        publish(page, json.dumps({"n": n, "items": list(range(n))}))
        page.wait_text("#publish-msg", f"seq {n}")
    page.wait(lambda: len(tail_seqs(page)) == 6, "six events in the tail")
    # The sparkline's tooltip names the window's peak, which stays for 60 s.
    peak = "return document.querySelector('tr[data-topic=\"orders\"] svg.spark title').textContent"
    page.wait(lambda: "peak 0.0 " not in page.js(peak), "a non-zero messages/s peak in the sparkline")

    page.screenshot("desktop")
    page.color_scheme("dark")
    page.screenshot("desktop-dark")
    page.color_scheme("light")
    page.resize(PHONE)
    # Nothing may stick out sideways on a phone.
    assert page.js("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.screenshot("phone")
    page.resize(DESKTOP)

    # Deleting asks for a second click, then the row goes and the tail stops.
    page.click('tr[data-topic="orders"] .danger')
    page.wait(lambda: page.text('tr[data-topic="orders"] .danger') == "Confirm", "the delete button to ask for confirmation")
    page.click('tr[data-topic="orders"] .danger')
    page.wait(lambda: not page.all('tr[data-topic="orders"]'), "the orders row to disappear")
    page.wait_text("#tail-status", "was deleted")
    assert page.console_errors() == []


async def test_dashboard_creates_publishes_and_tails_live(port, browser, rest):
    await in_browser(use_dashboard, browser, f"http://127.0.0.1:{port}/dashboard", port)
    status, body = await rest.call("GET", "/topics")
    assert status == 200 and body == {"topics": []}


def replay_last_n(page: Page, url: str) -> None:
    page.open(url)
    page.wait(lambda: page.all('tr[data-topic="history"]'), "the history topic row")
    page.wait(lambda: page.row_cell("history", "c-msgs") == "4", "the message count of 4")
    page.type("#tail-last-n", "2")
    page.click('tr[data-topic="history"] button')  # the row's Tail button
    page.wait_text("#tail-pill", "LIVE")
    page.wait(lambda: tail_seqs(page) == ["4", "3"], "the last 2 messages replayed")
    assert page.texts("#tail-list .badge") == ["REPLAY", "REPLAY"]


async def test_dashboard_tail_replays_last_n(port, browser, rest):
    await rest.create("history")
    for n in range(1, 5):
        status, _ = await rest.call("POST", "/topics/history/messages", {"payload": {"n": n}})
        assert status == 201
    await in_browser(replay_last_n, browser, f"http://127.0.0.1:{port}/dashboard")


def unlock_with_key(page: Page, url: str, port: int) -> None:
    page.open(url)
    # /stats answered 401: the page asks for the key.
    page.wait(lambda: page.find("#key-dialog").get_attribute("open") is not None, "the API key prompt")
    page.type("#key-input", "wrong-key")
    page.click("#key-submit")
    page.wait_text("#key-msg", "rejected")
    page.screenshot("api-key-prompt")
    page.type("#key-input", API_KEY)
    page.click("#key-submit")
    page.wait_text("#health-pill", "healthy")
    assert page.find("#key-dialog").get_attribute("open") is None
    assert page.js("return sessionStorage.getItem('tornado-pubsub.api_key')") == API_KEY

    create_topic(page, SECURE)  # REST with X-API-Key (and a name that needs URL-encoding)
    start_tail(page, SECURE, 0)  # WebSocket with ?api_key=
    publish(page, '"hello"')
    page.wait(lambda: tail_seqs(page) == ["1"], "event seq 1 in the live tail")
    page.wait(lambda: page.row_cell(SECURE, "c-msgs") == "1", "the message count to reach 1")
    page.screenshot("api-key")

    # Asked once: a reload in the same tab reuses the stored key.
    page.driver.refresh()
    page.wait(lambda: page.all(f'tr[data-topic="{SECURE}"]'), "the topic row after a reload")
    assert page.find("#key-dialog").get_attribute("open") is None


@pytest.mark.pubsub(api_key=API_KEY)
async def test_dashboard_asks_for_api_key_once_and_uses_it(port, browser, rest):
    await in_browser(unlock_with_key, browser, f"http://127.0.0.1:{port}/dashboard", port)
    status, body = await rest.call("GET", "/stats", headers={"X-API-Key": API_KEY})
    assert status == 200 and body["topics"][SECURE]["messages"] == 1


def refuse_bad_topics(page: Page, url: str) -> None:
    page.open(url)
    page.wait(lambda: page.all('tr[data-topic="taken"]'), "the taken topic row")
    page.type("#create-name", "no spaces allowed")
    page.click("#create-button")
    page.wait_text("#create-msg", "A topic name starts with a letter or digit")
    page.type("#create-name", "taken")
    page.click("#create-button")
    page.wait_text("#create-msg", "TOPIC_EXISTS")


async def test_dashboard_reports_bad_and_existing_topic_names(port, browser, rest):
    await rest.create("taken")
    await in_browser(refuse_bad_topics, browser, f"http://127.0.0.1:{port}/dashboard")
    status, body = await rest.call("GET", "/topics")
    assert [t["name"] for t in body["topics"]] == ["taken"]


def tail_until(page: Page, seqs: list[str], status: str) -> None:
    page.wait(lambda: tail_seqs(page) == seqs, f"the tail to show exactly {seqs}")
    page.wait_text("#tail-status", status)


async def test_dashboard_tail_resumes_without_gap_after_the_server_drops_it(app, port, browser, rest):
    await rest.create("feed")
    await rest.call("POST", "/topics/feed/messages", {"payload": 1})

    def tail_from_start(page: Page, url: str) -> None:
        page.open(url)
        page.wait(lambda: page.all('tr[data-topic="feed"]'), "the feed topic row")
        start_tail(page, "feed", 10)
        tail_until(page, ["1"], "subscribed")

    await in_browser(tail_from_start, browser, f"http://127.0.0.1:{port}/dashboard")
    sockets = list(app.pubsub.heartbeat.sockets)
    assert len(sockets) == 1
    sockets[0].close(1012, "restarting")
    for n in (2, 3):  # published while the page may be disconnected
        status, _ = await rest.call("POST", "/topics/feed/messages", {"payload": n})
        assert status == 201
    # since_seq/epoch on the new subscription: every message once, in order.
    await in_browser(tail_until, browser, ["3", "2", "1"], "resumed without loss")
    status, _ = await rest.call("POST", "/topics/feed/messages", {"payload": 4})
    await in_browser(tail_until, browser, ["4", "3", "2", "1"], "resumed without loss")


async def test_dashboard_works_under_an_embedding_prefix(broker, settings, browser):
    # An existing Tornado app mounting the pub/sub routes under /pubsub.
    app = tornado.web.Application([(r"/", tornado.web.RedirectHandler, {"url": "/pubsub/dashboard"})] + routes(broker, settings, "/pubsub"))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    port = sock.getsockname()[1]

    def use_prefixed(page: Page) -> None:
        page.open(f"http://127.0.0.1:{port}/pubsub/dashboard")
        page.wait_text("#health-pill", "healthy")
        create_topic(page, "embedded")
        start_tail(page, "embedded", 0)
        publish(page, "[1, 2, 3]")
        page.wait(lambda: tail_seqs(page) == ["1"], "event seq 1 in the live tail")
        assert page.text('#tail-list li[data-seq="1"] pre') == "[1,2,3]"
        assert page.console_errors() == []

    try:
        await in_browser(use_prefixed, browser)
        assert (await broker.topic_stats())["embedded"]["messages"] == 1
    finally:
        server.stop()
        for spec in app.wildcard_router.rules:
            context = spec.target_kwargs.get("context")
            if context is not None:
                context.heartbeat.stop()
                break


# -- the files themselves (no browser) -------------------------------------------


async def fetch(port: int, path: str) -> tornado.httpclient.HTTPResponse:
    client = tornado.httpclient.AsyncHTTPClient()
    return await client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False, follow_redirects=False)


@pytest.mark.pubsub(api_key=API_KEY)
async def test_dashboard_files_are_served_without_the_key(port):
    page = await fetch(port, "/dashboard")
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'src="dashboard/static/main.js"' in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("main.js", "api.js", "dom.js", "sparkline.js", "tail.js", "dashboard.css", "icon.svg"):
        asset = await fetch(port, f"/dashboard/static/{name}")
        assert asset.code == 200, name
    assert (await fetch(port, "/stats")).code == 401  # the data still needs the key


async def test_dashboard_trailing_slash_redirects_to_the_page(port):
    response = await fetch(port, "/dashboard/")
    assert response.code == 301 and response.headers["Location"] == "/dashboard"


@pytest.mark.parametrize("path", ["/dashboard/static/../../app.py", "/dashboard/static/%2e%2e/%2e%2e/app.py", "/dashboard/static/nope.js"])
async def test_dashboard_static_serves_only_its_own_files(port, path):
    response = await fetch(port, path)
    assert response.code in (403, 404) and b"import" not in (response.body or b"")


# -- connections, presence and disconnecting a user -------------------------------

TOKEN_SECRET = "0123456789abcdef-dashboard-token-secret"


def manage_people(page: Page, url: str) -> None:
    page.open(url)
    page.wait(lambda: page.find("#key-dialog").get_attribute("open") is not None, "the API key prompt")
    page.type("#key-input", API_KEY)
    page.click("#key-submit")
    page.wait(lambda: len(page.all('#conn-body tr[data-user="42"]')) == 2, "two connection rows for user 42")
    assert len(page.all('#conn-body tr[data-user="7"]')) == 1
    assert page.text('#conn-body tr[data-user="7"] .c-topics') == "room.a"
    assert page.text('#conn-body tr[data-user="7"] .c-remote') == "127.0.0.1"
    assert page.text('#conn-body tr[data-user="7"] .c-queued') == "0"

    page.js("const s = document.getElementById('presence-topic'); s.value = 'room.a'; s.dispatchEvent(new Event('change'))")
    page.wait_text("#presence-msg", "2 subscriber(s) on room.a")
    users = sorted(text.split()[0] for text in page.texts("#presence-list li"))
    assert users == ["42", "7"], users
    page.screenshot("people")

    button = 'tr[data-user="42"] .danger'
    page.click(button)
    page.wait(lambda: page.text(button) == "Confirm", "the disconnect button to ask for confirmation")
    page.click(button)
    page.wait_text("#conn-msg", "Disconnected 42: 2 connection(s).")
    page.wait(lambda: not page.all('#conn-body tr[data-user="42"]'), "user 42's rows to disappear")
    page.wait_text("#presence-msg", "1 subscriber(s) on room.a")
    # The first /stats before the key was entered is a 401 the browser logs; nothing else may be.
    assert [e for e in page.console_errors() if "/stats" not in e or "401" not in e] == []


@pytest.mark.pubsub(api_key=API_KEY, token_secret=TOKEN_SECRET)
async def test_dashboard_shows_connections_and_presence_and_disconnects_a_user(port, browser, rest, ws_connect):
    import urllib.parse

    from tornado_pubsub.tokens import issue

    await rest.call("POST", "/topics", {"name": "room.a"}, headers={"X-API-Key": API_KEY})

    def as_user(sub: str) -> str:
        caps = [{"topics": ["room.*"], "allow": ["subscribe"]}]
        return "/ws?" + urllib.parse.urlencode({"token": issue(TOKEN_SECRET, sub, caps)})

    first, second, other = await ws_connect(as_user("42")), await ws_connect(as_user("42")), await ws_connect(as_user("7"))
    for client, name in ((first, "first"), (other, "other")):
        assert (await client.subscribe("room.a", name))["type"] == "ack"
    assert (await second.request({"type": "ping"}))["type"] == "pong"

    await in_browser(manage_people, browser, f"http://127.0.0.1:{port}/dashboard")
    assert await first.closed() == 4403 and await second.closed() == 4403
    assert (await other.request({"type": "ping"}))["type"] == "pong"
