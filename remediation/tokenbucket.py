"""A thread-safe token bucket, shared by apply's client-side limiter and the simulator's server-side limit."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.capacity = burst if burst is not None else max(1.0, self.rate / 20)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a token if there is one (returns 0.0); otherwise return the seconds until there will be."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate
