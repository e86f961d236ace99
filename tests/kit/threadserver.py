"""A server for tests that cannot share pytest-tornasync's loop: one on a
background thread's IOLoop, for synchronous drivers such as hypothesis and
schemathesis.  (A server in a real subprocess is ``tests.kit.procs.ServerProcess``.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, TypeVar

from tornado_pubsub.server.run import Server
from tornado_pubsub.settings import Settings

T = TypeVar("T")


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
