"""The cost and effort model: configured unit costs -> a table by S1SP and registered NO of devices, estimated
apply hours and cost, recorded in plan.json and shown by `plan` and the reports.

The case's `[costs]` table belongs to this module: validated here (unknown keys refused, strict types, no negative
amounts), errors as ConfigError naming the case file and `costs.<field>`.

cost of a (S1SP, NO) row = per_device × planned + per_network_operator (once per row with devices)
                            + manual_per_held_device × held + apply_hour × apply hours
apply hours = planned × 3 requests / requests per second / 3600 (API S1SPs; a manual S1SP has none)
total = Σ rows + Σ fixed_per_s1sp + fixed_shared. An S1SP with no fixed figure is marked "not costed"."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remediation.errors import ConfigError
from remediation.model import REQUESTS_PER_DEVICE

COSTS_SCHEMA = "remediation/cost-model/1"

Amount = Annotated[float, Field(ge=0, le=1e9)]


class CostModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    currency: Annotated[str, Field(min_length=1, max_length=8)] = "GBP"
    fixed_per_s1sp: dict[str, Amount] = Field(default_factory=dict)
    fixed_shared: Amount = 0.0
    fixed_shared_s1sps: list[str] = Field(default_factory=list)
    fixed_shared_label: Annotated[str, Field(max_length=300)] = ""
    per_device: Amount = 0.0
    per_network_operator: Amount = 0.0
    manual_per_held_device: Amount = 0.0
    apply_hour: Amount = 0.0
    requests_per_second: dict[str, Annotated[float, Field(gt=0, le=1e6)]] = Field(default_factory=dict)
    unit_costs_label: Annotated[str, Field(max_length=300)] = ""


def load_cost_model(raw: dict | None, case_file, s1sps: list[str]) -> CostModel | None:
    """The case's [costs] as a CostModel (None when the case has none); S1SP codes must be the case's own."""
    if not raw:  # no [costs] table (or an empty one): no estimate
        return None
    try:
        model = CostModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("costs", *err["loc"]))
        raise ConfigError(err["msg"], file=str(case_file), field=where) from None
    for name in ("fixed_per_s1sp", "requests_per_second"):
        for code in getattr(model, name):
            if code not in s1sps:
                raise ConfigError(
                    f"S1SP {code!r} is not one of the case's ({', '.join(s1sps)})",
                    file=str(case_file),
                    field=f"costs.{name}.{code}",
                )
    for code in model.fixed_shared_s1sps:
        if code not in s1sps:
            raise ConfigError(
                f"S1SP {code!r} is not one of the case's ({', '.join(s1sps)})",
                file=str(case_file),
                field="costs.fixed_shared_s1sps",
            )
    if model.fixed_shared and not model.fixed_shared_s1sps:
        raise ConfigError(
            "name the S1SPs the shared fixed figure covers", file=str(case_file), field="costs.fixed_shared_s1sps"
        )
    return model


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 2)


def automate_or_manual(
    model: CostModel, correctable: pd.DataFrame, rates: dict[str, float | None], s1sps: list[str]
) -> list[dict]:
    """The working group's question per S1SP: what correcting its devices costs through its API (variable part; the
    S1SP's fixed cost comes on top) against by hand (manual handling per device), and so the fixed cost below which
    automating it pays. `correctable`: the devices to correct whichever way (s1sp, registered_no)."""
    out = []
    for code in s1sps:
        part = correctable[correctable["s1sp"] == code]
        n, nos = int(len(part)), int(part["registered_no"].nunique())
        rate = model.requests_per_second.get(code) or rates.get(code)
        hours = n * REQUESTS_PER_DEVICE / rate / 3600 if rate else None
        automated = model.per_device * n + model.per_network_operator * nos + model.apply_hour * (hours or 0)
        by_hand = model.manual_per_held_device * n + model.per_network_operator * nos
        out.append(
            {
                "s1sp": code,
                "devices": n,
                "network_operators": nos,
                "automated_variable_cost": _round(automated),
                "manual_cost": _round(by_hand),
                "automation_pays_below_fixed_cost": _round(by_hand - automated),
            }
        )
    return out


def estimate_costs(
    model: CostModel,
    planned: pd.DataFrame,
    held: pd.DataFrame,
    rates: dict[str, float | None],
    manual: list[str],
    s1sps: list[str],
    correctable: pd.DataFrame | None = None,
) -> dict:
    """planned / held: frames with columns s1sp, registered_no (one row per device). rates: S1SP -> requests/s.
    correctable: every device the plan corrects, through an API or a manual S1SP's change request."""
    keys = ["s1sp", "registered_no"]
    p = planned.groupby(keys).size().rename("planned_devices")
    h = held.groupby(keys).size().rename("held_devices")
    table = pd.concat([p, h], axis=1).fillna(0).astype(int).reset_index().sort_values(keys, ignore_index=True)
    rate = table["s1sp"].map(lambda s: model.requests_per_second.get(s) or rates.get(s))
    hours = table["planned_devices"] * REQUESTS_PER_DEVICE / rate.astype(float) / 3600
    table["apply_hours"] = hours.where(~table["s1sp"].isin(manual), 0.0)
    table["cost"] = (
        model.per_device * table["planned_devices"]
        + model.per_network_operator
        + model.manual_per_held_device * table["held_devices"]
        + model.apply_hour * table["apply_hours"].fillna(0)
    ).round(2)
    table["apply_hours"] = table["apply_hours"].round(6)  # totals are sums of exactly what the rows say
    rows = [
        {
            "s1sp": r.s1sp,
            "registered_no": r.registered_no,
            "planned_devices": int(r.planned_devices),
            "held_devices": int(r.held_devices),
            "apply_hours": None if pd.isna(r.apply_hours) else float(r.apply_hours),
            "cost": _round(r.cost),
        }
        for r in table.itertuples(index=False)
    ]
    shared = set(model.fixed_shared_s1sps)
    by_s1sp = []
    for code in s1sps:
        part = table[table["s1sp"] == code]
        fixed = model.fixed_per_s1sp.get(code)
        hours_s = part["apply_hours"]
        by_s1sp.append(
            {
                "s1sp": code,
                "mode": "manual" if code in manual else "automated",
                "planned_devices": int(part["planned_devices"].sum()),
                "held_devices": int(part["held_devices"].sum()),
                "apply_hours": None if hours_s.isna().any() else round(float(hours_s.sum()), 6),
                "variable_cost": _round(part["cost"].sum()),
                "fixed_cost": _round(fixed),
                "fixed_in_shared_figure": code in shared,
                "costed": fixed is not None or code in shared,
                "cost": _round(part["cost"].sum() + (fixed or 0)),
            }
        )
    variable = float(table["cost"].sum())
    fixed_total = float(sum(model.fixed_per_s1sp.values())) + model.fixed_shared
    return {
        "schema": COSTS_SCHEMA,
        "automate_or_manual": automate_or_manual(model, planned if correctable is None else correctable, rates, s1sps),
        "currency": model.currency,
        "unit_costs": model.model_dump(exclude={"unit_costs_label", "fixed_shared_label"}),
        "unit_costs_label": model.unit_costs_label,
        "fixed_shared": {
            "amount": _round(model.fixed_shared),
            "s1sps": sorted(shared),
            "label": model.fixed_shared_label,
        }
        if model.fixed_shared
        else None,
        "by_s1sp_and_no": rows,
        "by_s1sp": by_s1sp,
        "not_costed": [s["s1sp"] for s in by_s1sp if not s["costed"]],
        "totals": {
            "planned_devices": int(table["planned_devices"].sum()),
            "held_devices": int(table["held_devices"].sum()),
            "apply_hours": round(float(table["apply_hours"].fillna(0).sum()), 6),
            "variable_cost": _round(variable),
            "fixed_cost": _round(fixed_total),
            "cost": _round(variable + fixed_total),
        },
    }
