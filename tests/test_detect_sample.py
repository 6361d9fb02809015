"""`remediation detect` on the bundled sample case: the table, the files, and counts that reconcile."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from remediation.cli import main
from remediation.model import CATEGORIES, FINDING_COLUMNS
from tests.support import REPO, SAMPLE_CASE

DATA = REPO / "sample_data"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect")
    result = CliRunner().invoke(main, ["detect", "--config", str(SAMPLE_CASE), "--out", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output + result.stderr
    return result, out


def test_prints_the_category_table(run):
    result, _ = run
    for category in CATEGORIES:
        assert category in result.stdout
    assert "WRONG_NO: slot owner" in result.stdout and "reconciled" in result.stdout


def test_findings_match_what_the_generator_intended(run):
    _, out = run
    findings = pd.read_parquet(out / "findings.parquet")
    assert list(findings.columns[: len(FINDING_COLUMNS)]) == list(FINDING_COLUMNS)
    intended = pd.read_csv(DATA / "intended_categories.csv", keep_default_na=False)
    merged = findings.merge(intended, on="device_id", how="outer", suffixes=("", "_intended"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["category"] == merged["category_intended"]).all()
    assert (
        merged["cause"].astype(str) == merged["cause_intended"]
    ).all()  # contract v2: the cause is what was meant too
    assert set(findings["category"]) == set(CATEGORIES)  # every category occurs in the sample


def test_rows_read_match_the_files_counted_independently(run):
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    counted = {
        "moc_anchor_slots.csv": len((DATA / "moc_anchor_slots.csv").read_text(encoding="utf-8").splitlines()) - 1,
        "foc_anchor_slots.jsonl": len((DATA / "foc_anchor_slots.jsonl").read_text().splitlines()),
        "ioc_anchor_slots.parquet": pq.ParquetFile(DATA / "ioc_anchor_slots.parquet").metadata.num_rows,
        "rdp_electricity.csv": len((DATA / "rdp_electricity.csv").read_text().splitlines()) - 1,
        "rdp_gas.csv": len((DATA / "rdp_gas.csv").read_text().splitlines()) - 1,
    }
    assert {f["path"].rsplit("/", 1)[-1]: f["rows_read"] for f in summary["files"]} == counted
    extract_rows = sum(v for k, v in counted.items() if "anchor" in k)
    assert sum(summary["rows_by_category"].values()) == extract_rows == summary["rows_read"]["extracts"]
    findings = pd.read_parquet(out / "findings.parquet")
    assert findings["rows"].sum() == extract_rows
    for s1sp, counts in summary["devices_by_s1sp"].items():
        assert sum(counts.values()) == (findings["s1sp"] == s1sp).sum()
    assert summary["devices_by_category"] == {c: int((findings["category"] == c).sum()) for c in CATEGORIES}


def test_quarantine_names_file_row_field_and_reason_for_every_invalid_device(run):
    _, out = run
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str)
    assert list(quarantine.columns) == ["file", "s1sp", "row", "field", "reason", "value"]
    assert quarantine[["file", "row", "field", "reason"]].notna().all().all()
    findings = pd.read_parquet(out / "findings.parquet")
    invalid = findings[findings["category"] == "INVALID_INPUT"]
    quarantined = set(zip(quarantine["file"].str.rsplit("/", n=1).str[-1], quarantine["row"].astype(int)))
    # every INVALID_INPUT device points at a quarantined row (its first row, or the detail says another row)
    for f in invalid.itertuples():
        assert (f.source_file, f.source_row) in quarantined or "another row" in f.detail


def test_csv_holds_exactly_the_non_ok_findings_of_the_parquet(run):
    """Contract v2: findings.parquet has every device, the CSV only those that need someone's attention."""
    _, out = run
    a = pd.read_parquet(out / "findings.parquet")
    b = pd.read_csv(out / "findings.csv", dtype=str, keep_default_na=False)
    a = a[a["category"].astype(str) != "OK"]
    assert len(b) > 0 and "OK" not in set(b["category"])
    assert a["device_id"].tolist() == b["device_id"].tolist()
    assert a["category"].astype(str).tolist() == b["category"].tolist()


def test_wrong_owner_matrix_sums_to_wrong_devices(run):
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    assert sum(r["devices"] for r in summary["wrong_owner_matrix"]) == summary["devices_by_category"]["WRONG_NO"]
    labels = {r["wrong_owner"] for r in summary["wrong_owner_matrix"]}
    assert any("(supplier certificate)" in label for label in labels)
    assert not any("untrusted" in label for label in labels)  # untrusted certificates are SECURITY_HOLD, never WRONG_NO


def test_sample_exercises_the_version_2_categories_and_causes(run):
    """Contract v2: every WRONG_NO and EXPIRED_OR_REVOKED cause, the new categories' causes, GPF and out-of-scope
    devices, IDNOs (IPNL 24, GGEN 33) and iGTs in the registry, and the headline lock-out figures. The sample's
    registry covers every RDP NO (so its plan needs no --allow-unknown-no); gaps are exercised in test_detect_v2."""
    _, out = run
    summary = json.loads((out / "summary.json").read_text())
    causes = summary["devices_by_cause"]
    assert set(causes["WRONG_NO"]) == {
        "previous_no_of_mpxn",
        "other_no_same_fuel",
        "other_fuel_no",
        "non_no_role",
        "unregistered_entity",
    }
    assert set(causes["EXPIRED_OR_REVOKED"]) == {"expired", "revoked"}
    assert set(causes["SECURITY_HOLD"]) == {"untrusted_issuer", "policy_not_accepted", "profile_violation"}
    assert set(causes["PENDING_NO_CHANGE"]) == {"slots_hold_incoming_no", "change_of_no_pending"}
    assert set(causes["NO_RDP"]) == {"no_registration", "registration_ended", "registration_not_yet_effective"}
    assert causes["OUT_OF_SCOPE"] == {"device_type_without_no_slots": summary["devices_by_category"]["OUT_OF_SCOPE"]}
    for category, by in causes.items():
        assert sum(by.values()) == summary["devices_by_category"][category] and "" not in by
    findings = pd.read_parquet(out / "findings.parquet")
    assert {"GPF", "CHF"} <= set(findings["device_type"]) and (
        findings.loc[findings["device_type"] == "GPF", "category"] == "OK"
    ).any()
    assert summary["registry_gaps"] == []
    for no, prefix in (("GGEN", "33"), ("IPNL", "24")):
        assert (
            findings.loc[(findings["registered_no"] == no) & (findings["category"] != "INVALID_INPUT"), "mpxn"]
            .str.startswith(prefix)
            .all()
        )
    assert {"IPNL", "GGEN", "ESP", "GTC"} <= set(findings["registered_no"].dropna())
    locked = summary["no_locked_out"]
    expected = findings["category"].isin(["WRONG_NO", "SLOT_EMPTY", "KEY_USAGE_MISMATCH"]) | (
        (findings["category"] == "EXPIRED_OR_REVOKED")
        & ((findings["cause"] == "revoked") | (findings["s1sp"] == "MOC"))
    )  # MOC enforces validity
    assert findings["no_locked_out"].tolist() == expected.tolist() and locked["devices"] == int(expected.sum())
    assert sum(locked["by_s1sp"].values()) == locked["devices"] == sum(locked["by_registered_no"].values())
    assert all(
        h["issuer"] and h["serial"] and h["subject"] and len(h["fingerprint"]) == 64 for h in summary["security_hold"]
    )
    assert sum(h["devices"] for h in summary["security_hold"]) >= summary["devices_by_category"]["SECURITY_HOLD"]


def test_detect_is_deterministic(run, tmp_path):
    _, out = run
    again = CliRunner().invoke(main, ["detect", "--config", str(SAMPLE_CASE), "--out", str(tmp_path)])
    assert again.exit_code == 0
    for name in ("findings.parquet", "findings.csv", "quarantine.csv", "summary.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_devices_are_found_by_id_in_any_spelling():
    """Detection.positions_of (used by verify): every readable id finds its own finding; others get -1."""
    import tempfile

    from remediation.pipeline import run_detect

    with tempfile.TemporaryDirectory() as out:
        detection = run_detect(SAMPLE_CASE, out).detection
    findings = detection.findings
    readable = findings["device_id"].str.fullmatch(r"([0-9A-F]{2}-){7}[0-9A-F]{2}")
    ids = findings.loc[readable, "device_id"]
    positions = detection.positions_of(ids)
    assert positions.tolist() == findings.index[readable].tolist()
    spelled = ids.str.replace("-", "").str.lower()  # the MOC spelling
    assert detection.positions_of(spelled).tolist() == positions.tolist()
    unreadable = findings.loc[~readable, "device_id"].tolist()
    assert unreadable and detection.positions_of([*unreadable, "FF-FF-FF-FF-FF-FF-FF-FF", ""]).tolist() == [-1] * (
        len(unreadable) + 2
    )
