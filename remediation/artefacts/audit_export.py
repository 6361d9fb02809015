"""Signed audit exports: what was found, planned, approved and done to each device, and proof nothing changed since.

An export directory holds the findings, plan, approvals, journal, per-device outcomes and a summary, plus
`manifest.json` (each file's SHA-256) and `manifest.sig` (Ed25519 or ECDSA P-256 signature of manifest.json).
`verify_export` checks the signature, every file, the journal's hash chain and that the summary's counts equal the
exports', and names the first thing that is wrong.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from remediation import __version__, authority
from remediation.artefacts.detect_result import (
    FINDINGS,
    INPUT_ROWS,
    SUMMARY,
    DetectResultDir,
    DetectSummary,
    write_findings,
)
from remediation.artefacts.plan_dir import APPROVALS, CERTIFICATE_BODIES, PLAN_CSV, PLAN_JSON, PLAN_PARQUET, PlanDir
from remediation.artefacts.run_dir import JOURNAL, OUTCOMES_CSV, OUTCOMES_PARQUET, RunDir, RunRecord
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.hashing import sha256_file
from remediation.evidence.journal import verify_journal
from remediation.model import CATEGORIES
from remediation.outputs import prepare_dir, write_csv, write_json, write_tables

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MANIFEST_SCHEMA = "remediation/audit-manifest/1"

# How the export learns a run's outcomes without knowing apply's internals (the caller wires in apply/index.py):
# (run directory, plan rows, run.json's record, the plan's trust policy) -> the verified journal's ops (its chain,
# recorded heads and operator-signed records checked), one row per planned operation;
# (journal file, plan rows) -> each operation's final state by replaying that journal.
JournalOps = Callable[[Path, pd.DataFrame, RunRecord, object], pd.DataFrame]
JournalStates = Callable[[Path, pd.DataFrame], dict[str, str]]

# The export's outcomes.csv: one row per device (the run's own outcomes.csv, apply/runner.py, has one per planned device);
# a column keeps the name it has in the findings, the plan and the run (final_ds_fp, not a fourth name).
EXPORT_OUTCOME_COLUMNS = [
    "finding_id",
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "source_file",
    "source_row",
    "rows",
    "category",
    "detail",
    "registered_no",
    "operation_id",
    "expected_ds_fingerprint",
    "expected_ka_fingerprint",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
    "final_state",
    "attempts",
    "prior_ds_fp",
    "prior_ka_fp",
    "final_ds_fp",
    "final_ka_fp",
    "last_error",
]


class AuditFailure(SafetyRefusal):
    """The export does not verify: tampered, incomplete or signed with another key (exit 3)."""


# ------------------------------------------------------------------------------------------------ keys


def generate_key(private_path: Path, public_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_private_key(path: Path):
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read the signing key ({exc})", file=str(path)) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name != "secp256r1":
        raise InputError("ECDSA signing keys must be P-256", file=str(path))
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise InputError("signing key must be Ed25519 or ECDSA P-256", file=str(path))
    return key


def load_public_key(path: Path):
    try:
        return serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the public key ({exc})", file=str(path)) from None


def _algorithm(key) -> str:
    return "Ed25519" if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)) else "ECDSA-P256-SHA256"


def _sign(key, data: bytes) -> bytes:
    return key.sign(data) if isinstance(key, ed25519.Ed25519PrivateKey) else key.sign(data, ec.ECDSA(hashes.SHA256()))


def _verify(public_key, signature: bytes, data: bytes) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        raise InvalidSignature("unsupported public key type")


def key_id(public_key) -> str:
    import hashlib

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# ------------------------------------------------------------------------------------------------ export


_PLAN_COLUMNS = [
    "device_id",
    "operation_id",
    "expected_ds_fingerprint",
    "expected_ka_fingerprint",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
]
_OP_COLUMNS = [
    "operation_id",
    "state",
    "attempts",
    "prior_ds_fp",
    "prior_ka_fp",
    "final_ds_fp",
    "final_ka_fp",
    "last_error",
]


def _plan_ops(plan_rows: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """Each plan row with its operation's checkpointed state (planned devices only: small beside the findings)."""
    return plan_rows[_PLAN_COLUMNS].merge(ops.reindex(columns=_OP_COLUMNS), how="left", on="operation_id")


def _outcomes(findings: pd.DataFrame, plan_ops: pd.DataFrame) -> pd.DataFrame:
    """One row per device: input reference -> finding -> plan row -> final state, prior and new fingerprints."""
    out = findings.merge(plan_ops, how="left", on="device_id")
    planned = out["operation_id"].notna()
    out["final_state"] = out["state"].where(out["state"].notna(), "not_applied").where(planned, "not_planned")
    return out.reindex(columns=EXPORT_OUTCOME_COLUMNS)


def _outcome_schema(findings: pa.Schema) -> pa.Schema:
    """Fixed column types, so every streamed chunk of outcomes matches (a chunk without planned devices would
    otherwise give all-null columns a null type)."""
    fields = []
    for name in EXPORT_OUTCOME_COLUMNS:
        if name in findings.names:
            fields.append(findings.field(name))
        else:
            fields.append(pa.field(name, pa.int32() if name == "attempts" else pa.string()))
    return pa.schema(fields)


class _Tally:
    """The audit summary's counts, added up chunk by chunk as the outcomes are written."""

    def __init__(self) -> None:
        self.devices = self.input_rows = self.planned = 0
        self.by_category: dict[str, int] = {c: 0 for c in CATEGORIES}
        self.by_state: dict[str, int] = {}

    def add(self, outcomes: pd.DataFrame) -> None:
        self.devices += len(outcomes)
        self.input_rows += int(outcomes["rows"].sum())
        self.planned += int(outcomes["operation_id"].notna().sum())
        for category, n in outcomes["category"].astype(str).value_counts().items():
            if category in self.by_category:
                self.by_category[category] += int(n)
        for state, n in outcomes["final_state"].value_counts().items():
            self.by_state[str(state)] = self.by_state.get(str(state), 0) + int(n)


def _outcome_tables(findings_path: Path, plan_ops: pd.DataFrame, tally: _Tally):
    findings = pq.read_schema(findings_path)
    schema = _outcome_schema(findings)
    for table in _parquet_tables(findings_path, columns=[c for c in EXPORT_OUTCOME_COLUMNS if c in findings.names]):
        outcomes = _outcomes(table.to_pandas(), plan_ops)
        tally.add(outcomes)
        yield pa.Table.from_pandas(outcomes, schema=schema, preserve_index=False)


def audit_summary(tally: _Tally, run: RunRecord, detect_summary: DetectSummary) -> dict:
    return {
        "plan_hash": run.plan_hash,
        "run_status": run.status,
        "devices": tally.devices,
        "input_rows": tally.input_rows,
        "rows_read": detect_summary.rows_read,
        "devices_by_category": tally.by_category,
        "devices_by_final_state": dict(sorted(tally.by_state.items())),
        "planned_devices": tally.planned,
    }


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: dict


def _parquet_tables(path: Path, rows: int = 500_000, columns: list[str] | None = None):
    """A Parquet file as a stream of tables; an empty file still gives one (empty) table, so its schema is kept."""
    source = pq.ParquetFile(path)
    empty = True
    for batch in source.iter_batches(batch_size=rows, columns=columns):
        empty = False
        yield pa.Table.from_batches([batch])
    if empty:
        schema = source.schema_arrow
        yield (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()


def export_audit(
    run_dir: Path,
    out_dir: Path,
    signing_key_path: Path | None,
    exported_by: str,
    signer=None,
    extras=None,
    *,
    journal_ops: JournalOps,
) -> ExportResult:
    """`extras(out)`: writes further evidence (the notification packs) into subfolders of `out` before the
    manifest is made, so the signature covers it too; a dict it returns is added to summary.json."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir).record()
    plan_dir = Path(run.plan_dir)
    plan = PlanDir(plan_dir)
    # The policy the plan was sealed under (unchanged since), and the exporter's key checked against it.
    policy, exporter = authority.export_authority(plan_dir, signer)
    key = signer.private_key if signer is not None else load_private_key(signing_key_path)
    out = prepare_dir(out_dir)
    if any(out.iterdir()):
        raise InputError("export directory is not empty; exports are never overwritten", file=str(out))
    plan_rows = pd.read_parquet(plan.rows_path)
    # Outcomes come from the verified journal, cross-checked against the checkpoint index (an edited index refuses).
    ops = journal_ops(run_dir, plan_rows, run, policy)
    try:
        # Findings and outcomes are streamed in chunks (10 million devices nationally); the counts are added up
        # on the way and checked before anything is signed.
        tally = _Tally()
        write_tables(
            out / OUTCOMES_PARQUET,
            out / OUTCOMES_CSV,
            _outcome_tables(run_dir / FINDINGS, _plan_ops(plan_rows, ops), tally),
        )
        summary = audit_summary(tally, run, DetectResultDir(run_dir).summary())
        if summary["input_rows"] != summary["rows_read"]["extracts"]:
            raise SafetyRefusal(
                f"refusing to export: {summary['input_rows']} input rows traced, {summary['rows_read']['extracts']} read"
            )
        # Re-encoded by the writer detect uses, so the exported findings.csv reads exactly like the run's own.
        write_findings(out, _parquet_tables(run_dir / FINDINGS))
        shutil.copy2(run_dir / INPUT_ROWS, out / INPUT_ROWS)
        shutil.copy2(plan.rows_path, out / PLAN_PARQUET)
        write_csv(out / PLAN_CSV, plan_rows.drop(columns=CERTIFICATE_BODIES))
        shutil.copy2(plan.document_path, out / PLAN_JSON)
        approvals = plan.approvals_path
        write_json(out / APPROVALS, json.loads(approvals.read_text()) if approvals.exists() else {"approvals": []})
        shutil.copy2(RunDir(run_dir).journal, out / JOURNAL)
        if policy is not None:
            shutil.copy2(policy.path, out / authority.EXPORTED_POLICY)
        summary["governance"] = json.loads(plan.document_path.read_text()).get("governance")
        if extras is not None:
            summary.update(extras(out) or {})
        write_json(out / SUMMARY, summary)
    except BaseException:
        for path in out.iterdir():  # the directory was empty: an unsigned half export is worth nothing
            if path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        raise
    files = _files(out)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "tool_version": __version__,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exported_by": exported_by,
        "run_dir": str(run_dir.resolve()),
        "plan_hash": run.plan_hash,
        "algorithm": _algorithm(key),
        "public_key_sha256": key_id(key.public_key()),
        **authority.manifest_fields(policy, exporter, signer),
        "files": [
            {"name": name, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in files
        ],
    }
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (out / MANIFEST).write_bytes(data)
    (out / SIGNATURE).write_text(base64.b64encode(_sign(key, data)).decode() + "\n")
    return ExportResult(out, manifest)


def _files(directory: Path) -> list[str]:
    """Every file under the export, as POSIX paths relative to it (packs sit in subfolders), manifest excluded."""
    names = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return sorted(n for n in names if n not in (MANIFEST, SIGNATURE))


# ------------------------------------------------------------------------------------------------ verify


def verify_export(
    directory: Path,
    public_key_path: Path | None = None,
    expect_policy_sha256: str | None = None,
    *,
    journal_states: JournalStates,
) -> dict:
    """Raise AuditFailure naming the first problem; return the manifest when everything holds.

    An export that carries a trust policy is checked against the auditor's expected policy hash, its manifest
    against the exporter's key in that policy (or --pubkey), and every plan, approval and run signature inside."""
    directory = Path(directory)
    manifest_path, sig_path = directory / MANIFEST, directory / SIGNATURE
    if not manifest_path.exists() or not sig_path.exists():
        raise AuditFailure(f"{directory}: {MANIFEST} or {SIGNATURE} is missing")
    data = manifest_path.read_bytes()
    policy = authority.exported_policy(directory, expect_policy_sha256)
    if public_key_path is not None:
        public_key = load_public_key(public_key_path)
    elif policy is not None:
        public_key_path, public_key = authority.manifest_key(policy, data, manifest_path)
    else:
        raise InputError(
            "this export carries no trust policy: --pubkey (the exporter's public key) is required", field="--pubkey"
        )
    try:
        _verify(public_key, base64.b64decode(sig_path.read_text().strip(), validate=True), data)
    except (InvalidSignature, ValueError):
        raise AuditFailure(
            f"{manifest_path}: signature does not verify with {public_key_path} (wrong key, or manifest.json or manifest.sig altered)"
        ) from None
    manifest = json.loads(data)
    listed = {f["name"]: f for f in manifest["files"]}
    if JOURNAL in listed and (directory / JOURNAL).exists():
        ok, why = verify_journal(directory / JOURNAL)
        if not ok:
            raise AuditFailure(f"{directory / JOURNAL}: {why}")
    for name, entry in listed.items():
        path = directory / name
        if not path.exists():
            raise AuditFailure(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise AuditFailure(f"{path}: SHA-256 differs from the signed manifest (file altered)")
    extra = [name for name in _files(directory) if name not in listed]
    if extra:
        raise AuditFailure(f"{directory}: files not covered by the manifest: {', '.join(extra)}")
    if policy is not None:
        authority.verify_exported_authority(
            policy, directory / PLAN_JSON, directory / PLAN_PARQUET, directory / APPROVALS, directory / JOURNAL
        )
    _check_reconciliation(directory)
    if {JOURNAL, PLAN_PARQUET, OUTCOMES_PARQUET} <= set(listed):
        _check_outcomes_against_journal(directory, journal_states)
    return manifest


def _check_outcomes_against_journal(directory: Path, journal_states: JournalStates) -> None:
    """Every planned device's exported final state must be the one its journal entries lead to."""
    try:
        states = journal_states(directory / JOURNAL, pd.read_parquet(directory / PLAN_PARQUET))
    except SafetyRefusal as exc:
        raise AuditFailure(str(exc)) from None
    outcomes = pd.read_parquet(directory / OUTCOMES_PARQUET, columns=["device_id", "operation_id", "final_state"])
    planned = outcomes[outcomes["operation_id"].notna()]
    for device, op, state in zip(planned["device_id"], planned["operation_id"], planned["final_state"]):
        expected = states.get(op)
        if state != expected:
            raise AuditFailure(
                f"{directory / OUTCOMES_PARQUET}: device {device} is {state!r}, its journal entries say {expected!r}"
            )


def _check_reconciliation(directory: Path) -> None:
    summary = json.loads((directory / SUMMARY).read_text())
    # Only the columns the counts need: a national export holds 10 million devices.
    outcomes = pd.read_parquet(directory / OUTCOMES_PARQUET, columns=["rows", "final_state"])
    findings = pd.read_parquet(directory / FINDINGS, columns=["category"])
    checks = [
        ("devices", summary["devices"], len(outcomes)),
        ("input_rows", summary["input_rows"], int(outcomes["rows"].sum())),
        (
            "input_rows.parquet rows",
            summary["rows_read"]["extracts"],
            int(pd.read_parquet(directory / INPUT_ROWS, columns=["n_rows"])["n_rows"].sum()),
        ),
        (
            "devices_by_final_state",
            summary["devices_by_final_state"],
            {k: int(v) for k, v in outcomes["final_state"].value_counts().sort_index().items()},
        ),
        (
            "devices_by_category",
            summary["devices_by_category"],
            {
                c: int(n)
                for c, n in findings["category"]
                .astype(str)
                .value_counts()
                .reindex(list(CATEGORIES), fill_value=0)
                .items()
            },
        ),
    ]
    for name, claimed, actual in checks:
        if claimed != actual:
            raise AuditFailure(f"{directory / SUMMARY}: {name} says {claimed}, the exports say {actual}")
