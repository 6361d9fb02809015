"""Pacing: a blocking token bucket per S1SP, wave sizes (canary, then growing) and the failure-rate pause rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from remediation.tokenbucket import TokenBucket


class RateLimiter:
    """Client side: `acquire` blocks until a request may go. Small burst, so the rate holds over short windows."""

    def __init__(self, rate_per_second: float, burst: float | None = None):
        self.bucket = TokenBucket(rate_per_second, burst) if rate_per_second > 0 else None

    def acquire(self) -> None:
        while self.bucket is not None and (wait := self.bucket.take()) > 0:
            time.sleep(wait)


@dataclass(frozen=True)
class WavePolicy:
    canary: int = 5  # first wave per S1SP; any failure in it pauses
    growth: float = 4.0  # each later wave is this many times the previous
    max_wave: int = 2000
    pause_failure_rate: float = 0.2  # pause when a wave's failure share exceeds this ...
    pause_min_sample: int = 20  # ... once at least this many devices were attempted (wave or run so far)

    def waves(self, total: int) -> Iterator[tuple[int, int]]:
        """(start, stop) slices: canary, then growing waves."""
        start, size = 0, max(1, self.canary)
        while start < total:
            stop = min(total, start + size)
            yield start, stop
            start, size = stop, min(self.max_wave, max(size + 1, int(size * self.growth)))

    def should_pause(
        self, wave_index: int, wave_failed: int, wave_size: int, run_failed: int, run_attempted: int
    ) -> str | None:
        if wave_index == 0 and wave_failed:
            return f"canary wave had {wave_failed} failure(s) of {wave_size}"
        if wave_size >= self.pause_min_sample and wave_failed / wave_size > self.pause_failure_rate:
            return f"wave failure rate {wave_failed}/{wave_size} exceeds {self.pause_failure_rate:.0%}"
        if run_attempted >= self.pause_min_sample and run_failed / run_attempted > self.pause_failure_rate:
            return f"failure rate so far {run_failed}/{run_attempted} exceeds {self.pause_failure_rate:.0%}"
        return None
