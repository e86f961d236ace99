"""A legacy-style Tornado app whose own cookie login decides who may subscribe.

The app has what such apps have: a login form, ``set_secure_cookie``,
``get_current_user``, ``@authenticated`` pages and ``xsrf_cookies``.  It
mounts tornado-pubsub under ``/pubsub`` with ``authenticate=``, reusing its
``get_current_user`` logic: each logged-in user may subscribe to their own
``user.<name>`` topic and nothing else, with no token anywhere.  The app's
server side publishes into those topics (here: one user sends another a
note).

    python examples/notifications_app.py --port=8890

Then open http://127.0.0.1:8890/ in two browsers, log in as alice / wonderland
and bob / builder, and send each other notes.  Demo users and passwords are in
``USERS``; the cookie secret comes from ``NOTIFY_COOKIE_SECRET`` (random at
each start otherwise, which logs everyone out on restart).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import signal
import sys

# Lets ``python examples/notifications_app.py`` run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tornado.template  # noqa: E402
import tornado.web  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402
from tornado.options import define, options, parse_command_line  # noqa: E402

from tornado_pubsub import Identity, PubSub, Settings  # noqa: E402
from tornado_pubsub.logs import configure_logging  # noqa: E402

define("port", default=8890, type=int, help="port to listen on (0: any free port)")
define("address", default="127.0.0.1", help="address to listen on")

#: Demo accounts (a real app has its user table).
USERS = {"alice": "wonderland", "bob": "builder"}
#: What a logged-in user may do on the pub/sub routes: read their own topic.
OWN_TOPIC = [{"topics": ["user.{sub}"], "allow": ["subscribe"]}]
MAX_NOTE = 500


def current_user_name(handler: tornado.web.RequestHandler) -> str | None:
    """The app's one notion of "who is logged in": its signed cookie."""
    name = handler.get_secure_cookie("user", max_age_days=1)
    if name is None:
        return None
    text = name.decode("utf-8", "replace")
    return text if text in USERS else None  # a deleted account's cookie logs in no one


def authenticate(handler: tornado.web.RequestHandler) -> Identity | None:
    """tornado-pubsub's hook: the same login, as a pub/sub identity (None: refused)."""
    name = current_user_name(handler)
    return Identity(user=name, caps=OWN_TOPIC) if name else None


class BaseHandler(tornado.web.RequestHandler):
    def get_current_user(self) -> str | None:
        return current_user_name(self)

    def render_inline(self, source: str, **kwargs: object) -> None:
        # Templates inline, to keep the example one file; autoescaped like any Tornado template.
        self.finish(tornado.template.Template(source).generate(**self.get_template_namespace(), **kwargs))


LOGIN_PAGE = """<!doctype html><title>Log in</title>
<form method="post" action="/login">{% raw xsrf_form_html() %}
<input name="name" placeholder="alice"> <input name="password" type="password" placeholder="wonderland">
<button>Log in</button></form>{% if error %}<p>{{ error }}</p>{% end %}"""

# The page subscribes to its own topic over the embedded /pubsub/ws; the
# browser sends the login cookie with the handshake by itself.
HOME_PAGE = """<!doctype html><title>Notifications for {{ user }}</title>
<p>Logged in as <b>{{ user }}</b>.</p>
<form method="post" action="/notify">{% raw xsrf_form_html() %}
To <select name="to">{% for other in users %}<option>{{ other }}</option>{% end %}</select>
<input name="text" maxlength="500" placeholder="a note"> <button>Send</button></form>
<form method="post" action="/logout">{% raw xsrf_form_html() %}<button>Log out</button></form>
<ul id="notes"></ul>
<script>
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/pubsub/ws");
ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", topic: {% raw json_encode("user." + user) %},
                                          client_id: "page", last_n: 20}));
ws.onmessage = (e) => {
  const frame = JSON.parse(e.data);
  if (frame.type !== "event") return;
  const li = document.createElement("li");
  li.textContent = frame.message.payload.from + ": " + frame.message.payload.text;  // text, never HTML
  document.getElementById("notes").prepend(li);
};
</script>"""


class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render_inline(LOGIN_PAGE, error=None)

    def post(self) -> None:
        name = self.get_body_argument("name", "")
        password = self.get_body_argument("password", "")
        expected = USERS.get(name)
        if expected is None or not hmac.compare_digest(password.encode(), expected.encode()):
            self.set_status(403)
            self.render_inline(LOGIN_PAGE, error="Wrong name or password.")
            return
        self.set_secure_cookie("user", name, expires_days=1, httponly=True, samesite="Lax")
        self.redirect("/")


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.clear_cookie("user")
        self.redirect("/login")


class HomeHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_inline(HOME_PAGE, user=self.current_user, users=sorted(USERS))


class NotifyHandler(BaseHandler):
    """``POST /notify``: the app's server side publishes into another user's topic."""

    def initialize(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    @tornado.web.authenticated
    async def post(self) -> None:
        to = self.get_body_argument("to", "")
        text = self.get_body_argument("text", "")[:MAX_NOTE]
        if to not in USERS:
            raise tornado.web.HTTPError(400, "no such user")
        await self.pubsub.publish(f"user.{to}", {"from": self.current_user, "text": text})
        self.redirect("/")


def make_app(pubsub: PubSub, cookie_secret: str) -> tornado.web.Application:
    """The host application: its own pages plus the pub/sub routes under /pubsub."""
    return tornado.web.Application(
        [
            (r"/", HomeHandler),
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            (r"/notify", NotifyHandler, {"pubsub": pubsub}),
        ]
        + pubsub.routes,
        cookie_secret=cookie_secret,
        login_url="/login",
        xsrf_cookies=True,
    )


async def main() -> None:
    parse_command_line()
    configure_logging("info", "text")
    pubsub = PubSub(Settings(), prefix="/pubsub", authenticate=authenticate)
    for name in USERS:  # every user's topic exists before anyone subscribes or is sent a note
        await pubsub.create_topic(f"user.{name}", exist_ok=True)
    cookie_secret = os.environ.get("NOTIFY_COOKIE_SECRET") or secrets.token_hex(32)
    sockets = bind_sockets(options.port, options.address)
    server = HTTPServer(make_app(pubsub, cookie_secret))
    server.add_sockets(sockets)
    print(f"notifications app listening on http://{options.address}:{sockets[0].getsockname()[1]}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    pubsub.close()


if __name__ == "__main__":
    asyncio.run(main())
