"""A token bucket: the per-connection inbound frame budget."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` events per second on average, in bursts of up to one
    second's worth (at least one) unless ``burst`` says otherwise.

    One bucket per connection; ``take`` is O(1) and never waits.  A frame
    is charged before it is parsed (``frame_cost``: by size as well as by
    count); one over budget is answered LIMIT_EXCEEDED without being parsed,
    validated or routed, so flooding costs the server no parse.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0) if burst is None else burst
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens (at most a burst's worth, so any single frame
        can pass an idle bucket); False (and nothing spent) when too few are left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = min(cost, self.burst)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


#: Inbound bytes one frame token stands for: a frame costs one token per
#: started 16 KiB, so a client sending large frames spends its budget in
#: bytes as well as in frames (PROTOCOL.md 9, issue 11 finding 13).
BYTES_PER_TOKEN = 16384


def frame_cost(message: str | bytes) -> int:
    """Tokens one inbound frame costs: 1 per started ``BYTES_PER_TOKEN``
    (characters for text; never less than one)."""
    return 1 + len(message) // BYTES_PER_TOKEN
