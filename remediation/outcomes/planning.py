"""What `plan` adds for outcomes: reference tables, the manual S1SPs' change-request export (their rows leave the
API plan), governance references and the cost and effort estimate. Returns the rows apply will write and the
plan.json fields and output files to seal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from remediation.outcomes.change_requests import (
    change_request_rows,
    manual_counts,
    manual_s1sps,
    split_manual,
    write_change_requests,
)
from remediation.outcomes.costs import estimate_costs, load_cost_model
from remediation.outcomes.references import (
    CERTIFICATES_FILE,
    OPERATORS_FILE,
    References,
    certificate_table,
    operator_table,
)
from remediation.outcomes.state import Sources
from remediation.outcomes.worklist import build_worklist


@dataclass
class PlanExtras:
    rows: pd.DataFrame  # the rows apply writes through S1SP APIs
    fields: dict  # added to plan.json before sealing
    outputs: dict[str, Path]  # added to plan.json's output hashes


def governance(config, change_ref: str | None) -> dict:
    """The case's [governance], with `plan --change-ref` taking the change record's place when given."""
    case = getattr(config, "governance", None)
    refs = {"change_record": getattr(case, "change_record", None), "decision": getattr(case, "decision", None)}
    if change_ref is not None:
        from remediation.errors import InputError

        if not change_ref.strip() or len(change_ref) > 200 or any(c in change_ref for c in "\r\n"):
            raise InputError("must be one line of 1 to 200 characters", field="--change-ref")
        refs["change_record"] = change_ref.strip()
    return refs


def plan_extras(
    out: Path,
    config,
    catalog,
    registry,
    rows: pd.DataFrame,
    change_ref: str | None = None,
    manual_rows: pd.DataFrame | None = None,
) -> PlanExtras:
    """`manual_rows`: the manual S1SPs' rows when the caller has already taken them out of `rows`."""
    from remediation.outputs import write_parquet

    s1sps = sorted({e.s1sp for e in config.extracts} | set(config.endpoints))
    model = load_cost_model(config.costs, config.path, s1sps)  # validated before anything is written
    certificates, operators = certificate_table(catalog), operator_table(registry, catalog)
    outputs = {
        CERTIFICATES_FILE: write_parquet(out / CERTIFICATES_FILE, certificates),
        OPERATORS_FILE: write_parquet(out / OPERATORS_FILE, operators),
    }
    manual = manual_s1sps(config.endpoints)
    if manual_rows is None:
        api_rows, manual_rows = split_manual(rows, manual)
    else:
        api_rows = split_manual(rows, manual)[0]
    fields = {"governance": governance(config, change_ref), "manual_s1sps": manual}
    if manual:
        frame = change_request_rows(manual_rows, References(certificates, operators))
        outputs.update(write_change_requests(out, frame))
        fields["change_requests"] = manual_counts(frame)
    if model is not None:
        # Held devices: the worklist the plan leaves (locked out, not in the API plan) - a plan directory's worklist.
        held = build_worklist(Sources(out, "plan", out, {}), planned_ids=api_rows["device_id"])
        rates = {code: ep.rate_per_second for code, ep in config.endpoints.items()}
        fields["costs"] = estimate_costs(
            model,
            api_rows,
            held,
            rates,
            manual,
            s1sps,
            correctable=pd.concat([api_rows, manual_rows])[["s1sp", "registered_no"]],
        )
    return PlanExtras(api_rows, fields, outputs)
