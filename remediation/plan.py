"""Correction plans: which devices to write, what they must hold now, what they get; hashes, approval, staleness.

Pure: the plan directory is read and written by `artefacts/plan_dir.py`. A plan row's
`expected_*` fingerprints are the compare-and-swap precondition apply checks before writing; the `target_*` columns
are the registered NO's current certificates. The operation id depends only on the device and the targets, so
re-planning the same correction gives the same id and the S1SP's idempotency keeps a write from happening twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from remediation.certificates import CertificateCatalog, CertificateFacts
from remediation.config import Policy
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.hashing import sha256_json
from remediation.ingest.registry import NetworkOperator, Registry
from remediation.model import Category

OPERATION_PREFIX = "mp107r2-"
PLAN_COLUMNS = [
    "operation_id",
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "category",
    "registered_no",
    "expected_ds_fingerprint",
    "expected_ka_fingerprint",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
    "target_ds_cert",
    "target_ka_cert",
    "source_file",
    "source_row",
]


class StalePlan(SafetyRefusal):
    """An input or config file changed since the plan was made."""


class PlanTampered(SafetyRefusal):
    """plan.json or plan.parquet no longer match the plan hash."""


class NotApproved(SafetyRefusal):
    """No valid approval for this plan."""


def operation_ids(device_ids: pd.Series, target_ds: pd.Series, target_ka: pd.Series) -> np.ndarray:
    """sha256(device id, target DS fingerprint, target KA fingerprint), as a stable idempotency key."""
    keys = device_ids.astype(str) + "|" + target_ds.astype(str) + "|" + target_ka.astype(str)
    return np.array([OPERATION_PREFIX + hashlib.sha256(k.encode()).hexdigest()[:40] for k in keys], dtype=object)


def target_problems(
    operator: NetworkOperator,
    facts: CertificateFacts,
    usage: str,
    as_of: date,
    catalog: CertificateCatalog,
    min_validity_days: int = 0,
) -> list[str]:
    """Why a registry certificate must not be written to a device's slot; empty when it is fit. A replacement must
    stay valid `min_validity_days` after the as-of date: writing one that expires next week fixes nothing."""
    if facts.error:
        return [facts.error]
    problems = []
    if facts.entity_id != operator.entity_id:
        problems.append(f"subject entity {facts.entity_id} is not the NO's {operator.entity_id}")
    if not facts.is_network_operator:
        problems.append(f"role {facts.role:02X} is not networkOperator (03)" if facts.role is not None else "no role")
    if facts.key_usage != usage:
        problems.append(f"key usage {facts.key_usage}, expected {usage}")
    if not facts.chains_to_org_ca:
        problems.append("not issued by the configured Organisation CA")
    hold = catalog.hold(facts)
    if hold is not None and hold[0] != "untrusted_issuer":
        problems.append(hold[1])
    if not facts.valid_throughout(as_of):
        problems.append(f"not valid on {as_of} (valid {facts.not_before:%Y-%m-%d} to {facts.not_after:%Y-%m-%d})")
    elif facts.not_after.date() < as_of + timedelta(days=min_validity_days):
        left = (facts.not_after.date() - as_of).days
        problems.append(
            f"expires {facts.not_after:%Y-%m-%d}, {left} days after {as_of}: less than the policy's minimum of {min_validity_days} days"
        )
    if catalog.is_revoked(facts):
        problems.append(f"revoked (issuer {facts.issuer}, serial {facts.serial} is on the ORL)")
    return problems


def check_targets(
    operators: list[NetworkOperator], catalog: CertificateCatalog, as_of: date, min_validity_days: int = 0
) -> None:
    """Refuse (exit 3) if any replacement certificate the plan would write is unfit, naming NO and file."""
    for op in operators:
        for usage, cert_id, path in (("DS", op.ds_cert_id, op.ds_path), ("KA", op.ka_cert_id, op.ka_path)):
            problems = target_problems(op, catalog.facts[cert_id], usage, as_of, catalog, min_validity_days)
            if problems:
                raise SafetyRefusal(
                    f"refusing to plan: replacement {usage} certificate of network operator {op.id} ({path}) is unfit: {'; '.join(problems)}"
                )


def plannable_categories(policy: Policy) -> list[str]:
    """WRONG_NO always; SLOT_EMPTY and KEY_USAGE_MISMATCH when the policy enables their correction (revoked devices,
    a cause within EXPIRED_OR_REVOKED, see `plannable`). SECURITY_HOLD, PENDING_NO_CHANGE and everything above
    WRONG_NO are never planned."""
    optional = [
        (policy.correct_slot_empty, Category.SLOT_EMPTY),
        (policy.correct_key_usage_mismatch, Category.KEY_USAGE_MISMATCH),
    ]
    return [Category.WRONG_NO.value] + [c.value for enabled, c in optional if enabled]


def plannable_causes(policy: Policy) -> list[tuple[str, str]]:
    """(category, cause) pairs planned although their category is not: revoked devices, when the policy says so."""
    return [(Category.EXPIRED_OR_REVOKED.value, "revoked")] if policy.correct_revoked else []


def plannable(findings: pd.DataFrame, policy: Policy) -> pd.Series:
    """The findings a plan takes (the rule `detection.plannable_mask` applies to a whole detection)."""
    chosen = findings["category"].isin(plannable_categories(policy))
    if "cause" in findings:
        for category, cause in plannable_causes(policy):
            chosen |= (findings["category"] == category) & (findings["cause"] == cause)
    return chosen


def refuse_registry_gaps(gaps: list[dict], allow_unknown_no: bool, registry_path: Path) -> None:
    """Registry coverage pre-flight: RDP NO ids with in-scope devices but no registry entry stop the plan (exit 3)
    unless the operator accepts that their devices stay UNKNOWN_NO (--allow-unknown-no, recorded in plan.json)."""
    if gaps and not allow_unknown_no:
        listed = ", ".join(f"{g['network_operator_id']} ({g['devices']} devices)" for g in gaps[:5]) + (
            " …" if len(gaps) > 5 else ""
        )
        raise SafetyRefusal(
            f"refusing to plan: the NO registry has no entry for RDP network operator(s) {listed}; their devices can never be "
            f"corrected. Add them to {registry_path} or re-run with --allow-unknown-no to plan the rest"
        )


def build_plan(
    findings: pd.DataFrame,
    registry: Registry,
    catalog: CertificateCatalog,
    as_of: date,
    policy: Policy,
    s1sps: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Findings -> plan rows, one per device to correct, sorted by S1SP then device id."""
    chosen = findings[plannable(findings, policy)]
    if s1sps:
        chosen = chosen[chosen["s1sp"].isin(s1sps)]
    operators = registry.by_id()
    used = [operators[no] for no in sorted(chosen["registered_no"].unique())]
    check_targets(used, catalog, as_of, policy.min_replacement_validity_days)
    targets = pd.DataFrame(
        {
            "registered_no": [o.id for o in used],
            "target_ds_fingerprint": [catalog.facts[o.ds_cert_id].fingerprint for o in used],
            "target_ka_fingerprint": [catalog.facts[o.ka_cert_id].fingerprint for o in used],
            "target_ds_cert": [catalog.facts[o.ds_cert_id].b64() for o in used],
            "target_ka_cert": [catalog.facts[o.ka_cert_id].b64() for o in used],
        },
        columns=["registered_no", "target_ds_fingerprint", "target_ka_fingerprint", "target_ds_cert", "target_ka_cert"],
        dtype=object,  # Python objects: the merge then shares each NO's certificate text across its rows, not copies it
    )
    plan = chosen.merge(targets, how="left", on="registered_no")
    plan = plan.rename(
        columns={"ds_fingerprint": "expected_ds_fingerprint", "ka_fingerprint": "expected_ka_fingerprint"}
    )
    return _finish_rows(plan)


def _finish_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Operation ids, the stable order (S1SP, device) and the plan's column types: what every plan's rows share."""
    rows["operation_id"] = operation_ids(
        rows["device_id"], rows["target_ds_fingerprint"], rows["target_ka_fingerprint"]
    )
    rows = rows.sort_values(["s1sp", "device_id"], kind="stable", ignore_index=True)
    for col in PLAN_COLUMNS:
        if col != "source_row":
            rows[col] = rows[col].astype(object).where(rows[col].notna(), "")
    rows["source_row"] = rows["source_row"].astype(np.int64)
    return rows[PLAN_COLUMNS]


# ------------------------------------------------------------------------------------------------ plan.json


def plan_counts(plan: pd.DataFrame) -> dict:
    return {
        "devices": int(len(plan)),
        "by_s1sp": {k: int(v) for k, v in plan.groupby("s1sp").size().sort_index().items()},
        "by_registered_no": {k: int(v) for k, v in plan.groupby("registered_no").size().sort_index().items()},
        "by_category": {k: int(v) for k, v in plan.groupby("category").size().sort_index().items()},
    }


def seal(document: dict) -> dict:
    """Add the plan hash: SHA-256 over the canonical JSON of everything else in plan.json except the planner's
    signature, which is made over the hash (authority.py) and so cannot be inside it."""
    body = {k: v for k, v in document.items() if k not in ("plan_hash", "signature")}
    signature = {"signature": document["signature"]} if "signature" in document else {}
    return {**body, "plan_hash": sha256_json(body), **signature}


@dataclass(frozen=True)
class LoadedPlan:
    directory: Path
    document: dict
    rows: pd.DataFrame

    @property
    def plan_hash(self) -> str:
        return self.document["plan_hash"]


# ------------------------------------------------------------------------------------------------ rollback


ROLLBACK_WRITTEN, ROLLBACK_POSSIBLY_WRITTEN = "ROLLBACK", "ROLLBACK_POSSIBLY_WRITTEN"  # a rollback row's category
# States in which a device's write may have committed although the run did not see it confirmed: a PUT was sent
# (attempts > 0) and then the reply was not believed (protocol error), the run stopped (writing, confirming), or the
# device was found at target on resume with no write on record (an earlier process may have written it).
POSSIBLY_WRITTEN_STATES = ("failed", "writing", "confirming")


def rollback_candidates(ops: pd.DataFrame) -> pd.DataFrame:
    """The run's devices a rollback must offer, with `written`: "written" (done) or "possibly written (...)" for each
    device whose write may have committed. A possibly written device that was in fact not written is already at its
    rollback target when the rollback runs, so it is recorded as noop there and nothing is sent."""
    attempts = pd.to_numeric(ops["attempts"], errors="coerce").fillna(0)
    done = ops["state"] == "done"
    at_target = ops["state"] == "at_target_on_resume"
    put_sent = ops["state"].isin(POSSIBLY_WRITTEN_STATES) & (attempts > 0)
    out = ops[done | at_target | put_sent].copy()
    error = out["last_error"].astype(object).where(out["last_error"].notna() & (out["last_error"] != ""), None)
    why = (
        "possibly written ("
        + out["state"].astype(str)
        + " after a PUT was sent"
        + error.map(lambda e: f": {str(e)[:120]}" if e else "").astype(str)
        + ")"
    )
    why = why.where(out["state"] != "at_target_on_resume", "possibly written (at target on resume, no write on record)")
    out["written"] = why.where(out["state"] != "done", "written")
    return out


def build_rollback_plan(
    plan_rows: pd.DataFrame,
    ops: pd.DataFrame,
    devices: list[str] | None = None,
    certificates: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A plan restoring what the slots held before the run, for every device it wrote or may have written
    (`rollback_candidates`); the `category` says which: ROLLBACK (written) or ROLLBACK_POSSIBLY_WRITTEN.

    The precondition is the certificates apply wrote; the targets are what the plan expected to find (the prior
    certificates recorded at the first read, or, where that read found the device already at target, the plan's
    expected certificates from `certificates`: fingerprint -> base64 DER). Restoring prior content on purpose puts
    back another NO's certificates: the plan needs the same approval as any other."""
    done = rollback_candidates(ops)
    if devices:
        unknown = sorted(set(devices) - set(ops["device_id"]))
        if unknown:
            raise InputError(
                f"not in this run: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}", field="--device"
            )
        not_done = sorted(set(devices) - set(done["device_id"]))
        if not_done:
            raise InputError(
                f"not written by this run (nothing to roll back): {', '.join(not_done[:5])}", field="--device"
            )
        done = done[done["device_id"].isin(devices)]
    base = plan_rows.drop(
        columns=[
            "operation_id",
            "target_ds_fingerprint",
            "target_ka_fingerprint",
            "target_ds_cert",
            "target_ka_cert",
        ]
    )
    rows = done[
        [
            "device_id",
            "written",
            "target_ds_fingerprint",
            "target_ka_fingerprint",
            "prior_ds_fp",
            "prior_ka_fp",
            "prior_ds_cert",
            "prior_ka_cert",
        ]
    ].merge(base, on="device_id")
    for slot in ("ds", "ka"):
        expected = rows[f"expected_{slot}_fingerprint"].astype(object).fillna("")
        recorded = rows[f"prior_{slot}_fp"].astype(object).fillna("") == expected
        looked_up = expected.map(lambda fp: "" if not fp else (certificates or {}).get(fp))
        cert = rows[f"prior_{slot}_cert"].astype(object).where(recorded & rows[f"prior_{slot}_fp"].notna(), looked_up)
        cert = cert.where(expected != "", "")  # an empty slot is restored empty
        missing = cert.isna()
        if missing.any():
            raise InputError(
                f"device {rows.loc[missing, 'device_id'].iloc[0]}: no certificate with the plan's expected "
                f"{slot.upper()} fingerprint {expected[missing].iloc[0][:16]}… to restore"
            )
        rows[f"restore_{slot}_fp"], rows[f"restore_{slot}_cert"] = expected, cert.fillna("")
    rows = rows.drop(columns=["expected_ds_fingerprint", "expected_ka_fingerprint"]).rename(
        columns={
            "target_ds_fingerprint": "expected_ds_fingerprint",  # what the run wrote is what the rollback expects
            "target_ka_fingerprint": "expected_ka_fingerprint",
            "restore_ds_fp": "target_ds_fingerprint",
            "restore_ka_fp": "target_ka_fingerprint",
            "restore_ds_cert": "target_ds_cert",
            "restore_ka_cert": "target_ka_cert",
        }
    )
    rows["category"] = rows["written"].map(lambda w: ROLLBACK_WRITTEN if w == "written" else ROLLBACK_POSSIBLY_WRITTEN)
    return _finish_rows(rows)
