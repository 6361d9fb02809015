"""What a report says, as plain data: built from a detect, plan or run directory; rendered by html/markdown/json."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.errors import InputError
from remediation.model import CATEGORIES, Category
from remediation.plan import apply_estimates

REPORT_SCHEMA = "remediation/report/1"
EXCLUDED_ROWS_SHOWN = 1000


def redactor(key: bytes | None):
    """MPxN -> keyed hash (HMAC-SHA256, first 16 hex digits): stable within a key, not reversible without it."""
    if key is None:
        return None

    def redact(values: pd.Series) -> pd.Series:
        uniques = {v: "h:" + hmac.new(key, str(v).encode(), hashlib.sha256).hexdigest()[:16] for v in values.dropna().unique()}
        return values.map(uniques)

    return redact


def _load_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path)) from None
    if not isinstance(value, dict):
        raise InputError("not a JSON object", file=str(path))
    return value


def build_report(directory: str | Path, redaction_key: bytes | None = None) -> dict:
    directory = Path(directory)
    summary = _load_json(directory / "summary.json")
    if summary is None or not (directory / "findings.parquet").exists():
        raise InputError("not a detect, plan or run directory (no summary.json / findings.parquet)", file=str(directory))
    plan = _load_json(directory / "plan.json")
    run = _load_json(directory / "run.json")
    findings = pd.read_parquet(directory / "findings.parquet", columns=["device_id", "s1sp", "mpxn", "category", "cause", "registered_no", "detail"])
    excluded = findings[~findings["category"].isin([Category.WRONG_NO.value, Category.OK.value])]
    excluded = excluded.sort_values(["category", "s1sp", "device_id"], key=lambda s: s.map(CATEGORIES.index) if s.name == "category" else s)
    redact = redactor(redaction_key)
    shown = excluded.head(EXCLUDED_ROWS_SHOWN).astype(object)
    if redact is not None:
        shown["mpxn"] = redact(shown["mpxn"])
    estimate = apply_estimates(plan) if plan is not None else []
    report = {
        "schema": REPORT_SCHEMA,
        "tool_version": __version__,
        "kind": "run" if run else "plan" if plan else "detect",
        "case": summary["case"],
        "as_of": summary["as_of"],
        "plan_hash": plan["plan_hash"] if plan else None,
        "planned_devices": plan["counts"]["devices"] if plan else None,
        "devices": summary["devices"],
        "rows_read": summary["rows_read"],
        "devices_by_category": summary["devices_by_category"],
        "devices_by_s1sp": summary["devices_by_s1sp"],
        "wrong_owner_matrix": summary["wrong_owner_matrix"],
        # Version 2 domain figures (absent from summaries written before them).
        "no_locked_out": summary.get("no_locked_out"),
        "devices_by_cause": summary.get("devices_by_cause", {}),
        "registry_gaps": summary.get("registry_gaps", []),
        "security_hold": summary.get("security_hold", []),
        "estimated_apply": estimate,
        "quarantine": summary["quarantine"],
        "excluded": {
            "devices": int(len(excluded)),
            "by_category": {c: int(n) for c, n in excluded.groupby("category").size().items()},
            "shown": shown.fillna("").to_dict("records"),
        },
        "run": run,
        "mpxn_redacted": redact is not None,
    }
    return report
