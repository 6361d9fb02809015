"""A case's detection: the detect stage run over a case's inputs, and the summary whose counts must reconcile with
every row read (a result that loses or double-counts rows is refused, never handed out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from remediation import __version__
from remediation.artefacts.detect_result import DetectSummary
from remediation.detect import OWNER_MATRIX_COLUMNS, Detection, find_wrong_devices, wrong_owner_matrix
from remediation.errors import SafetyRefusal
from remediation.ingest.case import CaseData
from remediation.ingest.faults import concat_quarantine
from remediation.memory import release_memory
from remediation.model import CATEGORIES, CAUSES, Category
from remediation.plan import plannable_categories, plannable_causes
from remediation.progress import NO_PROGRESS, StageProgress


class ReconciliationError(SafetyRefusal):
    """Counts do not add up: refuse to hand out results that lose or double-count rows."""


@dataclass
class DetectResult:
    detection: Detection
    quarantine: pd.DataFrame
    summary: DetectSummary
    case: CaseData

    @property
    def findings(self) -> pd.DataFrame:
        """Every finding as pandas: fine for a sample or a test; national runs use detection.chunks()/subset()."""
        return self.detection.findings

    @property
    def input_rows(self) -> pd.DataFrame:
        return self.detection.input_rows


def detect_case(data: CaseData, progress: StageProgress = NO_PROGRESS) -> DetectResult:
    # The records are handed over, not shared: detection frees them as soon as devices are formed, which is what
    # keeps a national run inside its memory budget.
    records, data.extracts.records = data.extracts.records, None
    rdp_index, data.rdp_index = data.rdp_index, None  # detection drops it once registrations are matched
    detection = find_wrong_devices(
        records,
        data.catalog.frame(data.as_of),
        rdp_index,
        data.registry.frame(),
        data.as_of,
        data.config.policy,
        data.extracts.quarantine,
        device_types=tuple(data.config.device_types.values()),
        enforces_validity={code: ep.enforces_validity for code, ep in data.config.endpoints.items()},
        progress=progress,
    )
    del records, rdp_index
    release_memory()
    progress.stage("summarising and reconciling counts")
    quarantine = concat_quarantine([q for q in (data.extracts.quarantine, data.rdp.quarantine) if len(q)])
    summary = detect_summary(data, detection, quarantine)
    release_memory()  # the summary's temporaries, before the findings are written
    if int(detection.input_rows["n_rows"].sum()) != summary.rows_read["extracts"]:
        raise ReconciliationError("input-row trace does not cover every extract row read")
    return DetectResult(detection, quarantine, summary, data)


def _count_by(categories: np.ndarray, weights: np.ndarray | None = None) -> dict[str, int]:
    counts = np.bincount(categories, weights=weights, minlength=len(CATEGORIES))
    return {c: int(round(counts[i])) for i, c in enumerate(CATEGORIES)}


def detect_summary(data: CaseData, detection: Detection, quarantine: pd.DataFrame) -> DetectSummary:
    rows_read = sum(data.extracts.rows_read.values())
    category = detection.codes("category").astype(np.int64)
    rows = detection.columns["rows"]
    rows_by_category = _count_by(category, rows)
    accounted = sum(rows_by_category.values())
    if accounted != rows_read:
        raise ReconciliationError(
            f"rows do not reconcile: {rows_read} extract rows read, {accounted} accounted for in findings"
        )
    s1sp_codes, s1sp_labels = detection.codes("s1sp"), detection.labels("s1sp")
    by_s1sp = {}
    configured = list(data.config.s1sp_codes)
    for s1sp in [*configured, *sorted(set(s1sp_labels) - set(configured))]:
        code = s1sp_labels.index(s1sp) if s1sp in s1sp_labels else -1
        by_s1sp[s1sp] = _count_by(category[s1sp_codes == code])
    # Only the columns the matrix reads: half a million WRONG_NO devices' text columns as Python strings are ~0.4 GB.
    wrong = detection.subset(category == CATEGORIES.index(Category.WRONG_NO.value), OWNER_MATRIX_COLUMNS)
    files = []
    for source in data.config.extracts:
        files.append(
            {
                "role": "extract",
                "s1sp": source.s1sp,
                "path": str(source.path),
                "sha256": data.sha256(source.path),
                "rows_read": data.extracts.rows_read.get(str(source.path), 0),
            }
        )
    rdp_rejected = data.rdp.rejected_by_file
    for source in data.config.rdp:
        files.append(
            {
                "role": "rdp",
                "s1sp": None,
                "path": str(source.path),
                "sha256": data.sha256(source.path),
                "rows_read": data.rdp.rows_read.get(str(source.path), 0),
                "rows_rejected": int(rdp_rejected.get(str(source.path), 0)),
            }
        )
    rejected_extract_rows = (
        data.extracts.quarantine.drop_duplicates(["file", "row"])
        if len(data.extracts.quarantine)
        else data.extracts.quarantine
    )
    return DetectSummary(
        tool_version=__version__,
        case=data.config.name,
        as_of=data.as_of.isoformat(),
        files=files,
        config_files=[{"path": str(p), "sha256": data.sha256(p)} for p in data.config.config_files],
        rows_read={"extracts": rows_read, "rdp": sum(data.rdp.rows_read.values())},
        devices=int(len(detection)),
        rows_by_category=rows_by_category,
        devices_by_category=_count_by(category),
        devices_by_s1sp=by_s1sp,
        devices_by_cause=_causes_by_category(category, detection.codes("cause")),
        no_locked_out=_locked_out(detection, configured),
        registry_gaps=detection.registry_gaps,
        security_hold=detection.security_holds,
        wrong_owner_matrix=wrong_owner_matrix(wrong, data.registry.label_for_entity()),
        quarantine={
            "issues": int(len(quarantine)),
            "extract_rows": int(len(rejected_extract_rows)),
            "rdp_rows": int(sum(data.rdp.rejected_by_file.values())),
            "by_field": {k: int(v) for k, v in quarantine.groupby("field").size().sort_index().items()}
            if len(quarantine)
            else {},
        },
        reconciled=True,
    )


def _causes_by_category(category: np.ndarray, cause: np.ndarray) -> dict[str, dict[str, int]]:
    """{category: {cause: devices}} for every non-OK category present."""
    pairs = category.astype(np.int64) * len(CAUSES) + cause
    counts = np.bincount(pairs, minlength=len(CATEGORIES) * len(CAUSES)).reshape(len(CATEGORIES), len(CAUSES))
    return {
        CATEGORIES[c]: {CAUSES[k]: int(counts[c, k]) for k in np.flatnonzero(counts[c])}
        for c in np.flatnonzero(counts.sum(axis=1))
        if CATEGORIES[c] != Category.OK.value
    }


def _locked_out(detection: Detection, configured: list[str]) -> dict:
    """The headline MP107 cares about: devices no NO can manage (the registered NO is locked out), by S1SP and NO."""
    locked = detection.columns["no_locked_out"]
    s1sp, s1sp_labels = detection.codes("s1sp")[locked], detection.labels("s1sp")
    no, no_labels = detection.codes("registered_no")[locked], detection.labels("registered_no")
    category = detection.codes("category")[locked]
    by_s1sp = {
        label: int(n) for label, n in zip(s1sp_labels, np.bincount(s1sp[s1sp >= 0], minlength=len(s1sp_labels))) if n
    }
    by_no = {str(label): int(n) for label, n in zip(no_labels, np.bincount(no[no >= 0], minlength=len(no_labels))) if n}
    pairs: dict[str, dict[str, int]] = {}
    width = len(no_labels) + 1  # the last code: no registered NO
    counts = np.bincount(
        s1sp.astype(np.int64) * width + np.where(no >= 0, no, width - 1), minlength=len(s1sp_labels) * width
    )
    for at in np.flatnonzero(counts):
        a, b = divmod(int(at), width)
        pairs.setdefault(str(s1sp_labels[a]), {})[str(no_labels[b]) if b < len(no_labels) else ""] = int(counts[at])
    return {
        "devices": int(locked.sum()),
        "by_category": {
            CATEGORIES[c]: int(n) for c, n in enumerate(np.bincount(category, minlength=len(CATEGORIES))) if n
        },
        "by_s1sp": {k: by_s1sp[k] for k in [*configured, *sorted(set(by_s1sp) - set(configured))] if k in by_s1sp},
        "by_registered_no": dict(sorted(by_no.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_s1sp_and_no": pairs,
    }


def plannable_mask(detection: Detection, policy) -> np.ndarray:
    """`plan.plannable`'s rule over a whole detection, on codes: only the chosen devices are then built as a table."""
    category = detection.codes("category")
    mask = np.isin(category, [CATEGORIES.index(c) for c in plannable_categories(policy)])
    for name, cause in plannable_causes(policy):
        mask |= (category == CATEGORIES.index(name)) & (detection.codes("cause") == CAUSES.index(cause))
    return mask
