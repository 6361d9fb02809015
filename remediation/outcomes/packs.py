"""NO notification packs: after a run, one folder per organisation the run affects.

- registered NO: the devices the run wrote to its current certificates (`devices-now-registered.csv`) and how to
  confirm them with SRV 6.24.1;
- previous certificate holder: the devices whose slots held its certificates and no longer do
  (`devices-no-longer-controlled.csv`), with the data-protection note to purge their alert data.

Each folder has a short letter in Markdown and HTML saying the same things (templates/letter.*.j2).
`manifest.json` lists every file with its SHA-256; `summary.json` holds the counts and the alert-routing impact
summary. The audit export carries the packs and signs them with everything else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from remediation.artefacts.audit_export import MANIFEST
from remediation.artefacts.detect_result import SUMMARY
from remediation.artefacts.plan_dir import PlanDir
from remediation.outcomes.impact import alert_routing_impact, impact_totals
from remediation.outcomes.references import References
from remediation.outcomes.state import CORRECTED, Sources, device_outcomes, run_state
from remediation.outcomes.text import folder_names, render

PACKS_SCHEMA = "remediation/notification-packs/1"
REGISTERED_FILE = "devices-now-registered.csv"
RELEASED_FILE = "devices-no-longer-controlled.csv"
LETTER_ROWS = 25  # devices listed in a letter; the CSV has them all
# The columns each letter lists (the templates name them: device, MPxN, S1SP, written at / now registered to).
REGISTERED_LISTING = ["device_id", "mpxn", "s1sp", "written_at"]
RELEASED_LISTING = ["device_id", "s1sp", "slots", "registered_no"]


def _part(frame: pd.DataFrame, columns: list[str]) -> dict | None:
    """What a letter lists of one kind of device: the count, the first LETTER_ROWS rows' `columns`, how many more."""
    if not len(frame):
        return None
    return {
        "devices": len(frame),
        "rows": frame[columns].head(LETTER_ROWS).values.tolist(),
        "more": max(len(frame) - LETTER_ROWS, 0),
    }


REGISTERED_COLUMNS = [
    "device_id",
    "mpxn",
    "s1sp",
    "device_type",
    "ds_cert_id",
    "ka_cert_id",
    "ds_fingerprint",
    "ka_fingerprint",
    "written_at",
    "operation_id",
]
# No MPxN for a previous holder: the supply point is not its own (data minimisation); the device id is what its
# alert data is keyed by, and all it needs to find and purge that data.
RELEASED_COLUMNS = [
    "device_id",
    "s1sp",
    "device_type",
    "slots",
    "released_ds_cert_id",
    "released_ka_cert_id",
    "registered_no",
    "written_at",
]


@dataclass
class PackInputs:
    sources: Sources
    refs: References
    state: dict
    governance: dict


def written_devices(sources: Sources, refs: References, ops: pd.DataFrame) -> pd.DataFrame:
    """The run's `done` devices (of `ops`, its device outcomes) with their plan rows, target and prior certificate
    ids and holders."""
    done = ops[ops["state"] == "done"]
    plan = pd.read_parquet(
        PlanDir(sources.plan_dir).rows_path,
        columns=[
            "device_id",
            "operation_id",
            "s1sp",
            "device_type",
            "mpxn",
            "registered_no",
            "expected_ds_fingerprint",
            "expected_ka_fingerprint",
            "target_ds_fingerprint",
            "target_ka_fingerprint",
        ],
    )
    frame = done[["operation_id", "prior_ds_fp", "prior_ka_fp", "at"]].merge(plan, on="operation_id", how="inner")
    for slot in ("ds", "ka"):
        prior = (
            frame[f"prior_{slot}_fp"]
            .astype(object)
            .where(
                frame[f"prior_{slot}_fp"].notna() & (frame[f"prior_{slot}_fp"] != ""),
                frame[f"expected_{slot}_fingerprint"],
            )
        )
        frame[f"prior_{slot}"] = prior.fillna("")
        owner = refs.owner_of(frame[f"prior_{slot}"])
        registered_entity = refs.entity_of_no(frame["registered_no"])
        # Only a certificate the Organisation CA issued names a real organisation; an impostor's claim is not one.
        frame[f"holder_{slot}"] = owner.where((owner != registered_entity) & refs.trusted(frame[f"prior_{slot}"]), "")
    return frame.sort_values(["registered_no", "s1sp", "device_id"], ignore_index=True)


def _registered_rows(frame: pd.DataFrame, refs: References) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": frame["device_id"],
            "mpxn": frame["mpxn"],
            "s1sp": frame["s1sp"],
            "device_type": frame["device_type"],
            "ds_cert_id": refs.certificate_ids(frame["target_ds_fingerprint"]),
            "ka_cert_id": refs.certificate_ids(frame["target_ka_fingerprint"]),
            "ds_fingerprint": frame["target_ds_fingerprint"],
            "ka_fingerprint": frame["target_ka_fingerprint"],
            "written_at": frame["at"],
            "operation_id": frame["operation_id"],
        },
        columns=REGISTERED_COLUMNS,
    )


def released_rows(frame: pd.DataFrame, refs: References) -> pd.DataFrame:
    """One row per (previous holder, device): the slots it held, the certificate ids removed, the new NO."""
    parts = []
    for slot, name in (("ds", "NO_DS"), ("ka", "NO_KA")):
        held = frame[frame[f"holder_{slot}"] != ""]
        parts.append(held.assign(holder_entity=held[f"holder_{slot}"], slot=name))
    if not any(len(p) for p in parts):
        return pd.DataFrame(columns=["holder", "holder_entity", *RELEASED_COLUMNS])
    long = pd.concat(parts, ignore_index=True)
    long["ds_held"], long["ka_held"] = long["slot"] == "NO_DS", long["slot"] == "NO_KA"
    held = long.groupby(["holder_entity", "device_id"], sort=False)[["ds_held", "ka_held"]].any().reset_index()
    per = (
        long.drop(columns=["ds_held", "ka_held"])
        .drop_duplicates(["holder_entity", "device_id"])
        .merge(held, on=["holder_entity", "device_id"])
    )
    ds_held, ka_held = per["ds_held"], per["ka_held"]
    per["slots"] = np.select([ds_held & ka_held, ds_held], ["NO_DS NO_KA", "NO_DS"], "NO_KA")
    out = pd.DataFrame(
        {
            "holder": refs.label(per["holder_entity"]),
            "holder_entity": per["holder_entity"],
            "device_id": per["device_id"],
            "s1sp": per["s1sp"],
            "device_type": per["device_type"],
            "slots": per["slots"],
            "released_ds_cert_id": refs.certificate_ids(per["prior_ds"].where(ds_held, "")),
            "released_ka_cert_id": refs.certificate_ids(per["prior_ka"].where(ka_held, "")),
            "registered_no": per["registered_no"],
            "written_at": per["at"],
        }
    )
    return out.sort_values(["holder", "s1sp", "device_id"], ignore_index=True)


def letter_context(
    org: str, name: str | None, registered: pd.DataFrame, released: pd.DataFrame, inputs: PackInputs, now: str
) -> dict:
    """What a letter says, for its Markdown and HTML templates alike: the organisation, its devices now registered
    to it (counts per S1SP, the certificate ids written) and those it no longer controls, and the references."""
    g = inputs.governance
    part = _part(registered, REGISTERED_LISTING)
    if part is not None:
        part["by_s1sp"] = [(k, int(v)) for k, v in registered.groupby("s1sp").size().items()]
        part["ds_ids"] = sorted(set(registered["ds_cert_id"]))
        part["ka_ids"] = sorted(set(registered["ka_cert_id"]))
    return {
        "org": org,
        "name": name if name and name != org else None,
        "now": now,
        "registered": part,
        "released": _part(released, RELEASED_LISTING),
        "registered_file": REGISTERED_FILE,
        "released_file": RELEASED_FILE,
        "references": {
            "change_record": g.get("change_record") or "not recorded",
            "decision": g.get("decision") or "not recorded",
            "plan_hash": inputs.sources.plan.get("plan_hash", ""),
            "run_status": inputs.state["status"],
        },
    }


def write_packs(sources: Sources, out: Path, now: str, state: dict | None = None) -> dict:
    """Write every pack, summary.json and manifest.json (SHA-256 of every file) into `out`; return the manifest.
    `state`: the run's state when the caller has it already (each reading verifies the whole journal)."""
    from remediation.evidence.hashing import sha256_file
    from remediation.outputs import prepare_dir, write_csv, write_json, write_text

    if sources.kind != "run":
        from remediation.errors import InputError

        raise InputError(
            f"notification packs are made from a run directory; this is a {sources.kind} directory",
            file=str(sources.directory),
        )
    refs = References.read(sources.plan_dir)
    state = state or run_state(sources.directory)
    inputs = PackInputs(sources, refs, state, sources.plan.get("governance") or {})
    ops = device_outcomes(sources.directory)  # verified from the journal once, for the packs and the impact
    written = written_devices(sources, refs, ops)
    registered_all = _registered_rows(written, refs).assign(registered_no=written["registered_no"])
    released_all = released_rows(written, refs)
    out = prepare_dir(out)
    organisations = sorted(set(registered_all["registered_no"]) | set(released_all["holder"]))
    packs = []
    registered_by = {k: g for k, g in registered_all.groupby("registered_no", sort=False)}
    released_by = {k: g for k, g in released_all.groupby("holder", sort=False)}
    folders = folder_names(organisations)
    for org in organisations:
        registered = registered_by.get(org, registered_all.iloc[:0])[REGISTERED_COLUMNS]
        released = released_by.get(org, released_all.iloc[:0])
        folder = prepare_dir(out / folders[org])
        if len(registered):
            write_csv(folder / REGISTERED_FILE, registered)
        if len(released):
            write_csv(folder / RELEASED_FILE, released[RELEASED_COLUMNS])
        name = refs.describe(org)
        letter = letter_context(org, name, registered, released, inputs, now)
        write_text(folder / "letter.md", render(__package__, "letter.md.j2", **letter))
        write_text(folder / "letter.html", render(__package__, "letter.html.j2", **letter))
        packs.append(
            {
                "organisation": org,
                "name": name,
                "folder": folder.name,
                "devices_now_registered": int(len(registered)),
                "devices_no_longer_controlled": int(len(released)),
            }
        )
    impact = alert_routing_impact(sources.plan_dir, set(ops.loc[ops["state"].isin(CORRECTED), "device_id"]))
    summary = {
        "schema": PACKS_SCHEMA,
        "run_dir": str(sources.directory.resolve()),
        "plan_hash": sources.plan.get("plan_hash"),
        "run_status": state["status"],
        "governance": inputs.governance,
        "generated_at": now,
        "devices_written": int(len(written)),
        "devices_with_known_previous_holder": int(released_all["device_id"].nunique()) if len(released_all) else 0,
        "packs": packs,
        "alert_routing_impact": impact,
        "alert_routing_totals": impact_totals(impact),
    }
    write_json(out / SUMMARY, summary)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "schema": PACKS_SCHEMA,
        "plan_hash": sources.plan.get("plan_hash"),
        "generated_at": now,
        "files": [
            {"name": p.relative_to(out).as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
        ],
    }
    write_json(out / MANIFEST, manifest)
    return summary
