"""Test helpers for apply: a planned and approved case plus in-process simulators on 127.0.0.1."""

from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from remediation import pipeline
from remediation.config import load_case
from remediation.simulator.faults import FaultInjector, FaultSpec
from remediation.simulator.server import SimulatorServer, run_in_thread, serve
from remediation.simulator.service import load_from_case
from remediation.simulator.store import SlotStore
from tests.support import CaseFiles, mpan, no_cert, signer


@dataclass
class Sim:
    store: SlotStore
    server: SimulatorServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_faults(self, spec: str) -> None:
        self.server.faults = FaultInjector(FaultSpec.parse(spec))

    def writes(self) -> list[dict]:
        return self.store.writes()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_sim(db: Path, case_path: Path, s1sp: str = "MOC", faults: str = "", token: str | None = None, **tls) -> Sim:
    store = SlotStore(db)
    load_from_case(store, load_case(case_path), s1sp)
    server = serve(store, 0, FaultSpec.parse(faults), token=token, **tls)
    run_in_thread(server)
    return Sim(store, server)


# The client's request rate in the test cases ([s1sp.CODE] rate_per_second). The product's default, 20 requests/s,
# paces a real S1SP; against the simulator on 127.0.0.1 it made every apply in the suite wait on the rate limiter
# (3 requests a device: 6.7 devices/s). Tests that interrupt a run part-way pass a lower rate, so the run they interrupt
# is still going when they act.
FAST = 1000.0


def planned_case(
    root: Path, wrong: int = 30, ok: int = 5, s1sp: str = "MOC", rate: float = FAST
) -> tuple[CaseFiles, Path, Path]:
    """A case with `wrong` WRONG_NO devices and `ok` OK ones; planned by alice, approved by bob. `rate`: the S1SP's
    client-side request rate (requests/s), sealed in the plan like every [s1sp] setting."""
    case = CaseFiles(root, s1sp_settings={s1sp: {"rate_per_second": rate}})
    for i in range(wrong + ok):
        m = mpan(14, 5000 + i)
        holder = "BBBB" if i < wrong else "AAAA"
        case.device(
            f"00-1D-00-00-00-01-{i // 256:02X}-{i % 256:02X}",
            m,
            no_cert(holder, "DS"),
            no_cert(holder, "KA"),
            s1sp=s1sp,
        )
        case.register(m, "AAAA")
    config = case.write()
    plan_dir = root / "plan"
    pipeline.run_plan(config, plan_dir, key=signer("alice"))
    pipeline.run_approve(plan_dir, signer("bob"))
    return case, config, plan_dir


def apply_command(plan_dir, run_dir, sim, *extra, by: str = "carol", max_wave: int = 40) -> list[str]:
    """`python -m remediation apply` of a planned_case plan against `sim`, as a real process (signal and lock tests):
    no failure-rate pause, a canary of 5, the case's trust policy pinned."""
    return [
        sys.executable,
        "-m",
        "remediation",
        "apply",
        str(plan_dir),
        "--run",
        str(run_dir),
        "--by",
        by,
        "--endpoint",
        f"MOC={sim.url}",
        "--pause-failure-rate",
        "1.0",
        "--canary",
        "5",
        "--max-wave",
        str(max_wave),
        "--trust-policy",
        str(plan_dir.parent / "people.toml"),
        *extra,
    ]


def run_apply(plan_dir, run_dir, options, **kw):
    """pipeline.run_apply with the test operator's (carol's) key."""
    return pipeline.run_apply(plan_dir, run_dir, options, key=signer("carol"), **kw)


def run_resume(run_dir, options, **kw):
    return pipeline.run_resume(run_dir, options, key=signer("carol"), **kw)


def settled_writes(db: Path, quiet: float = 0.3) -> list[tuple]:
    """api_writes once no new write has landed for `quiet` seconds: after the client is killed, a PUT it sent may
    still be in the simulator (held by injected latency) and commit a moment later."""
    writes, since = api_writes(db), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = api_writes(db)
        if now != writes:
            writes, since = now, time.monotonic()
    return writes


def api_writes(db: Path) -> list[tuple]:
    """(device_id, operation_id) of every committed API write, read straight from the simulator's database."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT device_id, operation_id FROM writes WHERE source='api' ORDER BY seq").fetchall()
