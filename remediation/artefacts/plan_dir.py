"""The plan directory: plan.parquet (what apply may write), plan.json (the sealed, signed document that names it),
approvals, the detect result it carries, and the apply lease (the manual S1SPs' change-request export is written
by outcomes/change_requests.py).

Everything that reads or writes a plan directory asks this module: the file names, the schema version and the proof
that the directory is the plan that was hashed (plan.json's own hash, then plan.parquet's SHA-256 as plan.json
records it) live here and nowhere else. The hash itself (`plan.seal`) and the signatures (`authority`) are made by
their owners; this module only stores and checks what they produce.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remediation import __version__
from remediation.errors import InputError
from remediation.evidence.hashing import sha256_file, sha256_json
from remediation.model import REQUESTS_PER_DEVICE
from remediation.outputs import prepare_dir, read_json_object, write_csv, write_json, write_parquet
from remediation.plan import LoadedPlan, PlanTampered, StalePlan, seal

PLAN_JSON = "plan.json"
PLAN_PARQUET = "plan.parquet"
PLAN_CSV = "plan.csv"  # plan.parquet without certificate bodies, for people
APPROVALS = "approvals.json"
LEASE_LOCK = "apply.lock"  # flock held while a process applies the plan
LEASE_RECORD = "active_run.json"  # the run directory that owns the plan until it completes
PLAN_SCHEMA = "remediation/plan/1"
CERTIFICATE_BODIES = ["target_ds_cert", "target_ka_cert"]


@dataclass
class PlanDocument:
    """plan.json before it is sealed and signed: one shape for a correction plan and a rollback plan, written in this
    key order (a field that does not apply to the kind of plan is left out, not written as null). `additions` (the
    authority's fields, then the outcomes' governance, costs and change requests) are merged last, in order; a key
    they share with the fields above keeps its place and takes their value."""

    case: str
    as_of: str
    planned_by: str
    s1sp_filter: list[str]
    policy: dict
    inputs: list[dict]  # role, s1sp, path, sha256, rows_read of every file the plan was made from
    config_files: list[dict]  # path, sha256
    endpoints: dict[str, dict]
    counts: dict
    outputs: dict[str, str]  # file name -> SHA-256 of every output the plan seals
    kind: str | None = None  # "rollback" for a rollback plan
    rollback_of: dict | None = None  # run_dir, plan_hash
    allow_unknown_no: bool | None = None
    registry_gaps: list[dict] | None = None
    manual: dict | None = None  # s1sps, devices, by_s1sp
    additions: tuple[dict, ...] = field(default_factory=tuple)

    @staticmethod
    def endpoint_settings(endpoints: dict) -> dict[str, dict]:
        """The case's S1SP settings a plan is sealed with (apply reads rates, modes and endpoints from here)."""
        return {
            code: {
                "base_url": ep.base_url,
                "rate_per_second": ep.rate_per_second,
                "concurrency": ep.concurrency,
                "token_env": ep.token_env,
                "mode": ep.mode,
                "enforces_validity": ep.enforces_validity,
            }
            for code, ep in sorted(endpoints.items())
        }

    def body(self) -> dict:
        """The document `plan.seal` hashes."""
        optional = {"kind": self.kind, "rollback_of": self.rollback_of}
        document = {"schema": PLAN_SCHEMA, **{k: v for k, v in optional.items() if v is not None}}
        document.update(
            tool_version=__version__,
            case=self.case,
            as_of=self.as_of,
            planned_by=self.planned_by,
            s1sp_filter=self.s1sp_filter,
            policy=self.policy,
        )
        planning = {"allow_unknown_no": self.allow_unknown_no, "registry_gaps": self.registry_gaps}
        document.update({k: v for k, v in planning.items() if v is not None})
        document.update(
            inputs=self.inputs,
            config_files=self.config_files,
            config_sha256=sha256_json(self.config_files),
            endpoints=self.endpoints,
            counts=self.counts,
        )
        if self.manual is not None:
            document["manual"] = self.manual
        document["outputs"] = self.outputs
        for addition in self.additions:
            document.update(addition)
        return document


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

    @contextmanager
    def unsealed(self):
        """Files written inside are removed again if the plan is not sealed by the end (a refusal, an error, Ctrl-C):
        a half-made plan directory would only invite someone to finish it by hand."""
        before = {p.name for p in self.directory.iterdir()}
        try:
            yield self
        except BaseException:
            if not self.document_path.exists():
                for path in self.directory.iterdir():
                    if path.name not in before and path.is_file():
                        path.unlink(missing_ok=True)
            raise

    def write_document(self, document: dict) -> Path:
        return write_json(self.document_path, document)

    def write_approvals(self, approvals: list[dict]) -> Path:
        return write_json(self.approvals_path, {"approvals": approvals})

    # -------------------------------------------------------------------------------------------- reading

    def document(self) -> dict:
        """plan.json as written (not checked: `load` checks)."""
        return read_json_object(self.document_path, "plan", PlanTampered)

    def sealed_document(self) -> dict | None:
        """plan.json when it is what was hashed (None when absent): for readers that do not need plan.parquet, such
        as a report of a run directory, which holds plan.json alone. PlanTampered when its content moved."""
        if not self.document_path.exists():
            return None
        document = self.document()
        if seal(document)["plan_hash"] != document.get("plan_hash"):
            raise PlanTampered(f"{self.document_path} was altered after planning: its content does not match plan_hash")
        return document

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
        approvals = read_json_object(self.approvals_path, "plan", PlanTampered).get("approvals", [])
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
