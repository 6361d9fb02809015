"""National scale end to end: every command on 10 and 15 million devices, and detect against DuckDB in the same run.

    python benchmarks/national.py [--sizes 10,15] [--pairs 2]        (make bench)

For each size it generates the case once into bench_data/<N>m (benchmarks/generate_scale.py; reused when there),
then runs each command as its own process and reads that process's wall time, user and system CPU and peak RSS
from the kernel (os.wait4: the child's own rusage, no polling). What each row measures:

- detect: `remediation detect` on the whole case (every output written), paired A B A B with the DuckDB reference
  (benchmarks/duckdb_reference.py: same files, same version 2 rules: categories, causes, lock-out flag), `--pairs`
  times, under `flock -x /tmp/fullsuite.lock` so no full test suite runs meanwhile. After every detect and every
  DuckDB run the category, cause and lock-out counts are checked equal (and against the generator's intent); any
  difference stops the benchmark. A further DuckDB run with `SET memory_limit` equal to detect's median peak RSS
  is the second reference.
- plan --from: a signed plan of every plannable device, reusing the detect result.
- verify, audit export, audit verify, notify, worklist need a run. Applying half a million devices through the
  bundled HTTP simulator would take most of an hour, so the run is the IOC share of the case: a second plan
  (`plan --from --s1sp IOC`, every plannable IOC device), approved by two approvers, applied by an operator against
  the simulator (not timed; its time is printed for information). So notify and worklist read a run of that many
  devices, and audit export/verify carry the full national findings and input trace plus that run's journal.
  verify reads fresh extracts of every device of the case: IOC from the simulator after the run (`simulator
  export`), MOC and FOC as they were (converted to the canonical dialect by DuckDB, not timed), so it detects
  again on all N million devices and reports the MOC/FOC WRONG_NO devices as residual (its exit code 1 is expected).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
REMEDIATION = str(BIN / "remediation") if (BIN / "remediation").exists() else shutil.which("remediation")
PYTHON = sys.executable
SUITE_LOCK = "/tmp/fullsuite.lock"


class Measured(dict):
    """wall, user, sys (seconds) and rss (GB) of one child process."""


def run(command: list, *, ok=(0,), env=None, stdout=None, quiet=True) -> Measured:
    """Run one child process; its own wall time, CPU and peak RSS from the kernel (wait4)."""
    started = time.perf_counter()
    out = open(stdout, "w") if stdout else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(c) for c in command],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    stderr = proc.stderr.read()  # drained before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if stdout:
        out.close()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise SystemExit(f"{' '.join(map(str, command))} exited {code}:\n{stderr.decode()[-3000:]}")
    return Measured(wall=wall, user=usage.ru_utime, sys=usage.ru_stime, rss=usage.ru_maxrss / 1024 / 1024)


@contextmanager
def suite_lock(wanted: bool = True):
    """Hold the lock full test suites take, so none runs during the timed pairs (blocks until any running one ends)."""
    if not wanted:
        yield
        return
    with open(SUITE_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the case


def ensure_case(devices: int) -> Path:
    data = ROOT / "bench_data" / f"{devices / 1_000_000:g}m"
    if not (data / "expected.json").exists():
        log(f"generating {devices:,} devices in {data}")
        run([PYTHON, ROOT / "benchmarks" / "generate_scale.py", "--devices", devices, "--out", data])
    case = data / "case.toml"
    text = case.read_text()
    # The run applies through the simulator: let the plan's pacing admit what one local simulator serves.
    patched = re.sub(r"rate_per_second = \d+", "rate_per_second = 5000", text)
    patched = re.sub(r"concurrency = \d+", "concurrency = 16", patched)
    if patched != text:
        case.write_text(patched)
    if not (data / "enforcing_s1sps.json").exists() or not (data / "cert_facts.parquet").exists():
        helper("facts", data)
    return data


def helper(task: str, *args) -> None:
    """Untimed preparation in a child process: this process stays small, because a child's peak RSS as the kernel
    reports it starts from the RSS of the process it was forked from."""
    run([PYTHON, __file__, "--helper", task, *args])


def counts_of_detect(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {
        "categories": {k: v for k, v in summary["devices_by_category"].items() if v},
        "causes": summary["devices_by_cause"],
        "locked": summary["no_locked_out"]["by_category"],
        "rows": sum(summary["rows_by_category"].values()),
    }


def counts_of_duckdb(path: Path) -> dict:
    duck = json.loads(path.read_text().strip().splitlines()[-1])
    return {
        "categories": duck["devices_by_category"],
        "causes": duck["devices_by_cause"],
        "locked": duck["locked_out_by_category"],
        "rows": duck["rows"],
    }


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------------------------------------ detect vs DuckDB


def detect_vs_duckdb(data: Path, pairs: int, expected: dict, lock: bool = True, limited_run: bool = True) -> dict:
    detect_out, duck_json = data / "detect-out", data / "duckdb-out.json"
    detect_cmd = [REMEDIATION, "detect", "--config", data / "case.toml", "--out", detect_out]
    duck_cmd = [PYTHON, ROOT / "benchmarks" / "duckdb_reference.py", data, data / "duckdb-findings.parquet"]
    intent = {
        "categories": {k: v for k, v in expected["devices_by_category"].items() if v},
        "causes": {c: {k: n for k, n in by.items() if n} for c, by in expected["devices_by_cause"].items()},
    }
    runs: dict[str, list] = {"detect": [], "duckdb": []}
    ratios = []
    with suite_lock(lock):
        for i in range(pairs):
            shutil.rmtree(detect_out, ignore_errors=True)
            a = run(detect_cmd)
            got = counts_of_detect(detect_out)
            b = run(duck_cmd, stdout=duck_json)
            ref = counts_of_duckdb(duck_json)
            for name, value in (("detect", got), ("DuckDB", ref)):
                for part in ("categories", "causes"):
                    if not same(value[part], intent[part]):
                        raise SystemExit(
                            f"{name} {part} differ from the generator's intent: {value[part]} vs {intent[part]}"
                        )
            if not same(got, ref):
                raise SystemExit(f"detect and DuckDB counts differ:\n{json.dumps(got)}\n{json.dumps(ref)}")
            runs["detect"].append(a)
            runs["duckdb"].append(b)
            ratios.append(a["wall"] / b["wall"])
            log(
                f"pair {i + 1}: detect {a['wall']:.1f}s {a['rss']:.2f} GB, DuckDB {b['wall']:.1f}s {b['rss']:.2f} GB, ratio {ratios[-1]:.2f}"
            )
        peak = statistics.median(r["rss"] for r in runs["detect"])
        limit = f"{peak:.2f}GB"
        limited = None
        if limited_run:
            try:
                limited = run([*duck_cmd, "--memory-limit", limit], stdout=duck_json)
            except SystemExit as exc:  # DuckDB may not finish within detect's memory at all: that is the finding
                lines = [x for x in str(exc).splitlines() if "Error" in x or "Exception" in x]
                limited = {"error": (lines[-1] if lines else str(exc))[-200:]}
                log(f"DuckDB with memory_limit {limit} failed: {limited['error']}")
            else:
                if not same(counts_of_duckdb(duck_json), got):
                    raise SystemExit("DuckDB under memory_limit counts differ from detect's")
                log(f"DuckDB with memory_limit {limit}: {limited['wall']:.1f}s {limited['rss']:.2f} GB")
    return {
        "runs": runs,
        "ratios": ratios,
        "limited": limited,
        "limit": limit,
        "counts": got,
        "duckdb_counts": ref,
        "intent": intent,
    }


# ------------------------------------------------------------------------------------------------ a run at scale


def make_people(work: Path) -> tuple[Path, Path]:
    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    people = [
        ("Alice Planner", "planner", "planner.alice"),
        ("Bob Approver", "approver", "approver.bob"),
        ("Dave Approver", "approver", "approver.dave"),
        ("Carol Operator", "operator", "operator.carol"),
        ("Erin Auditor", "auditor", "auditor.erin"),
    ]
    lines = ["[approval]", "quorum = 2"]
    for name, role, key in people:
        if not (keys / key).exists():
            run([REMEDIATION, "keygen", "--out", keys / key, "--comment", f"{key}@bench"])
        pub = (keys / f"{key}.pub").read_text().strip()
        lines += ["", "[[person]]", f'name = "{name}"', f'roles = ["{role}"]', f'keys = ["{pub}"]']
    policy = work / "people.toml"
    policy.write_text("\n".join(lines) + "\n")
    return keys, policy


def start_simulator(data: Path, work: Path, s1sp: str) -> tuple[subprocess.Popen, str]:
    db, ready = work / f"sim-{s1sp}.sqlite", work / f"sim-{s1sp}.port"
    proc = subprocess.Popen(
        [REMEDIATION, "simulator", "serve", "--config", data / "case.toml", "--s1sp", s1sp, "--db", db]
        + ["--ready-file", ready],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(3000):
        if ready.exists() and ready.read_text().strip():
            return proc, f"http://127.0.0.1:{ready.read_text().strip()}"
        if proc.poll() is not None:
            raise SystemExit("simulator exited before it was ready")
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("simulator did not start")


def canonical_fresh(data: Path, fresh: Path) -> None:
    """MOC and FOC as they are, in the canonical dialect verify reads (DuckDB, vectorised; not timed)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    stamp = "2026-11-21T00:00:00Z"
    con.execute(
        f"""COPY (SELECT 'MOC' AS s1sp, DEVICE_EUI AS device_id,
                  CASE DEV_TYPE WHEN 'E' THEN 'ESME' WHEN 'G' THEN 'GSME' ELSE DEV_TYPE END AS device_type,
                  SUPPLY_POINT_REF AS mpxn, NO_DIGSIG_CERT_B64 AS no_ds_cert, NO_KEYAGR_CERT_B64 AS no_ka_cert,
                  '{stamp}' AS extracted_at
           FROM read_csv('{data / "moc_anchor_slots.csv"}', header = true, all_varchar = true))
           TO '{fresh / "moc.csv"}' (HEADER, DELIMITER ',')"""
    )
    con.execute(
        f"""COPY (SELECT 'FOC' AS s1sp, device.guid AS device_id,
                  CASE upper(any_value(device.kind)) WHEN 'ELECTRICITY' THEN 'ESME' WHEN 'GAS' THEN 'GSME'
                       ELSE upper(any_value(device.kind)) END AS device_type,
                  any_value(device.supplyPoint) AS mpxn,
                  coalesce(max(slot.certificate) FILTER (WHERE slot.name = 'nwo-digital-signing'), '') AS no_ds_cert,
                  coalesce(max(slot.certificate) FILTER (WHERE slot.name = 'nwo-key-agreement'), '') AS no_ka_cert,
                  '{stamp}' AS extracted_at
           FROM read_json('{data / "foc_anchor_slots.jsonl"}', format = 'newline_delimited',
                columns = {{device: 'STRUCT(guid VARCHAR, kind VARCHAR, supplyPoint VARCHAR)',
                            slot: 'STRUCT(name VARCHAR, certificate VARCHAR)'}})
           GROUP BY device.guid)
           TO '{fresh / "foc.csv"}' (HEADER, DELIMITER ',')"""
    )
    con.close()


def commands_at_scale(data: Path, devices: int) -> dict:
    work = data / "national"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    keys, policy = make_people(work)
    env = {"REMEDIATION_TRUST_POLICY": str(policy)}
    case, detect_out = data / "case.toml", data / "detect-out"
    rows: dict[str, Measured] = {}
    plan_common = ["--config", case, "--from", detect_out, "--key", keys / "planner.alice", "--trust-policy", policy]
    plan_common += ["--change-ref", "CHG-BENCH", "--allow-unknown-no"]
    log("plan --from (every plannable device)")
    rows["plan --from"] = run([REMEDIATION, "plan", *plan_common, "--out", work / "plan"], env=env)
    planned = json.loads((work / "plan" / "plan.json").read_text())["counts"]
    log("the run: plan --from --s1sp IOC, two approvals, apply against the simulator (not timed)")
    run([REMEDIATION, "plan", *plan_common, "--s1sp", "IOC", "--out", work / "plan-ioc"], env=env)
    for who in ("approver.bob", "approver.dave"):
        run([REMEDIATION, "approve", work / "plan-ioc", "--key", keys / who, "--note", "bench"], env=env)
    started = time.perf_counter()
    sim, url = start_simulator(data, work, "IOC")
    try:
        loaded = time.perf_counter() - started
        apply = run(
            [REMEDIATION, "apply", work / "plan-ioc", "--run", work / "run", "--by", "operator.carol"]
            + ["--key", keys / "operator.carol", "--endpoint", f"IOC={url}", "--max-wave", "20000"],
            env=env,
        )
    finally:
        sim.terminate()
        sim.wait()
    run_planned = json.loads((work / "plan-ioc" / "plan.json").read_text())["counts"]
    log(f"simulator loaded in {loaded:.0f}s; apply {apply['wall']:.0f}s")
    fresh = work / "fresh"
    fresh.mkdir()
    run([REMEDIATION, "simulator", "export", "--db", work / "sim-IOC.sqlite", "--out", fresh / "ioc.csv"])
    helper("fresh", data, fresh)
    log("verify (all devices detected again from fresh extracts)")
    rows["verify"] = run(
        [
            REMEDIATION,
            "verify",
            "--config",
            case,
            "--fresh",
            fresh,
            "--plan",
            work / "plan-ioc",
            "--out",
            work / "verify",
        ],
        ok=(0, 1),
    )
    verdict = json.loads((work / "verify" / "verify.json").read_text())
    shutil.rmtree(fresh)  # as large as the extracts: room for the next size's case
    if verdict.get("planned_at_target") != verdict.get("planned"):
        raise SystemExit(f"verify: planned devices not at target after the run: {verdict}")
    log("audit export / audit verify / notify / worklist")
    rows["audit export"] = run(
        [REMEDIATION, "audit", "export", work / "run", "--out", work / "audit", "--key", keys / "auditor.erin"]
        + ["--by", "auditor.erin"],
        env=env,
    )
    policy_sha = __import__("hashlib").sha256(policy.read_bytes()).hexdigest()
    rows["audit verify"] = run([REMEDIATION, "audit", "verify", work / "audit", "--expect-policy-sha256", policy_sha])
    rows["notify"] = run([REMEDIATION, "notify", work / "run", "--out", work / "packs"], env=env)
    rows["worklist"] = run([REMEDIATION, "worklist", work / "run", "--out", work / "worklist"], env=env)
    return {
        "rows": rows,
        "planned": planned,
        "run_planned": run_planned,
        "apply": apply,
        "verify": {k: verdict[k] for k in ("devices", "residual_wrong", "planned", "planned_at_target")},
    }


# ------------------------------------------------------------------------------------------------ report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,15", help="millions of devices, comma-separated")
    parser.add_argument("--pairs", type=int, default=2, help="detect/DuckDB pairs (A B A B) per size")
    parser.add_argument("--keep", action="store_true", help="keep generated cases other than 10M (default: delete)")
    parser.add_argument("--limited-sizes", default="10", help="sizes that also run DuckDB under memory_limit")
    parser.add_argument("--report-only", action="store_true", help="print the table from bench_data/national-*.json")
    parser.add_argument("--lock-sizes", default="10,15", help="sizes whose pairs run under /tmp/fullsuite.lock")
    parser.add_argument("--helper", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.helper:
        task, *paths = args.helper
        if task == "facts":
            sys.path.insert(0, str(ROOT / "benchmarks"))
            import duckdb_reference

            duckdb_reference.prepare_facts(paths[0])
        else:
            canonical_fresh(Path(paths[0]), Path(paths[1]))
        return
    results = {}
    limited_sizes = {f"{float(s):g}" for s in args.limited_sizes.split(",") if s}
    lock_sizes = {f"{float(s):g}" for s in args.lock_sizes.split(",") if s}
    for size in [float(s) for s in args.sizes.split(",")]:
        devices = int(size * 1_000_000)
        size = f"{size:g}"
        if args.report_only:
            results[size] = json.loads((ROOT / "bench_data" / f"national-{size}m.json").read_text())
            continue
        data = ensure_case(devices)
        expected = json.loads((data / "expected.json").read_text())
        log(f"{size}M: detect vs DuckDB, {args.pairs} pairs{' (under the suite lock)' if size in lock_sizes else ''}")
        saved = ROOT / "bench_data" / f"national-{size}m.json"
        pairs = detect_vs_duckdb(data, args.pairs, expected, lock=size in lock_sizes, limited_run=size in limited_sizes)
        results[size] = {"pairs": pairs, "others": None, "expected": expected}
        saved.write_text(json.dumps(results[size], indent=2, default=dict))
        log(f"{size}M: the other commands")
        results[size]["others"] = commands_at_scale(data, devices)
        saved.write_text(json.dumps(results[size], indent=2, default=dict))
        if size != "10" and not args.keep:
            shutil.rmtree(data)
    print_table(results)


def print_table(results: dict) -> None:
    print(f"\nNational scale, {os.cpu_count()} CPUs; each row one process (wall, CPU and peak RSS from wait4).\n")
    print("| devices | command | wall s | user s | sys s | peak RSS GB |")
    print("|---|---|---:|---:|---:|---:|")
    for size, r in results.items():
        p = r["pairs"]
        for name, key in (("detect", "detect"), ("DuckDB reference, unlimited memory", "duckdb")):
            runs = p["runs"][key]
            med = {k: statistics.median(x[k] for x in runs) for k in ("wall", "user", "sys", "rss")}
            print(
                f"| {size}M | {name} (median of {len(runs)}) | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.1f} | {med['rss']:.2f} |"
            )
        lim = p["limited"]
        if lim and "error" in lim:
            print(
                f"| {size}M | DuckDB reference, memory_limit {p['limit']} (detect's peak) | failed: {lim['error']} | | | |"
            )
        elif lim:
            print(
                f"| {size}M | DuckDB reference, memory_limit {p['limit']} (detect's peak) | {lim['wall']:.1f} | {lim['user']:.1f} | {lim['sys']:.1f} | {lim['rss']:.2f} |"
            )
        for name, m in (r["others"] or {"rows": {}})["rows"].items():
            print(f"| {size}M | {name} | {m['wall']:.1f} | {m['user']:.1f} | {m['sys']:.1f} | {m['rss']:.2f} |")
    print()
    for size, r in results.items():
        p = r["pairs"]
        pairs = ", ".join(f"{a['wall']:.1f}/{b['wall']:.1f}" for a, b in zip(p["runs"]["detect"], p["runs"]["duckdb"]))
        print(
            f"{size}M detect/DuckDB pairs (A B): {pairs} s; ratios {', '.join(f'{x:.2f}' for x in p['ratios'])}; "
            f"median ratio {statistics.median(p['ratios']):.2f}x"
        )
        o = r["others"]
        if not o:
            continue
        print(
            f"{size}M plan --from: {o['planned']['devices']:,} devices planned; the run: {o['run_planned']['devices']:,} IOC "
            f"devices applied in {o['apply']['wall']:.0f}s (not timed above); verify read {o['verify']['devices']:,} devices, "
            f"{o['verify']['planned_at_target']:,}/{o['verify']['planned']:,} planned at target, "
            f"{o['verify']['residual_wrong']:,} residual WRONG_NO (MOC/FOC, not in the run)"
        )
    print("\ncategory counts (detect = DuckDB = generator intent, checked after every run; causes and lock-out too):\n")
    sizes = list(results)
    print("| category | " + " | ".join(f"{s}M detect | {s}M DuckDB | {s}M intent" for s in sizes) + " |")
    print("|---|" + "---:|" * (3 * len(sizes)))
    categories = sorted({c for r in results.values() for c in r["pairs"]["counts"]["categories"]})
    for c in categories:
        cells = []
        for s in sizes:
            p = results[s]["pairs"]
            cells += [
                f"{p['counts']['categories'].get(c, 0):,}",
                f"{p['duckdb_counts']['categories'].get(c, 0):,}",
                f"{p['intent']['categories'].get(c, 0):,}",
            ]
        print(f"| {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
