"""The one place outcomes read findings: the contract's `cause` and `no_locked_out` columns where detect wrote
them, otherwise derived from the category and slot verdicts, so outputs are the same before and after detect
carries the columns itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

# Categories in which the registered NO cannot manage the device itself (contract v2); EXPIRED_OR_REVOKED only
# when revoked. Used only when findings do not carry `no_locked_out`.
LOCKED_OUT_CATEGORIES = ("WRONG_NO", "SLOT_EMPTY", "KEY_USAGE_MISMATCH")
CANDIDATE_CATEGORIES = (*LOCKED_OUT_CATEGORIES, "EXPIRED_OR_REVOKED", "PENDING_NO_CHANGE", "SECURITY_HOLD")
_BASE_COLUMNS = [
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "category",
    "registered_no",
    "expected_owner",
    "slot_ds_owner",
    "slot_ka_owner",
    "ds_fingerprint",
    "ka_fingerprint",
    "ds_verdict",
    "ka_verdict",
    "ds_role",
    "ka_role",
    "detail",
]
_VERDICT_CAUSE = {"OTHER_ORG": "other_organisation", "NOT_NO_ROLE": "non_no_role", "UNTRUSTED": "untrusted_issuer"}


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    return (
        frame[name].astype(object).where(frame[name].notna(), "").astype(str)
        if name in frame
        else pd.Series("", index=frame.index)
    )


def locked_out(findings: pd.DataFrame) -> pd.Series:
    """True where the registered NO cannot manage the device itself (the contract's `no_locked_out`)."""
    if "no_locked_out" in findings.columns:
        return findings["no_locked_out"].fillna(False).astype(bool)
    category = _text(findings, "category")
    revoked = (_text(findings, "ds_verdict") == "REVOKED") | (_text(findings, "ka_verdict") == "REVOKED")
    return category.isin(LOCKED_OUT_CATEGORIES) | ((category == "EXPIRED_OR_REVOKED") & revoked)


def causes(findings: pd.DataFrame) -> pd.Series:
    """The contract's `cause` per finding; derived from the slot verdicts when detect did not write it."""
    if "cause" in findings.columns:
        return _text(findings, "cause")
    category = _text(findings, "category")
    ds, ka = _text(findings, "ds_verdict"), _text(findings, "ka_verdict")
    first_wrong = np.where(ds.isin(list(_VERDICT_CAUSE)), ds, ka)
    cause = pd.Series(category.str.lower().to_numpy(), index=findings.index, dtype=object)
    wrong = (category == "WRONG_NO").to_numpy()
    cause[wrong] = pd.Series(first_wrong[wrong]).map(_VERDICT_CAUSE).fillna("other_organisation").to_numpy()
    expired_or_revoked = (category == "EXPIRED_OR_REVOKED").to_numpy()
    cause[expired_or_revoked] = np.where(
        ((ds == "REVOKED") | (ka == "REVOKED")).to_numpy()[expired_or_revoked], "revoked", "expired"
    )
    cause[(category == "SLOT_EMPTY").to_numpy()] = "slot_empty"
    cause[(category == "KEY_USAGE_MISMATCH").to_numpy()] = "key_usage_swapped"
    cause[(category == "OK").to_numpy()] = ""
    return cause


def read_findings(path: Path, categories: tuple[str, ...] | None = None, filters: list | None = None) -> pd.DataFrame:
    """The columns outcomes use, for the given categories only (a Parquet filter: nothing else is decoded), with
    `cause` and `no_locked_out` filled in whichever way the file allows."""
    names = pq.read_schema(path).names
    columns = [c for c in (*_BASE_COLUMNS, "cause", "no_locked_out") if c in names]
    if categories:
        filters = [*(filters or []), ("category", "in", list(categories))]
    frame = pq.read_table(path, columns=columns, filters=filters).to_pandas()
    for name in (
        "s1sp",
        "device_type",
        "category",
        "registered_no",
        "expected_owner",
        "slot_ds_owner",
        "slot_ka_owner",
        "ds_fingerprint",
        "ka_fingerprint",
        "ds_verdict",
        "ka_verdict",
        "detail",
    ):
        if name in frame:
            frame[name] = _text(frame, name)
    frame["cause"] = causes(frame)
    frame["no_locked_out"] = locked_out(frame)
    return frame


def locked_out_findings(path: Path) -> pd.DataFrame:
    """Every finding whose registered NO is locked out (read category-filtered, then the flag applied)."""
    names = pq.read_schema(path).names
    if "no_locked_out" in names:
        return read_findings(path, filters=[("no_locked_out", "==", True)]).reset_index(drop=True)
    frame = read_findings(path, CANDIDATE_CATEGORIES)
    return frame[frame["no_locked_out"]].reset_index(drop=True)
