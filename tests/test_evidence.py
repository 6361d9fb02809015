"""Audit exports: a clean export verifies; any altered byte, entry, order or key is detected and named. Rollback."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from remediation import pipeline
from remediation.apply.runner import ApplyOptions
from remediation.artefacts.audit_export import AuditFailure, generate_key
from remediation.cli import main
from remediation.evidence.hashing import canonical_json, sha256_file
from remediation.plan import NotApproved, StalePlan
from tests.simulation import api_writes, planned_case, run_apply, start_sim
from tests.support import REPO, key_env, key_file, policy_toml, signer


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    _, config, plan_dir = planned_case(root, wrong=12, ok=4)
    sim = start_sim(root / "moc.sqlite", config, faults="drop=0.2,seed=4")
    result = run_apply(plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
    assert result.status == "completed"
    write_policy_key(root / "keys" / "audit", "erin")  # the auditor's key, in the trust policy
    pipeline.run_audit_export(root / "run", root / "export", root / "keys" / "audit.key", "carol")
    yield root, plan_dir, sim
    sim.stop()


@pytest.fixture()
def export(applied, tmp_path):
    root = applied[0]
    copy = tmp_path / "export"
    shutil.copytree(root / "export", copy)
    return copy, root / "keys" / "audit.pub", sha256_file(root / "people.toml")


def write_policy_key(stem, name):
    """`name`'s test key as stem.key (PEM, 0600) and its public key as stem.pub (PEM)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(key_file(name), stem.with_suffix(".key"))
    stem.with_suffix(".pub").write_bytes(
        signer(name).public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_clean_export_verifies(export):
    directory, pub, sha = export
    manifest = pipeline.run_audit_verify(directory, pub, sha)
    names = {f["name"] for f in manifest["files"]}
    assert {
        "findings.parquet",
        "plan.parquet",
        "plan.json",
        "approvals.json",
        "journal.jsonl",
        "outcomes.parquet",
        "outcomes.csv",
        "summary.json",
    } <= names
    result = CliRunner().invoke(
        main, ["audit", "verify", str(directory), "--pubkey", str(pub), "--expect-policy-sha256", sha]
    )
    assert result.exit_code == 0 and "verified" in result.stdout


def test_exported_findings_csv_reads_exactly_like_detects_own(applied, tmp_path):
    """One table, one CSV form: the export re-encodes findings with the writer `detect` uses (same quoting, same
    timestamp text), so an auditor can compare the two files byte for byte."""
    root, plan_dir, _ = applied
    detected = pipeline.run_detect(root / "case.toml", tmp_path / "detect")
    assert len(detected.findings) == 16
    assert (root / "export" / "findings.csv").read_bytes() == (tmp_path / "detect" / "findings.csv").read_bytes()
    assert pd.read_parquet(root / "export" / "findings.parquet").equals(
        pd.read_parquet(tmp_path / "detect" / "findings.parquet")
    )


def test_export_refuses_counts_that_do_not_reconcile_and_leaves_nothing(applied, tmp_path):
    """The outcomes are streamed and counted as they are written; if the rows traced differ from the rows read,
    the export refuses (exit 3) and leaves no unsigned files behind. Exporting into a used directory is refused."""
    root = applied[0]
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    summary = json.loads((run / "summary.json").read_text())
    summary["rows_read"]["extracts"] += 1
    (run / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(
        main,
        [
            "audit",
            "export",
            str(run),
            "--out",
            str(tmp_path / "export"),
            "--sign-key",
            str(root / "keys" / "audit.key"),
        ],
    )
    assert result.exit_code == 3 and "input rows traced" in result.stderr, result.output + result.stderr
    assert list((tmp_path / "export").iterdir()) == []
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        main,
        [
            "audit",
            "export",
            str(root / "run"),
            "--out",
            str(tmp_path / "used"),
            "--sign-key",
            str(root / "keys" / "audit.key"),
        ],
    )
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]


EXPORTED = [
    "findings.parquet",
    "findings.csv",
    "input_rows.parquet",
    "plan.parquet",
    "plan.csv",
    "plan.json",
    "approvals.json",
    "journal.jsonl",
    "outcomes.parquet",
    "outcomes.csv",
    "summary.json",
]


@pytest.mark.parametrize("name", EXPORTED)
def test_one_flipped_byte_in_any_file_is_named(export, name):
    directory, pub, sha = export
    path = directory / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(AuditFailure, match=name.replace(".", r"\.")):
        pipeline.run_audit_verify(directory, pub, sha)
    result = CliRunner().invoke(
        main, ["audit", "verify", str(directory), "--pubkey", str(pub), "--expect-policy-sha256", sha]
    )
    assert result.exit_code == 3 and name in result.stderr and len(result.stderr.strip().splitlines()) == 1


def journal_lines(directory):
    return (directory / "journal.jsonl").read_bytes().splitlines()


def write_lines(directory, lines):
    (directory / "journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _alter_entry(lines):
    entry = json.loads(lines[3])
    entry["to_state"] = "done" if entry.get("to_state") != "done" else "failed"
    return [*lines[:3], canonical_json(entry), *lines[4:]]


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_alter_entry, "journal line 5 .*previous-entry hash"),  # altered entry
        (lambda lines: [*lines[:4], lines[5], lines[4], *lines[6:]], "journal line 5"),  # two entries reordered
        (lambda lines: lines[:6] + lines[7:], "journal line 7"),  # an entry deleted
    ],
    ids=["altered", "reordered", "deleted"],
)
def test_tampered_journal_entries_are_named(export, tamper, named):
    directory, pub, sha = export
    write_lines(directory, tamper(journal_lines(directory)))
    with pytest.raises(AuditFailure, match=named):
        pipeline.run_audit_verify(directory, pub, sha)


def test_deleting_the_last_journal_entry_breaks_the_file_hash(export):
    directory, pub, sha = export
    write_lines(directory, journal_lines(directory)[:-1])
    with pytest.raises(AuditFailure, match="journal.jsonl: SHA-256 differs"):
        pipeline.run_audit_verify(directory, pub, sha)


def test_wrong_key_is_detected(export, tmp_path):
    directory, _, sha = export
    generate_key(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(AuditFailure, match="signature does not verify"):
        pipeline.run_audit_verify(directory, tmp_path / "other.pub", sha)


def test_resigned_manifest_with_another_key_is_detected(export, tmp_path, applied):
    """Someone alters a file, rewrites the manifest hashes and signs with their own key: the DCC's key rejects it."""
    from remediation.artefacts.audit_export import _sign, load_private_key
    from remediation.evidence.hashing import sha256_file

    directory, pub, sha = export
    (directory / "summary.json").write_text(
        (directory / "summary.json").read_text().replace('"carol"', '"mallory"') + " "
    )
    manifest = json.loads((directory / "manifest.json").read_text())
    for f in manifest["files"]:
        f["sha256"] = sha256_file(directory / f["name"])
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (directory / "manifest.json").write_bytes(data)
    generate_key(tmp_path / "m.key", tmp_path / "m.pub")
    import base64

    (directory / "manifest.sig").write_text(
        base64.b64encode(_sign(load_private_key(tmp_path / "m.key"), data)).decode()
    )
    with pytest.raises(AuditFailure, match="signature does not verify"):
        pipeline.run_audit_verify(directory, pub, sha)


def test_added_file_is_named(export):
    directory, pub, sha = export
    (directory / "extra.csv").write_text("x\n")
    with pytest.raises(AuditFailure, match="extra.csv"):
        pipeline.run_audit_verify(directory, pub, sha)


def test_export_is_signed_only_by_an_auditor_or_operator_key_of_the_policy(applied, tmp_path):
    """The manifest's signer is a key of the run's trust policy with the auditor or operator role: an approver's key,
    a stranger's key and a non-Ed25519 key are refused before anything is written."""
    root = applied[0]
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(tmp_path / "ec.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    os.close(fd)
    for name, code, said in (("bob", 3, "neither auditor nor operator"), ("stranger", 3, "not in the trust policy")):
        result = CliRunner().invoke(
            main, ["audit", "export", str(root / "run"), "--out", str(tmp_path / name), "--key", str(key_file(name))]
        )
        assert result.exit_code == code and said in result.stderr, result.stderr
        assert not (tmp_path / name).exists()
    result = CliRunner().invoke(
        main, ["audit", "export", str(root / "run"), "--out", str(tmp_path / "ec"), "--key", str(tmp_path / "ec.key")]
    )
    assert result.exit_code == 2 and "not an Ed25519 private key" in result.stderr
    by_operator = pipeline.run_audit_export(root / "run", tmp_path / "out", None, "carol", key=signer("carol"))
    assert by_operator.manifest["signed_by"] == "carol" and by_operator.manifest["key_id"] == signer("carol").key_id
    pipeline.run_audit_verify(tmp_path / "out", None, sha256_file(root / "people.toml"))


def test_outcomes_trace_each_device(export):
    directory, _, sha = export
    outcomes = pd.read_parquet(directory / "outcomes.parquet")
    plan = pd.read_parquet(directory / "plan.parquet")
    assert outcomes["device_id"].is_unique
    planned = outcomes[outcomes["operation_id"].notna()]
    assert set(planned["device_id"]) == set(plan["device_id"]) and set(planned["final_state"]) == {"done"}
    assert (planned["prior_ds_fp"] == planned["expected_ds_fingerprint"]).all()
    assert (planned["final_ds_fp"] == planned["target_ds_fingerprint"]).all()
    assert set(outcomes.loc[outcomes["operation_id"].isna(), "final_state"]) == {"not_planned"}


# ------------------------------------------------------------------------------------------------ rollback


def test_rollback_restores_prior_certificates_under_the_same_rules(applied, tmp_path):
    root, plan_dir, sim = applied
    plan = pd.read_parquet(plan_dir / "plan.parquet")
    chosen = list(plan["device_id"][:3])
    before = {d: sim.store.get(d) for d in chosen}
    rollback = pipeline.run_rollback(root / "run", tmp_path / "rb", devices=chosen, key=signer("alice"))
    assert rollback.document["kind"] == "rollback" and len(rollback.rows) == 3
    options = ApplyOptions(who="carol", endpoints={"MOC": sim.url})
    with pytest.raises(NotApproved):
        run_apply(tmp_path / "rb", tmp_path / "rb-run", options)
    pipeline.run_approve(tmp_path / "rb", signer("bob"))
    writes_before = len(api_writes(root / "moc.sqlite"))
    result = run_apply(tmp_path / "rb", tmp_path / "rb-run", options)
    assert result.counts["MOC"]["done"] == 3 and len(api_writes(root / "moc.sqlite")) == writes_before + 3
    for r in plan[plan["device_id"].isin(chosen)].itertuples():
        now = sim.store.get(r.device_id)
        assert fingerprint_pair(now) == (
            r.expected_ds_fingerprint,
            r.expected_ka_fingerprint,
        )  # the prior content is back
        assert now.version == before[r.device_id].version + 1


def fingerprint_pair(slots):
    from remediation.apply.executor import fingerprint

    return fingerprint(slots.ds), fingerprint(slots.ka)


def test_rollback_plan_goes_stale_when_the_run_changes(applied, tmp_path):
    root, _, _ = applied
    pipeline.run_rollback(root / "run", tmp_path / "rb", key=signer("alice"))
    from remediation.artefacts.plan_dir import check_fresh, load_plan

    check_fresh(load_plan(tmp_path / "rb"))
    shutil.copy2(root / "run" / "journal.jsonl", tmp_path / "journal.bak")
    try:
        with open(root / "run" / "journal.jsonl", "a") as fh:
            fh.write("")
        from remediation.evidence.journal import Journal

        j = Journal(root / "run" / "journal.jsonl")
        j.append("operator_note", text="touched")
        j.close()
        with pytest.raises(StalePlan, match="journal.jsonl"):
            check_fresh(load_plan(tmp_path / "rb"))
    finally:
        shutil.copy2(tmp_path / "journal.bak", root / "run" / "journal.jsonl")


def test_rollback_of_devices_not_written_is_refused(applied, tmp_path):
    root, _, _ = applied
    result = CliRunner(env=key_env("alice")).invoke(
        main, ["rollback", str(root / "run"), "--out", str(tmp_path / "rb"), "--device", "00-00-00-00-00-00-00-09"]
    )
    assert result.exit_code == 2 and "not in this run" in result.stderr


# ------------------------------------------------------------------------------------------------ sample reconciliation


def test_sample_case_reconciles_from_input_rows_to_outcomes(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data")
    config = tmp_path / "configs" / "sample.toml"
    (tmp_path / "people.toml").write_text(policy_toml())
    pipeline.run_plan(config, tmp_path / "plan", key=signer("alice"), trust_policy=tmp_path / "people.toml")
    pipeline.run_approve(tmp_path / "plan", signer("bob"))
    sims = {s: start_sim(tmp_path / f"{s}.sqlite", config, s1sp=s) for s in ("MOC", "FOC", "IOC")}
    try:
        result = run_apply(
            tmp_path / "plan",
            tmp_path / "run",
            ApplyOptions(who="carol", endpoints={s: sim.url for s, sim in sims.items()}),
        )
    finally:
        for sim in sims.values():
            sim.stop()
    assert result.status == "completed"
    pipeline.run_audit_export(tmp_path / "run", tmp_path / "audit", None, "erin", key=signer("erin"))
    pipeline.run_audit_verify(tmp_path / "audit", None, sha256_file(tmp_path / "people.toml"))
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    detect = json.loads((tmp_path / "plan" / "summary.json").read_text())
    outcomes = pd.read_parquet(tmp_path / "audit" / "outcomes.parquet")
    # every input row is traced to exactly one device outcome
    assert outcomes["rows"].sum() == detect["rows_read"]["extracts"] == summary["input_rows"]
    # (rows whose device id is unreadable stand alone, so the input reference, not the id, is the key)
    assert (
        not outcomes.duplicated(["source_file", "source_row"]).any()
        and len(outcomes) == detect["devices"] == summary["devices"]
    )
    valid = outcomes[outcomes["category"] != "INVALID_INPUT"]
    assert valid["device_id"].is_unique
    trace = pd.read_parquet(tmp_path / "audit" / "input_rows.parquet")
    per_file = trace.groupby("source_file")["n_rows"].sum().to_dict()
    assert per_file == {f["path"].rsplit("/", 1)[-1]: f["rows_read"] for f in detect["files"] if f["role"] == "extract"}
    assert trace["finding_id"].isin(outcomes["finding_id"]).all() and outcomes["finding_id"].is_unique
    cross = outcomes[
        outcomes["s1sp"].str.contains("\\+")
    ]  # a device two S1SPs report: one outcome, rows from both files
    assert len(cross) and all(
        trace.loc[trace["finding_id"] == f, "source_file"].nunique() == 2 for f in cross["finding_id"]
    )
    # counts in the summary equal counts in the exports
    assert summary["devices_by_category"] == detect["devices_by_category"]
    assert summary["devices_by_final_state"] == outcomes["final_state"].value_counts().to_dict()
    assert summary["devices_by_final_state"]["done"] == detect["devices_by_category"]["WRONG_NO"]
