"""Verify: detect again on fresh extracts and judge the result against the plan.

The residual are the devices still WRONG_NO; with a plan, each residual device is traced to what it was at plan time
(planned and not fixed, or excluded and as what), and every planned device (and every manual S1SP's change-request
device) is checked at target: both NO slots now hold exactly the fingerprints the plan targeted. A planned device
missing from the fresh extracts is not at target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from remediation.config import CaseConfig, ExtractSource, canonical_dialect
from remediation.detect import Detection
from remediation.errors import InputError
from remediation.model import CATEGORIES, FINDING_COLUMNS, Category


@dataclass
class Verdict:
    """verify.json: the keys appear in this order; a judgement that was not made (no plan, no manual S1SP) is left
    out rather than written as null."""

    residual_wrong: int
    devices: int
    devices_by_category: dict[str, int]
    residual_by_category_at_plan: dict[str, int] | None = None
    residual_planned: int | None = None
    planned: int | None = None
    planned_at_target: int | None = None
    manual_change_requests: int | None = None
    manual_at_target: int | None = None

    def document(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Verification:
    verdict: Verdict
    residual: pd.DataFrame  # residual_wrong.csv
    planned_not_at_target: pd.DataFrame | None = None  # device_id, s1sp, operation_id
    manual_not_at_target: pd.DataFrame | None = None  # device_id, s1sp, change_request_line


def fresh_case(config: CaseConfig, fresh_dir: Path) -> CaseConfig:
    """The case with each S1SP's extract replaced by DIR/<s1sp>.csv in the canonical dialect (a simulator export)."""
    dialect = canonical_dialect()
    extracts = []
    for code in sorted({e.s1sp for e in config.extracts}):
        path = Path(fresh_dir) / f"{code.lower()}.csv"
        if not path.exists():
            raise InputError(f"no fresh extract for {code}", file=str(path))
        extracts.append(ExtractSource(code, path.resolve(), dialect))
    return replace(config, extracts=tuple(extracts))


def at_target(detection: Detection, rows: pd.DataFrame) -> np.ndarray:
    """Per row (device_id, target_ds_fingerprint, target_ka_fingerprint): do both slots now hold the targets?"""
    positions = detection.positions_of(rows["device_id"])
    found = positions >= 0  # a device missing from the fresh extracts is not at target
    seen = detection.subset(positions[found])
    result = np.zeros(len(rows), dtype=bool)
    result[found] = np.logical_and.reduce(
        [
            seen[f"{slot}_fingerprint"].astype(object).to_numpy()
            == rows[f"target_{slot}_fingerprint"].to_numpy()[found]
            for slot in ("ds", "ka")
        ]
    )
    return result


def categories_at_plan(findings_path: Path, device_ids: pd.Series) -> pd.Series:
    """device id -> its category in the plan's findings, for the given devices only (read as Arrow, filtered)."""
    table = pq.read_table(findings_path, columns=["device_id", "category"])
    table = table.filter(pc.is_in(table["device_id"], value_set=pa.array(device_ids.astype(str).tolist(), pa.string())))
    frame = table.to_pandas().drop_duplicates("device_id")
    return frame.set_index("device_id")["category"].astype(str)


def verify_detection(
    detection: Detection,
    devices_by_category: dict[str, int],
    plan_rows: pd.DataFrame | None = None,
    plan_findings: Path | None = None,
    change_requests: pd.DataFrame | None = None,
) -> Verification:
    """Judge a fresh detection; with a plan (its rows and the findings it was made from), also the planned devices,
    and with a manual S1SP's change requests, those."""
    # Only the residual and the planned devices are built as tables: a national fresh extract is 10 million devices.
    residual = detection.subset(detection.codes("category") == CATEGORIES.index(Category.WRONG_NO.value))[
        list(FINDING_COLUMNS)
    ]
    verdict = Verdict(int(len(residual)), int(len(detection)), devices_by_category)
    result = Verification(verdict, residual)
    if plan_rows is None:
        return result
    # Why is a residual device still wrong? Planned (and not fixed) or excluded at plan time, and as what.
    at_plan = categories_at_plan(plan_findings, residual["device_id"])
    residual["category_at_plan"] = residual["device_id"].map(at_plan).fillna("not in plan's extracts")
    residual["planned"] = residual["device_id"].isin(plan_rows["device_id"])
    verdict.residual_by_category_at_plan = {
        str(k): int(v) for k, v in residual["category_at_plan"].value_counts().sort_index().items()
    }
    verdict.residual_planned = int(residual["planned"].sum())
    planned = at_target(detection, plan_rows)
    verdict.planned = int(len(plan_rows))
    verdict.planned_at_target = int(planned.sum())
    result.planned_not_at_target = plan_rows.loc[~planned, ["device_id", "s1sp", "operation_id"]]
    if change_requests is not None:
        manual = at_target(detection, change_requests)
        verdict.manual_change_requests = int(len(change_requests))
        verdict.manual_at_target = int(manual.sum())
        result.manual_not_at_target = change_requests.loc[~manual, ["device_id", "s1sp", "change_request_line"]]
    return result
