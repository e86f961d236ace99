"""Real external processes for tests: redis-server, nginx and tornado-pubsub
servers on free loopback ports.  Each is started from a config rendered into
the test's tmp dir (never a system service) and stopped by its own PID.

A missing binary fails the test with the install line, never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

import pytest

from tests.kit.servers import ROOT, clean_env

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# binary -> the Debian package CI installs it from
PACKAGES = {"redis-server": "redis-server", "nginx": "nginx"}


def need(binary: str) -> str:
    """The path of ``binary``; fails the test (with the install line) when missing."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        pytest.fail(f"{binary} not found: install it with `apt-get install -y {PACKAGES.get(binary, binary)}`")
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One started process on a loopback ``port``, its output file, and how to
    stop it (by PID)."""

    def __init__(self, name: str, argv: list[str], log: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """True once the process serves (by default: its port accepts)."""
        return port_open(self.port)

    def start(self) -> Self:
        """Start the process and wait (bounded) until it is ready."""
        out = open(self.log, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        out.close()
        wait_until(self.ready, f"{self.name} to be ready", self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process and wait for it (SIGKILL after STOP_TIMEOUT)."""
        if self.popen is None:
            return None
        if self.alive():
            os.kill(self.pid, sig)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records this process wrote."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found


def wait_until(check: Any, what: str, proc: Proc | None = None, timeout: float = START_TIMEOUT) -> None:
    """Poll ``check()`` until true (bounded); fail with the process output otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            pytest.fail(f"{proc.name} exited while waiting for {what}:\n{proc.output()[-3000:]}")
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{proc.output()[-3000:]}" if proc else ""))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_status(url: str) -> int | None:
    """The status of GET ``url`` (None when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# -- redis-server ---------------------------------------------------------------


class Redis(Proc):
    """A redis-server on a loopback port with its data in ``dir``."""

    def __init__(self, tmp: Path, port: int | None = None, persist: bool = True) -> None:
        self.port = port or free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(exist_ok=True)
        argv = [
            need("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            # Persistence on: a killed and restarted Redis keeps topics and history.
            "--appendonly", "yes" if persist else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
        ]
        super().__init__(f"redis-server:{self.port}", argv, tmp / f"redis-{self.port}.log", self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# -- tornado-pubsub ----------------------------------------------------------------


class PubSub(Proc):
    """``python -m tornado_pubsub`` on a loopback port with ``flags``."""

    def __init__(self, tmp: Path, *flags: str, port: int | None = None, name: str = "pubsub") -> None:
        self.port = port or free_port()
        config = tmp / "empty.conf"
        config.touch()
        env = clean_env(PUBSUB_CONFIG=str(config), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "tornado_pubsub", f"--port={self.port}", "--address=127.0.0.1", *flags]
        super().__init__(f"{name}:{self.port}", argv, tmp / f"{name}-{self.port}.log", self.port, env)

    def ready(self) -> bool:
        return http_status(self.base + "/health") == 200


# -- clients for servers on any port --------------------------------------------------


@pytest.fixture
def ws_at():
    """``await ws_at(port, path="/ws", headers=None, source=None)`` -> WsClient,
    closed on teardown; ``source`` is the local address to connect from."""
    import tornado.httpclient
    import tornado.websocket

    from tests.kit.plugin import WsClient

    clients: list[WsClient] = []

    async def connect(
        port: int, path: str = "/ws", headers: dict[str, str] | None = None, source: str | None = None
    ) -> WsClient:
        request = tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{port}{path}", headers=headers or {}, network_interface=source
        )
        client = WsClient(await tornado.websocket.websocket_connect(request))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def redis_server(tmp_path: Path):
    """A fresh redis-server (persistent: AOF, fsync always) for this test."""
    server = Redis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: Redis):
    """``cluster(n, *flags)`` -> n tornado-pubsub processes on ``redis_server``, stopped on teardown."""
    started: list[PubSub] = []

    def start(n: int, *flags: str) -> list[PubSub]:
        procs = [PubSub(tmp_path, "--broker=redis", f"--redis-url={redis_server.url}", *flags) for _ in range(n)]
        for proc in procs:
            started.append(proc.start())
        return procs

    yield start
    for proc in started:
        proc.stop()


# -- nginx -------------------------------------------------------------------------------


def render_nginx(template: str, directory: Path, port: int, upstreams: list[int], read_timeout: str | None = None) -> str:
    """``conf/nginx.conf`` with this test's listen port, upstream processes and
    paths (and optionally a shorter ``proxy_read_timeout`` on /ws).

    Each replaced line must exist, so an edit of the example that the tests
    no longer exercise fails here instead of passing unnoticed.
    """

    def sub(old: str, new: str, text: str) -> str:
        assert old in text, f"conf/nginx.conf no longer contains {old!r}"
        return text.replace(old, new)

    user = "user root;" if os.geteuid() == 0 else ""
    text = sub("user www-data;", user, template)
    text = sub("worker_processes auto;", "worker_processes 1;", text)
    text = sub("pid /run/nginx-pubsub.pid;", f"pid {directory}/nginx.pid;", text)
    text = sub("error_log /var/log/nginx/pubsub-error.log warn;", f"error_log {directory}/error.log info;", text)
    text = sub("access_log /var/log/nginx/pubsub-access.log pubsub;", f"access_log {directory}/access.log pubsub;", text)
    text = sub("listen 80;", f"listen 127.0.0.1:{port};", text)
    temp = "".join(
        f"    {kind}_temp_path {directory}/{kind}_temp;\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = sub("http {\n", "http {\n" + temp, text)
    lines, servers_done = [], False
    for line in text.splitlines():
        if line.strip().startswith("server 127.0.0.1:"):
            if not servers_done:
                lines += [f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=5s;" for p in upstreams]
                servers_done = True
            continue
        lines.append(line)
    assert servers_done, "conf/nginx.conf has no upstream server lines"
    text = "\n".join(lines) + "\n"
    if read_timeout is not None:
        text = sub("proxy_read_timeout 75s;", f"proxy_read_timeout {read_timeout};", text)
    return text


class Nginx(Proc):
    """nginx in the foreground, configured by rendering ``conf/nginx.conf``."""

    def __init__(self, tmp: Path, upstreams: list[int], read_timeout: str | None = None) -> None:
        self.port = free_port()
        self.dir = tmp / f"nginx-{self.port}"
        self.dir.mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(render_nginx((ROOT / "conf" / "nginx.conf").read_text(), self.dir, self.port, upstreams, read_timeout))
        argv = [need("nginx"), "-e", str(self.dir / "startup.log"), "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"]
        super().__init__(f"nginx:{self.port}", argv, self.dir / "stdout.log", self.port)

    def logs(self) -> str:
        """Everything nginx wrote: access, error and startup logs."""
        return "".join(
            (self.dir / name).read_text(errors="replace") for name in ("access.log", "error.log", "startup.log", "stdout.log")
            if (self.dir / name).exists()
        )

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""
