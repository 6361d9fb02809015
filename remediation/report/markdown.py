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
    out += ["", "## Devices by category per S1SP", ""]
    out.append(_table(["category", *s1sps, "all"], [[c, *(report["devices_by_s1sp"][s][c] for s in s1sps), report["devices_by_category"][c]] for c in CATEGORIES]))
    out += ["", "## Wrong owner → expected owner", ""]
    out.append(_table(["slot holds", "registered NO", "devices"], [[r["wrong_owner"], r["expected_owner"], r["devices"]] for r in report["wrong_owner_matrix"]]))
    if report["estimated_apply"]:
        out += ["", "## Estimated apply duration", ""]
        out.append(_table(["S1SP", "devices", "requests/s", "duration"],
                          [[r["s1sp"], r["devices"], r["rate_per_second"], format_duration(r["seconds"])] for r in report["estimated_apply"]]))  # fmt: skip
    ex = report["excluded"]
    out += ["", f"## Excluded devices ({ex['devices']})", ""]
    out.append(_table(["device", "S1SP", "MPxN", "category", "why"], [[r["device_id"], r["s1sp"], r["mpxn"], r["category"], r["detail"]] for r in ex["shown"]]))
    return "\n".join(out) + "\n"
