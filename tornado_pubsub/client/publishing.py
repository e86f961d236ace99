"""Publishing many messages from the command line: lines read without blocking
the loop, a window of publishes in flight, and progress on stderr."""

from __future__ import annotations

import asyncio
import collections
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, AsyncIterable, AsyncIterator, BinaryIO, Callable

from tornado_pubsub.client.connection import PublishAck, PubSubClient

if TYPE_CHECKING:
    from tornado_pubsub.client.cli import Output

WINDOW = 64  # publishes in flight at once when sending many


async def read_lines(source: BinaryIO) -> AsyncIterator[bytes]:
    """Lines of a file, or of stdin without blocking the event loop when it is a pipe."""
    if stat.S_ISREG(os.fstat(source.fileno()).st_mode):
        for line in source:
            yield line
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), source)
    while line := await reader.readline():
        yield line


def count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


async def publish_windowed(
    client: PubSubClient, topic: str, payloads: AsyncIterable[Any], on_ack: Callable[[PublishAck], None]
) -> None:
    """Publish every payload with up to WINDOW publishes in flight; ``on_ack`` sees the acks in order.

    The first failure is raised and the publishes still in flight are cancelled.
    """
    inflight: collections.deque[asyncio.Future[PublishAck]] = collections.deque()
    try:
        async for payload in payloads:
            inflight.append(asyncio.ensure_future(client.publish(topic, payload)))
            if len(inflight) >= WINDOW:
                on_ack(await inflight.popleft())
        while inflight:
            on_ack(await inflight.popleft())
    finally:
        for future in inflight:
            future.cancel()
        # A publish whose reply was already in can still end in its own error: collect
        # them all, so asyncio does not print each one as "never retrieved".
        await asyncio.gather(*inflight, return_exceptions=True)


class Progress:
    """``published N/TOTAL  R msg/s`` on stderr: redrawn in place on a terminal, summarised at the end."""

    def __init__(self, out: Output, total: int | None) -> None:
        self.out = out
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def tick(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.out.progress and now - self._drawn >= 0.1:
            self._drawn = now
            sys.stderr.write("\r" + self._bar() + f"  {self.rate():,.0f} msg/s ")
            sys.stderr.flush()

    def _bar(self, width: int = 30) -> str:
        if not self.total:
            return f"published {self.done:,}"
        filled = int(width * self.done / self.total)
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,}"

    def finish(self, topic: str) -> None:
        if self.out.progress:
            sys.stderr.write("\r\033[K")
        elapsed = time.monotonic() - self.started
        self.out.note(f"published {self.done} messages to {topic} in {elapsed:.2f}s ({self.rate():,.0f} msg/s)")
