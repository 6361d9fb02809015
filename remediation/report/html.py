"""A self-contained HTML report: inline CSS and SVG, no scripts, no network. Figures carry data-* attributes so
tests (and other tools) can read them back and check them against summary.json.

This module computes what the report shows (rows, bar geometry, sentences); templates/report.html.j2 lays it out,
autoescaped, so no value from an input (an S1SP code, a registry id, a reason quoted from an S1SP reply, an
approver's name or change reference) can add markup to the page."""

from __future__ import annotations

from remediation.model import CATEGORIES
from remediation.outcomes.text import render
from remediation.report.text import automation_lines, format_duration, format_hours, money, signer_text

COLOURS = {
    "INVALID_INPUT": "#b71c1c",
    "OUT_OF_SCOPE": "#9e9e9e",
    "DUPLICATE_CONFLICT": "#e65100",
    "SECURITY_HOLD": "#d50000",
    "NO_RDP": "#6d4c41",
    "RDP_AMBIGUOUS": "#8d6e63",
    "UNKNOWN_NO": "#7b1fa2",
    "PENDING_NO_CHANGE": "#5c6bc0",
    "WRONG_NO": "#f9a825",
    "SLOT_EMPTY": "#0277bd",
    "KEY_USAGE_MISMATCH": "#00838f",
    "EXPIRED_OR_REVOKED": "#546e7a",
    "OK": "#2e7d32",
}


def _category_chart(by_s1sp: dict) -> dict:
    """One stacked bar per S1SP, a segment per category, scaled to the S1SP with the most devices."""
    width, bar_h, label_w = 900, 26, 90
    widest = max((sum(c.values()) for c in by_s1sp.values()), default=0) or 1
    rows = []
    for i, (s1sp, counts) in enumerate(by_s1sp.items()):
        y, x, bars = 10 + i * (bar_h + 10), label_w, []
        for category in CATEGORIES:
            n = counts[category]
            if not n:
                continue
            w = (width - label_w - 60) * n / widest
            bars.append({"x": x, "w": max(w, 1), "category": category, "fill": COLOURS[category], "devices": n})
            x += w
        rows.append(
            {"s1sp": s1sp, "y": y, "text_y": y + bar_h * 0.7, "bars": bars, "end": x + 4, "total": sum(counts.values())}
        )
    return {"width": width, "height": len(rows) * (bar_h + 10) + 10, "bar_h": bar_h, "rows": rows}


def _matrix(rows: list[dict]) -> dict | None:
    """Wrong owner (rows) against registered NO (columns), shaded by share of the largest cell."""
    if not rows:
        return None
    owners = sorted({r["wrong_owner"] for r in rows})
    expected = sorted({r["expected_owner"] for r in rows})
    cell = {(r["wrong_owner"], r["expected_owner"]): r["devices"] for r in rows}
    top = max(cell.values())

    def shade(n: int) -> str:
        return f"background:rgba(249,168,37,{0.15 + 0.85 * n / top:.2f})" if n else ""

    body = [(o, [(e, cell.get((o, e), 0), shade(cell.get((o, e), 0))) for e in expected]) for o in owners]
    return {"expected": expected, "rows": body}


def _estimate(rows: list[dict]) -> dict | None:
    if not rows:
        return None
    longest = max((r["seconds"] or 0) for r in rows) or 1
    return {
        "height": len(rows) * 30 + 10,
        "rows": [
            {**r, "y": 8 + i * 30, "w": 600 * (r["seconds"] or 0) / longest, "duration": format_duration(r["seconds"])}
            for i, r in enumerate(rows)
        ],
    }


def _status(report: dict) -> dict | None:
    state = report.get("run_state")
    if state:
        cls = "ok" if state["status"] == "completed" else "bad" if state["status"] == "interrupted" else "attention"
        return {"cls": cls, "status": state["status"], "paused": sorted(state["paused"].items())}
    if report.get("dry_run") is not None:
        return {"cls": "attention", "status": "dry-run", "paused": None}
    return None


def _ticket(report: dict) -> list[tuple] | None:
    """Who, when, under which change: the rows a change ticket asks for."""
    gov, auth, state = report.get("governance"), report.get("authority"), report.get("run_state")
    if gov is None and auth is None:
        return None
    rows = [
        ("change record", (gov or {}).get("change_record") or "not recorded"),
        ("decision", (gov or {}).get("decision") or "not recorded"),
    ]
    if auth:
        p = auth["planned_by"]
        rows.append(("planned by", signer_text(p)))
        rows.append(("approved by", "; ".join(signer_text(a) for a in auth["approved_by"]) or "no approval recorded"))
    if state:
        rows += [
            ("applied by", ", ".join(state["applied_by"]) or "-"),
            ("started", state["started_at"] or "-"),
            ("finished", state["finished_at"] or "not finished"),
            ("actual duration", format_duration(state["duration_seconds"])),
            ("estimated duration", format_duration(state["estimated_seconds"])),
            ("apply invocations", state["invocations"]),
        ]
    elif report.get("dry_run") is not None:
        rows.append(("estimated apply duration", format_duration(report["dry_run"]["estimated_seconds"])))
    return rows


def _costs(costs: dict | None) -> dict | None:
    """The cost tables with every figure formatted (money in the case's currency, hours as durations)."""
    if not costs:
        return None
    cur = costs["currency"]

    def fixed(s: dict) -> str:
        if s["fixed_cost"] is not None:
            return money(s["fixed_cost"], cur)
        return "in shared figure" if s["fixed_in_shared_figure"] else "not costed"

    shared = costs.get("fixed_shared")
    return {
        "currency": cur,
        "label": costs.get("unit_costs_label") or "configured unit costs",
        "chart": _cost_chart(costs),
        "by_s1sp": [
            {**s, "hours": format_hours(s["apply_hours"]), "fixed": fixed(s), "total": money(s["cost"], cur)}
            for s in costs["by_s1sp"]
        ],
        "shared": shared
        and {"s1sps": "+".join(shared["s1sps"]), "label": shared["label"], "amount": money(shared["amount"], cur)},
        "totals": {
            **costs["totals"],
            "hours": format_hours(costs["totals"]["apply_hours"]),
            "fixed": money(costs["totals"]["fixed_cost"], cur),
            "total": money(costs["totals"]["cost"], cur),
        },
        "not_costed": ", ".join(costs["not_costed"]),
        "automation": automation_lines(costs),
        "rows": [
            {**r, "hours": format_hours(r["apply_hours"]), "total": money(r["cost"], cur)}
            for r in costs["by_s1sp_and_no"]
        ],
    }


def _impact(report: dict) -> dict | None:
    impact = report.get("alert_routing_impact")
    if impact is None:
        return None
    totals = report["alert_routing_totals"]
    empty = {"NO_DS": "-", "NO_KA": "-", "devices": "-"}
    return {
        "rows": [{**e, "after": e["after"] or empty} for e in impact],
        "before": totals["before"]["devices"] if impact else None,
        "after": (totals["after"] or {}).get("devices", "-") if impact else None,
        "chart": _impact_chart(totals) if impact else None,
    }


def _impact_chart(totals: dict) -> dict:
    """Before and after bars per slot: devices whose alerts reached an organisation other than the registered NO."""
    rows = [(slot, when) for slot in ("NO_DS", "NO_KA", "devices") for when in ("before", "after")]
    top = max([totals["before"][k] for k in ("NO_DS", "NO_KA", "devices")] + [1])
    bars = []
    for i, (slot, when) in enumerate(rows):
        source = totals.get(when)
        if source is None:
            continue
        n = source[slot]
        fill = "#b71c1c" if when == "before" else "#2e7d32"
        bars.append({"slot": slot, "when": when, "devices": n, "y": 6 + i * 22, "w": 500 * n / top, "fill": fill})
    return {"height": len(rows) * 22 + 10, "bars": bars}


def _cost_chart(costs: dict) -> dict:
    """One bar per S1SP: variable cost and its own fixed figure; the shared fixed figure as its own bar."""
    bars = [(s["s1sp"], s["variable_cost"] or 0, s["fixed_cost"] or 0) for s in costs["by_s1sp"]]
    if costs.get("fixed_shared"):
        bars.append(("+".join(costs["fixed_shared"]["s1sps"]) + " shared", 0, costs["fixed_shared"]["amount"]))
    top = max([v + f for _, v, f in bars] + [1])
    return {
        "height": len(bars) * 24 + 10,
        "bars": [
            {
                "label": label,
                "y": 6 + i * 24,
                "variable": variable,
                "fixed": fixed,
                "wv": 500 * variable / top,
                "wf": 500 * fixed / top,
                "sum": f"{variable + fixed:,.2f}",
            }
            for i, (label, variable, fixed) in enumerate(bars)
        ],
    }


def render_html(report: dict) -> str:
    meta = [
        ("case", report["case"]),
        ("as-of date", report["as_of"]),
        ("devices", report["devices"]),
        ("extract rows read", report["rows_read"]["extracts"]),
        ("planned devices", report["planned_devices"]),
        ("plan hash", report["plan_hash"]),
        ("MPxN", "redacted (keyed hash)" if report["mpxn_redacted"] else "shown"),
        ("tool version", report["tool_version"]),
    ]
    locked = report.get("no_locked_out")
    return render(
        __package__,
        "report.html.j2",
        title=f"MP107 R2 remediation — {report['kind']} report — case {report['case']}",
        report=report,
        categories=CATEGORIES,
        colours=COLOURS,
        status=_status(report),
        meta=[(k, v) for k, v in meta if v is not None],
        ticket=_ticket(report),
        links=sorted((report.get("links") or {}).items()),
        costs=_costs(report.get("costs")),
        impact=_impact(report),
        locked=locked or None,
        category_chart=_category_chart(report["devices_by_s1sp"]),
        matrix=_matrix(report["wrong_owner_matrix"]),
        estimate=_estimate(report["estimated_apply"]),
        excluded_summary=", ".join(f"{c} {n}" for c, n in report["excluded"]["by_category"].items()),
    )
