"""The per-device state machine: read; already at target -> noop; exactly as planned -> conditional write with the
operation's idempotency key, then read back; anything else -> drifted, never written.

Every transition is checkpointed before the S1SP is touched and after it answers. On resume an in-flight device
(reading, writing, confirming) is re-read first: if our write landed it is confirmed, if the slots are still as
planned the write is sent again under the same idempotency key, otherwise it is drifted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from remediation.apply.checkpoint import (
    AT_TARGET_ON_RESUME,
    CONFIRMING,
    DONE,
    DRIFTED,
    FAILED,
    NOOP,
    PENDING,
    READING,
    WRITING,
    Operation,
)
from remediation.apply.gateway import (
    ConnectionFailed,
    Gateway,
    GatewayError,
    KeyConflict,
    SlotState,
    TransientError,
    VersionMoved,
)
from remediation.apply.pacing import RateLimiter, WavePolicy

MAX_CYCLES = 4  # read/decide/write rounds per device in one run before it is failed
INTERRUPTED, SKIPPED = "interrupted", "skipped"  # not states: the op keeps its last checkpointed state
UNREACHABLE = "unreachable"  # not a state either: the S1SP's circuit breaker is open, the device was left as it was
BREAKER_THRESHOLD = 8  # consecutive connection-level failures (any devices) that open an S1SP's circuit breaker


class Interrupted(Exception):
    """The operator asked the run to stop: no new request is sent; the device keeps its last checkpointed state."""


class Unreachable(GatewayError):
    """The S1SP's circuit breaker is open: not dialled again in this run (nothing was sent)."""


class CircuitBreaker:
    """Per S1SP: after `threshold` connection-level failures in a row (refused, unreachable, connect timeout; no reply
    of any kind in between) the S1SP is taken as down for the rest of this run, so its remaining devices are not
    dialled (each would retry with backoff: minutes of waiting against a dead endpoint). Any reply closes the count."""

    def __init__(self, threshold: int = BREAKER_THRESHOLD):
        self.threshold, self.lock = threshold, threading.Lock()
        self.failures, self.cause = 0, None

    @property
    def open(self) -> bool:
        return self.cause is not None

    def failed(self, exc: ConnectionFailed, device_id: str) -> None:
        with self.lock:
            self.failures += 1
            if self.failures >= self.threshold and self.cause is None:
                # The cause without the device it happened to name, so every device left undialled shares it.
                self.cause = str(exc).replace(f" {device_id}:", ":").replace(device_id, "<device>")

    def answered(self) -> None:
        with self.lock:
            if self.cause is None:
                self.failures = 0

    def refusal(self, device_id: str) -> Unreachable:
        return Unreachable(
            f"{device_id}: S1SP unreachable ({self.threshold} connection failures in a row, the last: {self.cause}); "
            "not dialled again in this run"
        )


def fingerprint(cert_b64: str | None) -> str:
    """SHA-256 (upper hex) of the DER a slot holds; "" for an empty slot. Same form as the plan's fingerprints."""
    if not cert_b64:
        return ""
    try:
        der = base64.b64decode(cert_b64, validate=True)
    except (binascii.Error, ValueError):
        return "UNREADABLE:" + hashlib.sha256(cert_b64.encode()).hexdigest().upper()
    return hashlib.sha256(der).hexdigest().upper()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial: float = 0.05
    max_wait: float = 5.0


class _WaitRetryAfter:
    """tenacity wait: the server's Retry-After when it sent one, else exponential backoff with full jitter."""

    def __init__(self, policy: RetryPolicy):
        self.fallback = wait_random_exponential(multiplier=policy.initial, max=policy.max_wait)
        self.max_wait = policy.max_wait

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, GatewayError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait)
        return self.fallback(retry_state)


@dataclass
class S1SPRunStats:
    attempted: int = 0
    failed: int = 0


log = logging.getLogger("remediation.apply")


def _log_retry(retry_state) -> None:
    """Each retry, for `--verbose` (the CLI shows INFO records on stderr; otherwise nothing is printed)."""
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0
    log.info("retry %d in %.2f s after: %s", retry_state.attempt_number, wait, exc)


class DeviceExecutor:
    def __init__(
        self,
        gateway: Gateway,
        checkpoints,
        targets: dict[str, tuple[str, str]],
        limiter: RateLimiter,
        retry: RetryPolicy = RetryPolicy(),
        dry_run: bool = False,
        stop: threading.Event | None = None,
        resumed: bool = False,
    ):
        """`resumed`: the run's journal already had entries when this process started (a resume). A device found
        at target then, with no write of this run on record, is `at_target_on_resume`, never `noop`: an earlier
        process may have written it and lost (or had removed) the journal lines that say so."""
        self.gateway, self.checkpoints, self.targets, self.limiter, self.dry_run = (
            gateway,
            checkpoints,
            targets,
            limiter,
            dry_run,
        )
        self.stop = stop or threading.Event()
        self.resumed = resumed
        self.breaker = CircuitBreaker()
        self.retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
            stop=stop_after_attempt(retry.attempts),
            wait=_WaitRetryAfter(retry),
            sleep=self.stop.wait,  # a backoff ends early on a stop; the next attempt then sees it and sends nothing
            before_sleep=_log_retry,
            reraise=True,
        )

    def _request(self, device_id: str):
        """Every request starts here: after a stop nothing new goes to the S1SP (one already sent is answered or times
        out), nor once its circuit breaker is open."""
        if self.stop.is_set():
            raise Interrupted()
        if self.breaker.open:
            raise self.breaker.refusal(device_id)
        self.limiter.acquire()
        if self.stop.is_set():
            raise Interrupted()

    def _send(self, device_id: str, call):
        """One request through the breaker: a connection failure counts towards opening it, any reply resets it."""
        self._request(device_id)
        try:
            result = call()
        except ConnectionFailed as exc:
            self.breaker.failed(exc, device_id)
            raise
        except GatewayError as exc:
            if exc.status is not None:
                self.breaker.answered()
            raise
        self.breaker.answered()
        return result

    def _read(self, op: Operation) -> SlotState:
        return self.retrying(self._send, op.device_id, lambda: self.gateway.read(op.device_id))

    def _put(self, op: Operation, version: int, ds: str | None, ka: str | None):
        return self._send(op.device_id, lambda: self.gateway.write(op.device_id, version, ds, ka, op.operation_id))

    def _slot_fps(self, state: SlotState) -> tuple[str, str]:
        return fingerprint(state.ds), fingerprint(state.ka)

    def run(self, op: Operation) -> str:
        """Drive one device to a final state; returns it. Gateway errors that outlive the retries fail the device.
        After a stop it returns SKIPPED (not started) or INTERRUPTED (left in its last checkpointed state)."""
        if self.stop.is_set():
            return SKIPPED
        if self.breaker.open and not self.dry_run:
            return UNREACHABLE
        try:
            return self._run(op)
        except Interrupted:
            return INTERRUPTED
        except Unreachable as exc:
            if not self.dry_run:  # apply leaves the device as checkpointed (re-read on resume) and pauses the S1SP
                return UNREACHABLE
            self.checkpoints.transition(op, FAILED, {"error": str(exc)}, last_error=str(exc)[:500])
            return FAILED
        except GatewayError as exc:
            self.checkpoints.transition(
                op, FAILED, {"error": str(exc), "status": exc.status}, last_error=str(exc)[:500]
            )
            return FAILED

    def _run(self, op: Operation) -> str:
        resumed_write = op.state in (WRITING, CONFIRMING)
        if op.state == PENDING:
            self.checkpoints.transition(op, READING)
        for cycle in range(MAX_CYCLES + 1):  # the last round only reads: it confirms a write made in the round before
            state = self._read(op)
            current = self._slot_fps(state)
            fields = {"version_seen": state.version}
            if op.prior_ds_fp is None:
                # What the slots held before we touched them: what a rollback plan would restore.
                fields.update(
                    prior_ds_fp=current[0], prior_ka_fp=current[1], prior_ds_cert=state.ds, prior_ka_cert=state.ka
                )
            target = (op.target_ds_fingerprint, op.target_ka_fingerprint)
            expected = (op.expected_ds_fingerprint or "", op.expected_ka_fingerprint or "")
            if current == target:
                # A device this run sent a write for is `done`, never `noop`, however the state was reached; one
                # found at target on a resume without a write on record may have been written by an earlier process.
                wrote = resumed_write or op.state in (WRITING, CONFIRMING) or op.attempts
                final = DONE if wrote else AT_TARGET_ON_RESUME if self.resumed else NOOP
                detail = {"version": state.version, "slots": "at target"}
                if final == AT_TARGET_ON_RESUME:
                    detail["why"] = "at target on resume with no write recorded: possibly written by an earlier process"
                    if op.version_seen is not None:
                        detail["version_seen_before"] = op.version_seen
                self.checkpoints.transition(
                    op,
                    final,
                    detail,
                    final_ds_fp=current[0],
                    final_ka_fp=current[1],
                    **fields,
                )
                return final
            if current != expected:
                detail = {
                    "version": state.version,
                    "found_ds": current[0],
                    "found_ka": current[1],
                    "expected_ds": expected[0],
                    "expected_ka": expected[1],
                }
                self.checkpoints.transition(
                    op, DRIFTED, detail, final_ds_fp=current[0], final_ka_fp=current[1], **fields
                )
                return DRIFTED
            if self.dry_run:
                self.checkpoints.transition(op, "would_write", {"version": state.version}, **fields)
                return "would_write"
            if cycle == MAX_CYCLES:
                break
            # Exactly as planned: write both slots in one conditional PUT. Recorded as in flight *before* sending.
            self.checkpoints.transition(
                op, WRITING, {"if_match": state.version}, attempts=(op.attempts or 0) + 1, **fields
            )
            ds, ka = self.targets[op.operation_id]
            try:
                # Re-sending the same PUT is safe: the S1SP replays the first answer for the same Idempotency-Key, and
                # If-Match stops it if anyone else wrote in between.
                result = self.retrying(self._put, op, state.version, ds, ka)
            except (TransientError, VersionMoved) as exc:
                # Retries used up or the version moved; the write may or may not have landed: re-read and decide again.
                self.checkpoints.transition(op, WRITING, {"error": str(exc), "status": exc.status, "next": "re-read"})
                resumed_write = True
                continue
            except KeyConflict as exc:
                self.checkpoints.transition(op, FAILED, {"error": str(exc), "status": 409}, last_error=str(exc)[:500])
                return FAILED
            self.checkpoints.transition(
                op, CONFIRMING, {"status": 200, "version": result.version}, result_version=result.version
            )
            resumed_write = True
        self.checkpoints.transition(
            op, FAILED, {"error": f"no final state after {MAX_CYCLES} read/write rounds"}, last_error="too many rounds"
        )
        return FAILED


def run_s1sp(
    executor: DeviceExecutor,
    ops: list[Operation],
    concurrency: int,
    waves: WavePolicy,
    should_stop=lambda: False,
    on_progress=None,
) -> tuple[S1SPRunStats, str | None]:
    """Canary then growing waves; returns stats and a pause reason (None when every op reached a final state)."""
    stats = S1SPRunStats()
    reported = threading.Lock()

    def run_one(op: Operation) -> str:
        result = executor.run(op)
        if on_progress:
            with reported:  # one device at a time, as each reaches its state: the bar moves per device, not per wave
                on_progress(1)
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for index, (start, stop) in enumerate(waves.waves(len(ops))):
            if should_stop() or executor.stop.is_set():
                return stats, INTERRUPTED
            wave = ops[start:stop]
            results = list(pool.map(run_one, wave))
            if executor.stop.is_set():
                return stats, INTERRUPTED
            if UNREACHABLE in results:
                stats.attempted += sum(r != UNREACHABLE for r in results)
                stats.failed += sum(r == FAILED for r in results)
                return (
                    stats,
                    f"S1SP unreachable: {executor.breaker.cause} ({BREAKER_THRESHOLD} connection failures in a row); nothing more was sent",
                )
            wave_failed = sum(r == FAILED for r in results)
            stats.attempted += len(wave)
            stats.failed += wave_failed
            reason = waves.should_pause(index, wave_failed, len(wave), stats.failed, stats.attempted)
            if reason and stop < len(ops):
                return stats, f"{reason}{_first_error(wave, results)}"
    return stats, None


def _first_error(wave: list[Operation], results: list[str]) -> str:
    """The commonest failure reason in a wave, for the pause message (a protocol error must not hide in a CSV)."""
    errors = Counter(
        (op.last_error or "?").removeprefix(f"{op.device_id}: ") for op, r in zip(wave, results) if r == FAILED
    )
    if not errors:
        return ""
    ((error, n),) = errors.most_common(1)
    return f"; {n} of them: {error[:160]}"
