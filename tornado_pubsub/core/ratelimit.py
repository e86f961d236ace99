"""A token bucket: the per-connection inbound frame budget."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` events per second on average, in bursts of up to one
    second's worth (at least one).

    One bucket per connection; ``take`` is O(1) and never waits.  A frame
    over budget is only decoded far enough to echo its request_id: it is not
    validated and never reaches the broker.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when the bucket is empty."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
