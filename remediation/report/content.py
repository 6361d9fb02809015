"""What a report says, as plain data: built from a detect, plan or run directory; rendered by html/markdown/json."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.artefacts.detect_result import FINDINGS, SUMMARY, read_summary
from remediation.artefacts.plan_dir import PlanDir, apply_estimates
from remediation.artefacts.run_dir import RunDir
from remediation.errors import InputError
from remediation.model import CATEGORIES, Category
from remediation.outcomes.references import OPERATORS_FILE
from remediation.outputs import read_json_object

REPORT_SCHEMA = "remediation/report/1"
EXCLUDED_ROWS_SHOWN = 1000


def redactor(key: bytes | None):
    """MPxN -> keyed hash (HMAC-SHA256, first 16 hex digits): stable within a key, not reversible without it."""
    if key is None:
        return None

    def redact(values: pd.Series) -> pd.Series:
        uniques = {
            v: "h:" + hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:16] for v in values.dropna().unique()
        }
        return values.map(uniques)

    return redact


def _load_json(path: Path) -> dict | None:
    return read_json_object(path)


def build_report(directory: str | Path, redaction_key: bytes | None = None) -> dict:
    directory = Path(directory)
    requested = directory
    dry_run = _load_json(RunDir(directory).dry_run_record)
    if dry_run is not None and dry_run.get("plan_dir"):
        directory = Path(dry_run["plan_dir"])  # a dry run reports against its plan's findings
    summary = read_summary(directory / SUMMARY)
    if summary is None or not (directory / FINDINGS).exists():
        raise InputError(
            "not a detect, plan, dry-run or run directory (no summary.json / findings.parquet)", file=str(requested)
        )
    plan = PlanDir(directory).sealed_document()  # an edited plan.json is refused, not rendered (nor a traceback)
    run = _load_json(RunDir(directory).record_path)
    findings = pd.read_parquet(
        directory / FINDINGS,
        columns=["device_id", "s1sp", "mpxn", "category", "cause", "registered_no", "detail"],
    )
    excluded = findings[~findings["category"].isin([Category.WRONG_NO.value, Category.OK.value])]
    excluded = excluded.sort_values(
        ["category", "s1sp", "device_id"], key=lambda s: s.map(CATEGORIES.index) if s.name == "category" else s
    )
    redact = redactor(redaction_key)
    shown = excluded.head(EXCLUDED_ROWS_SHOWN).astype(object)
    if redact is not None:
        shown["mpxn"] = redact(shown["mpxn"])
    estimate = apply_estimates(plan) if plan is not None else []
    report = {
        "schema": REPORT_SCHEMA,
        "tool_version": __version__,
        "kind": "run" if run else "plan" if plan else "detect",
        "case": summary.case,
        "as_of": summary.as_of,
        "plan_hash": plan["plan_hash"] if plan else None,
        "planned_devices": plan["counts"]["devices"] if plan else None,
        "devices": summary.devices,
        "rows_read": summary.rows_read,
        "devices_by_category": summary.devices_by_category,
        "devices_by_s1sp": summary.devices_by_s1sp,
        "wrong_owner_matrix": summary.wrong_owner_matrix,
        # Version 2 domain figures (absent from summaries written before them).
        "no_locked_out": summary.no_locked_out,
        "devices_by_cause": summary.devices_by_cause or {},
        "registry_gaps": summary.registry_gaps or [],
        "security_hold": summary.security_hold or [],
        "estimated_apply": estimate,
        "quarantine": summary.quarantine,
        "excluded": {
            "devices": int(len(excluded)),
            "by_category": {c: int(n) for c, n in excluded.groupby("category").size().items()},
            "shown": shown.fillna("").to_dict("records"),
        },
        "run": run,
        "mpxn_redacted": redact is not None,
    }
    if dry_run is not None:
        report["kind"] = "dry-run"
    report.update(outcome_sections(requested, redact))
    state = report.get("run_state")
    if isinstance(run, dict) and state is not None:
        # run.json's status, counts and pauses are a cache anyone with write access can edit: the report carries the
        # verified journal's, as every other section does.
        report["run"] = {**run, **{k: state[k] for k in ("status", "paused", "counts")}}
    return report


PROBLEM_ROWS_SHOWN = 1000


def outcome_sections(directory: Path, redact=None) -> dict:
    """What a change ticket needs beyond the counts: status and pause reasons, who planned, approved and applied,
    when and for how long beside the estimate, outcome per S1SP, failed and drifted devices with reasons,
    governance, costs, alert-routing impact and links to the packs and worklist. Same keys for every kind (null
    where not applicable), so HTML, Markdown and JSON say the same things."""
    from remediation.outcomes.impact import alert_routing_impact, impact_totals
    from remediation.outcomes.links import read_links
    from remediation.outcomes.state import CORRECTED, device_outcomes, resolve, run_state

    out = {
        "governance": None,
        "authority": None,
        "run_state": None,
        "apply_outcome": None,
        "problem_devices": None,
        "costs": None,
        "change_requests": None,
        "alert_routing_impact": None,
        "alert_routing_totals": None,
        "links": {},
        "dry_run": None,
    }
    try:
        sources = resolve(directory)
    except InputError:
        return out  # a detect directory: nothing planned yet
    plan = sources.plan
    out["governance"] = plan.get("governance") or {"change_record": None, "decision": None}
    out["costs"] = plan.get("costs")
    out["change_requests"] = plan.get("change_requests")
    out["authority"] = _authority(sources.plan_dir, plan)
    estimate = apply_estimates(plan)
    # S1SPs are applied in parallel: the run's estimate is the longest S1SP's.
    estimated = max((r["seconds"] for r in estimate if r["seconds"] is not None), default=None)
    out["links"] = read_links(sources.directory)
    corrected = None
    problems = pd.DataFrame(columns=["device_id", "s1sp", "mpxn", "state", "reason"])
    if sources.kind == "run":
        state = run_state(sources.directory)
        state["estimated_seconds"] = estimated
        out["run_state"] = state
        ops = device_outcomes(sources.directory)
        corrected = set(ops.loc[ops["state"].isin(CORRECTED), "device_id"])
        out["apply_outcome"] = _outcome_table(ops)
        bad = ops[ops["state"].isin(["failed", "drifted"])]
        problems = bad.assign(reason=_reasons(bad))[["device_id", "s1sp", "state", "reason"]]
    elif sources.kind == "dry-run":
        frame = RunDir(sources.directory).read_dry_run()
        out["dry_run"] = {
            "plan_hash": sources.extra["dry_run"].get("plan_hash"),
            "states": sources.extra["dry_run"].get("states", {}),
            "estimated_seconds": estimated,
        }
        bad = frame[~frame["state"].str.startswith(("done", "noop", "would_write"))]  # what apply would do as planned
        problems = bad.assign(reason=_reasons(bad))[["device_id", "s1sp", "state", "reason"]]
    if len(problems) or sources.kind in ("run", "dry-run"):
        plan_rows = pd.read_parquet(PlanDir(sources.plan_dir).rows_path, columns=["device_id", "mpxn"])
        problems = problems.merge(plan_rows, on="device_id", how="left").sort_values(["state", "s1sp", "device_id"])
        shown = problems.head(PROBLEM_ROWS_SHOWN).astype(object).fillna("")
        if redact is not None and len(shown):
            shown["mpxn"] = redact(shown["mpxn"])
        out["problem_devices"] = {
            "devices": int(len(problems)),
            "by_state": {k: int(v) for k, v in problems["state"].value_counts().sort_index().items()},
            "shown": shown[["device_id", "s1sp", "mpxn", "state", "reason"]].to_dict("records"),
        }
    if (sources.plan_dir / OPERATORS_FILE).exists():
        impact = alert_routing_impact(sources.plan_dir, corrected)
        out["alert_routing_impact"] = impact
        out["alert_routing_totals"] = impact_totals(impact)
    return out


def _reasons(ops: pd.DataFrame) -> pd.Series:
    """The recorded error, else for a drifted device what was found against what the plan expected."""

    def short(col: str) -> pd.Series:
        return ops[col].astype(object).where(ops[col].notna() & (ops[col] != ""), "empty").astype(str).str[:12]

    drift = (
        "live slots differ from the plan (NO_DS "
        + short("prior_ds_fp")
        + "…, expected "
        + short("expected_ds_fingerprint")
        + "…; NO_KA "
        + short("prior_ka_fp")
        + "…, expected "
        + short("expected_ka_fingerprint")
        + "…): not written"
    )
    error = ops["last_error"].astype(object).where(ops["last_error"].notna() & (ops["last_error"] != ""), None)
    return error.where(error.notna(), drift.where(ops["state"] == "drifted", "failed (no error recorded)"))


def _outcome_table(ops: pd.DataFrame) -> dict:
    """Per S1SP: done / noop / drifted / failed and still open, from the checkpointed outcomes."""
    table = {}
    for s1sp, group in ops.groupby("s1sp", sort=True):
        counts = group["state"].value_counts()
        row = {s: int(counts.get(s, 0)) for s in ("done", "noop", "at_target_on_resume", "drifted", "failed")}
        row["open"] = int(len(group) - sum(row.values()))
        table[str(s1sp)] = row
    return table


def _authority(plan_dir: Path, plan: dict) -> dict:
    """Who planned and approved, by name and key id wherever plan.json / approvals.json carry them (the signed
    form: plan.json's signature {key_id, signer}, approvals {approver, key_id, change_ref}; the older typed labels)."""
    planner = plan.get("planner") if isinstance(plan.get("planner"), dict) else {}
    signature = plan.get("signature") if isinstance(plan.get("signature"), dict) else {}
    approvals = (_load_json(PlanDir(plan_dir).approvals_path) or {}).get("approvals", [])
    return {
        "planned_by": {
            "name": planner.get("name") or plan.get("planned_by") or signature.get("signer"),
            "key_id": planner.get("key_id") or signature.get("key_id"),
            "at": plan.get("planned_at"),
        },
        "approved_by": [
            {
                "name": a.get("name") or a.get("approver") or a.get("approved_by"),
                "key_id": a.get("key_id"),
                "at": a.get("approved_at"),
                "note": a.get("note"),
                "change_ref": a.get("change_ref"),
            }
            for a in approvals
            if a.get("plan_hash") == plan.get("plan_hash")
        ],
    }
