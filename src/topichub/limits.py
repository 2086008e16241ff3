"""Rate and size limits (DESIGN.md, "Slow consumers, limits, shutdown")."""

from __future__ import annotations

import time

from topichub.errors import RateLimited, TooLarge


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up.

    A rate of 0 disables the limit.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}

    def check(self, key: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(f"at most {self.rate:g} messages per second")
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # forget idle users rather than grow forever
            self._buckets.clear()


def check_content_size(content_json: str, max_bytes: int) -> None:
    if len(content_json) * 4 <= max_bytes:
        return  # UTF-8 takes at most 4 bytes a character: no need to encode it to know
    size = len(content_json.encode())
    if size > max_bytes:
        raise TooLarge(f"content is {size} bytes; the limit is {max_bytes}")
