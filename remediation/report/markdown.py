"""Markdown rendering of a report, for tickets and e-mail."""

from __future__ import annotations

from remediation.model import CATEGORIES
from remediation.report.terminal import format_duration


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    s1sps = list(report["devices_by_s1sp"])
    out = [f"# MP107 R2 remediation — {report['kind']} report — case {report['case']}", "",
           f"As of {report['as_of']}; {report['devices']} devices from {report['rows_read']['extracts']} extract rows."]  # fmt: skip
    if report["plan_hash"]:
        out.append(f"Plan hash `{report['plan_hash']}`: {report['planned_devices']} devices planned.")
    locked = report.get("no_locked_out")
    if locked:
        out += ["", f"## Devices no NO can manage: {locked['devices']}", ""]
        out.append(_table(["S1SP", "devices"], [[k, v] for k, v in locked["by_s1sp"].items()]))
        out += [""]
        out.append(_table(["registered NO", "devices"], [[k, v] for k, v in locked["by_registered_no"].items()]))
    if report.get("registry_gaps"):
        out += ["", "## Registry coverage gaps (RDP NO ids missing from the registry)", ""]
        out.append(_table(["RDP network operator id", "in-scope devices"], [[g["network_operator_id"], g["devices"]] for g in report["registry_gaps"]]))
    out += ["", "## Devices by category per S1SP", ""]
    out.append(_table(["category", *s1sps, "all"], [[c, *(report["devices_by_s1sp"][s][c] for s in s1sps), report["devices_by_category"][c]] for c in CATEGORIES]))
    if report.get("devices_by_cause"):
        out += ["", "## Causes per category", ""]
        out.append(_table(["category", "cause", "devices"], [[c, k, n] for c, by in report["devices_by_cause"].items() for k, n in by.items()]))
    if report.get("security_hold"):
        out += ["", "## SECURITY_HOLD certificates (investigate; never overwritten)", ""]
        out.append(_table(["issuer", "serial", "subject", "fingerprint", "why", "devices"],
                          [[h["issuer"], h["serial"], h["subject"], h["fingerprint"], h["cause"], h["devices"]] for h in report["security_hold"]]))  # fmt: skip
    out += ["", "## Wrong owner → expected owner", ""]
    out.append(_table(["slot holds", "registered NO", "devices"], [[r["wrong_owner"], r["expected_owner"], r["devices"]] for r in report["wrong_owner_matrix"]]))
    if report["estimated_apply"]:
        out += ["", "## Estimated apply duration", ""]
        out.append(_table(["S1SP", "devices", "requests/s", "duration"],
                          [[r["s1sp"], r["devices"], r["rate_per_second"], format_duration(r["seconds"])] for r in report["estimated_apply"]]))  # fmt: skip
    ex = report["excluded"]
    out += ["", f"## Excluded devices ({ex['devices']})", ""]
    out.append(_table(["device", "S1SP", "MPxN", "category", "cause", "why"],
                      [[r["device_id"], r["s1sp"], r["mpxn"], r["category"], r.get("cause", ""), r["detail"]] for r in ex["shown"]]))  # fmt: skip
    return "\n".join(out) + "\n"
