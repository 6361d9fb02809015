"""Kill apply with SIGKILL at random instants, at least 20 times, against a faulty simulator; resume each time.

The simulator's own write log must show: every planned, undrifted device written exactly once and now at target,
no write outside the plan, no write to a device that drifted between plan and apply.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pandas as pd
import pytest

from remediation.evidence.journal import verify_journal
from remediation.simulator.service import make_drift
from tests.simulation import api_writes, apply_command, planned_case, start_sim
from tests.support import REPO, key_env

KILLS = 20


def done_count(run_dir) -> int:
    db = run_dir / "checkpoints.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM ops WHERE state IN ('done','noop','drifted','failed')").fetchone()[0]


def size(path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.mark.slow
def test_sigkill_at_random_points_never_double_writes(tmp_path):
    rng = random.Random(20261125)
    _, config, plan_dir = planned_case(tmp_path, wrong=520, ok=10)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=20ms,error=0.05,drop=0.05,seed=5")
    plan = pd.read_parquet(plan_dir / "plan.parquet")
    drifted = set(rng.sample(list(plan["device_id"]), 6))
    make_drift(sim.store, sorted(drifted), 0, 0)
    run_dir = tmp_path / "run"
    command = apply_command(plan_dir, run_dir, sim, by="sigkill-test")
    env = {**os.environ, **key_env("carol")}  # the operator's key signs each run record
    progress = []
    try:
        kills = 0
        while kills < KILLS:
            journal = run_dir / "journal.jsonl"
            before = journal.stat().st_size if journal.exists() else 0
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # A random instant chosen from what the process has done, not from the clock: its start-up (imports, plan
            # and signature checks) takes from under a second to several on a loaded machine, and fixed sleeps landed
            # most kills there. Every fifth kill lands during start-up; the others once this process has journaled
            # its first entry, at a random point of its writing.
            if kills % 5 != 4:
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline and size(journal) <= before:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.2, 1.4))
            else:
                time.sleep(rng.uniform(0.1, 0.8))
            if proc.poll() is not None:
                break  # finished before we could kill it: the work is done
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            progress.append(done_count(run_dir))
        for _ in range(5):  # then run to completion
            final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
            if (
                final.returncode in (0, 1)
                and "completed" in final.stdout + final.stderr
                or "needs_attention" in final.stdout
            ):
                break
    finally:
        sim.stop()

    print(
        f"\n{kills} SIGKILLs; devices final after each kill: {progress}; API writes {len(api_writes(tmp_path / 'moc.sqlite'))}; "
        f"planned {len(plan)}, drifted {len(drifted)}"
    )
    assert kills >= KILLS, f"only {kills} kills happened before apply finished; progress {progress}"
    assert len(set(progress)) > KILLS // 2, f"kills did not land mid-run: {progress}"
    writes = api_writes(tmp_path / "moc.sqlite")
    per_device = Counter(device for device, _ in writes)
    planned = set(plan["device_id"])
    assert set(per_device) == planned - drifted  # every planned undrifted device written ...
    assert max(per_device.values()) == 1  # ... exactly once
    assert not set(per_device) - planned  # nothing outside the plan
    assert not set(per_device) & drifted  # nothing to a drifted device
    op_of = dict(zip(plan["device_id"], plan["operation_id"]))
    assert all(op == op_of[device] for device, op in writes)
    with sqlite3.connect(tmp_path / "moc.sqlite") as conn:
        slots = dict(((d, (ds, ka)) for d, ds, ka in conn.execute("SELECT device_id, ds, ka FROM devices")))
    for r in plan.itertuples():
        if r.device_id not in drifted:
            assert slots[r.device_id] == (r.target_ds_cert, r.target_ka_cert)
    with sqlite3.connect(run_dir / "checkpoints.sqlite") as conn:
        states = dict(conn.execute("SELECT device_id, state FROM ops").fetchall())
    assert {d for d, s in states.items() if s == "drifted"} == drifted
    assert {d for d, s in states.items() if s == "done"} == planned - drifted
    ok, why = verify_journal(run_dir / "journal.jsonl")
    assert ok, why
