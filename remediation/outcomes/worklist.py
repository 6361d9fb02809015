"""The SRV 6.15.1 worklist: the devices this fix leaves with their registered NO still locked out, addressed to
the organisation whose certificates sit in the slots (under Requirement 1 it can hand the device over itself with
SRV 6.15.1), the registered NO copied.

Which devices: every `no_locked_out` finding that the fix does not correct. For a run directory that is every
locked-out device not `done` or `noop`; for a plan directory, every locked-out device outside the API plan (held
categories, categories the policy does not plan, manual S1SPs). One CSV and one JSON per current slot holder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from remediation.artefacts.detect_result import FINDINGS
from remediation.artefacts.plan_dir import PlanDir
from remediation.outcomes.findings import locked_out_findings
from remediation.outcomes.references import References
from remediation.outcomes.state import CORRECTED, Sources, device_outcomes, run_state
from remediation.outcomes.text import folder_names
from remediation.outputs import EncodedJSON

WORKLIST_SCHEMA = "remediation/srv-6.15.1-worklist/1"
SERVICE_REQUEST = "SRV 6.15.1 Update Security Credentials (KRP)"
SECURITY_HOLDER = "DCC-SECURITY"  # untrusted certificates: investigated by the DCC, not sent to whoever they name
NO_HOLDER = "NO-HOLDER"  # both slots empty: nobody holds the device; the registered NO needs the DCC, not SRV 6.15.1
WORKLIST_COLUMNS = {
    "device_id": "device EUI-64, canonical upper-case hyphenated",
    "mpxn": "MPAN core (electricity) or MPRN (gas) from the S1SP extract",
    "s1sp": "S1SP that holds the device",
    "device_type": "ESME, GSME ...",
    "remote_party_role": "always NetworkOperator: the anchors SRV 6.15.1 replaces",
    "current_holder": "organisation whose certificate is in the slots (registry id, else SMKI entity id); the addressee",
    "registered_no": "Network Operator the RDP registers for the MPxN on the as-of date; copied",
    "current_ds_cert_id": "Certificate ID now in NO_DS: serial (hex) and issuer common name, as 'SERIAL (ISSUER)'; empty if the slot is empty",
    "current_ka_cert_id": "Certificate ID now in NO_KA, same form",
    "target_ds_cert_id": "the registered NO's current DS Certificate ID, same form",
    "target_ka_cert_id": "the registered NO's current KA Certificate ID, same form",
    "category": "finding category (contract)",
    "cause": "finding cause (contract)",
    "route": "why the one-off fix leaves this device: held category, not planned by policy, manual S1SP, or the apply outcome",
}


def _routes(
    frame: pd.DataFrame, sources: Sources, plan_rows: pd.DataFrame, manual_ids: set, ops: pd.DataFrame | None
) -> np.ndarray:
    route = np.where(
        frame["category"].isin(["SECURITY_HOLD", "PENDING_NO_CHANGE", "DUPLICATE_CONFLICT"]),
        "held: " + frame["category"],
        "not planned: category not corrected by policy",
    )
    route = pd.Series(route, index=frame.index, dtype=object)
    route[frame["device_id"].isin(manual_ids)] = "manual S1SP: change request sent to the S1SP"
    planned = _member(frame["device_id"], plan_rows["device_id"])
    if ops is not None:
        state = frame["device_id"].map(dict(zip(ops["device_id"], ops["state"]))).fillna("not applied")
        error = (
            frame["device_id"]
            .map(dict(zip(ops["device_id"], ops["last_error"].astype(object).where(ops["last_error"].notna(), ""))))
            .fillna("")
        )
        route[planned] = (
            "apply " + state[planned] + np.where(error[planned] != "", ": " + error[planned], "")
        ).to_numpy()
    else:
        route[planned] = "planned for correction (not yet applied)"
    return route.to_numpy()


def _member(ids: pd.Series, values) -> np.ndarray:
    """ids.isin(values) for text ids, in Arrow: pandas' isin on Arrow strings loops over the values in Python (4.6 s for
    half a million planned devices at national scale)."""
    value_set = pa.array(list(values) if isinstance(values, set) else values, pa.string())
    found = pc.is_in(pa.array(ids).cast(pa.string()), value_set=value_set)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def build_worklist(sources: Sources, planned_ids: pd.Series | None = None) -> pd.DataFrame:
    """One row per device the fix leaves locked out, sorted by holder, S1SP and device. `planned_ids`: the devices
    apply writes, when plan.parquet is not written yet."""
    refs = References.read(sources.plan_dir)
    findings = locked_out_findings(sources.plan_dir / FINDINGS)
    if planned_ids is None:
        plan_rows = pd.read_parquet(PlanDir(sources.plan_dir).rows_path, columns=["device_id"])
    else:
        plan_rows = pd.DataFrame({"device_id": planned_ids})
    manual = _manual_ids(sources.plan_dir)
    ops = None
    if sources.kind == "run":
        ops = device_outcomes(sources.directory)
        corrected = set(ops.loc[ops["state"].isin(CORRECTED), "device_id"])
        findings = findings[~_member(findings["device_id"], corrected)]
    else:
        findings = findings[~_member(findings["device_id"], plan_rows["device_id"])]
    frame = findings.reset_index(drop=True)
    expected = frame["expected_owner"]
    ds_other = (frame["slot_ds_owner"] != "") & (frame["slot_ds_owner"] != expected)
    ka_other = (frame["slot_ka_owner"] != "") & (frame["slot_ka_owner"] != expected)
    holder_entity = np.where(
        ds_other,
        frame["slot_ds_owner"],
        np.where(
            ka_other,
            frame["slot_ka_owner"],
            np.where(frame["slot_ds_owner"] != "", frame["slot_ds_owner"], frame["slot_ka_owner"]),
        ),
    )
    holder = refs.label(pd.Series(holder_entity, index=frame.index)).replace(
        {"": NO_HOLDER, "UNDECODABLE": "UNDECODABLE-CERTIFICATE"}
    )

    # A certificate the Organisation CA did not issue only claims its entity: never address the claimant (it may be
    # an attacker); such devices go to the DCC's security team.
    def untrusted_slot(slot: str) -> pd.Series:
        fp = frame[f"{slot}_fingerprint"]
        return (frame[f"{slot}_verdict"] == "UNTRUSTED") | ((fp != "") & ~refs.trusted(fp))

    untrusted = untrusted_slot("ds") | untrusted_slot("ka") | (frame["category"] == "SECURITY_HOLD")
    holder = holder.where(~untrusted, SECURITY_HOLDER)
    target_ds, target_ka = refs.targets_of(frame["registered_no"])
    out = pd.DataFrame(
        {
            "device_id": frame["device_id"],
            "mpxn": frame["mpxn"].astype(object).where(frame["mpxn"].notna(), ""),
            "s1sp": frame["s1sp"],
            "device_type": frame["device_type"],
            "remote_party_role": "NetworkOperator",
            "current_holder": holder,
            "registered_no": frame["registered_no"],
            "current_ds_cert_id": refs.certificate_ids(frame["ds_fingerprint"]),
            "current_ka_cert_id": refs.certificate_ids(frame["ka_fingerprint"]),
            "target_ds_cert_id": refs.certificate_ids(target_ds),
            "target_ka_cert_id": refs.certificate_ids(target_ka),
            "category": frame["category"],
            "cause": frame["cause"],
            "route": _routes(frame, sources, plan_rows, manual, ops),
        },
        columns=list(WORKLIST_COLUMNS),
    )
    out = out.assign(_ds=frame["ds_fingerprint"], _ka=frame["ka_fingerprint"], _tds=target_ds, _tka=target_ka)
    return out.sort_values(["current_holder", "s1sp", "device_id"], ignore_index=True)


def _by_holder(rows: pd.DataFrame):
    """(holder, rows) per current holder, in holder order: slices of the rows, which build_worklist sorted by
    holder (groupby would copy every column of every group)."""
    if not rows["current_holder"].is_monotonic_increasing:
        rows = rows.sort_values(["current_holder", "s1sp", "device_id"], ignore_index=True)
    holders = rows["current_holder"].to_numpy(dtype=object)
    starts = [0, *(np.flatnonzero(holders[1:] != holders[:-1]) + 1).tolist(), len(rows)]
    for start, stop in zip(starts[:-1], starts[1:]):
        if stop > start:
            yield holders[start], rows.iloc[start:stop]


def _device_records(public: pd.DataFrame, fingerprints: pd.DataFrame, refs: References) -> list[EncodedJSON]:
    """Each device as its JSON text: the worklist columns and the current and target certificates' parts.

    Encoded here, a line at a time by the C encoder: the few distinct certificates are encoded once and joined in
    as text, and the columns are read as Python lists (pandas' Arrow strings, column names included, are iterated
    one boxed value at a time: to_dict("records") was 15 s of a national worklist, an indented dump 20 more)."""
    encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    names = list(WORKLIST_COLUMNS)
    columns = [pa.array(public[name], from_pandas=True).to_pylist() for name in names]
    fps = [pa.array(fingerprints[name], from_pandas=True).to_pylist() for name in fingerprints.columns]
    parts = {fp: encode(refs.certificate_parts(fp)) for fp in set().union(*map(set, fps))}  # a few distinct
    return [
        EncodedJSON(
            encode(dict(zip(names, values)))[:-1]
            + f', "current_certificates": {{"NO_DS": {parts[ds]}, "NO_KA": {parts[ka]}}}'
            + f', "target_certificates": {{"NO_DS": {parts[tds]}, "NO_KA": {parts[tka]}}}}}'
        )
        for values, ds, ka, tds, tka in zip(zip(*columns), *fps)
    ]


def _manual_ids(plan_dir: Path) -> set:
    from remediation.outcomes.change_requests import read_change_requests

    frame = read_change_requests(plan_dir)
    return set(frame["device_id"]) if frame is not None else set()


def write_worklist(sources: Sources, out: Path, now: str) -> dict:
    """Write one CSV and one JSON per current holder and index.json (files, counts, SHA-256, column meanings)."""
    from remediation.evidence.hashing import sha256_file
    from remediation.outputs import prepare_dir, write_csv, write_json

    refs = References.read(sources.plan_dir)
    rows = build_worklist(sources)
    out = prepare_dir(out)
    files = []
    names = folder_names(sorted(set(rows["current_holder"])))
    for holder, group in _by_holder(rows):
        name = f"worklist-{names[holder]}"
        cc = sorted(set(group["registered_no"]) - {holder, ""})
        public = group[list(WORKLIST_COLUMNS)]
        write_csv(out / f"{name}.csv", public)
        devices = _device_records(public, group[["_ds", "_ka", "_tds", "_tka"]], refs)
        write_json(
            out / f"{name}.json",
            {
                "schema": WORKLIST_SCHEMA,
                "service_request": SERVICE_REQUEST,
                "to": holder,
                "to_name": refs.names.get(holder),
                "cc": cc,
                "plan_hash": sources.plan.get("plan_hash"),
                "generated_at": now,
                "devices": devices,
            },
            records="devices",
        )
        for ext in ("csv", "json"):
            files.append(
                {
                    "name": f"{name}.{ext}",
                    "to": holder,
                    "cc": cc,
                    "devices": int(len(group)),
                    "sha256": sha256_file(out / f"{name}.{ext}"),
                }
            )
    index = {
        "schema": WORKLIST_SCHEMA,
        "source": str(sources.directory.resolve()),
        "source_kind": sources.kind,
        # A run that has not finished still has open devices a resume will write: they are listed, as "apply pending".
        "run_status": run_state(sources.directory)["status"] if sources.kind == "run" else None,
        "open_devices": int(
            rows["route"].isin(["apply pending", "apply not applied"]).sum()
            + rows["route"].str.match(r"apply (reading|writing|confirming)").sum()
        ),
        "plan_hash": sources.plan.get("plan_hash"),
        "generated_at": now,
        "service_request": SERVICE_REQUEST,
        "devices": int(len(rows)),
        "by_holder": {k: int(v) for k, v in rows.groupby("current_holder").size().items()},
        "by_route": {k: int(v) for k, v in rows["route"].str.split(":").str[0].value_counts().sort_index().items()},
        "by_category": {k: int(v) for k, v in rows.groupby("category").size().items()},
        "columns": WORKLIST_COLUMNS,
        "files": files,
    }
    write_json(out / "index.json", index)
    return index
