"""Seeded fault injection for the simulator, from a spec like
`latency=20ms,error=0.05,throttle=0.02,timeout=0.01,drop=0.02,rate=200,seed=7`."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, fields

from remediation.errors import InputError
from remediation.tokenbucket import TokenBucket


@dataclass(frozen=True)
class FaultSpec:
    latency_ms: float = 0.0  # median of a log-normal latency per request
    latency_sigma: float = 0.5
    error: float = 0.0  # share of requests answered 503 (with Retry-After) or 500
    throttle: float = 0.0  # share answered 429 with Retry-After
    timeout: float = 0.0  # share that hang for `hang_s` before answering (the client times out first)
    hang_s: float = 3.0
    drop: float = 0.0  # share of successful PUTs whose connection is dropped after the write committed
    rate: float = 0.0  # requests/s the S1SP accepts (token bucket); above it, 429. 0 = unlimited
    # A lying S1SP: shares of 200 replies to a read that name another device, carry a non-integer version, or no slots.
    wrong_device: float = 0.0
    bad_version: float = 0.0
    no_slots: float = 0.0
    # A share of committed PUTs whose 200 reply names another device (the write has landed; the reply is a lie).
    wrong_device_put: float = 0.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        if not text:
            return cls()
        names = {f.name: f.type for f in fields(cls)}
        aliases = {"latency": "latency_ms", "hang": "hang_s"}
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = part.partition("=")
            key = aliases.get(key.strip(), key.strip())
            if key not in names:
                raise InputError(f"unknown fault {key!r} (known: {', '.join(sorted(names))})", field="--faults")
            raw = raw.strip().removesuffix("ms").removesuffix("s") if key in ("latency_ms", "hang_s") else raw.strip()
            try:
                values[key] = int(raw) if key == "seed" else float(raw)
            except ValueError:
                raise InputError(f"{key}={raw!r} is not a number", field="--faults") from None
        return cls(**values)


class FaultInjector:
    def __init__(self, spec: FaultSpec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.lock = threading.Lock()
        self.bucket = TokenBucket(spec.rate, burst=max(1.0, spec.rate / 10)) if spec.rate > 0 else None

    def _draw(self) -> float:
        with self.lock:
            return self.rng.random()

    def latency(self) -> float:
        if self.spec.latency_ms <= 0:
            return 0.0
        with self.lock:
            return self.spec.latency_ms / 1000 * math.exp(self.rng.gauss(0, self.spec.latency_sigma))

    def before(self) -> tuple[int, dict] | None:
        """A fault to answer instead of serving the request: (status, headers), or None to serve it."""
        if self.bucket is not None and self.bucket.take() > 0:
            return 429, {"Retry-After": "1"}
        x = self._draw()
        if x < self.spec.throttle:
            return 429, {"Retry-After": "0.2"}
        x -= self.spec.throttle
        if x < self.spec.error:
            return (503, {"Retry-After": "0.1"}) if x < self.spec.error / 2 else (500, {})
        x -= self.spec.error
        if x < self.spec.timeout:
            time.sleep(self.spec.hang_s)
        return None

    def drop_after_commit(self) -> bool:
        return self.spec.drop > 0 and self._draw() < self.spec.drop

    def lie_after_write(self, body: dict) -> dict:
        """A committed PUT's 200 body as a lying S1SP would send it (or unchanged)."""
        if self.spec.wrong_device_put and self._draw() < self.spec.wrong_device_put:
            return {**body, "device_id": "FF-FF-FF-FF-FF-FF-FF-FF"}
        return body

    def lie(self, body: dict) -> dict:
        """A read's 200 body as a lying S1SP would send it (or unchanged): the client must not believe it."""
        spec = self.spec
        if not (spec.wrong_device or spec.bad_version or spec.no_slots):
            return body
        x = self._draw()
        if x < spec.wrong_device:
            return {**body, "device_id": "FF-FF-FF-FF-FF-FF-FF-FF"}
        x -= spec.wrong_device
        if x < spec.bad_version:
            return {**body, "version": "seven"}
        x -= spec.bad_version
        if x < spec.no_slots:
            return {k: v for k, v in body.items() if k != "slots"}
        return body
