"""Alert-routing impact: for each (slot holder -> registered NO) pair, how many devices sent their alerts to the
holder instead of the registered NO, per slot, before the run and after it.

Before: every finding with a registered NO whose slot holds a certificate of another organisation. After: the
same less the devices the run brought to target (done or noop). For a plan or dry run there is no after yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from remediation.artefacts.detect_result import FINDINGS
from remediation.outcomes.findings import read_findings
from remediation.outcomes.references import References

# Categories in which a registered NO is known and a slot can hold someone else's certificate.
_CATEGORIES = (
    "WRONG_NO",
    "SLOT_EMPTY",
    "KEY_USAGE_MISMATCH",
    "EXPIRED_OR_REVOKED",
    "DUPLICATE_CONFLICT",
    "PENDING_NO_CHANGE",
    "SECURITY_HOLD",
)
SLOT_NAMES = {"ds": "NO_DS", "ka": "NO_KA"}


def _misrouted(findings: pd.DataFrame, refs: References) -> pd.DataFrame:
    """One row per (device, slot) whose alerts go to an organisation other than the registered NO."""
    known = (findings["registered_no"] != "") & (findings["expected_owner"] != "")
    parts = []
    for slot, name in SLOT_NAMES.items():
        owner = findings[f"slot_{slot}_owner"]
        mask = known & (owner != "") & (owner != "UNDECODABLE") & (owner != findings["expected_owner"])
        verdict = findings.loc[mask, f"{slot}_verdict"].where(
            refs.trusted(findings.loc[mask, f"{slot}_fingerprint"]), "UNTRUSTED"
        )
        part = findings.loc[mask, ["device_id", "registered_no"]].assign(
            holder_entity=owner[mask], slot=name, verdict=verdict
        )
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    # A certificate the Organisation CA did not issue only claims an identity: say so rather than name the claimed NO.
    suffix = (
        frame["verdict"]
        .map({"UNTRUSTED": " (untrusted issuer)", "NOT_NO_ROLE": " (not a Network Operator certificate)"})
        .fillna("")
    )
    frame["holder"] = refs.label(frame["holder_entity"]) + suffix
    return frame


def alert_routing_impact(plan_dir: Path, corrected: set | None) -> list[dict]:
    refs = References.read(plan_dir)
    findings = read_findings(Path(plan_dir) / FINDINGS, _CATEGORIES)
    frame = _misrouted(findings, refs)
    frame["after"] = ~frame["device_id"].isin(corrected) if corrected is not None else np.nan
    keys = ["holder", "holder_entity", "registered_no"]
    out = []
    for (holder, entity, no), group in frame.groupby(keys, sort=False):
        before = {name: int((group["slot"] == name).sum()) for name in SLOT_NAMES.values()}
        before["devices"] = int(group["device_id"].nunique())
        entry = {"holder": holder, "holder_entity": entity, "registered_no": no, "before": before, "after": None}
        if corrected is not None:
            left = group[group["after"].astype(bool)]
            entry["after"] = {name: int((left["slot"] == name).sum()) for name in SLOT_NAMES.values()}
            entry["after"]["devices"] = int(left["device_id"].nunique())
        out.append(entry)
    return sorted(out, key=lambda e: (-e["before"]["devices"], e["holder"], e["registered_no"]))


def impact_totals(impact: list[dict]) -> dict:
    def total(when: str) -> dict | None:
        if any(e[when] is None for e in impact):
            return None
        return {k: sum(e[when][k] for e in impact) for k in ("NO_DS", "NO_KA", "devices")}

    return {
        "pairs": len(impact),
        "before": total("before") or {"NO_DS": 0, "NO_KA": 0, "devices": 0},
        "after": total("after") if impact else None,
    }
