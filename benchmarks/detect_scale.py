"""Detect at national scale against a hand-written DuckDB reference, in the same run.

    python benchmarks/detect_scale.py [--devices 10000000] [--data bench_data/10m]

Generates the case if it is not there (benchmarks/generate_scale.py), prepares the reference's certificate facts
(not timed), then runs `remediation detect` and the DuckDB query (benchmarks/duckdb_reference.py) each in its own
process, timing the wall clock and reading each process's peak RSS from the kernel (wait4). Prints both times, the
ratio, the peak RSS of each, and whether detect's, DuckDB's and the generator's category counts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit code) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024 / 1024, 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args(argv)
    data = args.data or ROOT / "bench_data" / f"{args.devices // 1_000_000}m"
    python = sys.executable
    if not (data / "expected.json").exists():
        print(f"generating {args.devices:,} devices in {data} ...", flush=True)
        subprocess.run(
            [
                python,
                str(ROOT / "benchmarks" / "generate_scale.py"),
                "--devices",
                str(args.devices),
                "--out",
                str(data),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(
        [
            python,
            "-c",
            f"import sys; sys.path.insert(0, 'benchmarks'); import duckdb_reference as d; d.prepare_facts({str(data)!r})",
        ],
        cwd=ROOT,
        check=True,
    )
    expected = json.loads((data / "expected.json").read_text())
    size = sum(
        p.stat().st_size for p in data.iterdir() if p.is_file() and "anchor" in p.name or p.name.startswith("rdp")
    )
    print(
        f"case: {expected['devices']:,} devices, {sum(expected['rows'].values()):,} extract rows, {size / 1e9:.1f} GB of extracts and RDP; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    out = data / "detect-out"
    detect_s, detect_gb, _ = timed(
        [str(ROOT / ".venv" / "bin" / "remediation"), "detect", "--config", str(data / "case.toml"), "--out", str(out)]
    )
    summary = json.loads((out / "summary.json").read_text())
    print(f"detect done: {detect_s:.1f} s, peak RSS {detect_gb:.2f} GB", flush=True)
    result_file = data / "duckdb-out.json"
    with open(result_file, "w") as fh:
        duck_s, duck_gb, _ = timed(
            [
                python,
                str(ROOT / "benchmarks" / "duckdb_reference.py"),
                str(data),
                str(data / "duckdb-findings.parquet"),
            ],
            stdout=fh,
        )
    duck = json.loads(result_file.read_text().strip().splitlines()[-1])

    agree_detect = summary["devices_by_category"] == {
        **{c: 0 for c in summary["devices_by_category"]},
        **expected["devices_by_category"],
    }
    agree_duck = {k: v for k, v in duck["devices_by_category"].items() if v} == {
        k: v for k, v in summary["devices_by_category"].items() if v
    }
    wanted_causes = {c: {k: n for k, n in by.items() if n} for c, by in expected.get("devices_by_cause", {}).items()}
    agree_causes = {c: by for c, by in summary.get("devices_by_cause", {}).items()} == {
        c: by for c, by in wanted_causes.items() if by
    }
    print(f"detect (remediation detect, all outputs written): {detect_s:8.1f} s   peak RSS {detect_gb:5.2f} GB")
    print(f"DuckDB reference query (same files, same rules):  {duck_s:8.1f} s   peak RSS {duck_gb:5.2f} GB")
    print(f"ratio detect / DuckDB: {detect_s / duck_s:.2f}x   (target <= 2.0x; detect RSS target < 2.5 GB)")
    print(f"cause counts: detect == generator intent: {agree_causes}")
    print(
        f"category counts: detect == generator intent: {agree_detect}; detect == DuckDB: {agree_duck}; "
        f"rows accounted {sum(summary['rows_by_category'].values()):,} of {summary['rows_read']['extracts']:,}"
    )


if __name__ == "__main__":
    main()
