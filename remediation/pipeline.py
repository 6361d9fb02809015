"""One function per command: wire config, stages and outputs together. No argument parsing, no rendering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.certificates import CertificateCatalog
from remediation.config import CaseConfig, load_case
from remediation.detect import find_wrong_devices, wrong_owner_matrix
from remediation.errors import SafetyRefusal
from remediation.evidence.hashing import sha256_file
from remediation.ingest.extracts import ExtractRead, read_extracts
from remediation.ingest.faults import QUARANTINE_COLUMNS, concat_quarantine
from remediation.ingest.pki import load_org_cas, load_orl
from remediation.ingest.rdp import RdpRead, read_rdp
from remediation.ingest.registry import Registry, load_registry
from remediation.model import CATEGORIES, S1SPS
from remediation.outputs import prepare_dir, write_csv, write_json, write_parquet

ProgressCallback = Callable[[str, int], None]
SUMMARY_SCHEMA = "remediation/detect-summary/1"


class ReconciliationError(SafetyRefusal):
    """Counts do not add up: refuse to hand out results that lose or double-count rows."""


@dataclass
class CaseData:
    config: CaseConfig
    as_of: date
    catalog: CertificateCatalog
    registry: Registry
    extracts: ExtractRead
    rdp: RdpRead


@dataclass
class DetectResult:
    findings: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict
    case: CaseData


def load_case_data(config: CaseConfig, as_of: date | None = None, progress: ProgressCallback | None = None) -> CaseData:
    as_of = as_of or config.as_of or date.today()
    catalog = CertificateCatalog(load_org_cas(config.org_ca_paths), load_orl(config.orl_path))
    registry = load_registry(config.registry_path, catalog)
    extracts = read_extracts(config.extracts, catalog, progress)
    rdp = read_rdp(config.rdp)
    return CaseData(config, as_of, catalog, registry, extracts, rdp)


def detect_case(data: CaseData) -> DetectResult:
    findings = find_wrong_devices(
        data.extracts.records,
        data.catalog.frame(data.as_of),
        data.rdp.registrations,
        data.registry.frame(),
        data.as_of,
        data.config.policy,
        data.extracts.quarantine,
    )
    quarantine = concat_quarantine([q for q in (data.extracts.quarantine, data.rdp.quarantine) if len(q)])
    summary = detect_summary(data, findings, quarantine)
    return DetectResult(findings, quarantine, summary, data)


def _count_by(frame: pd.DataFrame, weights: str | None = None) -> dict[str, int]:
    counts = frame.groupby("category")[weights].sum() if weights else frame.groupby("category").size()
    return {c: int(counts.get(c, 0)) for c in CATEGORIES}


def detect_summary(data: CaseData, findings: pd.DataFrame, quarantine: pd.DataFrame) -> dict:
    rows_read = sum(data.extracts.rows_read.values())
    rows_by_category = _count_by(findings, "rows")
    accounted = sum(rows_by_category.values())
    if accounted != rows_read:
        raise ReconciliationError(f"rows do not reconcile: {rows_read} extract rows read, {accounted} accounted for in findings")
    by_s1sp = {}
    for s1sp in [*S1SPS, *sorted(set(findings["s1sp"]) - set(S1SPS))]:
        part = findings[findings["s1sp"] == s1sp]
        if len(part) or s1sp in S1SPS:
            by_s1sp[s1sp] = _count_by(part)
    files = []
    for source in data.config.extracts:
        files.append({"role": "extract", "s1sp": source.s1sp, "path": str(source.path), "sha256": sha256_file(source.path),
                      "rows_read": data.extracts.rows_read.get(str(source.path), 0)})  # fmt: skip
    rdp_rejected = data.rdp.registrations.groupby("source_file")["invalid"].sum()
    for source in data.config.rdp:
        files.append({"role": "rdp", "s1sp": None, "path": str(source.path), "sha256": sha256_file(source.path),
                      "rows_read": data.rdp.rows_read.get(str(source.path), 0), "rows_rejected": int(rdp_rejected.get(str(source.path), 0))})  # fmt: skip
    rejected_extract_rows = data.extracts.quarantine.drop_duplicates(["file", "row"]) if len(data.extracts.quarantine) else data.extracts.quarantine
    return {
        "schema": SUMMARY_SCHEMA,
        "tool_version": __version__,
        "case": data.config.name,
        "as_of": data.as_of.isoformat(),
        "files": files,
        "config_files": [{"path": str(p), "sha256": sha256_file(p)} for p in data.config.config_files],
        "rows_read": {"extracts": rows_read, "rdp": sum(data.rdp.rows_read.values())},
        "devices": int(len(findings)),
        "rows_by_category": rows_by_category,
        "devices_by_category": _count_by(findings),
        "devices_by_s1sp": by_s1sp,
        "wrong_owner_matrix": wrong_owner_matrix(findings, data.registry.label_for_entity()),
        "quarantine": {
            "issues": int(len(quarantine)),
            "extract_rows": int(len(rejected_extract_rows)),
            "rdp_rows": int(data.rdp.registrations["invalid"].sum()),
            "by_field": {k: int(v) for k, v in quarantine.groupby("field").size().sort_index().items()} if len(quarantine) else {},
        },
        "reconciled": True,
    }


def run_detect(config_path: str | Path, out_dir: str | Path, as_of: date | None = None,
               progress: ProgressCallback | None = None) -> DetectResult:  # fmt: skip
    config = load_case(config_path)
    out = prepare_dir(out_dir)
    result = detect_case(load_case_data(config, as_of, progress))
    write_parquet(out / "findings.parquet", result.findings)
    write_csv(out / "findings.csv", result.findings)
    write_csv(out / "quarantine.csv", result.quarantine[QUARANTINE_COLUMNS])
    write_json(out / "summary.json", result.summary)
    return result
