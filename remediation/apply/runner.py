"""One apply invocation over a run directory: lock, journal, checkpoints, one worker group per S1SP, outcomes."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.apply.checkpoint import DONE, DRIFTED, FAILED, FINAL_STATES, NOOP, STATES, MemoryCheckpoints, SqliteCheckpoints
from remediation.apply.executor import DeviceExecutor, RetryPolicy, run_s1sp
from remediation.apply.gateway import Gateway, HttpGateway
from remediation.apply.lock import RunLock
from remediation.apply.pacing import RateLimiter, WavePolicy
from remediation.authority import RunAuthority, token_for_endpoint
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.journal import Journal
from remediation.outputs import write_csv, write_json, write_parquet
from remediation.plan import LoadedPlan

RUN_SCHEMA = "remediation/run/1"
OUTCOME_COLUMNS = [
    "device_id", "s1sp", "operation_id", "state", "attempts", "prior_ds_fp", "prior_ka_fp", "final_ds_fp", "final_ka_fp",
    "target_ds_fp", "target_ka_fp", "expected_ds", "expected_ka", "last_error",
]  # fmt: skip


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


@dataclass
class ApplyResult:
    run_dir: Path
    counts: dict
    paused: dict
    status: str


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
    return HttpGateway(ep["base_url"], token=token, timeout=options.timeout, concurrency=int(ep.get("concurrency", 4)),
                       client_cert=options.client_cert, ca_bundle=options.ca_bundle)  # fmt: skip


def _targets(rows: pd.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """operation id -> certificates to write; "" in a plan (an empty slot, e.g. restored by a rollback) is sent as null."""
    return {op: (ds or None, ka or None) for op, ds, ka in zip(rows["operation_id"], rows["target_ds_cert"], rows["target_ka_cert"])}


# Detection results a plan or run directory carries along, so reports and audit exports can be made from it alone.
CARRIED_FILES = ("findings.parquet", "input_rows.parquet", "summary.json", "quarantine.csv")


def read_run(run_dir: Path) -> dict:
    """run.json of a run directory; an input error (exit 2) when the directory is not one."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise InputError("not a run directory (no run.json)", file=str(run_dir))
    return json.loads(path.read_text())


def carry_files(source: Path, target: Path, names=CARRIED_FILES) -> None:
    for name in names:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def _prepare_run_dir(plan: LoadedPlan, run_dir: Path, who: str) -> dict:
    run_json = run_dir / "run.json"
    if run_json.exists():
        run = read_run(run_dir)
        if run.get("plan_hash") != plan.plan_hash:
            raise SafetyRefusal(f"run {run_dir} belongs to plan {run.get('plan_hash', '?')[:12]}…, not {plan.plan_hash[:12]}…; use a new run directory")
        return run
    run_dir.mkdir(parents=True, exist_ok=True)
    carry_files(plan.directory, run_dir, ("plan.json", *CARRIED_FILES))
    run = {"schema": RUN_SCHEMA, "plan_hash": plan.plan_hash, "plan_dir": str(plan.directory.resolve()), "created_by": who,
           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "status": "new", "paused": {}}  # fmt: skip
    write_json(run_json, run)
    return run


def write_outcomes(run_dir: Path, ops: pd.DataFrame) -> pd.DataFrame:
    """outcomes.parquet/.csv of a run from its checkpointed ops (one row per planned device)."""
    ops = ops.copy()
    for col in OUTCOME_COLUMNS:
        if col not in ops.columns:
            ops[col] = None
    outcomes = ops[OUTCOME_COLUMNS]
    write_parquet(run_dir / "outcomes.parquet", outcomes)
    write_csv(run_dir / "outcomes.csv", outcomes)
    return outcomes


def apply_plan(plan: LoadedPlan, run_dir: Path, options: ApplyOptions, progress: Callable[[str, int, int], None] | None = None,
               gateway_factory: Callable[[dict], Gateway] | None = None, memory_checkpoints: bool = False,
               authority: RunAuthority | None = None) -> ApplyResult:  # fmt: skip
    run_dir = Path(run_dir)
    signed = authority.journal_fields() if authority else {}  # operator-signed run_started / run_resumed / run_finished
    run = _prepare_run_dir(plan, run_dir, options.who)
    lock = RunLock(run_dir).acquire(options.who)
    journal = None
    try:
        if memory_checkpoints:
            checkpoints = MemoryCheckpoints()
        else:
            journal = Journal(run_dir / "journal.jsonl")
            checkpoints = SqliteCheckpoints(run_dir / "checkpoints.sqlite", journal)
        if journal is not None:
            if journal.seq == 0:
                journal.append("run_started", plan_hash=plan.plan_hash, plan_dir=str(plan.directory.resolve()),
                               approvals=authority.approvals.counted if authority else [],
                               run_by=options.who, tool_version=__version__, plan_counts=plan.document["counts"], **signed)  # fmt: skip
            else:
                journal.append("run_resumed", plan_hash=plan.plan_hash, run_by=options.who, tool_version=__version__,
                               previous_lock_holder=lock.previous, **signed)  # fmt: skip
        rows = plan.rows if not options.s1sps else plan.rows[plan.rows["s1sp"].isin(options.s1sps)]
        checkpoints.seed(plan.rows)
        if options.retry_failed:
            _reopen_failed(checkpoints, rows)
        targets = _targets(plan.rows)
        paused = dict(run.get("paused", {}))
        threads, results, lock_results = [], {}, threading.Lock()

        def work(s1sp: str) -> None:
            ep = _endpoint(plan, s1sp, options)
            gateway = gateway_factory(ep) if gateway_factory else make_gateway(ep, options)
            try:
                limiter = RateLimiter(float(ep.get("rate_per_second") or 0))
                executor = DeviceExecutor(gateway, checkpoints, targets, limiter, options.retry)
                ops = checkpoints.open_ops(s1sp)
                done = [0]

                def on_progress(n: int) -> None:
                    done[0] += n
                    if progress:
                        progress(s1sp, done[0], len(ops))

                if progress:
                    progress(s1sp, 0, len(ops))
                stats, reason = run_s1sp(executor, ops, int(ep.get("concurrency", 4)), options.waves, on_progress=on_progress)
                with lock_results:
                    results[s1sp] = (stats, reason)
            except Exception as exc:  # noqa: BLE001 - reported per S1SP; the other S1SPs carry on
                with lock_results:
                    results[s1sp] = (None, f"error: {exc}")
            finally:
                gateway.close()

        for s1sp in sorted(set(rows["s1sp"])):
            paused.pop(s1sp, None)  # running again is how a paused S1SP is resumed
            t = threading.Thread(target=work, args=(s1sp,), name=f"apply-{s1sp}")
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        for s1sp, (_, reason) in results.items():
            if reason:
                paused[s1sp] = reason
                if journal:
                    journal.append("paused", s1sp=s1sp, reason=reason)
        counts = checkpoints.counts()
        attention = any(c.get(FAILED, 0) or c.get(DRIFTED, 0) for c in counts.values())
        open_left = any(sum(v for k, v in c.items() if k not in FINAL_STATES) for c in counts.values())
        status = "paused" if paused else "incomplete" if open_left else "needs_attention" if attention else "completed"
        if not memory_checkpoints:
            write_outcomes(run_dir, checkpoints.ops_frame())
        if journal:
            journal.append("run_finished", status=status, counts=counts, paused=paused, **signed)
        run.update(status=status, paused=paused, counts=counts, updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write_json(run_dir / "run.json", run)
        checkpoints.close()
        return ApplyResult(run_dir, counts, paused, status)
    finally:
        lock.release()


def _reopen_failed(checkpoints, rows: pd.DataFrame) -> None:
    frame = checkpoints.ops_frame()
    failed = frame[(frame["state"] == FAILED) & frame["operation_id"].isin(rows["operation_id"])]
    for op in failed.to_dict("records"):
        checkpoints.transition(op, "pending", {"reason": "operator asked to retry failed devices"})


def dry_run(plan: LoadedPlan, options: ApplyOptions, gateway_factory: Callable[[dict], Gateway] | None = None) -> pd.DataFrame:
    """Read every planned device's live slots and say what apply would do. Sends no PUT (the gateway is wrapped)."""
    rows = plan.rows if not options.s1sps else plan.rows[plan.rows["s1sp"].isin(options.s1sps)]
    checkpoints = MemoryCheckpoints()
    checkpoints.seed(rows)
    targets = _targets(rows)
    for s1sp in sorted(set(rows["s1sp"])):
        ep = _endpoint(plan, s1sp, options)
        gateway = ReadOnlyGateway(gateway_factory(ep) if gateway_factory else make_gateway(ep, options))
        try:
            executor = DeviceExecutor(gateway, checkpoints, targets, RateLimiter(float(ep.get("rate_per_second") or 0)), options.retry, dry_run=True)
            run_s1sp(executor, checkpoints.open_ops(s1sp), int(ep.get("concurrency", 4)), WavePolicy(canary=10**9))
        finally:
            gateway.close()
    frame = checkpoints.ops_frame()
    frame["state"] = frame["state"].replace({NOOP: "noop (already at target)", DONE: "done"})
    return frame


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
