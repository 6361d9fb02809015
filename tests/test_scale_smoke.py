"""National-scale smoke check: one million devices across the three dialects, detected with correct counts.

Times are not asserted (benchmarks/detect_scale.py measures them); correctness at this size is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from remediation import pipeline
from tests.support import REPO

DEVICES = 1_000_000


@pytest.mark.slow
def test_one_million_devices_detected_with_exact_counts(tmp_path):
    data = tmp_path / "1m"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "generate_scale.py"), "--devices", str(DEVICES), "--out", str(data)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    expected = json.loads((data / "expected.json").read_text())
    result = pipeline.run_detect(data / "case.toml", tmp_path / "out")
    summary = result.summary.to_json()
    assert summary["devices"] == DEVICES
    assert summary["devices_by_category"] == {
        c: expected["devices_by_category"].get(c, 0) for c in summary["devices_by_category"]
    }
    assert (
        summary["devices_by_cause"] == expected["devices_by_cause"]
    )  # contract v2: every cause as the generator meant it
    assert summary["registry_gaps"] == [
        {"network_operator_id": "IDNX", "devices": expected["devices_by_category"]["UNKNOWN_NO"]}
    ]
    rows = sum(expected["rows"].values())
    assert summary["rows_read"]["extracts"] == rows == sum(summary["rows_by_category"].values())
    assert {f["path"].rsplit("/", 1)[-1]: f["rows_read"] for f in summary["files"] if f["role"] == "extract"} == {
        "moc_anchor_slots.csv": expected["rows"]["MOC"],
        "foc_anchor_slots.jsonl": expected["rows"]["FOC"],
        "ioc_anchor_slots.parquet": expected["rows"]["IOC"],
    }
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "out" / "findings.parquet").metadata.num_rows == DEVICES
    assert int(result.input_rows["n_rows"].sum()) == rows
