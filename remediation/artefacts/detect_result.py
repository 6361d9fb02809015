"""The detect result directory: findings, input-row trace, quarantine, summary, and a manifest that seals them.

`plan --from DIR` (and anything else that needs findings) reuses a detect result instead of paying for a national
detection again. That is only safe when the result is exactly what detect wrote, from exactly the inputs and
configuration the case names now: the manifest binds the four outputs by SHA-256, and the summary records every
input and configuration file by SHA-256 and the as-of date. Any difference is a refusal (exit 3) naming the file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from remediation.artefacts.document import OrderedDocument
from remediation.errors import SafetyRefusal
from remediation.evidence.hashing import sha256_file
from remediation.outputs import prepare_dir, read_json_object, write_csv, write_json, write_parquet, write_tables

FINDINGS = "findings.parquet"
FINDINGS_CSV = "findings.csv"
INPUT_ROWS = "input_rows.parquet"
QUARANTINE = "quarantine.csv"
SUMMARY = "summary.json"
MANIFEST = "detect.json"
MANIFEST_SCHEMA = "remediation/detect-result/1"
SEALED = (FINDINGS, INPUT_ROWS, QUARANTINE, SUMMARY)
SUMMARY_SCHEMA = "remediation/detect-summary/1"


class StaleDetectResult(SafetyRefusal):
    """A detect result that no longer matches its inputs, its configuration or its own manifest."""


def not_ok(table: pa.Table) -> pa.Table:
    """The rows of a findings table that need someone's attention: the findings CSV holds only these (contract v2)."""
    category = table["category"]
    if pa.types.is_dictionary(category.type):
        category = category.cast(category.type.value_type)
    return table.filter(pc.not_equal(category, "OK"))


def write_findings(out: Path, chunks, csv: bool = True) -> Path:
    """Every device to Parquet; the non-OK devices to CSV as well."""
    return write_tables(out / FINDINGS, out / FINDINGS_CSV if csv else None, chunks, csv_rows=not_ok)


@dataclass(frozen=True)
class DetectSummary(OrderedDocument):
    """summary.json: what detect read (every input and configuration file by SHA-256, rows per file), the counts by
    category, S1SP and cause (reconciled with every row read), the no-NO-can-manage headline, registry gaps, security
    holds, the wrong-owner matrix and the quarantine counts. Written in this key order; a field a summary written
    before it does not hold is None (and left out again), and keys this version does not know are kept as read."""

    case: str
    as_of: str
    files: list[dict]  # {"role", "s1sp", "path", "sha256", "rows_read"[, "rows_rejected"]} per input file
    config_files: list[dict]  # {"path", "sha256"}
    rows_read: dict[str, int]  # {"extracts", "rdp"}
    devices: int
    rows_by_category: dict[str, int]
    devices_by_category: dict[str, int]
    devices_by_s1sp: dict[str, dict[str, int]]
    quarantine: dict  # {"issues", "extract_rows", "rdp_rows", "by_field"}
    wrong_owner_matrix: list[dict]
    # Version 2 domain figures: None in a summary written before them.
    devices_by_cause: dict[str, dict[str, int]] | None = None
    no_locked_out: dict | None = None
    registry_gaps: list[dict] | None = None
    security_hold: list[dict] | None = None
    schema: str | None = SUMMARY_SCHEMA
    tool_version: str | None = None
    reconciled: bool | None = True
    extra: dict = field(default_factory=dict)

    ORDER = (
        "schema",
        "tool_version",
        "case",
        "as_of",
        "files",
        "config_files",
        "rows_read",
        "devices",
        "rows_by_category",
        "devices_by_category",
        "devices_by_s1sp",
        "devices_by_cause",
        "no_locked_out",
        "registry_gaps",
        "security_hold",
        "wrong_owner_matrix",
        "quarantine",
        "reconciled",
    )
    ABSENT_AS_NONE = ("schema", "tool_version", "reconciled")

    @classmethod
    def from_json(cls, value: dict, path: Path | str = SUMMARY) -> DetectSummary:
        """A summary as read; a document without the required keys is refused (exit 3) naming the file."""
        missing = [k for k in cls.required() if k not in value]
        if missing:
            raise StaleDetectResult(f"{path}: not a detect summary (no {', '.join(missing)})")
        return cls._from_known(value)

    @property
    def locked_out_devices(self) -> int | None:
        """Devices no NO can manage (None in a summary written before the figure)."""
        return (self.no_locked_out or {}).get("devices")


def read_summary(path: Path) -> DetectSummary | None:
    """summary.json at `path` (None when absent); garbage is a refusal naming the file."""
    value = read_json_object(path, refusal=StaleDetectResult)
    return None if value is None else DetectSummary.from_json(value, path)


def write_summary(path: Path, summary: DetectSummary) -> Path:
    return write_json(path, summary.to_json())


@dataclass(frozen=True)
class DetectResultDir:
    directory: Path

    def write(
        self,
        detection,
        input_rows: pd.DataFrame,
        quarantine: pd.DataFrame,
        summary: DetectSummary,
        *,
        csv: bool = True,
        manifest: bool = True,
    ) -> dict[str, Path]:
        """Write a detect result and (unless a plan directory seals the copies itself) its manifest; returns the
        written files by name."""
        out = prepare_dir(self.directory)
        written = {
            FINDINGS: write_findings(out, detection.chunks(), csv=csv),
            INPUT_ROWS: write_parquet(out / INPUT_ROWS, input_rows),
            QUARANTINE: write_csv(out / QUARANTINE, quarantine),
            SUMMARY: write_summary(out / SUMMARY, summary),
        }
        if manifest:
            write_json(
                out / MANIFEST,
                {"schema": MANIFEST_SCHEMA, "outputs": {name: sha256_file(written[name]) for name in SEALED}},
            )
        return written

    def path(self, name: str) -> Path:
        return self.directory / name

    def copy_sealed(self, out: Path) -> dict[str, Path]:
        """The four sealed outputs copied byte for byte into `out` (a plan made from this result carries them, as a
        plan made from scratch does); returns the copies by name."""
        copies = {}
        for name in SEALED:
            shutil.copyfile(self.directory / name, Path(out) / name)
            copies[name] = Path(out) / name
        return copies

    def _json(self, name: str) -> dict:
        return read_json_object(self.directory / name, "detect result", StaleDetectResult)

    def summary(self) -> DetectSummary:
        """summary.json (an input error naming the file when the directory has none)."""
        return DetectSummary.from_json(
            read_json_object(self.directory / SUMMARY, "detect result", StaleDetectResult), self.directory / SUMMARY
        )

    def check_sealed(self) -> DetectSummary:
        """Prove the four outputs are the ones detect wrote; returns the summary."""
        manifest = self._json(MANIFEST)
        outputs = manifest.get("outputs")
        if manifest.get("schema") != MANIFEST_SCHEMA or not isinstance(outputs, dict):
            raise StaleDetectResult(
                f"{self.directory / MANIFEST}: not a detect manifest (schema {manifest.get('schema')!r})"
            )
        for name in SEALED:
            path = self.directory / name
            if not path.exists():
                raise StaleDetectResult(f"{path}: missing from the detect result")
            if sha256_file(path) != outputs.get(name):
                raise StaleDetectResult(f"{path} was altered after detect: SHA-256 differs from {MANIFEST}")
        return self.summary()

    def check_matches(
        self, input_files: list[Path], config_files: list[Path], as_of: date, hashes, input_hashes: bool = True
    ) -> DetectSummary:
        """Refuse unless the result is sealed, and every input and configuration file the case names now is the
        one detect read (same paths, same SHA-256), for the same as-of date. `hashes(path)` gives a file's SHA-256.
        `input_hashes=False` checks the inputs' paths now and leaves their SHA-256 to `check_input_hashes`, so a
        caller can work while gigabytes are hashed and check before it seals anything."""
        summary = self.check_sealed()
        recorded = {entry["path"]: entry["sha256"] for entry in summary.files}
        recorded_config = {entry["path"]: entry["sha256"] for entry in summary.config_files}
        for kind, now, then in (("input", input_files, recorded), ("configuration", config_files, recorded_config)):
            names = {str(p) for p in now}
            for path in sorted(names | set(then)):
                if path not in then:
                    raise StaleDetectResult(
                        f"{path}: the case reads this {kind} file but detect in {self.directory} did not; re-run detect"
                    )
                if path not in names:
                    raise StaleDetectResult(
                        f"{path}: detect in {self.directory} read this {kind} file but the case no longer names it; re-run detect"
                    )
                if (kind == "configuration" or input_hashes) and hashes(Path(path)) != then[path]:
                    raise self._changed(path)
        if as_of.isoformat() != summary.as_of:
            raise StaleDetectResult(
                f"{self.directory}: detect ran as of {summary.as_of}, not {as_of.isoformat()}; re-run detect"
            )
        return summary

    def check_input_hashes(self, summary: DetectSummary, input_files: list[Path], hashes) -> None:
        """The SHA-256 half of `check_matches(..., input_hashes=False)`, against the summary it returned (verified
        then: summary.json is not read again, so a copy swapped in meanwhile is never what the inputs are held to)."""
        recorded = {entry["path"]: entry["sha256"] for entry in summary.files}
        for path in sorted(str(p) for p in input_files):
            if hashes(Path(path)) != recorded.get(path):
                raise self._changed(path)

    def _changed(self, path: str) -> StaleDetectResult:
        return StaleDetectResult(f"{path} changed since detect in {self.directory} (SHA-256 differs); re-run detect")

    def findings_where(self, column: str, values: list[str]) -> pd.DataFrame:
        """The findings whose `column` is one of `values`, read filtered from Parquet (not every device)."""
        table = pq.read_table(self.directory / FINDINGS, filters=[(column, "in", list(values))] if values else None)
        if not values:
            table = table.slice(0, 0)
        return table.to_pandas()

    def input_rows(self) -> pd.DataFrame:
        return pd.read_parquet(self.directory / INPUT_ROWS)

    def quarantine(self) -> pd.DataFrame:
        return pd.read_csv(self.directory / QUARANTINE, dtype=str, keep_default_na=False)
