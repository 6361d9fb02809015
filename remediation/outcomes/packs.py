"""NO notification packs: after a run, one folder per organisation the run affects.

- registered NO: the devices the run wrote to its current certificates (`devices-now-registered.csv`) and how to
  confirm them with SRV 6.24.1;
- previous certificate holder: the devices whose slots held its certificates and no longer do
  (`devices-no-longer-controlled.csv`), with the data-protection note to purge their alert data.

Each folder has a short letter in Markdown and HTML saying the same things. `manifest.json` lists every file with
its SHA-256; `summary.json` holds the counts and the alert-routing impact summary. The audit export carries the
packs and signs them with everything else."""

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
from remediation.outcomes.text import folder_names, html, md, md_table

PACKS_SCHEMA = "remediation/notification-packs/1"
REGISTERED_FILE = "devices-now-registered.csv"
RELEASED_FILE = "devices-no-longer-controlled.csv"
LETTER_ROWS = 25  # devices listed in a letter; the CSV has them all
# Each letter's device listing, as (table headers, columns, the CSV that has them all): the same in Markdown and HTML.
REGISTERED_LISTING = (
    ["device", "MPxN", "S1SP", "written at"],
    ["device_id", "mpxn", "s1sp", "written_at"],
    REGISTERED_FILE,
)
RELEASED_LISTING = (
    ["device", "S1SP", "slots", "now registered to"],
    ["device_id", "s1sp", "slots", "registered_no"],
    RELEASED_FILE,
)
_MD_MORE = "\n… and {n} more in `{file}`.".format
_HTML_MORE = "<p>… and {n} more in <code>{file}</code>.</p>".format


def _listing(frame: pd.DataFrame, listing: tuple, table, more) -> list[str]:
    """A letter's table of its first LETTER_ROWS devices, and a line pointing at the CSV for the rest."""
    headers, columns, file = listing
    out = [table(headers, frame[columns].head(LETTER_ROWS).values.tolist())]
    if len(frame) > LETTER_ROWS:
        out.append(more(n=len(frame) - LETTER_ROWS, file=file))
    return out


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


def _references_md(inputs: PackInputs) -> list[str]:
    g, s = inputs.governance, inputs.sources
    lines = [
        f"- Change record: {md(g.get('change_record') or 'not recorded')}",
        f"- Decision: {md(g.get('decision') or 'not recorded')}",
        f"- Plan hash: `{md(s.plan.get('plan_hash', ''))}`",
        f"- Run status: {md(inputs.state['status'])}",
    ]
    return lines


def _letter_md(
    org: str, name: str | None, registered: pd.DataFrame, released: pd.DataFrame, inputs: PackInputs, now: str
) -> str:
    who = f"{md(name)} ({md(org)})" if name and name != org else md(org)
    out = [
        f"# MP107 Requirement 2: Network Operator certificate changes — {who}",
        "",
        f"Issued {md(now)} by the DCC.",
        "",
    ]
    if len(registered):
        by_s1sp = ", ".join(f"{md(k)} {v}" for k, v in registered.groupby("s1sp").size().items())
        ds_ids = ", ".join(md(x) for x in sorted(set(registered["ds_cert_id"])))
        ka_ids = ", ".join(md(x) for x in sorted(set(registered["ka_cert_id"])))
        out += [
            "## Devices now at your certificates",
            "",
            f"The DCC has written your current Network Operator certificates to the NO\\_DS and NO\\_KA anchor slots of "
            f"**{len(registered)}** SMETS1 devices registered to you ({by_s1sp}); they are listed in `{REGISTERED_FILE}` with the time "
            f"each was written. You can now manage these meters (SRV 6.15.1) and their alerts now reach you.",
            "",
            f"- NO\\_DS Certificate ID (serial, issuer): {ds_ids}",
            f"- NO\\_KA Certificate ID (serial, issuer): {ka_ids}",
            "",
            "**How to confirm**: for any listed device, send SRV 6.24.1 (Retrieve Device Security Credentials) for "
            "RemotePartyRole NetworkOperator and check that the returned Certificate IDs (serial number and issuer) equal the ones "
            "above. Report any device that differs to the DCC, quoting the change record.",
            "",
        ]
        out += [*_listing(registered, REGISTERED_LISTING, md_table, _MD_MORE), ""]
    if len(released):
        out += [
            "## Devices you no longer control",
            "",
            f"**{len(released)}** devices held your certificates in a Network Operator slot although another Network Operator is "
            f"registered for their supply point. The DCC has replaced them with the registered NO's certificates; they are listed in "
            f"`{RELEASED_FILE}` with the slots you held and the new registered NO. You will no longer receive these devices' alerts and "
            f"can no longer manage them.",
            "",
            "**Data protection**: alert data you received from these devices relates to supply points that are not yours. "
            "Purge it from your systems, keep no copy, and confirm the purge to the DCC quoting the change record. "
            "The list names devices only: their supply points are not yours, so their MPxNs are not sent to you.",
            "",
        ]
        out += [*_listing(released, RELEASED_LISTING, md_table, _MD_MORE), ""]
    out += ["## References", "", *_references_md(inputs), ""]
    return "\n".join(out)


def _letter_html(
    org: str, name: str | None, registered: pd.DataFrame, released: pd.DataFrame, inputs: PackInputs, now: str
) -> str:
    from remediation.outcomes.text import html_table

    who = f"{html(name)} ({html(org)})" if name and name != org else html(org)
    parts = [
        f"<h1>MP107 Requirement 2: Network Operator certificate changes — {who}</h1>",
        f"<p>Issued {html(now)} by the DCC.</p>",
    ]
    if len(registered):
        by_s1sp = ", ".join(f"{html(k)} {v}" for k, v in registered.groupby("s1sp").size().items())
        parts += [
            "<h2>Devices now at your certificates</h2>",
            f"<p>The DCC has written your current Network Operator certificates to the NO_DS and NO_KA anchor slots of "
            f'<strong data-registered-devices="{len(registered)}">{len(registered)}</strong> SMETS1 devices registered to you ({by_s1sp}); '
            f"they are listed in <code>{REGISTERED_FILE}</code> with the time each was written. You can now manage these meters "
            f"(SRV 6.15.1) and their alerts now reach you.</p>",
            f"<ul><li>NO_DS Certificate ID (serial, issuer): {', '.join(html(x) for x in sorted(set(registered['ds_cert_id'])))}</li>"
            f"<li>NO_KA Certificate ID (serial, issuer): {', '.join(html(x) for x in sorted(set(registered['ka_cert_id'])))}</li></ul>",
            "<p><strong>How to confirm</strong>: for any listed device, send SRV 6.24.1 (Retrieve Device Security Credentials) for "
            "RemotePartyRole NetworkOperator and check that the returned Certificate IDs (serial number and issuer) equal the ones "
            "above. Report any device that differs to the DCC, quoting the change record.</p>",
            *_listing(registered, REGISTERED_LISTING, html_table, _HTML_MORE),
        ]
    if len(released):
        parts += [
            "<h2>Devices you no longer control</h2>",
            f'<p><strong data-released-devices="{len(released)}">{len(released)}</strong> devices held your certificates in a Network Operator '
            f"slot although another Network Operator is registered for their supply point. The DCC has replaced them with the registered "
            f"NO's certificates; they are listed in <code>{RELEASED_FILE}</code> with the slots you held and the new registered NO. You will "
            f"no longer receive these devices' alerts and can no longer manage them.</p>",
            "<p><strong>Data protection</strong>: alert data you received from these devices relates to supply points that are not yours. "
            "Purge it from your systems, keep no copy, and confirm the purge to the DCC quoting the change record. "
            "The list names devices only: their supply points are not yours, so their MPxNs are not sent to you.</p>",
            *_listing(released, RELEASED_LISTING, html_table, _HTML_MORE),
        ]
    g, s = inputs.governance, inputs.sources
    parts.append(
        "<h2>References</h2><ul>"
        + "".join(
            f"<li>{html(k)}: {html(v)}</li>"
            for k, v in (
                ("Change record", g.get("change_record") or "not recorded"),
                ("Decision", g.get("decision") or "not recorded"),
                ("Plan hash", s.plan.get("plan_hash", "")),
                ("Run status", inputs.state["status"]),
            )
        )
        + "</ul>"
    )
    css = (
        "body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:900px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "@media print{body{margin:0;font-size:11pt}h2{break-after:avoid}tr{break-inside:avoid}}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>MP107 R2 notification — {html(org)}</title>'
        f"<style>{css}</style></head><body>{''.join(parts)}</body></html>\n"
    )


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
        write_text(folder / "letter.md", _letter_md(org, name, registered, released, inputs, now))
        write_text(folder / "letter.html", _letter_html(org, name, registered, released, inputs, now))
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
