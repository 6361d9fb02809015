"""Manual S1SPs (contract v2, `[s1sp.CODE] mode = "manual"`): their planned devices leave the API plan and become
a change-request export the S1SP carries out under its own four-eyes control. Apply never sees those rows, so it
makes no API call to a manual S1SP; verify reads the S1SP's fresh extract like any other and reports whether the
change-request devices reached their targets.

`change_requests.parquet` (all manual rows, with target certificates) and one CSV per manual S1SP in
`change_requests/`, each row with current and target Certificate IDs and fingerprints and empty four-eyes columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from remediation.outcomes.references import References

CHANGE_REQUESTS_FILE = "change_requests.parquet"
CHANGE_REQUEST_COLUMNS = [
    "change_request_line",
    "device_id",
    "s1sp",
    "device_type",
    "mpxn",
    "registered_no",
    "category",
    "operation_id",
    "current_ds_cert_id",
    "current_ds_fingerprint",
    "current_ka_cert_id",
    "current_ka_fingerprint",
    "target_ds_cert_id",
    "target_ds_fingerprint",
    "target_ka_cert_id",
    "target_ka_fingerprint",
    "target_ds_cert",
    "target_ka_cert",
    "applied_by",
    "applied_at",
    "checked_by",
    "four_eyes_checked",
]


def manual_s1sps(endpoints: dict) -> list[str]:
    """S1SP codes whose configured mode is manual (from CaseConfig.endpoints or plan.json's endpoints)."""
    out = []
    for code, ep in endpoints.items():
        mode = ep.get("mode") if isinstance(ep, dict) else getattr(ep, "mode", "automated")
        if mode == "manual":
            out.append(code)
    return sorted(out)


def split_manual(rows: pd.DataFrame, manual: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows apply writes through the API, rows that become change requests)."""
    is_manual = rows["s1sp"].isin(manual)
    return rows[~is_manual].reset_index(drop=True), rows[is_manual].reset_index(drop=True)


def change_request_rows(manual_rows: pd.DataFrame, refs: References) -> pd.DataFrame:
    frame = manual_rows.copy()
    frame["change_request_line"] = frame.groupby("s1sp").cumcount() + 1
    frame["current_ds_fingerprint"] = frame["expected_ds_fingerprint"]
    frame["current_ka_fingerprint"] = frame["expected_ka_fingerprint"]
    for when in ("current", "target"):
        for slot in ("ds", "ka"):
            frame[f"{when}_{slot}_cert_id"] = refs.certificate_ids(frame[f"{when}_{slot}_fingerprint"])
    for col in ("applied_by", "applied_at", "checked_by"):
        frame[col] = ""
    frame["four_eyes_checked"] = "[ ]"
    return frame.reindex(columns=CHANGE_REQUEST_COLUMNS)


def write_change_requests(out: Path, frame: pd.DataFrame) -> dict[str, Path]:
    """change_requests.parquet and change_requests/<s1sp>.csv; returns {relative name: path} for plan.json's outputs."""
    from remediation.outputs import prepare_dir, write_csv, write_parquet

    written = {CHANGE_REQUESTS_FILE: write_parquet(out / CHANGE_REQUESTS_FILE, frame)}
    folder = prepare_dir(out / "change_requests")
    for s1sp, group in frame.groupby("s1sp", sort=True):
        name = f"change_requests/{str(s1sp).lower()}.csv"
        written[name] = write_csv(folder / f"{str(s1sp).lower()}.csv", group)
    return written


def read_change_requests(plan_dir: Path) -> pd.DataFrame | None:
    path = Path(plan_dir) / CHANGE_REQUESTS_FILE
    return pd.read_parquet(path) if path.exists() else None


def manual_counts(frame: pd.DataFrame) -> dict:
    return {
        "devices": int(len(frame)),
        "by_s1sp": {k: int(v) for k, v in frame.groupby("s1sp").size().sort_index().items()},
        "by_registered_no": {k: int(v) for k, v in frame.groupby("registered_no").size().sort_index().items()},
    }
