"""Markdown rendering of a report, for change tickets and e-mail: the same sections and numbers as the HTML page.
Every cell and every text that came from an input is escaped (remediation.outcomes.text.md), as HTML escapes it."""

from __future__ import annotations

from remediation.model import CATEGORIES
from remediation.outcomes.text import md, md_table
from remediation.report.text import automation_lines, format_duration, format_hours, money, signer_text

_table = md_table


def _status(report: dict) -> list[str]:
    state = report.get("run_state")
    if state:
        out = [f"**Run status: {md(state['status'])}**"]
        out += [f"- {md(s1sp)} paused: {md(reason)}" for s1sp, reason in sorted(state["paused"].items())]
        return [*out, ""]
    if report.get("dry_run") is not None:
        return ["**Dry run: live slots were read, nothing was written.**", ""]
    return []


def _ticket(report: dict) -> list[str]:
    gov, auth, state = report.get("governance"), report.get("authority"), report.get("run_state")
    if gov is None and auth is None:
        return []
    rows = [
        ["change record", (gov or {}).get("change_record") or "not recorded"],
        ["decision", (gov or {}).get("decision") or "not recorded"],
    ]
    if auth:
        rows.append(["planned by", signer_text(auth["planned_by"])])
        rows.append(["approved by", "; ".join(signer_text(a) for a in auth["approved_by"]) or "no approval recorded"])
    if state:
        rows += [
            ["applied by", ", ".join(state["applied_by"]) or "-"],
            ["started", state["started_at"] or "-"],
            ["finished", state["finished_at"] or "not finished"],
            ["actual duration", format_duration(state["duration_seconds"])],
            ["estimated duration", format_duration(state["estimated_seconds"])],
            ["apply invocations", state["invocations"]],
        ]
    elif report.get("dry_run") is not None:
        rows.append(["estimated apply duration", format_duration(report["dry_run"]["estimated_seconds"])])
    return ["## Change ticket", "", _table(["", ""], rows), ""]


def _problems(report: dict) -> list[str]:
    p = report.get("problem_devices")
    if not p:
        return []
    if not p["devices"]:
        return ["No failed or drifted devices.", ""]
    by_state = ", ".join(f"{k} {v}" for k, v in p["by_state"].items())
    out = [f"### Failed, drifted and other devices not at target ({p['devices']}: {md(by_state)})", ""]
    if len(p["shown"]) < p["devices"]:
        out += [f"Showing {len(p['shown'])} of {p['devices']}; outcomes.csv has them all.", ""]
    out.append(
        _table(
            ["device", "S1SP", "MPxN", "state", "reason"],
            [[r["device_id"], r["s1sp"], r["mpxn"], r["state"], r["reason"]] for r in p["shown"]],
        )
    )
    return [*out, ""]


def _run(report: dict) -> list[str]:
    states = report.get("apply_outcome")
    if not states:
        return []
    head = list(next(iter(states.values()), {}))
    out = [
        "## Apply outcome per S1SP",
        "",
        _table(["S1SP", *head], [[s1sp, *(c[k] for k in head)] for s1sp, c in states.items()]),
        "",
    ]
    return out + _problems(report)


def _dry_run(report: dict) -> list[str]:
    dry = report.get("dry_run")
    if not dry:
        return []
    rows = [[s1sp, state, n] for s1sp, states in dry["states"].items() for state, n in states.items()]
    return ["## Dry run: what apply would do", "", _table(["S1SP", "state", "devices"], rows), "", *_problems(report)]


def _impact(report: dict) -> list[str]:
    impact = report.get("alert_routing_impact")
    if impact is None:
        return []
    if not impact:
        return [
            "## Alert routing",
            "",
            "No device sent its alerts to an organisation other than its registered NO.",
            "",
        ]
    t = report["alert_routing_totals"]
    after = (t["after"] or {}).get("devices", "-")

    def a(e, k):
        return "-" if e["after"] is None else e["after"][k]

    rows = [
        [
            e["holder"],
            e["registered_no"],
            e["before"]["NO_DS"],
            e["before"]["NO_KA"],
            e["before"]["devices"],
            a(e, "NO_DS"),
            a(e, "NO_KA"),
            a(e, "devices"),
        ]
        for e in impact
    ]
    return [
        "## Alert routing: holder → registered NO",
        "",
        f"Devices whose alerts went to the slot holder instead of the registered NO: **{t['before']['devices']}** before the run, **{after}** after.",
        "",
        _table(
            [
                "holder",
                "registered NO",
                "before NO_DS",
                "before NO_KA",
                "before devices",
                "after NO_DS",
                "after NO_KA",
                "after devices",
            ],
            rows,
        ),
        "",
    ]


def _costs(report: dict) -> list[str]:
    costs = report.get("costs")
    if not costs:
        return []
    cur = costs["currency"]
    rows = [
        [
            f"{s['s1sp']} ({s['mode']})",
            s["planned_devices"],
            s["held_devices"],
            format_hours(s["apply_hours"]),
            money(s["fixed_cost"], cur)
            if s["fixed_cost"] is not None
            else "in shared figure"
            if s["fixed_in_shared_figure"]
            else "not costed",
            money(s["cost"], cur),
        ]
        for s in costs["by_s1sp"]
    ]
    shared = costs.get("fixed_shared")
    if shared:
        rows.append(
            [
                "+".join(shared["s1sps"]) + ": " + shared["label"],
                "",
                "",
                "",
                money(shared["amount"], cur),
                money(shared["amount"], cur),
            ]
        )
    t = costs["totals"]
    rows.append(
        [
            "total",
            t["planned_devices"],
            t["held_devices"],
            format_hours(t["apply_hours"]),
            money(t["fixed_cost"], cur),
            money(t["cost"], cur),
        ]
    )
    out = [
        f"## Cost and effort estimate ({md(cur)})",
        "",
        md(costs.get("unit_costs_label") or "configured unit costs"),
        "",
        _table(["S1SP", "planned", "held", "apply time", "fixed", "cost"], rows),
        "",
    ]
    if costs["not_costed"]:
        out += [f"Not costed (no fixed figure): {md(', '.join(costs['not_costed']))}.", ""]
    out += [f"- {md(line)}" for line in automation_lines(costs)] + [""]
    out += [
        "By S1SP and registered NO:",
        "",
        _table(
            ["S1SP", "registered NO", "planned", "held", "apply time", "cost"],
            [
                [
                    r["s1sp"],
                    r["registered_no"],
                    r["planned_devices"],
                    r["held_devices"],
                    format_hours(r["apply_hours"]),
                    money(r["cost"], cur),
                ]
                for r in costs["by_s1sp_and_no"]
            ],
        ),
        "",
    ]
    return out


def _change_requests(report: dict) -> list[str]:
    cr = report.get("change_requests")
    if not cr:
        return []
    per = ", ".join(f"{md(k)} {v}" for k, v in cr["by_s1sp"].items())
    return [
        "## Manual S1SPs: change requests",
        "",
        f"{cr['devices']} devices ({per}) are in the plan's change-request export (change\\_requests/), "
        "for the S1SP to apply under its own four-eyes control; apply makes no API call for them.",
        "",
    ]


def _links(report: dict) -> list[str]:
    links = report.get("links") or {}
    if not links:
        return []
    return [
        "## Notification packs and worklist",
        "",
        *(
            f"- {md(kind)}: `{v['path'].replace('`', '')}` (written {md(v.get('written_at'))})"
            for kind, v in sorted(links.items())
        ),
        "",
    ]


def render_markdown(report: dict) -> str:
    s1sps = list(report["devices_by_s1sp"])
    out = [
        f"# MP107 R2 remediation — {md(report['kind'])} report — case {md(report['case'])}",
        "",
        *_status(report),
        f"As of {md(report['as_of'])}; {report['devices']} devices from {report['rows_read']['extracts']} extract rows.",
    ]
    if report["plan_hash"]:
        out.append(f"Plan hash `{md(report['plan_hash'])}`: {report['planned_devices']} devices planned.")
    if report.get("mpxn_redacted"):
        out.append("MPxNs are redacted (keyed hash).")
    out += ["", *_ticket(report)]
    # What a change ticket needs first: outcome, problems, alert routing, cost; then the detail behind them.
    out += (
        _run(report) + _dry_run(report) + _links(report) + _change_requests(report) + _costs(report) + _impact(report)
    )
    locked = report.get("no_locked_out")
    if locked:
        out += [f"## Devices no NO can manage: {locked['devices']}", ""]
        out.append(_table(["S1SP", "devices"], [[k, v] for k, v in locked["by_s1sp"].items()]))
        out += [""]
        out.append(_table(["registered NO", "devices"], [[k, v] for k, v in locked["by_registered_no"].items()]))
        out += [""]
    if report.get("registry_gaps"):
        out += ["## Registry coverage gaps (RDP NO ids missing from the registry)", ""]
        out.append(
            _table(
                ["RDP network operator id", "in-scope devices"],
                [[g["network_operator_id"], g["devices"]] for g in report["registry_gaps"]],
            )
        )
        out += [""]
    out += ["## Devices by category per S1SP", ""]
    out.append(
        _table(
            ["category", *s1sps, "all"],
            [
                [c, *(report["devices_by_s1sp"][s][c] for s in s1sps), report["devices_by_category"][c]]
                for c in CATEGORIES
            ],
        )
    )
    if report.get("devices_by_cause"):
        out += ["", "## Causes per category", ""]
        out.append(
            _table(
                ["category", "cause", "devices"],
                [[c, k, n] for c, by in report["devices_by_cause"].items() for k, n in by.items()],
            )
        )
    if report.get("security_hold"):
        out += ["", "## SECURITY_HOLD certificates (investigate; never overwritten)", ""]
        out.append(
            _table(
                ["issuer", "serial", "subject", "fingerprint", "why", "devices"],
                [
                    [h["issuer"], h["serial"], h["subject"], h["fingerprint"], h["cause"], h["devices"]]
                    for h in report["security_hold"]
                ],
            )
        )
    out += ["", "## Wrong owner → expected owner", ""]
    out.append(
        _table(
            ["slot holds", "registered NO", "devices"],
            [[r["wrong_owner"], r["expected_owner"], r["devices"]] for r in report["wrong_owner_matrix"]],
        )
    )
    if report["estimated_apply"]:
        out += ["", "## Estimated apply duration", ""]
        out.append(
            _table(
                ["S1SP", "devices", "requests/s", "duration"],
                [
                    [r["s1sp"], r["devices"], r["rate_per_second"], format_duration(r["seconds"])]
                    for r in report["estimated_apply"]
                ],
            )
        )
    out.append("")
    ex = report["excluded"]
    out += [f"## Excluded devices ({ex['devices']})", ""]
    if len(ex["shown"]) < ex["devices"]:
        out += [f"Showing {len(ex['shown'])} of {ex['devices']}; findings.parquet has them all.", ""]
    out.append(
        _table(
            ["device", "S1SP", "MPxN", "category", "cause", "why"],
            [
                [r["device_id"], r["s1sp"], r["mpxn"], r["category"], r.get("cause", ""), r["detail"]]
                for r in ex["shown"]
            ],
        )
    )
    q = report["quarantine"]
    out += [
        "",
        f"Quarantine: {q['issues']} issue(s) on {q['extract_rows']} extract row(s) and {q['rdp_rows']} RDP row(s); see quarantine.csv.",
    ]
    return "\n".join(out) + "\n"
