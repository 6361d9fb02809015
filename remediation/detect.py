"""Classify every device into exactly one finding category, in the contract's precedence.

Pure and vectorised: canonical tables in, findings table out; no I/O and no Python loop per device. Certificate
facts are looked up by interned id, so the per-device work is array indexing and comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from remediation.config import Policy
from remediation.model import CATEGORIES, EMPTY_SLOT, FINDING_COLUMNS, ROLE_NAMES, ROLE_NETWORK_OPERATOR, Category

# Per-slot verdicts, most serious first; a slot gets the first that applies.
VERDICTS = ("EMPTY", "UNDECODABLE", "OTHER_ORG", "NOT_NO_ROLE", "UNTRUSTED", "KEY_USAGE", "EXPIRED", "REVOKED", "OK")
WRONG_VERDICTS = ("OTHER_ORG", "NOT_NO_ROLE", "UNTRUSTED")
_VERDICT_TEXT = {
    "EMPTY": "empty",
    "UNDECODABLE": "undecodable certificate",
    "OTHER_ORG": "another organisation's certificate",
    "NOT_NO_ROLE": "certificate without the Network Operator role",
    "UNTRUSTED": "certificate not issued by the Organisation CA",
    "KEY_USAGE": "the registered NO's certificate with the other key usage",
    "EXPIRED": "the registered NO's certificate, not valid on the as-of date",
    "REVOKED": "the registered NO's certificate, revoked (on the ORL)",
    "OK": "the registered NO's certificate",
}
FINDINGS_EXTRA = [
    "registered_no", "ds_fingerprint", "ka_fingerprint", "ds_verdict", "ka_verdict", "ds_role", "ka_role",
    "source_file", "source_row", "rows", "extracted_at", "finding_id",
]  # fmt: skip
FUEL = {"ESME": "E", "GSME": "G"}


@dataclass(frozen=True)
class Detection:
    findings: pd.DataFrame  # one row per device: FINDING_COLUMNS + FINDINGS_EXTRA
    input_rows: pd.DataFrame  # one row per input record: source_file, source_row, n_rows, finding_id


@dataclass(frozen=True)
class CertificateTable:
    """Certificate facts as arrays indexed by certificate id; index -1 (EMPTY_SLOT) hits the sentinel last row."""

    fingerprint: np.ndarray
    error: np.ndarray  # bool
    entity: np.ndarray
    role: np.ndarray
    key_usage: np.ndarray
    chains: np.ndarray
    in_validity: np.ndarray
    revoked: np.ndarray

    @classmethod
    def from_frame(cls, certs: pd.DataFrame) -> CertificateTable:
        def col(name, sentinel, dtype=object):
            return np.append(certs[name].to_numpy(dtype=dtype), np.array([sentinel], dtype=dtype))

        return cls(
            fingerprint=col("fingerprint", ""),
            error=np.append(certs["error"].notna().to_numpy(), False),
            entity=col("entity_id", None),
            role=col("role", -1, np.int64),
            key_usage=col("key_usage", None),
            chains=col("chains", False, bool),
            in_validity=col("in_validity", False, bool),
            revoked=col("revoked", False, bool),
        )


def _collapse_duplicates(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per device key. Identical repeats collapse (their rows are summed); differing ones conflict."""
    unnamed = "?" + records["source_file"].astype(str) + "#" + records["source_row"].astype(str)
    rec = records.assign(key=records["device_id"].astype(object).where(records["device_id"].notna(), unnamed))
    per_key = rec.groupby("key", sort=False).agg(
        rows=("n_rows", "sum"), invalid=("invalid", "any"), conflict=("conflict", "any"), extracted_at=("extracted_at", "max")
    )
    # The S1SP is part of a device's content: a device two S1SPs both hold cannot be written safely to either.
    distinct = rec.drop_duplicates(["key", "s1sp", "device_type", "mpxn", "ds", "ka"])
    clash_keys = distinct.loc[distinct["key"].duplicated(keep=False), "key"].unique()
    per_key.loc[clash_keys, "conflict"] = True
    first = distinct.drop_duplicates("key").set_index("key")
    devices = first[["s1sp", "device_raw", "device_id", "device_type", "mpxn", "ds", "ka", "source_file", "source_row"]].join(per_key)
    # Which device (finding) each input record became: the trace from input rows to outcomes.
    position = pd.Series(np.arange(len(devices), dtype=np.int64), index=devices.index)
    input_rows = pd.DataFrame({"source_file": records["source_file"].to_numpy(), "source_row": records["source_row"].to_numpy(),
                               "n_rows": records["n_rows"].to_numpy(), "finding_id": rec["key"].map(position).to_numpy()})  # fmt: skip
    devices["dup_detail"] = None
    conflicted = devices.index[devices["conflict"].to_numpy()]
    if len(conflicted):
        involved = rec[rec["key"].isin(conflicted)]
        sources = (file_names(involved["source_file"]) + " row " + involved["source_row"].astype(str)).groupby(involved["key"]).agg("; ".join)
        labels = involved.groupby("key")["s1sp"].agg(lambda s: "+".join(sorted(set(s))))
        devices.loc[conflicted, "s1sp"] = labels.reindex(conflicted).to_numpy()
        devices.loc[conflicted, "dup_detail"] = ("records differ: " + sources.reindex(conflicted)).to_numpy()
    return devices.reset_index(drop=True), input_rows


def file_names(files: pd.Series) -> pd.Series:
    names = {f: Path(f).name for f in files.unique()}
    return files.map(names)


def _registration(devices: pd.DataFrame, registrations: pd.DataFrame, as_of: date, policy: Policy) -> pd.DataFrame:
    """Attach the registration effective on the as-of date: count, NO id, and why it is missing or ambiguous."""
    day = pd.Timestamp(as_of)
    good = registrations[~registrations["invalid"].astype(bool)]
    to = good["effective_to"]
    ends_ok = to.isna() | ((to >= day) if policy.rdp_effective_to_inclusive else (to > day))
    effective = good[(good["effective_from"] <= day) & ends_ok]
    distinct = effective.drop_duplicates(["mpxn", "fuel", "network_operator_id"])
    grouped = distinct.groupby(["mpxn", "fuel"], sort=False)["network_operator_id"]
    per_mpxn = pd.DataFrame({"rdp_count": grouped.size(), "network_operator_id": grouped.first()})
    many = per_mpxn.index[per_mpxn["rdp_count"].to_numpy() > 1]
    per_mpxn["rdp_detail"] = None
    if len(many):
        ids = distinct.set_index(["mpxn", "fuel"]).loc[many].groupby(level=[0, 1])["network_operator_id"].agg(lambda s: ", ".join(sorted(s)))
        per_mpxn.loc[many, "rdp_detail"] = ("registrations effective on " + str(as_of) + ": " + ids).to_numpy()
    devices = devices.assign(fuel=devices["device_type"].map(FUEL))
    out = devices.merge(per_mpxn.reset_index(), how="left", on=["mpxn", "fuel"])
    out["rdp_count"] = out["rdp_count"].fillna(0).astype(np.int64)
    # A rejected RDP row could be the registration that counts: never trust the rest of that MPxN's history.
    # A rejected row of the other fuel does not touch this device; one whose fuel is unreadable touches both.
    rejected = registrations[registrations["invalid"].astype(bool) & registrations["mpxn"].notna()]
    same_fuel = out[["mpxn", "fuel"]].merge(rejected[["mpxn", "fuel"]].drop_duplicates(), how="left", indicator=True)["_merge"] == "both"
    any_fuel = out["mpxn"].isin(rejected.loc[rejected["fuel"].isna(), "mpxn"].unique())
    out["rdp_rejected"] = same_fuel.to_numpy() | any_fuel.to_numpy()
    if out["rdp_rejected"].any():
        where = (file_names(rejected["source_file"]) + " row " + rejected["source_row"].astype(str)).groupby(rejected["mpxn"]).agg("; ".join)
        hit = out["rdp_rejected"].to_numpy()
        out.loc[hit, "rdp_detail"] = ("an RDP row for this MPxN was rejected: " + out.loc[hit, "mpxn"].map(where)).to_numpy()
    return out


def _slot_verdicts(ids: np.ndarray, expected_entity: np.ndarray, usage: str, certs: CertificateTable) -> np.ndarray:
    ids = ids.astype(np.int64)
    present = ids != EMPTY_SLOT
    decoded = present & ~certs.error[ids]
    entity = certs.entity[ids]
    other_org = decoded & (entity != expected_entity)
    not_no = decoded & (certs.role[ids] != ROLE_NETWORK_OPERATOR)
    untrusted = decoded & ~certs.chains[ids]
    key_usage = decoded & (certs.key_usage[ids] != usage)
    expired = decoded & ~certs.in_validity[ids]
    revoked = decoded & certs.revoked[ids]
    conditions = [~present, present & ~decoded, other_org, not_no, untrusted, key_usage, expired, revoked]
    return np.select(conditions, list(VERDICTS[:-1]), default="OK")


def _owner(ids: np.ndarray, certs: CertificateTable) -> np.ndarray:
    ids = ids.astype(np.int64)
    owner = certs.entity[ids].astype(object)
    owner[ids == EMPTY_SLOT] = ""
    owner[(ids != EMPTY_SLOT) & certs.error[ids]] = "UNDECODABLE"
    return owner


def _slot_detail(ds: np.ndarray, ka: np.ndarray) -> np.ndarray:
    """Detail text for a pair of verdicts, from a lookup table of the few pairs that occur."""
    pairs = pd.Series(ds, dtype=object) + "|" + pd.Series(ka, dtype=object)
    texts = {p: f"NO_DS: {_VERDICT_TEXT[p.split('|')[0]]}; NO_KA: {_VERDICT_TEXT[p.split('|')[1]]}" for p in pairs.unique()}
    return pairs.map(texts).to_numpy()


def find_wrong_devices(
    records: pd.DataFrame,
    certs: pd.DataFrame,
    registrations: pd.DataFrame,
    registry: pd.DataFrame,
    as_of: date,
    policy: Policy,
    quarantine: pd.DataFrame | None = None,
) -> Detection:
    """Canonical device records (all S1SPs) -> one finding per device, and the trace of each input record to its finding."""
    table = CertificateTable.from_frame(certs)
    devices, input_rows = _collapse_duplicates(records)
    devices = _registration(devices, registrations, as_of, policy)
    devices = devices.merge(registry, how="left", on="network_operator_id")
    known_no = devices["expected_entity"].notna() & (devices["no_fuel"] == devices["fuel"])
    expected = devices["expected_entity"].to_numpy(dtype=object)
    ds_verdict = _slot_verdicts(devices["ds"].to_numpy(), expected, "DS", table)
    ka_verdict = _slot_verdicts(devices["ka"].to_numpy(), expected, "KA", table)

    def either(*verdicts):
        return np.isin(ds_verdict, verdicts) | np.isin(ka_verdict, verdicts)

    rdp_count, rejected = devices["rdp_count"].to_numpy(), devices["rdp_rejected"].to_numpy()
    conditions = [
        devices["invalid"].to_numpy(dtype=bool),
        devices["conflict"].to_numpy(dtype=bool),
        (rdp_count == 0) & ~rejected,
        (rdp_count > 1) | rejected,
        ~known_no.to_numpy(),
        either(*WRONG_VERDICTS),
        either("EMPTY"),
        either("KEY_USAGE"),
        either("EXPIRED", "REVOKED"),
    ]
    order = [c for c in CATEGORIES if c != Category.OK.value]
    category = np.select(conditions, order, default=Category.OK.value)

    slot_detail = _slot_detail(ds_verdict, ka_verdict)
    detail = pd.Series(slot_detail, dtype=object)
    detail[category == Category.DUPLICATE_CONFLICT.value] = devices.loc[category == Category.DUPLICATE_CONFLICT.value, "dup_detail"].fillna(
        "the same device appears with differing content"
    )
    detail[category == Category.NO_RDP.value] = f"no RDP registration effective on {as_of}"
    ambiguous = category == Category.RDP_AMBIGUOUS.value
    detail[ambiguous] = devices.loc[ambiguous, "rdp_detail"].to_numpy()
    unknown = category == Category.UNKNOWN_NO.value
    no_ids = devices.loc[unknown, "network_operator_id"].astype(str)
    wrong_fuel = devices.loc[unknown, "expected_entity"].notna()
    detail[unknown] = np.where(
        wrong_fuel, "registered network operator " + no_ids + " serves the other fuel", "network operator " + no_ids + " is not in the NO registry"
    )
    invalid = category == Category.INVALID_INPUT.value
    if invalid.any():
        detail[invalid] = _invalid_detail(devices.loc[invalid], quarantine)

    findings = pd.DataFrame(
        {
            "finding_id": np.arange(len(devices), dtype=np.int64),
            "device_id": devices["device_id"].astype(object).where(devices["device_id"].notna(), devices["device_raw"]).to_numpy(),
            "s1sp": devices["s1sp"].to_numpy(),
            "device_type": devices["device_type"].to_numpy(),
            "mpxn": devices["mpxn"].to_numpy(),
            "category": category,
            "slot_ds_owner": _owner(devices["ds"].to_numpy(), table),
            "slot_ka_owner": _owner(devices["ka"].to_numpy(), table),
            "expected_owner": devices["expected_entity"].to_numpy(),
            "detail": detail.to_numpy(),
            "registered_no": devices["network_operator_id"].to_numpy(),
            "ds_fingerprint": table.fingerprint[devices["ds"].to_numpy(dtype=np.int64)],
            "ka_fingerprint": table.fingerprint[devices["ka"].to_numpy(dtype=np.int64)],
            "ds_verdict": ds_verdict,
            "ka_verdict": ka_verdict,
            "ds_role": table.role[devices["ds"].to_numpy(dtype=np.int64)],
            "ka_role": table.role[devices["ka"].to_numpy(dtype=np.int64)],
            "source_file": file_names(devices["source_file"]).to_numpy(),
            "source_row": devices["source_row"].to_numpy(dtype=np.int64),
            "rows": devices["rows"].to_numpy(dtype=np.int64),
            "extracted_at": devices["extracted_at"].to_numpy(),
        }
    )
    input_rows["source_file"] = file_names(input_rows["source_file"]).to_numpy()
    return Detection(findings[list(FINDING_COLUMNS) + FINDINGS_EXTRA], input_rows)


def _invalid_detail(devices: pd.DataFrame, quarantine: pd.DataFrame | None) -> np.ndarray:
    fallback = "invalid input (see quarantine)"
    if quarantine is None or quarantine.empty:
        return np.full(len(devices), fallback, dtype=object)
    q = quarantine.assign(item=quarantine["field"] + ": " + quarantine["reason"])
    by_row = q.groupby(["file", "row"])["item"].agg("; ".join)
    keys = pd.MultiIndex.from_arrays([devices["source_file"].astype(str), devices["source_row"].astype(np.int64)])
    found = by_row.reindex(keys).to_numpy(dtype=object)
    # A device whose first row was clean but another of its rows was not: name the device, not a row.
    return np.where(pd.isna(found), "invalid input in another row of this device (see quarantine)", found)


def wrong_owner_matrix(findings: pd.DataFrame, labels: dict[str, str]) -> list[dict]:
    """WRONG_NO devices counted by (owner of the first wrong slot, registered owner), with readable labels."""
    wrong = findings[findings["category"] == Category.WRONG_NO.value]
    if wrong.empty:
        return []
    ds_wrong = wrong["ds_verdict"].isin(WRONG_VERDICTS).to_numpy()
    frame = pd.DataFrame(
        {
            "owner": np.where(ds_wrong, wrong["slot_ds_owner"], wrong["slot_ka_owner"]),
            "role": np.where(ds_wrong, wrong["ds_role"], wrong["ka_role"]),
            "verdict": np.where(ds_wrong, wrong["ds_verdict"], wrong["ka_verdict"]),
            "expected": wrong["expected_owner"].to_numpy(),
        }
    )
    counts = frame.groupby(["owner", "role", "verdict", "expected"], dropna=False).size().reset_index(name="devices")
    rows = []
    for r in counts.itertuples(index=False):
        owner_label = labels.get(r.owner, r.owner or "no entity id")
        if r.role != ROLE_NETWORK_OPERATOR:
            owner_label += f" ({ROLE_NAMES.get(int(r.role), f'role {int(r.role):02X}')} certificate)"
        if r.verdict == "UNTRUSTED":
            owner_label += " (untrusted issuer)"
        rows.append({"wrong_owner": owner_label, "wrong_entity": r.owner, "wrong_role": int(r.role), "expected_owner": labels.get(r.expected, r.expected),
                     "expected_entity": r.expected, "devices": int(r.devices)})  # fmt: skip
    return sorted(rows, key=lambda d: (-d["devices"], d["wrong_owner"], d["expected_owner"]))
