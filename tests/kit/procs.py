"""Real processes for tests: tornado-pubsub servers, redis-server and nginx on
loopback ports.  Each is started from a config rendered into the test's tmp dir
(never a system service), writes its output to a file there, and is stopped by
its own PID.  Processes that tests restart keep their port across restarts.

A missing binary fails the test with the install line, never a silent skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Self

import pytest

from tests.kit.wait import block_until, wait_until

#: The repository root (servers and the CLI run from here, as from a checkout).
ROOT = Path(__file__).resolve().parents[2]
# A bound for a start that failed, not a target: on a machine running two
# passes of parallel tests, a Python server can wait seconds for a core.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# binary -> the Debian package CI installs it from
PACKAGES = {"redis-server": "redis-server", "nginx": "nginx"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, without the developer's own
    PUBSUB_* settings (they must not leak into a test's server or CLI), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_")}, **extra}


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

    def __init__(
        self, name: str, argv: list[str], log: Path, port: int, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> None:
        self.port = port
        self.name = name
        self.argv = argv
        self.log_path = log
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """True once the process serves (by default: its port accepts)."""
        return port_open(self.port)

    def start(self) -> Self:
        """Start the process and wait (bounded, blocking) until it is ready."""
        out = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env, preexec_fn=self.preexec()
        )
        out.close()
        try:
            block_until(lambda: self.listening() and self.ready(), START_TIMEOUT, f"{self.name} to be ready", self)
        except BaseException:
            # Not ready in time: no ``with`` block or fixture owns it yet, so
            # nothing else would stop it (CI once left two such servers running).
            self.kill()
            raise
        return self

    def command(self) -> list[str]:
        """The argv of the next start."""
        return self.argv

    def preexec(self) -> Any:
        """What the child runs before exec (None: nothing)."""
        return None

    def listening(self) -> bool:
        """True once the port is known (it is fixed unless a subclass finds it)."""
        return True

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

    def kill(self) -> None:
        """SIGKILL the process (by its PID) if it still runs, and reap it."""
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds (blocks the caller)."""
        assert self.popen is not None
        return self.popen.wait(timeout)

    async def exit_code(self, timeout: float = 15) -> int:
        """The exit code, polled so the test's own loop keeps running meanwhile."""
        assert self.popen is not None
        popen = self.popen
        await wait_until(lambda: popen.poll() is not None, timeout, f"{self.name} to exit")
        return popen.returncode

    def output(self) -> str:
        """Everything the process has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


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


class ServerProcess(Proc):
    """``python -m tornado_pubsub`` with ``flags`` as a child process on 127.0.0.1.

    Without ``port`` it binds port 0 (no race with other servers for a "free"
    port) and the port is read from the kernel's table of its listening
    sockets; a restart keeps that port.  It is ready once ``/health`` answers
    200.  Its config file is ``config`` (PUBSUB_CONFIG; empty by default,
    None: the server's own default), and the developer's own PUBSUB_*
    variables never reach it.  ``nofile``
    sets its RLIMIT_NOFILE (soft, hard), to provoke EMFILE.  Output goes to
    a file in ``tmp`` (a directory of its own without it).  As a context
    manager it starts, and is killed at the end.
    """

    def __init__(
        self,
        *flags: str,
        tmp: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        nofile: int | tuple[int, int] | None = None,
        name: str = "pubsub",
        command: tuple[str, ...] = (sys.executable, "-m", "tornado_pubsub"),
        cwd: Path = ROOT,
        config: str | None = os.devnull,
    ) -> None:
        if tmp is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="pubsub-test-")  # removed with this object
            tmp = Path(self._own_tmp.name)
        self.flags = flags
        self.nofile = (nofile, nofile) if isinstance(nofile, int) else nofile
        self.program = list(command)
        full_env = clean_env(**{"PYTHONUNBUFFERED": "1", **(env or {})})
        if config is not None:
            full_env.setdefault("PUBSUB_CONFIG", config)
        log = tmp / f"{name}-{port or 'any'}-{id(self):x}.log"
        super().__init__(name if port is None else f"{name}:{port}", [], log, port or 0, full_env, cwd)

    def command(self) -> list[str]:
        return [*self.program, f"--port={self.port}", "--address=127.0.0.1", *self.flags]

    def preexec(self) -> Any:
        if self.nofile is None:
            return None
        nofile = self.nofile
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    def listening(self) -> bool:
        if not self.port:
            self.port = _listening_port(self.pid)
            if self.port:
                self.name = f"{self.name}:{self.port}"
        return bool(self.port)

    def ready(self) -> bool:
        return http_status(self.base + "/health") == 200

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.base

    @property
    def lines(self) -> list[str]:
        """Every line the server has printed so far."""
        return self.output().splitlines()

    def log(self) -> str:
        """Everything the server has printed so far."""
        return self.output()

    def records(self) -> list[dict[str, Any]]:
        """Every line the server printed, parsed as JSON: a line that is not
        fails the test (the server logs nothing but JSON records)."""
        return [json.loads(line) for line in self.lines if line.strip()]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM or SIGINT: graceful shutdown)."""
        self.send_signal(sig)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        self.signal(signal.SIGTERM)

    def rss_kib(self) -> int:
        """The child's resident set size in KiB, from /proc."""
        return self._proc_number("status", "VmRSS:", 1)

    def descriptor_limit(self) -> int:
        """The child's soft RLIMIT_NOFILE, from /proc."""
        return self._proc_number("limits", "Max open files", 3)

    def _proc_number(self, name: str, prefix: str, column: int) -> int:
        with open(f"/proc/{self.pid}/{name}", encoding="ascii") as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[column])
        raise AssertionError(f"no {prefix!r} line in /proc/{self.pid}/{name}")


async def served(visit: Callable[[int], Awaitable[None]], *flags: str, env: dict[str, str] | None = None, timeout: float = 60) -> ServerProcess:
    """Run a server with ``flags``, await ``visit(port)`` (at most ``timeout``
    seconds), stop it gracefully (it must exit 0) and return it, to read
    everything it printed (``log()``, ``records()``)."""
    with ServerProcess(*flags, env=env) as server:
        await asyncio.wait_for(visit(server.port), timeout)
        server.terminate()
        assert await server.exit_code() == 0
    return server


def _listening_port(pid: int) -> int:
    """The TCP port ``pid`` listens on, from /proc (0 while it has none)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    return int(fields[1].rsplit(":", 1)[1], 16)
    return 0


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
