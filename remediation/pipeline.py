"""One function per command: wire config, stages and outputs together. No argument parsing, no rendering."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from remediation import __version__, authority
from remediation.apply.runner import (
    ApplyOptions,
    ApplyResult,
    apply_plan,
    carry_files,
    check_endpoints,
    dry_run,
    read_run,
    write_outcomes,
)
from remediation.artefacts import detect_result
from remediation.artefacts.detect_result import DetectResultDir
from remediation.certificates import CertificateCatalog
from remediation.config import CaseConfig, ExtractSource, canonical_dialect, load_case
from remediation.detect import OWNER_MATRIX_COLUMNS, Detection, find_wrong_devices, wrong_owner_matrix
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.audit import export_audit, verify_export
from remediation.evidence.hashing import BackgroundHashes, sha256_file, sha256_json
from remediation.ingest.extracts import DeviceRules, ExtractRead, ProgressCallback, read_extracts
from remediation.ingest.faults import QUARANTINE_COLUMNS, concat_quarantine
from remediation.ingest.pki import load_org_cas, load_orl
from remediation.ingest.rdp import RdpRead, read_rdp
from remediation.ingest.registry import Registry, load_registry
from remediation.memory import release_memory
from remediation.model import CATEGORIES, CAUSES, FINDING_COLUMNS, Category
from remediation.outputs import prepare_dir, write_csv, write_json, write_parquet, write_text
from remediation.plan import (
    PLAN_SCHEMA,
    approvals_path,
    build_plan,
    build_rollback_plan,
    check_fresh,
    load_plan,
    plan_counts,
    plannable_categories,
    read_approvals,
    seal,
)
from remediation.report.content import build_report
from remediation.report.html import render_html
from remediation.report.markdown import render_markdown

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
    hashes: BackgroundHashes | None = None

    def sha256(self, path) -> str:
        return self.hashes.get(path) if self.hashes is not None else sha256_file(path)


@dataclass
class DetectResult:
    detection: Detection
    quarantine: pd.DataFrame
    summary: dict
    case: CaseData

    @property
    def findings(self) -> pd.DataFrame:
        """Every finding as pandas: fine for a sample or a test; national runs use detection.chunks()/subset()."""
        return self.detection.findings

    @property
    def input_rows(self) -> pd.DataFrame:
        return self.detection.input_rows


def load_case_data(config: CaseConfig, as_of: date | None = None, progress: ProgressCallback | None = None) -> CaseData:
    as_of = as_of or config.as_of or date.today()
    hashes = BackgroundHashes([*config.input_files, *config.config_files])
    catalog = CertificateCatalog(
        load_org_cas(config.org_ca_paths), load_orl(config.orl_path), config.accepted_policy_oids
    )
    registry = load_registry(config.registry_path, catalog)
    extracts = read_extracts(config.extracts, catalog, progress, DeviceRules.of(config))
    release_memory()
    rdp = read_rdp(config.rdp, (config.policy.mprn_min_length, config.policy.mprn_max_length))
    release_memory()
    return CaseData(config, as_of, catalog, registry, extracts, rdp, hashes)


def detect_case(data: CaseData) -> DetectResult:
    # The records are handed over, not shared: detection frees them as soon as devices are formed, which is what
    # keeps a national run inside its memory budget.
    records, data.extracts.records = data.extracts.records, None
    registrations = data.rdp.registrations
    data.rdp.rejected_by_file = {
        str(k): int(v) for k, v in registrations.groupby("source_file", observed=True)["invalid"].sum().items()
    }
    data.rdp.registrations = None
    detection = find_wrong_devices(
        records,
        data.catalog.frame(data.as_of),
        registrations,
        data.registry.frame(),
        data.as_of,
        data.config.policy,
        data.extracts.quarantine,
        device_types=tuple(data.config.device_types.values()),
        enforces_validity={code: ep.enforces_validity for code, ep in data.config.endpoints.items()},
    )
    del records, registrations
    release_memory()
    quarantine = concat_quarantine([q for q in (data.extracts.quarantine, data.rdp.quarantine) if len(q)])
    summary = detect_summary(data, detection, quarantine)
    if int(detection.input_rows["n_rows"].sum()) != summary["rows_read"]["extracts"]:
        raise ReconciliationError("input-row trace does not cover every extract row read")
    return DetectResult(detection, quarantine, summary, data)


def _count_by(categories: np.ndarray, weights: np.ndarray | None = None) -> dict[str, int]:
    counts = np.bincount(categories, weights=weights, minlength=len(CATEGORIES))
    return {c: int(round(counts[i])) for i, c in enumerate(CATEGORIES)}


def detect_summary(data: CaseData, detection: Detection, quarantine: pd.DataFrame) -> dict:
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
    return {
        "schema": SUMMARY_SCHEMA,
        "tool_version": __version__,
        "case": data.config.name,
        "as_of": data.as_of.isoformat(),
        "files": files,
        "config_files": [{"path": str(p), "sha256": data.sha256(p)} for p in data.config.config_files],
        "rows_read": {"extracts": rows_read, "rdp": sum(data.rdp.rows_read.values())},
        "devices": int(len(detection)),
        "rows_by_category": rows_by_category,
        "devices_by_category": _count_by(category),
        "devices_by_s1sp": by_s1sp,
        "devices_by_cause": _causes_by_category(category, detection.codes("cause")),
        "no_locked_out": _locked_out(detection, configured),
        "registry_gaps": detection.registry_gaps,
        "security_hold": detection.security_holds,
        "wrong_owner_matrix": wrong_owner_matrix(wrong, data.registry.label_for_entity()),
        "quarantine": {
            "issues": int(len(quarantine)),
            "extract_rows": int(len(rejected_extract_rows)),
            "rdp_rows": int(sum(data.rdp.rejected_by_file.values())),
            "by_field": {k: int(v) for k, v in quarantine.groupby("field").size().sort_index().items()}
            if len(quarantine)
            else {},
        },
        "reconciled": True,
    }


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


def write_findings(out: Path, detection: Detection, csv: bool = True) -> Path:
    return detect_result.write_findings(out, detection.chunks(), csv=csv)


def plannable(detection: Detection, policy) -> np.ndarray:
    category = detection.codes("category")
    mask = np.isin(category, [CATEGORIES.index(c) for c in plannable_categories(policy)])
    if policy.correct_revoked:
        mask |= (category == CATEGORIES.index(Category.EXPIRED_OR_REVOKED.value)) & (
            detection.codes("cause") == CAUSES.index("revoked")
        )
    return mask


def run_detect(
    config_path: str | Path, out_dir: str | Path, as_of: date | None = None, progress: ProgressCallback | None = None
) -> DetectResult:
    config = load_case(config_path)
    out = prepare_dir(out_dir)
    result = detect_case(load_case_data(config, as_of, progress))
    DetectResultDir(out).write(
        result.detection, result.input_rows, result.quarantine[QUARANTINE_COLUMNS], result.summary
    )
    from remediation.outcomes.references import CERTIFICATES_FILE, certificate_table

    # The certificates detect saw (DER included), so `plan --from` can name slot certificates by serial + issuer.
    write_parquet(out / CERTIFICATES_FILE, certificate_table(result.case.catalog))
    return result


# ------------------------------------------------------------------------------------------------ plan / approve


@dataclass
class PlanResult:
    directory: Path
    document: dict
    rows: pd.DataFrame
    detect: DetectResult


def run_plan(
    config_path: str | Path,
    out_dir: str | Path,
    *,
    planner: str = "",
    as_of: date | None = None,
    s1sps: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    from_detect: str | Path | None = None,
    allow_unknown_no: bool = False,
    key=None,
    change_ref: str | None = None,
    trust_policy: str | Path | None = None,
) -> PlanResult:
    """Detect (or, with `from_detect`, reuse a detect result that still matches the case) and plan."""
    from remediation.outcomes.costs import load_cost_model
    from remediation.outcomes.planning import plan_extras
    from remediation.outcomes.references import intern_saved_certificates

    config = load_case(config_path)
    load_cost_model(
        config.costs, config.path, sorted({e.s1sp for e in config.extracts} | set(config.endpoints))
    )  # a bad [costs] fails before detect
    # Before any work: the key must be a planner's in the policy (the case's, or --trust-policy) the plan is sealed under.
    signing = authority.plan_signing(Path(trust_policy) if trust_policy else config.trust_policy_path, key)
    planner = planner.strip()
    if not planner and signing is None:  # a signed plan is named by its key's holder; an unsigned one needs a label
        raise InputError("a planner name is required", field="--by")
    for code in s1sps:
        if code not in config.s1sp_codes:
            raise InputError(
                f"unknown S1SP {code!r} (the case configures {', '.join(config.s1sp_codes)})", field="--s1sp"
            )
    if from_detect is not None:
        source = DetectResultDir(Path(from_detect))
        as_of_used = as_of or config.as_of or date.today()
        # Re-hashing 12 GB of national inputs is most of a national `plan --from`: on every core at once.
        hashes = BackgroundHashes([*config.input_files, *config.config_files], workers=os.cpu_count() or 1)
        summary = source.check_matches(config.input_files, config.config_files, as_of_used, hashes.get)
        if "registry_gaps" not in summary:
            raise SafetyRefusal(
                f"refusing to plan from {from_detect}: its detect result predates the registry coverage check; run detect again"
            )
        _refuse_registry_gaps(summary["registry_gaps"], allow_unknown_no, config)
        catalog = CertificateCatalog(
            load_org_cas(config.org_ca_paths), load_orl(config.orl_path), config.accepted_policy_oids
        )
        registry = load_registry(config.registry_path, catalog)
        intern_saved_certificates(
            catalog, source.path(detect_result.FINDINGS).parent
        )  # the slot certificates detect saw, for their ids
        wanted = plannable_categories(config.policy) + (
            [Category.EXPIRED_OR_REVOKED.value] if config.policy.correct_revoked else []
        )
        chosen = source.findings_where(
            "category", wanted
        )  # build_plan keeps only the revoked cause of EXPIRED_OR_REVOKED
        out = _new_plan_dir(out_dir)
        rows = build_plan(chosen, registry, catalog, as_of_used, config.policy, tuple(sorted(s1sps)))
        detected = None
        # The plan directory carries the detect result it was made from, byte for byte, as a fresh plan would.
        outputs = {}
        for name in (detect_result.FINDINGS, detect_result.INPUT_ROWS, detect_result.QUARANTINE, detect_result.SUMMARY):
            shutil.copyfile(source.path(name), out / name)
            outputs[name] = out / name
    else:
        detected = detect_case(load_case_data(config, as_of, progress))
        summary, as_of_used = detected.summary, detected.case.as_of
        _refuse_registry_gaps(summary["registry_gaps"], allow_unknown_no, config)
        out = _new_plan_dir(out_dir)
        detection = detected.detection
        rows = build_plan(
            detection.subset(plannable(detection, config.policy)),
            detected.case.registry,
            detected.case.catalog,
            as_of_used,
            config.policy,
            tuple(sorted(s1sps)),
        )
        catalog, registry = detected.case.catalog, detected.case.registry
        outputs = {
            name: path
            for name, path in DetectResultDir(out)
            .write(
                detection,
                detected.input_rows,
                detected.quarantine[QUARANTINE_COLUMNS],
                summary,
                csv=False,
                manifest=False,
            )
            .items()  # plan.json seals the copies itself
        }
    # A manual S1SP is never written through an API: its devices become a change-request listing for a scope
    # decision, outside plan.parquet (so apply cannot reach them), and are counted in plan.json.
    manual_codes = sorted(code for code, ep in config.endpoints.items() if ep.mode == "manual")
    manual = rows[rows["s1sp"].isin(manual_codes)]
    rows = rows[~rows["s1sp"].isin(manual_codes)].reset_index(drop=True)
    # ... and the S1SP's change-request export (ids, fingerprints, four-eyes columns), references, governance, costs.
    extras = plan_extras(out, config, catalog, registry, rows, change_ref, manual_rows=manual)
    rows = extras.rows
    outputs.update(extras.outputs)
    outputs["plan.parquet"] = _write_plan_rows(out, rows)
    if manual_codes:
        outputs["manual_change_requests.csv"] = write_csv(
            out / "manual_change_requests.csv", manual.drop(columns=["target_ds_cert", "target_ka_cert"])
        )
    document = seal(
        {
            "schema": PLAN_SCHEMA,
            "tool_version": __version__,
            "case": config.name,
            "as_of": as_of_used.isoformat(),
            "planned_by": planner,
            "s1sp_filter": sorted(s1sps),
            "policy": config.policy.model_dump(),
            "allow_unknown_no": allow_unknown_no,
            "registry_gaps": summary["registry_gaps"],
            "inputs": [{k: f[k] for k in ("role", "s1sp", "path", "sha256", "rows_read")} for f in summary["files"]],
            "config_files": summary["config_files"],
            "config_sha256": sha256_json(summary["config_files"]),
            "endpoints": {
                code: {
                    "base_url": ep.base_url,
                    "rate_per_second": ep.rate_per_second,
                    "concurrency": ep.concurrency,
                    "token_env": ep.token_env,
                    "mode": ep.mode,
                    "enforces_validity": ep.enforces_validity,
                }
                for code, ep in sorted(config.endpoints.items())
            },
            "counts": plan_counts(rows),
            "manual": {
                "s1sps": manual_codes,
                "devices": int(len(manual)),
                "by_s1sp": {k: int(v) for k, v in manual.groupby("s1sp").size().items()},
            },
            "outputs": {name: sha256_file(path) for name, path in outputs.items()},
            **authority.plan_fields(signing, planner, change_ref or config.governance.change_record),
            # governance as the case gives it (change record, --change-ref over it, and the decision), costs,
            # change_requests, manual_s1sps
            **extras.fields,
        }
    )
    document = authority.sign_sealed_plan(document, signing)
    write_json(out / "plan.json", document)
    return PlanResult(out, document, rows, detected)


def _refuse_registry_gaps(gaps: list[dict], allow_unknown_no: bool, config: CaseConfig) -> None:
    """Registry coverage pre-flight: RDP NO ids with in-scope devices but no registry entry stop the plan (exit 3)
    unless the operator accepts that their devices stay UNKNOWN_NO (--allow-unknown-no, recorded in plan.json)."""
    if gaps and not allow_unknown_no:
        listed = ", ".join(f"{g['network_operator_id']} ({g['devices']} devices)" for g in gaps[:5]) + (
            " …" if len(gaps) > 5 else ""
        )
        raise SafetyRefusal(
            f"refusing to plan: the NO registry has no entry for RDP network operator(s) {listed}; their devices can never be "
            f"corrected. Add them to {config.registry_path} or re-run with --allow-unknown-no to plan the rest"
        )


def _new_plan_dir(out_dir: str | Path) -> Path:
    out = prepare_dir(out_dir)
    if (out / "plan.json").exists():
        raise InputError("already holds a plan; plans are never overwritten (choose a new directory)", file=str(out))
    return out


def _write_plan_rows(out: Path, rows: pd.DataFrame) -> Path:
    """plan.parquet (the plan) and plan.csv (the same without certificate bodies, for people)."""
    write_csv(out / "plan.csv", rows.drop(columns=["target_ds_cert", "target_ka_cert"]))
    return write_parquet(out / "plan.parquet", rows)


def run_approve(
    plan_dir: str | Path, key, note: str = "", change_ref: str | None = None, trust_policy: str | Path | None = None
) -> dict:
    """Sign an approval of the plan with an approver's key, after checking the plan, its inputs and its signature."""
    plan = load_plan(plan_dir)
    check_fresh(plan)
    policy = authority.policy_for_plan(plan, trust_policy)
    existing = read_approvals(plan.directory)
    approval = authority.make_approval(plan, policy, authority.as_signer(key), note, change_ref, existing)
    write_json(approvals_path(plan.directory), {"approvals": [*existing, approval]})
    return approval


# ------------------------------------------------------------------------------------------------ report

REPORT_SUFFIX = {"html": "html", "md": "md", "json": "json"}


def run_report(
    directory: str | Path, fmt: str, out_path: str | Path | None = None, redaction_key: bytes | None = None
) -> tuple[Path, dict]:
    report = build_report(directory, redaction_key)
    path = Path(out_path) if out_path else Path(directory) / f"report.{REPORT_SUFFIX[fmt]}"
    if fmt == "json":
        write_json(path, report)
    else:
        write_text(path, render_html(report) if fmt == "html" else render_markdown(report))
    return path, report


# ------------------------------------------------------------------------------------------------ apply / status / verify


def run_apply(
    plan_dir: str | Path,
    run_dir: str | Path,
    options: ApplyOptions,
    progress=None,
    *,
    key=None,
    trust_policy: str | Path | None = None,
) -> ApplyResult:
    plan = load_plan(plan_dir)
    # Signatures, quorum, policy, operator key, then inputs and endpoints/tokens: all before the run directory exists.
    run_authority = authority.authorise_run(plan, read_approvals(plan.directory), key, trust_policy)
    check_fresh(plan)
    check_endpoints(plan, options)
    run_authority.endpoint_overrides = authority.endpoint_overrides(
        plan.document["endpoints"], options.endpoints, options.who, run_authority.signer.key_id
    )
    return apply_plan(plan, Path(run_dir), options, progress, authority=run_authority)


def run_resume(
    run_dir: str | Path, options: ApplyOptions, progress=None, *, key=None, trust_policy: str | Path | None = None
) -> ApplyResult:
    return run_apply(read_run(run_dir)["plan_dir"], run_dir, options, progress, key=key, trust_policy=trust_policy)


def run_dry_run(plan_dir: str | Path, out_dir: str | Path, options: ApplyOptions) -> pd.DataFrame:
    plan = load_plan(plan_dir)
    check_fresh(plan)
    frame = dry_run(plan, options)
    out = prepare_dir(out_dir)
    columns = [
        "device_id",
        "s1sp",
        "operation_id",
        "state",
        "prior_ds_fp",
        "prior_ka_fp",
        "expected_ds",
        "expected_ka",
        "target_ds_fp",
        "target_ka_fp",
        "last_error",
    ]
    for col in columns:
        if col not in frame.columns:
            frame[col] = None
    write_csv(out / "dry_run.csv", frame[columns])
    write_json(
        out / "dry_run.json",
        {
            "plan_hash": plan.plan_hash,
            "plan_dir": str(plan.directory.resolve()),
            "states": {
                s1sp: {k: int(v) for k, v in g["state"].value_counts().sort_index().items()}
                for s1sp, g in frame.groupby("s1sp")
            },
        },
    )
    return frame


def run_status(run_dir: str | Path):
    """The run's state from its verified journal (see apply/state.py): what `status` prints and exits with."""
    from remediation.apply.state import run_state

    return run_state(run_dir)


def run_ops_from_journal(run_dir: Path, plan_rows: pd.DataFrame, what: str) -> pd.DataFrame:
    """Every planned op's state replayed from the run's verified journal; an edited index is a refusal (exit 3)."""
    from remediation.apply.index import verified_ops

    return verified_ops(run_dir, plan_rows, read_run(run_dir).get("journal_head"), what).frame()


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


def run_verify(
    config_path: str | Path,
    fresh_dir: str | Path,
    out_dir: str | Path,
    plan_dir: str | Path | None = None,
    as_of: date | None = None,
) -> dict:
    """Fresh extracts -> detect; residual WRONG_NO devices are listed (and, with a plan, planned devices not at target)."""
    config = fresh_case(load_case(config_path), Path(fresh_dir))
    out = prepare_dir(out_dir)
    result = detect_case(load_case_data(config, as_of))
    detection = result.detection
    # Only the residual and the planned devices are built as tables: a national fresh extract is 10 million devices.
    residual = detection.subset(detection.codes("category") == CATEGORIES.index(Category.WRONG_NO.value))[
        list(FINDING_COLUMNS)
    ]
    verdict = {
        "residual_wrong": int(len(residual)),
        "devices": int(len(detection)),
        "devices_by_category": result.summary["devices_by_category"],
    }
    if plan_dir is not None:
        plan = load_plan(plan_dir)
        # Why is a residual device still wrong? Planned (and not fixed) or excluded at plan time, and as what.
        at_plan = _categories_at_plan(Path(plan_dir) / "findings.parquet", residual["device_id"])
        residual["category_at_plan"] = residual["device_id"].map(at_plan).fillna("not in plan's extracts")
        residual["planned"] = residual["device_id"].isin(plan.rows["device_id"])
        verdict["residual_by_category_at_plan"] = {
            str(k): int(v) for k, v in residual["category_at_plan"].value_counts().sort_index().items()
        }
        verdict["residual_planned"] = int(residual["planned"].sum())
        rows = plan.rows
        positions = detection.positions_of(rows["device_id"])
        found = positions >= 0  # a planned device missing from the fresh extracts is not at target
        seen = detection.subset(positions[found])
        at_target = np.zeros(len(rows), dtype=bool)
        at_target[found] = np.logical_and.reduce(
            [
                seen[f"{slot}_fingerprint"].astype(object).to_numpy()
                == rows[f"target_{slot}_fingerprint"].to_numpy()[found]
                for slot in ("ds", "ka")
            ]
        )
        verdict["planned"] = int(len(rows))
        verdict["planned_at_target"] = int(at_target.sum())
        write_csv(out / "planned_not_at_target.csv", rows.loc[~at_target, ["device_id", "s1sp", "operation_id"]])
        verdict.update(_manual_at_target(Path(plan_dir), detection, out))
    write_findings(out, detection, csv=False)
    write_csv(out / "residual_wrong.csv", residual)
    write_json(out / "summary.json", result.summary)
    write_json(out / "verify.json", verdict)
    return verdict


def _manual_at_target(plan_dir: Path, detection: Detection, out: Path) -> dict:
    """A manual S1SP's change-request devices, checked in its fresh extract like the API-written ones."""
    from remediation.outcomes.change_requests import read_change_requests

    requests = read_change_requests(plan_dir)
    if requests is None:
        return {}
    positions = detection.positions_of(requests["device_id"])
    found = positions >= 0
    seen = detection.subset(positions[found])
    at_target = np.zeros(len(requests), dtype=bool)
    at_target[found] = np.logical_and.reduce(
        [
            seen[f"{slot}_fingerprint"].astype(object).to_numpy()
            == requests[f"target_{slot}_fingerprint"].to_numpy()[found]
            for slot in ("ds", "ka")
        ]
    )
    write_csv(out / "manual_not_at_target.csv", requests.loc[~at_target, ["device_id", "s1sp", "change_request_line"]])
    return {"manual_change_requests": int(len(requests)), "manual_at_target": int(at_target.sum())}


def _categories_at_plan(findings_path: Path, device_ids: pd.Series) -> pd.Series:
    """device id -> its category in the plan's findings, for the given devices only (read as Arrow, filtered)."""
    table = pq.read_table(findings_path, columns=["device_id", "category"])
    table = table.filter(pc.is_in(table["device_id"], value_set=pa.array(device_ids.astype(str).tolist(), pa.string())))
    frame = table.to_pandas().drop_duplicates("device_id")
    return frame.set_index("device_id")["category"].astype(str)


# ------------------------------------------------------------------------------------------------ evidence


def run_audit_export(
    run_dir: str | Path, out_dir: str | Path, sign_key: str | Path | None, exported_by: str, *, key=None
):
    """Signed with an auditor's or operator's Ed25519 key from the run's trust policy (--key; --sign-key is its old name).
    The notification packs are made afresh from the run into packs/ and signed with the rest."""
    from remediation.outcomes.links import utc_now
    from remediation.outcomes.packs import write_packs
    from remediation.outcomes.state import resolve

    sources = resolve(run_dir)

    def packs(out: Path) -> dict:
        summary = write_packs(sources, out / "packs", utc_now())
        return {name: summary[name] for name in ("alert_routing_impact", "alert_routing_totals")}

    signer = authority.as_signer(key if key is not None else sign_key)
    with_packs = sources.kind == "run" and sources.plan.get("kind") != "rollback"
    return export_audit(
        Path(run_dir), Path(out_dir), None, exported_by, signer=signer, extras=packs if with_packs else None
    )


def run_audit_verify(
    directory: str | Path, pubkey: str | Path | None = None, expect_policy_sha256: str | None = None
) -> dict:
    return verify_export(Path(directory), Path(pubkey) if pubkey else None, expect_policy_sha256)


def run_rollback(
    run_dir: str | Path, out_dir: str | Path, *, planner: str = "", devices: list[str] | None = None, key=None
) -> PlanResult:
    """A plan that restores the recorded prior certificates of devices this run wrote; approved and applied like any plan."""
    run_dir = Path(run_dir)
    original = load_plan(read_run(run_dir)["plan_dir"])
    # Signed by a planner under the original plan's (still unchanged) trust policy.
    signing = authority.rollback_signing(original, key)
    ops = run_ops_from_journal(
        run_dir, original.rows, "plan a rollback"
    )  # the journal, not the index, says what was written
    rows = build_rollback_plan(original.rows, ops, devices)
    if rows.empty:
        raise InputError("no device written by this run to roll back", file=str(run_dir))
    out = _new_plan_dir(out_dir)
    write_outcomes(run_dir, ops)  # the rollback's precondition file, current as of now
    carry_files(run_dir, out)
    outputs = {"plan.parquet": _write_plan_rows(out, rows)}
    inputs = [
        {
            "role": "run",
            "s1sp": None,
            "path": str((run_dir / name).resolve()),
            "sha256": sha256_file(run_dir / name),
            "rows_read": None,
        }
        for name in ("journal.jsonl", "outcomes.parquet")
    ]
    document = seal(
        {
            "schema": PLAN_SCHEMA,
            "kind": "rollback",
            "rollback_of": {"run_dir": str(run_dir.resolve()), "plan_hash": original.plan_hash},
            "tool_version": __version__,
            "case": original.document["case"],
            "as_of": original.document["as_of"],
            "planned_by": planner,
            "s1sp_filter": [],
            "policy": original.document["policy"],
            "inputs": inputs,
            "config_files": [],
            "config_sha256": sha256_json([]),
            "endpoints": original.document["endpoints"],
            "counts": plan_counts(rows),
            "outputs": {name: sha256_file(path) for name, path in outputs.items()},
            **authority.plan_fields(signing, planner, (original.document.get("governance") or {}).get("change_record")),
        }
    )
    document = authority.sign_sealed_plan(document, signing)
    write_json(out / "plan.json", document)
    return PlanResult(out, document, rows, None)


# ------------------------------------------------------------------------------------------------ outcomes (issue 12)


def _new_outcome_dir(out_dir: str | Path) -> Path:
    out = prepare_dir(out_dir)
    if any(out.iterdir()):
        raise InputError(
            "is not empty; packs and worklists are written to a new directory, never over old ones", file=str(out)
        )
    return out


def run_notify(run_dir: str | Path, out_dir: str | Path) -> dict:
    """NO notification packs of a run: per registered NO and per previous holder, with manifest and impact summary."""
    from remediation.outcomes.links import record_link, utc_now
    from remediation.outcomes.packs import write_packs
    from remediation.outcomes.state import resolve

    sources = resolve(run_dir)
    if sources.kind != "run":
        raise InputError(
            f"notification packs are made from a run directory; this is a {sources.kind} directory", file=str(run_dir)
        )
    from remediation.outcomes.state import run_state

    state = run_state(sources.directory)
    if state["status"] == "running":
        # Devices are being written right now: packs made now would tell NOs less than the run will have done.
        raise InputError(
            "the run is in progress (its lock is held by a live process); make the packs once it has finished",
            file=str(run_dir),
        )
    if sources.plan.get("kind") == "rollback":
        # A rollback puts the previous certificates back: packs saying "now at your certificates" would be false.
        raise InputError(
            "this run applied a rollback plan; notification packs are made for correction runs only", file=str(run_dir)
        )
    summary = write_packs(sources, _new_outcome_dir(out_dir), utc_now(), state)
    record_link(sources.directory, "packs", Path(out_dir))
    return summary


def run_worklist(directory: str | Path, out_dir: str | Path) -> dict:
    """The SRV 6.15.1 worklist of a plan or run directory: one CSV and JSON per current slot holder."""
    from remediation.outcomes.links import record_link, utc_now
    from remediation.outcomes.state import resolve
    from remediation.outcomes.worklist import write_worklist

    sources = resolve(directory)
    if sources.kind == "dry-run":
        raise InputError("a worklist is made from a plan or run directory, not a dry run", file=str(directory))
    index = write_worklist(sources, _new_outcome_dir(out_dir), utc_now())
    record_link(sources.directory, "worklist", Path(out_dir))
    return index
