"""Servers for tests that cannot share pytest-tornasync's loop: one on a
background thread's IOLoop (for synchronous drivers such as hypothesis and
schemathesis), and one as a real subprocess (to measure its RSS, send it
SIGTERM and read its log lines)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from tornado_pubsub.server.run import Server
from tornado_pubsub.settings import Settings

#: The repository root (the tests run the server and the CLI from here).
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, without the developer's own
    PUBSUB_* settings (they must not leak into a test's server or CLI), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PUBSUB_")}, **extra}


class ThreadServer:
    """A ``Server`` running on its own thread; ``run(fn)`` executes ``await fn()`` on its loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pubsub-test-server", daemon=True)
        self._stop: asyncio.Event | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.server = Server(self.settings)
            self.port = self.server.listen()
            self._ready.set()
            await self._stop.wait()
            await self.server.shutdown("test teardown")

        asyncio.run(serve())

    def __enter__(self) -> "ThreadServer":
        self._thread.start()
        assert self._ready.wait(10), "test server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def run(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``await fn()`` on the server's loop and return its result."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise AssertionError(f"no result within {timeout} s") from None

    @property
    def broker(self):  # type: ignore[no-untyped-def]
        assert self.server is not None
        return self.server.broker


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


class ProcServer:
    """``python -m tornado_pubsub`` as a child process on a free port.

    Its stdout (JSON log lines) is collected on a thread so the pipe never
    fills; ``lines`` holds every line so far.
    """

    def __init__(
        self, *flags: str, env: dict[str, str] | None = None, nofile: int | tuple[int, int] | None = None
    ) -> None:
        # RLIMIT_NOFILE (soft, hard) for the child, to provoke EMFILE.
        self.nofile = (nofile, nofile) if isinstance(nofile, int) else nofile
        self.port = 0
        self.flags = ["--port=0", "--config=/dev/null", *flags]
        self.env = clean_env(**{**(env or {}), "PYTHONUNBUFFERED": "1"})
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "ProcServer":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tornado_pubsub", *self.flags],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit if self.nofile else None,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The child binds port 0 (no race with other servers for a "free" port);
        # its port is read from the kernel's table of its listening sockets.
        deadline = time.monotonic() + 15
        while not self.port:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise AssertionError("server did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)
            self.port = _listening_port(self.proc.pid)
        return self

    def _limit(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def rss_kib(self) -> int:
        """The child's resident set size in KiB, from /proc."""
        return self._proc_number("status", "VmRSS:", 1)

    def descriptor_limit(self) -> int:
        """The child's soft RLIMIT_NOFILE, from /proc."""
        return self._proc_number("limits", "Max open files", 3)

    def _proc_number(self, name: str, prefix: str, column: int) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/{name}", encoding="ascii") as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[column])
        raise AssertionError(f"no {prefix!r} line in /proc/{self.proc.pid}/{name}")

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM or SIGINT: graceful shutdown)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        self.signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds (blocks the caller)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    async def exit_code(self, timeout: float = 15) -> int:
        """The exit code, polled so the test's own loop keeps running meanwhile;
        every log line is collected by then."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"the server did not exit within {timeout} s"
            await asyncio.sleep(0.02)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def log(self) -> str:
        """Everything the server has printed so far."""
        return "\n".join(self.lines)

    def kill(self) -> None:
        """Kill our child (by its PID) if it is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def records(self) -> list[dict[str, Any]]:
        """Every log line parsed as JSON (fails the test on a line that is not)."""
        return [json.loads(line) for line in self.lines if line.strip()]


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
