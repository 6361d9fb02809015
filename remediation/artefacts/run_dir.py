"""The run directory (and the dry-run directory): run.json, the hash-chained journal, the checkpoint index, the run
lock, the outcome tables, and the copies of the plan's detect result that reports and exports are made from.

The journal is the record and the checkpoint database a rebuildable index of it (`apply/index.py` replays and
compares them); this module owns where each file is, what run.json must hold to be a run record, and which files a
run carries from its plan. Apply, status, reports, outcomes and the audit export all ask it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from remediation.artefacts.detect_result import FINDINGS, INPUT_ROWS, QUARANTINE, SUMMARY
from remediation.artefacts.document import OrderedDocument
from remediation.artefacts.plan_dir import PLAN_JSON
from remediation.errors import InputError
from remediation.outputs import prepare_dir, write_csv, write_json

RUN_JSON = "run.json"
JOURNAL = "journal.jsonl"
CHECKPOINTS = "checkpoints.sqlite"
RUN_LOCK = "run.lock"
OUTCOMES_PARQUET = "outcomes.parquet"
OUTCOMES_CSV = "outcomes.csv"
DRY_RUN_JSON = "dry_run.json"
DRY_RUN_CSV = "dry_run.csv"
RUN_SCHEMA = "remediation/run/1"

# dry_run.csv: per planned device, what a dry run read and would do (nothing was written).
DRY_RUN_COLUMNS = [
    "device_id",
    "s1sp",
    "operation_id",
    "state",
    "prior_ds_fp",
    "prior_ka_fp",
    "expected_ds_fingerprint",
    "expected_ka_fingerprint",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
    "last_error",
]
# dry_run.csv written before its fingerprint columns took the plan's names: renamed once, when read
LEGACY_DRY_RUN_NAMES = {
    "expected_ds": "expected_ds_fingerprint",
    "expected_ka": "expected_ka_fingerprint",
    "target_ds_fp": "target_ds_fingerprint",
    "target_ka_fp": "target_ka_fingerprint",
}


@dataclass
class RunRecord(OrderedDocument):
    """run.json: which plan the run belongs to, who made it, its status and pauses, and the journal head (seq, hash)
    recorded at each run event (a journal cut short or rewritten after it is refused). Written in this key order; a
    field never set is left out, and keys this version does not know are kept as read (after the known ones)."""

    plan_hash: str
    plan_dir: str
    schema: str | None = RUN_SCHEMA
    created_by: str | None = None
    created_at: str | None = None
    status: str | None = None
    paused: dict[str, str] | None = None  # S1SP -> why its waves paused
    journal_head: dict | None = None  # {"seq", "hash"} of the journal's last entry when the record was saved
    journal_head_signature: dict | None = None  # the operator's signature over head_payload (apply/index.py)
    updated_at: str | None = None
    counts: dict | None = None  # S1SP -> state -> devices, at the last save
    superseded_by: str | None = None
    extra: dict = field(default_factory=dict)

    ORDER = (
        "schema",
        "plan_hash",
        "plan_dir",
        "created_by",
        "created_at",
        "status",
        "paused",
        "journal_head",
        "journal_head_signature",
        "updated_at",
        "counts",
        "superseded_by",
    )

    ABSENT_AS_NONE = ("schema",)

    @classmethod
    def from_json(cls, value: dict) -> RunRecord:
        return cls._from_known(value)

    def update(self, **values) -> None:
        """Set fields by name; a name this version does not know goes to `extra` (and so into run.json)."""
        names = {f.name for f in fields(self)} - {"extra"}
        for name, value in values.items():
            if name in names:
                setattr(self, name, value)
            else:
                self.extra[name] = value

    @property
    def journal_seq(self) -> int:
        """Entries the journal held at the last save (0: none recorded)."""
        return int((self.journal_head or {}).get("seq") or 0)


@dataclass(frozen=True)
class DryRunRecord:
    """dry_run.json: which plan was read, and per S1SP how many devices ended in each state."""

    plan_hash: str
    plan_dir: str
    states: dict[str, dict[str, int]]

    @classmethod
    def of(cls, plan_hash: str, plan_dir: Path, frame: pd.DataFrame) -> DryRunRecord:
        states = {
            s1sp: {k: int(v) for k, v in g["state"].value_counts().sort_index().items()}
            for s1sp, g in frame.groupby("s1sp")
        }
        return cls(plan_hash, str(Path(plan_dir).resolve()), states)


# Detection results a plan or run directory carries along, so reports and audit exports can be made from it alone.
CARRIED_FILES = (FINDINGS, INPUT_ROWS, SUMMARY, QUARANTINE)


def carry_files(source: Path, target: Path, names=CARRIED_FILES) -> None:
    for name in names:
        if (Path(source) / name).exists():
            shutil.copy2(Path(source) / name, Path(target) / name)


@dataclass(frozen=True)
class RunDir:
    directory: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))

    @property
    def record_path(self) -> Path:
        return self.directory / RUN_JSON

    @property
    def journal(self) -> Path:
        return self.directory / JOURNAL

    @property
    def checkpoints(self) -> Path:
        return self.directory / CHECKPOINTS

    @property
    def lock(self) -> Path:
        return self.directory / RUN_LOCK

    @property
    def outcomes_parquet(self) -> Path:
        return self.directory / OUTCOMES_PARQUET

    @property
    def outcomes_csv(self) -> Path:
        return self.directory / OUTCOMES_CSV

    @property
    def dry_run_record(self) -> Path:
        return self.directory / DRY_RUN_JSON

    @property
    def dry_run_csv(self) -> Path:
        return self.directory / DRY_RUN_CSV

    def is_run(self) -> bool:
        return self.record_path.exists()

    def has_journal(self) -> bool:
        """A journal with at least one entry (an empty file is no journal)."""
        return self.journal.exists() and self.journal.stat().st_size > 0

    def record(self) -> RunRecord:
        """run.json; an input error (exit 2) when the directory is not a run or the record is garbage."""
        path = self.record_path
        if not path.exists():
            raise InputError(f"not a run directory (no {RUN_JSON})", file=str(self.directory))
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON ({exc})", file=str(path)) from None
        if (
            not isinstance(run, dict)
            or not isinstance(run.get("plan_hash"), str)
            or not isinstance(run.get("plan_dir"), str)
        ):
            raise InputError("not a run record (expected a JSON object with plan_hash and plan_dir)", file=str(path))
        return RunRecord.from_json(run)

    def write_record(self, run: RunRecord) -> Path:
        return write_json(self.record_path, run.to_json())

    def write_dry_run(self, record: DryRunRecord, frame: pd.DataFrame) -> None:
        """dry_run.csv (every planned device, the columns above; a column the frame lacks is added to it, empty)
        and dry_run.json."""
        prepare_dir(self.directory)
        for col in DRY_RUN_COLUMNS:
            if col not in frame.columns:
                frame[col] = None
        write_csv(self.dry_run_csv, frame[DRY_RUN_COLUMNS])
        write_json(self.dry_run_record, asdict(record))

    def read_dry_run(self) -> pd.DataFrame:
        """dry_run.csv as strings (empty cells ""), under today's column names whichever version wrote it."""
        frame = pd.read_csv(self.dry_run_csv, dtype=str, keep_default_na=False)
        return frame.rename(columns={k: v for k, v in LEGACY_DRY_RUN_NAMES.items() if v not in frame.columns})

    def carry_from_plan(self, plan_dir: Path) -> None:
        """plan.json and the plan's detect result, so the run directory can be reported and exported on its own."""
        carry_files(plan_dir, self.directory, (PLAN_JSON, *CARRIED_FILES))


def read_run(run_dir: str | Path) -> RunRecord:
    return RunDir(run_dir).record()
