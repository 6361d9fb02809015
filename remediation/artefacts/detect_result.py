"""The detect result directory: findings, input-row trace, quarantine, summary, and a manifest that seals them.

`plan --from DIR` (and anything else that needs findings) reuses a detect result instead of paying for a national
detection again. That is only safe when the result is exactly what detect wrote, from exactly the inputs and
configuration the case names now: the manifest binds the four outputs by SHA-256, and the summary records every
input and configuration file by SHA-256 and the as-of date. Any difference is a refusal (exit 3) naming the file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
class DetectResultDir:
    directory: Path

    def write(
        self,
        detection,
        input_rows: pd.DataFrame,
        quarantine: pd.DataFrame,
        summary: dict,
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
            SUMMARY: write_json(out / SUMMARY, summary),
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

    def check_sealed(self) -> dict:
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
        return self._json(SUMMARY)

    def check_matches(self, input_files: list[Path], config_files: list[Path], as_of: date, hashes) -> dict:
        """Refuse unless the result is sealed, and every input and configuration file the case names now is the
        one detect read (same paths, same SHA-256), for the same as-of date. `hashes(path)` gives a file's SHA-256."""
        summary = self.check_sealed()
        recorded = {entry["path"]: entry["sha256"] for entry in summary.get("files", [])}
        recorded_config = {entry["path"]: entry["sha256"] for entry in summary.get("config_files", [])}
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
                if hashes(Path(path)) != then[path]:
                    raise StaleDetectResult(
                        f"{path} changed since detect in {self.directory} (SHA-256 differs); re-run detect"
                    )
        if as_of.isoformat() != summary.get("as_of"):
            raise StaleDetectResult(
                f"{self.directory}: detect ran as of {summary.get('as_of')}, not {as_of.isoformat()}; re-run detect"
            )
        return summary

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
