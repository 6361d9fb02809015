"""Apply throughput against a rate-limited simulator, and the cost of durable checkpoints.

    python benchmarks/apply_rate.py [--rate 200] [--latency-ms 20] [--devices 30000]

Generates a case (benchmarks/generate_scale.py), plans and approves the MOC devices, then applies the plan twice
against a fresh simulator process whose token bucket admits RATE requests/s with a log-normal latency of median
LATENCY: once with the real checkpoints (SQLite + hash-chained journal), once with the in-memory store. Prints the
request rate each sustained as a share of RATE, and the checkpoint overhead.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remediation import pipeline  # noqa: E402
from remediation.apply.runner import ApplyOptions, apply_plan  # noqa: E402
from remediation.artefacts.plan_dir import load_plan  # noqa: E402


def start_simulator(case: Path, db: Path, rate: float, latency_ms: float) -> tuple[subprocess.Popen, str]:
    ready = db.with_suffix(".port")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "remediation",
            "simulator",
            "serve",
            "--config",
            str(case),
            "--s1sp",
            "MOC",
            "--db",
            str(db),
            "--faults",
            f"latency={latency_ms}ms,rate={rate},seed=1",
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        if ready.exists() and ready.read_text().strip():
            return proc, f"http://127.0.0.1:{ready.read_text().strip()}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not start")


def counters(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, value FROM counters").fetchall())


def one_run(case: Path, plan_dir: Path, work: Path, label: str, rate: float, latency_ms: float, memory: bool) -> dict:
    db = work / f"sim-{label}.sqlite"
    for stale in (db, db.with_suffix(".port"), Path(f"{db}-wal"), Path(f"{db}-shm")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(work / f"run-{label}", ignore_errors=True)
    proc, url = start_simulator(case, db, rate, latency_ms)
    try:
        options = ApplyOptions(who="bench", endpoints={"MOC": url}, s1sps=("MOC",))
        plan = load_plan(plan_dir)
        started = time.perf_counter()
        result = apply_plan(plan, work / f"run-{label}", options, memory_checkpoints=memory)
        seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
    c = counters(db)
    served = c.get("get", 0) + c.get("put", 0)
    throttled = c.get("fault_429", 0)
    return {
        "label": label,
        "seconds": seconds,
        "served": served,
        "throttled": throttled,
        "rate": served / seconds,
        "done": result.counts["MOC"]["done"],
        "status": result.status,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="apply-rate-"))
    data = work / "case"
    if not (data / "case.toml").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "generate_scale.py"),
                "--devices",
                str(args.devices),
                "--out",
                str(data),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    case = data / "case.toml"
    text = case.read_text()
    head, _, _ = text.partition("[s1sp.MOC]")
    case.write_text(
        head
        + f'[s1sp.MOC]\nbase_url = "http://127.0.0.1:1"\nrate_per_second = {args.rate}\nconcurrency = {args.concurrency}\n'
    )
    plan_dir = work / f"plan-r{args.rate:g}-c{args.concurrency}"  # the plan carries the S1SP's rate and concurrency
    if not (plan_dir / "plan.json").exists():
        # Unsigned (the generated case names no trust policy): apply_plan is called directly below, so this measures
        # the executor and checkpoints, not the authority checks pipeline.run_apply makes first.
        pipeline.run_plan(case, plan_dir, planner="bench-planner", s1sps=("MOC",))
    devices = load_plan(plan_dir).document["counts"]["devices"]
    print(
        f"plan: {devices} MOC devices; simulator rate limit R = {args.rate:g} req/s, median latency {args.latency_ms:g} ms, "
        f"client concurrency {args.concurrency}"
    )
    runs = [
        one_run(case, plan_dir, work, "sqlite", args.rate, args.latency_ms, memory=False),
        one_run(case, plan_dir, work, "memory", args.rate, args.latency_ms, memory=True),
    ]
    for r in runs:
        print(
            f"  {r['label']:>6} checkpoints: {r['done']} devices done in {r['seconds']:.2f}s; {r['served']} requests served "
            f"({r['throttled']} throttled) = {r['rate']:.1f} req/s = {100 * r['rate'] / args.rate:.1f}% of R"
        )
    overhead = runs[0]["seconds"] / runs[1]["seconds"] - 1
    print(f"checkpoint overhead (SQLite + journal vs in-memory, same work): {100 * overhead:+.1f}%")


if __name__ == "__main__":
    main()
