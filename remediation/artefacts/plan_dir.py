"""The plan directory: plan.parquet (what apply may write), plan.json (the sealed, signed document that names it),
approvals, the detect result it carries, and the apply lease (the manual S1SPs' change-request export is written
by outcomes/change_requests.py).

Everything that reads or writes a plan directory asks this module: the file names, the schema version and the proof
that the directory is the plan that was hashed (plan.json's own hash, then plan.parquet's SHA-256 as plan.json
records it) live here and nowhere else. The hash itself (`plan.seal`) and the signatures (`authority`) are made by
their owners; this module only stores and checks what they produce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from remediation.errors import InputError
from remediation.evidence.hashing import sha256_file
from remediation.model import REQUESTS_PER_DEVICE
from remediation.outputs import prepare_dir, write_csv, write_json, write_parquet
from remediation.plan import LoadedPlan, PlanTampered, StalePlan, seal

PLAN_JSON = "plan.json"
PLAN_PARQUET = "plan.parquet"
PLAN_CSV = "plan.csv"  # plan.parquet without certificate bodies, for people
APPROVALS = "approvals.json"
LEASE_LOCK = "apply.lock"  # flock held while a process applies the plan
LEASE_RECORD = "active_run.json"  # the run directory that owns the plan until it completes
PLAN_SCHEMA = "remediation/plan/1"
CERTIFICATE_BODIES = ["target_ds_cert", "target_ka_cert"]


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a plan directory: missing is an input error (exit 2), garbage is tampering (exit 3)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"not found (is this a {what} directory?)", file=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanTampered(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PlanTampered(f"{path}: not a JSON object (found {type(value).__name__})")
    return value


@dataclass(frozen=True)
class PlanDir:
    directory: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))

    @property
    def document_path(self) -> Path:
        return self.directory / PLAN_JSON

    @property
    def rows_path(self) -> Path:
        return self.directory / PLAN_PARQUET

    @property
    def approvals_path(self) -> Path:
        return self.directory / APPROVALS

    def exists(self) -> bool:
        return self.document_path.exists()

    # -------------------------------------------------------------------------------------------- writing

    @classmethod
    def new(cls, out_dir: str | Path) -> PlanDir:
        """A directory for a new plan: plans are never overwritten."""
        out = prepare_dir(out_dir)
        if (out / PLAN_JSON).exists():
            raise InputError(
                "already holds a plan; plans are never overwritten (choose a new directory)", file=str(out)
            )
        return cls(out)

    def write_rows(self, rows: pd.DataFrame) -> dict[str, Path]:
        """plan.parquet (the plan) and plan.csv (the same without certificate bodies); returns the sealed output."""
        write_csv(self.directory / PLAN_CSV, rows.drop(columns=CERTIFICATE_BODIES))
        return {PLAN_PARQUET: write_parquet(self.rows_path, rows)}

    def write_document(self, document: dict) -> Path:
        return write_json(self.document_path, document)

    def write_approvals(self, approvals: list[dict]) -> Path:
        return write_json(self.approvals_path, {"approvals": approvals})

    # -------------------------------------------------------------------------------------------- reading

    def document(self) -> dict:
        """plan.json as written (not checked: `load` checks)."""
        return read_json_object(self.document_path, "plan")

    def load(self) -> LoadedPlan:
        """Read the plan and prove it is the plan that was hashed: plan.json's hash and plan.parquet's SHA-256."""
        document = self.document()
        if document.get("schema") != PLAN_SCHEMA:
            raise InputError(f"not a plan (schema {document.get('schema')!r})", file=str(self.document_path))
        if seal(document)["plan_hash"] != document.get("plan_hash"):
            raise PlanTampered(f"{self.document_path} was altered after planning: its content does not match plan_hash")
        if not self.rows_path.exists() or sha256_file(self.rows_path) != (document.get("outputs") or {}).get(
            PLAN_PARQUET
        ):
            raise PlanTampered(f"{self.rows_path} was altered after planning: SHA-256 differs from {PLAN_JSON}")
        return LoadedPlan(self.directory, document, pd.read_parquet(self.rows_path))

    def approvals(self) -> list[dict]:
        """The signed approvals recorded so far (none yet: an empty list)."""
        if not self.approvals_path.exists():
            return []
        approvals = read_json_object(self.approvals_path, "plan").get("approvals", [])
        if not isinstance(approvals, list) or not all(isinstance(a, dict) for a in approvals):
            raise PlanTampered(f"{self.approvals_path}: not a list of approvals")
        return approvals


def load_plan(directory: str | Path) -> LoadedPlan:
    return PlanDir(directory).load()


def read_approvals(plan_dir: str | Path) -> list[dict]:
    return PlanDir(plan_dir).approvals()


def check_fresh(plan: LoadedPlan) -> None:
    """Refuse a stale plan: every input and config file must still hash as it did when planned."""
    for entry in plan.document["inputs"] + plan.document["config_files"]:
        path = Path(entry["path"])
        if not path.exists():
            raise StalePlan(f"stale plan {plan.directory}: {path} no longer exists")
        if sha256_file(path) != entry["sha256"]:
            raise StalePlan(
                f"stale plan {plan.directory}: {path} changed since planning (SHA-256 differs); re-run plan and approval"
            )


def apply_estimates(document: dict) -> list[dict]:
    """Per S1SP of a plan document: planned devices, its configured rate and the apply time that rate implies
    (retries not included)."""
    rows = []
    for s1sp, n in document["counts"]["by_s1sp"].items():
        rate = document["endpoints"].get(s1sp, {}).get("rate_per_second")
        rows.append(
            {
                "s1sp": s1sp,
                "devices": n,
                "rate_per_second": rate,
                "seconds": n * REQUESTS_PER_DEVICE / rate if rate else None,
            }
        )
    return rows
