"""The verify result directory: the fresh detection's findings and summary (as a detect result writes them), the
residual WRONG_NO devices, the planned and manual change-request devices not at target, and verify.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from remediation.artefacts.detect_result import SUMMARY, DetectSummary, write_findings, write_summary
from remediation.outputs import prepare_dir, write_csv, write_json

VERDICT = "verify.json"
RESIDUAL = "residual_wrong.csv"
PLANNED_NOT_AT_TARGET = "planned_not_at_target.csv"
MANUAL_NOT_AT_TARGET = "manual_not_at_target.csv"


@dataclass(frozen=True)
class VerifyResultDir:
    directory: Path

    @classmethod
    def new(cls, out_dir: str | Path) -> VerifyResultDir:
        return cls(prepare_dir(out_dir))

    def write(
        self,
        verdict: dict,
        summary: DetectSummary,
        findings_chunks,
        residual: pd.DataFrame,
        planned_not_at_target: pd.DataFrame | None = None,
        manual_not_at_target: pd.DataFrame | None = None,
    ) -> None:
        out = self.directory
        if planned_not_at_target is not None:
            write_csv(out / PLANNED_NOT_AT_TARGET, planned_not_at_target)
        if manual_not_at_target is not None:
            write_csv(out / MANUAL_NOT_AT_TARGET, manual_not_at_target)
        write_findings(out, findings_chunks, csv=False)
        write_csv(out / RESIDUAL, residual)
        write_summary(out / SUMMARY, summary)
        write_json(out / VERDICT, verdict)
