"""Malformed inputs: each gives exit 2 and one line naming the file and the field; tolerable quirks are accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from remediation.cli import main
from tests.support import REPO


@pytest.fixture()
def sample(tmp_path) -> Path:
    """A private copy of the sample case (configs + data) that a test may damage."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


def detect(root: Path):
    result = CliRunner().invoke(
        main, ["detect", "--config", str(root / "configs" / "sample.toml"), "--out", str(root / "out")]
    )
    return result


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def moc(root):
    return root / "sample_data" / "moc_anchor_slots.csv"


def test_truncated_csv(sample):
    data = moc(sample).read_bytes()
    moc(sample).write_bytes(data[: len(data) - 700])  # cut inside the last row's certificate
    line = assert_one_line_error(detect(sample), "moc_anchor_slots.csv", "field '")
    assert "truncated or malformed" in line


def test_missing_column(sample):
    text = moc(sample).read_text(encoding="utf-8").replace("EXTRACT_TS", "EXTRACT_TIME", 1)
    moc(sample).write_text(text, encoding="utf-8", newline="")
    assert_one_line_error(detect(sample), "moc_anchor_slots.csv", "field 'EXTRACT_TS'", "missing")


def test_empty_file(sample):
    moc(sample).write_bytes(b"")
    assert_one_line_error(detect(sample), "moc_anchor_slots.csv", "empty")


def test_parquet_wrong_type(sample):
    path = sample / "sample_data" / "ioc_anchor_slots.parquet"
    table = pq.read_table(path)
    numbers = pa.array([int(v) if v.isdigit() else 0 for v in table.column("mpxn").to_pylist()], pa.int64())
    pq.write_table(table.set_column(table.schema.get_field_index("mpxn"), "mpxn", numbers), path)
    assert_one_line_error(detect(sample), "ioc_anchor_slots.parquet", "field 'mpxn'", "int64", "expected text")


def test_not_a_parquet_file(sample):
    (sample / "sample_data" / "ioc_anchor_slots.parquet").write_bytes(b"PAR1 this is not really parquet")
    assert_one_line_error(detect(sample), "ioc_anchor_slots.parquet", "Parquet")


def test_json_line_not_json(sample):
    path = sample / "sample_data" / "foc_anchor_slots.jsonl"
    lines = path.read_text().splitlines()
    lines[9] = lines[9][:50]
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(detect(sample), "foc_anchor_slots.jsonl", "row 10")


def test_json_wrong_type(sample):
    path = sample / "sample_data" / "foc_anchor_slots.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[4])
    record["device"]["supplyPoint"] = {"mpan": record["device"]["supplyPoint"]}
    lines[4] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(detect(sample), "foc_anchor_slots.jsonl", "device.supplyPoint")


def test_dialect_without_a_required_column(sample):
    dialect = sample / "configs" / "dialects" / "moc.toml"
    dialect.write_text(dialect.read_text().replace('mpxn = "SUPPLY_POINT_REF"\n', ""))
    assert_one_line_error(detect(sample), "moc.toml", "field 'columns.mpxn'")


def test_case_file_pointing_at_a_missing_file(sample):
    (sample / "sample_data" / "rdp_gas.csv").unlink()
    assert_one_line_error(detect(sample), "sample.toml", "inputs.rdp[1].path", "does not exist")


def test_bad_orl_serial(sample):
    orl = sample / "sample_data" / "pki" / "orl.csv"
    orl.write_text(orl.read_text() + "XYZ,keyCompromise\n")
    assert_one_line_error(detect(sample), "orl.csv", "field 'serial'", "row ")


def baseline_counts(root):
    result = detect(root)
    assert result.exit_code == 0, result.output
    return json.loads((root / "out" / "summary.json").read_text())


def test_bom_and_line_endings_are_accepted(sample):
    before = baseline_counts(sample)
    moc(sample).write_bytes(b"\xef\xbb\xbf" + moc(sample).read_bytes().replace(b"\r\n", b"\n"))  # BOM, LF
    rdp = sample / "sample_data" / "rdp_electricity.csv"
    rdp.write_bytes(b"\xef\xbb\xbf" + rdp.read_bytes().replace(b"\n", b"\r\n"))  # BOM, CRLF
    after = baseline_counts(sample)
    assert after["devices_by_s1sp"] == before["devices_by_s1sp"] and after["rows_read"] == before["rows_read"]


def test_header_only_extract_reads_zero_rows(sample):
    moc(sample).write_text(
        moc(sample).read_text(encoding="utf-8").splitlines()[0] + "\r\n", encoding="utf-8", newline=""
    )
    summary = baseline_counts(sample)
    moc_file = next(f for f in summary["files"] if f["path"].endswith("moc_anchor_slots.csv"))
    assert moc_file["rows_read"] == 0 and summary["devices_by_s1sp"]["MOC"]["OK"] == 0


def test_bad_as_of_option_is_a_usage_error(sample):
    result = CliRunner().invoke(
        main,
        [
            "detect",
            "--config",
            str(sample / "configs" / "sample.toml"),
            "--out",
            str(sample / "o"),
            "--as-of",
            "20/11/2026",
        ],
    )
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.stderr
