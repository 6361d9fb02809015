"""Soak: interrupt apply at random instants, alternating SIGINT (orderly stop) and SIGKILL (none), at least 20 times,
against a simulator with 10% injected faults; resume each time, then finish.

The simulator's write log must show exactly one effective commit per planned device; every planned device must end
at target or be reported (failed or drifted, with its reason); the journal must verify and so must a signed export.
A larger run of the same soak: `python benchmarks/apply_soak.py`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from remediation import pipeline
from remediation.evidence.hashing import sha256_file
from remediation.evidence.journal import read_journal, verify_journal
from tests.simulation import api_writes, apply_command, planned_case, start_sim
from tests.support import REPO, key_env, signer

FAULTS = "latency=10ms,error=0.05,throttle=0.03,drop=0.02"  # 10% of requests fail or lose their answer


def soak(root: Path, interruptions: int = 20, devices: int = 400, seed: int = 20261126) -> dict:
    rng = random.Random(seed)
    _, config, plan_dir = planned_case(root, wrong=devices, ok=5)
    sim = start_sim(root / "moc.sqlite", config, faults=f"{FAULTS},seed={seed % 1000}")
    plan = pd.read_parquet(plan_dir / "plan.parquet")
    run_dir = root / "run"
    command = apply_command(plan_dir, run_dir, sim, "--timeout", "2", by="soak", max_wave=30)
    env = {**os.environ, **key_env("carol")}
    done, stops, progress = 0, [], []
    try:
        while len(stops) < interruptions:
            journal = run_dir / "journal.jsonl"
            before = journal.stat().st_size if journal.exists() else 0
            proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            # At a random instant once this process has started writing (start-up time varies with the machine's load);
            # every fourth one during start-up instead, when no handler is installed yet.
            if len(stops) % 4 != 2:
                deadline = time.monotonic() + 30
                while (
                    proc.poll() is None
                    and time.monotonic() < deadline
                    and (journal.stat().st_size if journal.exists() else 0) <= before
                ):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.15, 0.8))
            else:
                time.sleep(rng.uniform(0.2, 0.8))
            if proc.poll() is not None:
                break  # finished before it could be interrupted
            how = (signal.SIGINT, signal.SIGKILL)[len(stops) % 2]
            sent = time.monotonic()
            proc.send_signal(how)
            _, err = proc.communicate(timeout=30)
            stops.append((how.name, proc.returncode, round(time.monotonic() - sent, 2)))
            progress.append(journal.read_bytes().count(b'"event":"transition"') if journal.exists() else 0)
            assert "Traceback" not in err or how == signal.SIGINT and "KeyboardInterrupt" in err, (
                err
            )  # a SIGINT during start-up
        for _ in range(3):
            final = subprocess.run([*command, "--retry-failed"], cwd=REPO, env=env, capture_output=True, text=True)
            if final.returncode == 0:
                break
        done = final.returncode
    finally:
        sim.stop()
    return {
        "stops": stops,
        "progress": progress,
        "final": done,
        "plan": plan,
        "run_dir": run_dir,
        "db": root / "moc.sqlite",
        "sim": sim,
    }


@pytest.mark.slow
def test_soak_sigint_and_sigkill_alternating_with_faults(tmp_path):
    result = soak(tmp_path)
    stops, plan, run_dir = result["stops"], result["plan"], result["run_dir"]
    print(
        f"\ninterruptions (signal, exit code, seconds to exit): {stops}; transitions journaled after each: {result['progress']}"
    )
    assert len(stops) >= 20, stops
    assert len(set(result["progress"])) > len(stops) // 2, result["progress"]  # the interruptions landed mid-run
    assert all(rc == -signal.SIGKILL for how, rc, _ in stops if how == "SIGKILL")
    assert all(seconds < 5 for how, _, seconds in stops if how == "SIGINT")  # bounded by the 2 s request timeout
    writes = api_writes(result["db"])
    per_device = Counter(device for device, _ in writes)
    assert max(per_device.values()) == 1 and set(per_device) <= set(plan["device_id"])  # exactly one effective commit
    outcomes = pd.read_parquet(run_dir / "outcomes.parquet").set_index("device_id")
    store = result["sim"].store
    for r in plan.itertuples():
        now = store.get(r.device_id)
        at_target = (now.ds, now.ka) == (r.target_ds_cert, r.target_ka_cert)
        state = outcomes.loc[r.device_id, "state"]
        assert (at_target and state == "done" and per_device[r.device_id] == 1) or (
            state in ("failed", "drifted") and outcomes.loc[r.device_id, "last_error"]
        )
    ok, why = verify_journal(run_dir / "journal.jsonl")
    assert ok, why
    interrupted = [e for e in read_journal(run_dir / "journal.jsonl") if e["event"] == "run_interrupted"]
    assert len(interrupted) >= 5  # most SIGINTs landed after start-up and were journaled
    pipeline.run_audit_export(run_dir, tmp_path / "export", None, "soak", key=signer("carol"))
    pipeline.run_audit_verify(tmp_path / "export", None, sha256_file(tmp_path / "people.toml"))
