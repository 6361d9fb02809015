"""One apply invocation over a run directory: lock, journal, checkpoints, one worker group per S1SP, outcomes."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.apply.checkpoint import (
    DONE,
    DRIFTED,
    FAILED,
    FINAL_STATES,
    IN_FLIGHT,
    NOOP,
    STATES,
    MemoryCheckpoints,
    Operation,
    SqliteCheckpoints,
)
from remediation.apply.executor import INTERRUPTED, DeviceExecutor, RetryPolicy, run_s1sp
from remediation.apply.gateway import Gateway, HttpGateway
from remediation.apply.index import (
    IndexInconsistent,
    check_index,
    head_payload,
    rebuild_index,
)
from remediation.apply.lock import HostPlanLease, PlanLease, PlanLocked, RunLock
from remediation.apply.pacing import RateLimiter, WavePolicy
from remediation.artefacts.run_dir import RunDir, RunRecord, read_run
from remediation.authority import RunAuthority, token_for_endpoint
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.journal import Journal, check_journal
from remediation.interrupts import EARLY
from remediation.outputs import write_csv, write_parquet
from remediation.plan import LoadedPlan

OUTCOME_COLUMNS = [
    "device_id",
    "s1sp",
    "operation_id",
    "state",
    "attempts",
    "prior_ds_fp",
    "prior_ka_fp",
    "final_ds_fp",
    "final_ka_fp",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
    "expected_ds_fingerprint",
    "expected_ka_fingerprint",
    "last_error",
]


@dataclass
class ApplyOptions:
    who: str
    waves: WavePolicy = field(default_factory=WavePolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    s1sps: tuple[str, ...] = ()
    endpoints: dict[str, str] = field(default_factory=dict)  # S1SP -> base URL override
    timeout: float = 5.0
    retry_failed: bool = False
    client_cert: tuple[str, str] | None = None
    ca_bundle: str | None = None
    supersede: bool = False  # take the plan over from another, incomplete run directory (journaled in both)


@dataclass
class ApplyResult:
    run_dir: Path
    counts: dict
    paused: dict
    status: str
    failures: dict = field(default_factory=dict)  # (S1SP, reason) -> failed devices, for the screen


def failure_reasons(ops: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Failed devices grouped by S1SP and reason (the device id taken out, so like reasons group)."""
    failed = ops[ops["state"] == FAILED]
    reasons = [str(e or "?").removeprefix(f"{d}: ") for d, e in zip(failed["device_id"], failed["last_error"])]
    return {
        k: int(v)
        for k, v in failed.assign(reason=reasons)
        .groupby(["s1sp", "reason"])
        .size()
        .sort_values(ascending=False)
        .items()
    }


def _endpoint(plan: LoadedPlan, s1sp: str, options: ApplyOptions) -> dict:
    ep = dict(plan.document["endpoints"].get(s1sp) or {})
    if s1sp in options.endpoints:
        ep["base_url"] = options.endpoints[s1sp]
    if not ep.get("base_url"):
        raise InputError(f"no base_url for S1SP {s1sp} in the case's [s1sp.{s1sp}] or --endpoint")
    ep["s1sp"] = s1sp
    return ep


def check_endpoints(plan: LoadedPlan, options: ApplyOptions) -> None:
    """Before a run directory exists: each S1SP this run reaches has a URL and its token may be sent there."""
    rows = plan.rows if not options.s1sps else plan.rows[plan.rows["s1sp"].isin(options.s1sps)]
    for s1sp in sorted(set(rows["s1sp"])):
        ep = _endpoint(plan, s1sp, options)
        token_for_endpoint(s1sp, ep["base_url"], ep.get("token_env"))


def make_gateway(ep: dict, options: ApplyOptions) -> Gateway:
    token = token_for_endpoint(ep.get("s1sp", "?"), ep["base_url"], ep.get("token_env"))
    return HttpGateway(
        ep["base_url"],
        token=token,
        timeout=options.timeout,
        concurrency=int(ep.get("concurrency", 4)),
        client_cert=options.client_cert,
        ca_bundle=options.ca_bundle,
    )


def _targets(rows: pd.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """operation id -> certificates to write; "" in a plan (an empty slot, e.g. restored by a rollback) is sent as null."""
    return {
        op: (ds or None, ka or None)
        for op, ds, ka in zip(rows["operation_id"], rows["target_ds_cert"], rows["target_ka_cert"])
    }


def _prepare_run_dir(plan: LoadedPlan, run_dir: Path, who: str) -> RunRecord:
    owner = RunDir(run_dir)
    if owner.is_run():
        run = owner.record()
        if run.plan_hash != plan.plan_hash:
            raise SafetyRefusal(
                f"run {run_dir} belongs to plan {run.plan_hash[:12]}…, not {plan.plan_hash[:12]}…; use a new run directory"
            )
        if run.status == "superseded":
            raise SafetyRefusal(f"run {run_dir} was superseded by {run.superseded_by or '?'}; it cannot be resumed")
        return run
    run_dir.mkdir(parents=True, exist_ok=True)
    owner.carry_from_plan(plan.directory)
    run = RunRecord(
        plan_hash=plan.plan_hash,
        plan_dir=str(plan.directory.resolve()),
        created_by=who,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        status="new",
        paused={},
    )
    owner.write_record(run)
    return run


def write_outcomes(run_dir: Path, ops: pd.DataFrame) -> pd.DataFrame:
    """outcomes.parquet/.csv of a run from its checkpointed ops (one row per planned device)."""
    ops = ops.copy()
    for col in OUTCOME_COLUMNS:
        if col not in ops.columns:
            ops[col] = None
    outcomes = ops[OUTCOME_COLUMNS]
    write_parquet(RunDir(run_dir).outcomes_parquet, outcomes)
    write_csv(RunDir(run_dir).outcomes_csv, outcomes)
    return outcomes


# Statuses of a run whose every device reached a final state: its plan is free for another run directory.
COMPLETE_STATUSES = ("completed", "needs_attention")
RUN_EVENTS_SIGNED = ("run_started", "run_resumed", "run_interrupted", "run_finished")


class RunRecorder:
    """The run's own records: every run event goes through `record_run_event`, which journals it and then records the
    journal head (seq, hash) in run.json (`journal_head`, kept apart from anything else in run.json). `signed` (the
    operator's authority fields, e.g. a `signer` for the journal, from the authority issue) is added to the start,
    resume, interrupted and finish records here and nowhere else."""

    def __init__(self, run_dir: Path, run: RunRecord, journal: Journal, signed: dict | None = None):
        self.run_dir, self.run, self.journal, self.signed = run_dir, run, journal, signed or {}

    def record_run_event(self, kind: str, **payload) -> dict:
        entry = self.journal.append(kind, **payload, **(self.signed if kind in RUN_EVENTS_SIGNED else {}))
        self.save()
        return entry

    def save(self, **fields) -> None:
        self.run.update(**fields)
        self.run.journal_head = self.journal.head
        if self.signed.get("signer"):  # the operator signs the head it records: forging it needs their key
            self.run.journal_head_signature = self.signed["signer"](head_payload(self.run, self.journal.head))
        self.run.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        RunDir(self.run_dir).write_record(self.run)


class StopOnSignal:
    """First SIGINT/SIGTERM: set `event` (stop dispatching, let in-flight requests finish, journal, release the locks
    last). Second: leave at once with os._exit; the kernel drops the flocks only as the process ends, so no other apply
    can start while a worker of this one could still write. Installed only on the main thread (signals go there)."""

    def __init__(self, event: threading.Event | None = None, echo: Callable[[str], None] | None = None):
        self.event = event or threading.Event()
        self.signal_name: str | None = None
        self.echo = echo or (lambda text: os.write(2, (text + "\n").encode()))
        self.saved: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            os.write(2, b"remediation: second interrupt: exiting now; devices in flight are re-read on resume\n")
            os._exit(130)
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        self.echo(
            f"remediation: {self.signal_name}: stopping — no new devices; waiting for requests in flight (Ctrl-C again to exit at once)"
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        if EARLY.is_set() and not self.event.is_set():  # a Ctrl-C during start-up that Python swallowed
            self._handle(signal.SIGINT, None)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


class PlanLeases:
    """The plan lease in the plan directory and in the host-wide registry (keyed by plan hash): taken, recorded and
    released together, the host one last in and first out."""

    def __init__(self, plan: LoadedPlan, who: str, run_dir: Path):
        self.held: list[PlanLease] = []
        try:
            self.held.append(PlanLease(plan.directory).acquire(who, run_dir=str(run_dir.resolve())))
            self.held.append(HostPlanLease(plan.plan_hash).acquire(who, run_dir=str(run_dir.resolve())))
        except BaseException:
            self.release()
            raise

    def owners(self) -> list[dict]:
        return [lease.owner() for lease in self.held]

    def record(self, run_dir: Path, who: str, status: str, journal_head: dict | None = None) -> None:
        for lease in self.held:
            lease.record(run_dir, who, status, journal_head)

    def release(self) -> None:
        for lease in reversed(self.held):
            lease.release()
        self.held = []


def _claim_plan(leases: PlanLeases, plan: LoadedPlan, run_dir: Path, who: str, supersede: bool) -> Path | None:
    """Refuse a second run directory while the plan's owning run (by the plan directory's record or the host-wide
    one, which a copy of the plan directory shares) is active or incomplete; with `supersede`, return the run to
    supersede. Called holding both flocks."""
    for owner in leases.owners():
        owner_dir = Path(owner["run_dir"]) if owner.get("run_dir") else None
        if owner_dir is None or owner_dir == run_dir.resolve():
            continue
        taken = _claim_from(owner_dir, plan, supersede)
        if taken is not None:
            return taken
    return None


def _claim_from(owner_dir: Path, plan: LoadedPlan, supersede: bool) -> Path | None:
    try:
        status = read_run(owner_dir).status if RunDir(owner_dir).is_run() else "missing"
    except InputError:
        status = "unreadable"
    if status in (*COMPLETE_STATUSES, "superseded"):
        return None
    if not supersede:
        raise PlanLocked(
            f"plan {plan.directory} belongs to run {owner_dir} ({status}); finish it with `remediation resume {owner_dir}`, "
            f"or start a new run directory with --supersede to abandon it (journaled in both)"
        )
    return owner_dir


def _supersede(old_dir: Path, new_dir: Path, who: str, signed: dict | None = None) -> dict:
    """Close an incomplete run in favour of a new one: journaled in the old run (under its lock) before the new starts."""
    lock = RunLock(old_dir).acquire(who) if old_dir.exists() else None
    try:
        if lock is None or not RunDir(old_dir).journal.exists():
            return {"run_dir": str(old_dir), "journal_head": None, "note": "superseded run has no journal"}
        check_journal(RunDir(old_dir).journal)
        run = read_run(old_dir)
        journal = Journal(RunDir(old_dir).journal)
        try:
            # The operator's signer signs the old run's recorded head (its records are signed; run_superseded is not).
            recorder = RunRecorder(old_dir, run, journal, {k: v for k, v in (signed or {}).items() if k == "signer"})
            recorder.record_run_event("run_superseded", by_run=str(new_dir.resolve()), superseded_by=who)
            recorder.save(status="superseded", superseded_by=str(new_dir.resolve()))
            return {"run_dir": str(old_dir), "journal_head": journal.head}
        finally:
            journal.close()
    finally:
        if lock is not None:
            lock.release()


def _open_index(
    run_dir: Path,
    plan: LoadedPlan,
    run: RunRecord,
    journal_exists: bool,
    leases: PlanLeases | None = None,
    policy=None,
) -> tuple[SqliteCheckpoints, dict | None]:
    """The checkpoint index, verified against the journal and rebuilt from it when it is missing, empty, corrupt, behind
    or edited. Returns the index and what was rebuilt (for the journal), or None. The journal heads the plan leases
    recorded for this run (the host-wide one outside the run directory) must be entries of the journal too."""
    db = RunDir(run_dir).checkpoints
    lease_heads = []  # checked against the journal as check_index reads it, not by reading the journal again
    for where, owner in zip(
        ("the plan directory's lease record", "the host's lease registry"), leases.owners() if leases else []
    ):
        head = owner.get("journal_head")
        if not head or owner.get("run_dir") != str(run_dir.resolve()):
            continue
        if not journal_exists and head.get("seq"):
            raise IndexInconsistent(
                f"{run_dir}: the journal is missing or empty, but {where} records {head['seq']} entries of it; refusing"
            )
        if head != run.journal_head:  # the same head is checked as run.json's
            lease_heads.append((head, where))
    if not journal_exists:
        if run.journal_seq:
            raise IndexInconsistent(
                f"{run_dir}: the journal is missing or empty, but run.json records {run.journal_seq} entries; refusing"
            )
        if db.exists() and db.stat().st_size:
            raise IndexInconsistent(
                f"{run_dir}: checkpoints.sqlite exists but the journal does not; the journal is the record — refusing"
            )
        return SqliteCheckpoints(db), None
    result, check = check_index(run_dir, plan.rows, run.journal_head, policy, run, tuple(lease_heads))
    rebuilt = None
    if check.verdict != "ok":
        kept = rebuild_index(run_dir, result)
        rebuilt = {
            "reason": check.reason,
            "verdict": check.verdict,
            "old_index_kept_as": kept.name if kept else None,
            "journal_head": result.head,
            "written_devices": len(result.written()),
        }
    return SqliteCheckpoints(db), rebuilt


def apply_plan(
    plan: LoadedPlan,
    run_dir: Path,
    options: ApplyOptions,
    progress: Callable[[str, int, int], None] | None = None,
    gateway_factory: Callable[[dict], Gateway] | None = None,
    memory_checkpoints: bool = False,
    stop: StopOnSignal | None = None,
    authority: RunAuthority | None = None,
) -> ApplyResult:
    """`authority` (issue 9's RunAuthority, checked before any gateway is built) signs the run's own records."""
    run_dir = Path(run_dir)
    lease = lock = superseded = None
    try:
        if not memory_checkpoints:
            lease = PlanLeases(plan, options.who, run_dir)
            superseded = _claim_plan(lease, plan, run_dir, options.who, options.supersede)
        run = _prepare_run_dir(plan, run_dir, options.who)
        lock = RunLock(run_dir).acquire(options.who)
        with stop or StopOnSignal() as stopper:
            return _apply_locked(
                plan,
                run_dir,
                run,
                lock,
                lease,
                superseded,
                options,
                progress,
                gateway_factory,
                memory_checkpoints,
                stopper,
                authority,
            )
    finally:
        # The plan lease first, the run lock last: nothing of this process writes after either is released.
        if lease is not None:
            lease.release()
        if lock is not None:
            lock.release()


def _apply_locked(
    plan,
    run_dir,
    run,
    lock,
    lease,
    superseded,
    options,
    progress,
    gateway_factory,
    memory_checkpoints,
    stopper,
    authority,
) -> ApplyResult:
    signed = authority.journal_fields() if authority is not None else {}  # operator-signed run events (issue 9)
    authority_approvals = authority.approvals.counted if authority is not None else []
    journal = recorder = None
    rebuilt = None
    resumed = False  # the journal had entries before this process: at-target devices may be an earlier one's writes
    if memory_checkpoints:
        checkpoints = MemoryCheckpoints()
    else:
        journal_exists = RunDir(run_dir).has_journal()
        checkpoints, rebuilt = _open_index(
            run_dir, plan, run, journal_exists, lease, authority.policy if authority is not None else None
        )
        journal = Journal(RunDir(run_dir).journal)
        checkpoints.journal = journal
        recorder = RunRecorder(run_dir, run, journal, signed)
    if recorder is not None:
        resumed = journal.seq > 0
        if not resumed:
            recorder.record_run_event(
                "run_started",
                plan_hash=plan.plan_hash,
                plan_dir=str(plan.directory.resolve()),
                approvals=authority_approvals,
                run_by=options.who,
                tool_version=__version__,
                plan_counts=plan.document["counts"],
                pid=os.getpid(),
                journal_head_signed=bool(signed),  # from here on run.json's head is operator-signed (index.py)
            )
        else:
            recorder.record_run_event(
                "run_resumed",
                plan_hash=plan.plan_hash,
                run_by=options.who,
                tool_version=__version__,
                previous_lock_holder=lock.previous,
                pid=os.getpid(),
                journal_head_signed=bool(signed),
            )
        if rebuilt:
            journal.append("checkpoints_rebuilt", **rebuilt)
        if superseded is not None:
            journal.append("supersedes", **_supersede(superseded, run_dir, options.who, signed), by=options.who)
        lease.record(run_dir, options.who, "running", journal.head)
        recorder.save(status="running")
    rows = plan.rows if not options.s1sps else plan.rows[plan.rows["s1sp"].isin(options.s1sps)]
    checkpoints.seed(plan.rows)
    if options.retry_failed:
        _reopen_failed(checkpoints, rows)
    targets = _targets(plan.rows)
    paused = dict(run.paused or {})
    threads, results, lock_results = [], {}, threading.Lock()

    def work(s1sp: str) -> None:
        gateway = None
        try:
            ep = _endpoint(plan, s1sp, options)
            gateway = gateway_factory(ep) if gateway_factory else make_gateway(ep, options)
            limiter = RateLimiter(float(ep.get("rate_per_second") or 0))
            executor = DeviceExecutor(
                gateway, checkpoints, targets, limiter, options.retry, stop=stopper.event, resumed=resumed
            )
            ops = checkpoints.open_ops(s1sp)
            stats, reason = run_s1sp(
                executor,
                ops,
                int(ep.get("concurrency", 4)),
                options.waves,
                on_progress=_counter(progress, s1sp, len(ops)),
            )
            with lock_results:
                results[s1sp] = (stats, reason)
        except Exception as exc:  # noqa: BLE001 - reported per S1SP; the other S1SPs carry on
            with lock_results:
                results[s1sp] = (None, f"error: {exc}")
        finally:
            if gateway is not None:
                gateway.close()

    for s1sp in sorted(set(rows["s1sp"])):
        paused.pop(s1sp, None)  # running again is how a paused S1SP is resumed
        t = threading.Thread(target=work, args=(s1sp,), name=f"apply-{s1sp}")
        threads.append(t)
        t.start()
    for t in threads:
        while t.is_alive():  # a timed join keeps the main thread free to take a signal
            t.join(0.2)
    # Every worker has returned: nothing of this run can write to an S1SP from here on.
    interrupted = stopper.event.is_set()
    for s1sp, (_, reason) in sorted(results.items()):
        if reason and reason != INTERRUPTED:
            paused[s1sp] = reason
            if journal:
                journal.append("paused", s1sp=s1sp, reason=reason)
    counts = checkpoints.counts()
    attention = any(c.get(FAILED, 0) or c.get(DRIFTED, 0) for c in counts.values())
    open_left = any(sum(v for k, v in c.items() if k not in FINAL_STATES) for c in counts.values())
    if interrupted:
        status = "interrupted"
    else:
        status = "paused" if paused else "incomplete" if open_left else "needs_attention" if attention else "completed"
    if not memory_checkpoints:
        write_outcomes(run_dir, checkpoints.ops_frame())
    if recorder is not None:
        journal.check_intact()  # cut or replaced while the run wrote it: refuse to seal it with a finish record
        if interrupted:
            frame = checkpoints.ops_frame()
            in_flight = frame.loc[frame["state"].isin(IN_FLIGHT), "device_id"].tolist()
            recorder.record_run_event(
                "run_interrupted",
                signal=stopper.signal_name,
                status=status,
                counts=counts,
                paused=paused,
                in_flight=in_flight,
                index_error=getattr(checkpoints, "index_error", None),
            )
        else:
            recorder.record_run_event(
                "run_finished",
                status=status,
                counts=counts,
                paused=paused,
                index_error=getattr(checkpoints, "index_error", None),
            )
        lease.record(run_dir, options.who, status, journal.head)
        recorder.save(status=status, paused=paused, counts=counts)
    else:
        run.update(status=status, paused=paused, counts=counts)
    failures = failure_reasons(checkpoints.ops_frame())
    checkpoints.close()
    return ApplyResult(run_dir, counts, paused, status, failures)


def _reopen_failed(checkpoints, rows: pd.DataFrame) -> None:
    frame = checkpoints.ops_frame()
    failed = frame[(frame["state"] == FAILED) & frame["operation_id"].isin(rows["operation_id"])]
    for op in failed.to_dict("records"):
        checkpoints.transition(
            Operation.from_record(op), "pending", {"reason": "operator asked to retry failed devices"}
        )


def dry_run(
    plan: LoadedPlan,
    options: ApplyOptions,
    gateway_factory: Callable[[dict], Gateway] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Read every planned device's live slots and say what apply would do. Sends no PUT (the gateway is wrapped).
    `progress(s1sp, devices done, devices)` is called as each device is read, like apply's."""
    rows = plan.rows if not options.s1sps else plan.rows[plan.rows["s1sp"].isin(options.s1sps)]
    checkpoints = MemoryCheckpoints()
    checkpoints.seed(rows)
    targets = _targets(rows)
    for s1sp in sorted(set(rows["s1sp"])):
        ep = _endpoint(plan, s1sp, options)
        gateway = ReadOnlyGateway(gateway_factory(ep) if gateway_factory else make_gateway(ep, options))
        try:
            executor = DeviceExecutor(
                gateway,
                checkpoints,
                targets,
                RateLimiter(float(ep.get("rate_per_second") or 0)),
                options.retry,
                dry_run=True,
            )
            ops = checkpoints.open_ops(s1sp)
            run_s1sp(
                executor,
                ops,
                int(ep.get("concurrency", 4)),
                WavePolicy(canary=10**9),
                on_progress=_counter(progress, s1sp, len(ops)),
            )
        finally:
            gateway.close()
    frame = checkpoints.ops_frame()
    frame["state"] = frame["state"].replace({NOOP: "noop (already at target)", DONE: "done"})
    return frame


def _counter(progress: Callable[[str, int, int], None] | None, s1sp: str, total: int) -> Callable[[int], None]:
    """run_s1sp's per-device hook turned into `progress(s1sp, done, total)`, starting with (s1sp, 0, total)."""
    done = [0]
    if progress:
        progress(s1sp, 0, total)

    def on_progress(n: int) -> None:
        done[0] += n  # run_s1sp calls this under its lock
        if progress:
            progress(s1sp, done[0], total)

    return on_progress


class ReadOnlyGateway:
    """Wraps a gateway for dry runs: a write is a bug and raises instead of reaching the S1SP."""

    def __init__(self, inner: Gateway):
        self.inner = inner

    def read(self, device_id):
        return self.inner.read(device_id)

    def write(self, *args, **kwargs):  # pragma: no cover - guarded by the executor's dry_run
        raise AssertionError("dry run attempted a write")

    def close(self):
        self.inner.close()


def run_counts_table(counts: dict) -> dict:
    return {s1sp: {s: c.get(s, 0) for s in STATES} for s1sp, c in sorted(counts.items())}
