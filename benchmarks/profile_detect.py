"""Where detect's time goes: `remediation detect` run in-process, with wall time, user and system CPU (getrusage, so
the reader, writer and hashing threads count too), minor page faults and the peak RSS so far, stage by stage.

    python benchmarks/profile_detect.py bench_data/10m/case.toml OUT_DIR

It runs `pipeline.run_detect` itself; the stage functions are wrapped to read the clocks as each returns, nothing else.
"""

from __future__ import annotations

import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remediation import detection, pipeline  # noqa: E402
from remediation.artefacts import detect_result  # noqa: E402
from remediation.ingest import case, extracts  # noqa: E402

ROWS: list[tuple] = []
_last = [time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)]


def mark(name: str) -> None:
    now, ru = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    t0, r0 = _last
    ROWS.append(
        (
            name,
            now - t0,
            ru.ru_utime - r0.ru_utime,
            ru.ru_stime - r0.ru_stime,
            ru.ru_minflt - r0.ru_minflt,
            ru.ru_maxrss / 1024 / 1024,
        )
    )
    print(f"  {name:<34} {ROWS[-1][1]:7.1f}s", file=sys.stderr, flush=True)
    _last[:] = [now, ru]


def staged(module, name: str, label) -> None:
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        mark("joins and the rest between stages")
        out = inner(*args, **kwargs)
        mark(label(args) if callable(label) else label)
        return out

    setattr(module, name, wrapper)


def main(case_path: str, out_dir: str) -> None:
    staged(extracts, "read_extract", lambda a: f"read {a[0].s1sp} ({a[0].dialect.format}), check, intern")
    staged(case, "read_rdp", "read RDP")
    staged(detection, "find_wrong_devices", "classify (find_wrong_devices)")
    staged(detection, "detect_summary", "summary")
    staged(detect_result, "write_findings", "write findings.parquet + findings.csv")
    shutil.rmtree(out_dir, ignore_errors=True)
    pipeline.run_detect(case_path, out_dir)
    mark("rest (input rows, quarantine, summary files, certificates)")
    merged: dict[str, list] = {}
    for name, *values in ROWS:
        if name in merged:
            merged[name] = [a + b for a, b in zip(merged[name][:4], values[:4])] + [values[4]]
        else:
            merged[name] = list(values)
    print("| stage | wall s | user s | sys s | minor faults (k) | peak RSS so far GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (wall, user, sys_, faults, rss) in merged.items():
        print(f"| {name} | {wall:.1f} | {user:.1f} | {sys_:.1f} | {faults / 1000:.0f} | {rss:.2f} |")
    total = [sum(r[i] for r in ROWS) for i in (1, 2, 3, 4)]
    print(
        f"| **total** | {total[0]:.1f} | {total[1]:.1f} | {total[2]:.1f} | {total[3] / 1000:.0f} | {ROWS[-1][5]:.2f} |"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
