"""A self-contained HTML report: inline CSS and SVG, no scripts, no network. Figures carry data-* attributes so
tests (and other tools) can read them back and check them against summary.json."""

from __future__ import annotations

from html import escape

from remediation.model import CATEGORIES
from remediation.report.text import automation_lines, format_duration

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
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px}td.n{text-align:right}
th{background:#f4f4f4}.legend span{display:inline-block;margin-right:1em}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
.meta td{border:none;padding:1px 8px 1px 0}.note{color:#666}
.status{padding:.6em 1em;border-radius:4px;margin:1em 0;font-weight:600}.status.ok{background:#e8f5e9;border:1px solid #2e7d32}
.status.attention{background:#fff8e1;border:1px solid #f9a825}.status.bad{background:#ffebee;border:1px solid #b71c1c}
@media print{
 body{margin:0;max-width:none;font-size:10pt;color:#000}
 h2{break-after:avoid;page-break-after:avoid}table,svg,.status{break-inside:avoid;page-break-inside:avoid}
 tr{break-inside:avoid}th{background:#eee!important;-webkit-print-color-adjust:exact;print-color-adjust:exact}
 .sw,rect{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 table#excluded,table#problems{font-size:8pt}a{color:#000;text-decoration:none}a[href]:after{content:" (" attr(href) ")";font-size:8pt}
 @page{margin:15mm}
}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _category_chart(by_s1sp: dict) -> str:
    s1sps = list(by_s1sp)
    width, bar_h, label_w = 900, 26, 90
    height = len(s1sps) * (bar_h + 10) + 10
    widest = max((sum(c.values()) for c in by_s1sp.values()), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="devices by category per S1SP">'
    ]
    for i, s1sp in enumerate(s1sps):
        y = 10 + i * (bar_h + 10)
        parts.append(f'<text x="0" y="{y + bar_h * 0.7}" font-size="13">{_e(s1sp)}</text>')
        x = label_w
        for category in CATEGORIES:
            n = by_s1sp[s1sp][category]
            if not n:
                continue
            w = (width - label_w - 60) * n / widest
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" fill="{COLOURS[category]}" '
                f'data-s1sp="{_e(s1sp)}" data-category="{category}" data-devices="{n}"><title>{_e(s1sp)} {category}: {n}</title></rect>'
            )
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + bar_h * 0.7}" font-size="12">{sum(by_s1sp[s1sp].values())}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span><i class="sw" style="background:{COLOURS[c]}"></i>{c}</span>' for c in CATEGORIES)
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _category_table(report: dict) -> str:
    s1sps = list(report["devices_by_s1sp"])
    head = "".join(f"<th>{_e(s)}</th>" for s in s1sps)
    rows = []
    for c in CATEGORIES:
        cells = "".join(
            f'<td class="n" data-s1sp="{_e(s)}" data-category="{c}">{report["devices_by_s1sp"][s][c]}</td>'
            for s in s1sps
        )
        rows.append(
            f'<tr><th><i class="sw" style="background:{COLOURS[c]}"></i>{c}</th>{cells}'
            f'<td class="n" data-total-category="{c}">{report["devices_by_category"][c]}</td></tr>'
        )
    return f'<table id="categories"><tr><th>category</th>{head}<th>all</th></tr>{"".join(rows)}</table>'


def _matrix(report: dict) -> str:
    rows = report["wrong_owner_matrix"]
    if not rows:
        return "<p>No WRONG_NO devices.</p>"
    owners = sorted({r["wrong_owner"] for r in rows})
    expected = sorted({r["expected_owner"] for r in rows})
    cell = {(r["wrong_owner"], r["expected_owner"]): r["devices"] for r in rows}
    top = max(cell.values())
    head = "".join(f"<th>{_e(e)}</th>" for e in expected)
    body = []
    for o in owners:
        tds = []
        for e in expected:
            n = cell.get((o, e), 0)
            shade = f"background:rgba(249,168,37,{0.15 + 0.85 * n / top:.2f})" if n else ""
            tds.append(
                f'<td class="n" style="{shade}" data-wrong="{_e(o)}" data-expected="{_e(e)}" data-devices="{n}">{n or ""}</td>'
            )
        body.append(f"<tr><th>{_e(o)}</th>{''.join(tds)}</tr>")
    return (
        f'<table id="matrix"><tr><th>slot holds ↓ / registered NO →</th>{head}</tr>{"".join(body)}</table>'
        '<p class="note">Owner of the first wrong slot (DS, else KA) against the NO the RDP registers on the as-of date.</p>'
    )


def _estimate(report: dict) -> str:
    rows = report["estimated_apply"]
    if not rows:
        return "<p>No plan in this directory: no apply estimate.</p>"
    longest = max((r["seconds"] or 0) for r in rows) or 1
    bars = []
    for i, r in enumerate(rows):
        w = 600 * (r["seconds"] or 0) / longest
        bars.append(
            f'<text x="0" y="{22 + i * 30}" font-size="13">{_e(r["s1sp"])}</text>'
            f'<rect x="60" y="{8 + i * 30}" width="{max(w, 1):.1f}" height="20" fill="#0277bd" data-s1sp="{_e(r["s1sp"])}" data-seconds="{r["seconds"]}"/>'
            f'<text x="{66 + w:.1f}" y="{22 + i * 30}" font-size="12">{format_duration(r["seconds"])}</text>'
        )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{len(rows) * 30 + 10}">{"".join(bars)}</svg>'
    table = "".join(
        f'<tr><td>{_e(r["s1sp"])}</td><td class="n" data-planned-s1sp="{_e(r["s1sp"])}">{r["devices"]}</td>'
        f'<td class="n">{_e(r["rate_per_second"])}</td><td class="n">{format_duration(r["seconds"])}</td></tr>'
        for r in rows
    )
    return (
        svg
        + f'<table id="estimate"><tr><th>S1SP</th><th>planned devices</th><th>requests/s</th><th>estimated duration</th></tr>{table}</table>'
        + '<p class="note">Three requests per device (read, conditional write, read back) at the configured rate; retries not included.</p>'
    )


def _excluded(report: dict) -> str:
    ex = report["excluded"]
    rows = "".join(
        f'<tr data-category="{_e(r["category"])}"><td>{_e(r["device_id"])}</td><td>{_e(r["s1sp"])}</td><td>{_e(r["mpxn"])}</td>'
        f"<td>{_e(r['category'])}<br><small>{_e(r.get('cause', ''))}</small></td><td>{_e(r['detail'])}</td></tr>"
        for r in ex["shown"]
    )
    more = (
        f'<p class="note">Showing {len(ex["shown"])} of {ex["devices"]}; findings.parquet has them all.</p>'
        if len(ex["shown"]) < ex["devices"]
        else ""
    )
    summary = ", ".join(f"{c} {n}" for c, n in ex["by_category"].items())
    return (
        f"<p>{ex['devices']} devices are not planned and not OK ({_e(summary)}). They are reported, never written.</p>{more}"
        f'<table id="excluded"><tr><th>device</th><th>S1SP</th><th>MPxN</th><th>category</th><th>why</th></tr>{rows}</table>'
    )


def _locked_out(report: dict) -> str:
    """The MP107 headline: devices no NO can manage, by S1SP and by registered NO."""
    locked = report.get("no_locked_out")
    if not locked:
        return ""
    by_s1sp = "".join(
        f'<tr><td>{_e(k)}</td><td class="n" data-locked-s1sp="{_e(k)}">{v}</td></tr>'
        for k, v in locked["by_s1sp"].items()
    )
    by_no = "".join(
        f'<tr><td>{_e(k)}</td><td class="n" data-locked-no="{_e(k)}">{v}</td></tr>'
        for k, v in locked["by_registered_no"].items()
    )
    cats = ", ".join(f"{k} {v}" for k, v in locked["by_category"].items())
    return (
        f'<h2>Devices no NO can manage: <span data-locked-out="{locked["devices"]}">{locked["devices"]}</span></h2>'
        f"<p>The registered NO cannot send SRV 6.15.1 to these devices ({_e(cats)}).</p>"
        f'<table id="locked-s1sp"><tr><th>S1SP</th><th>devices</th></tr>{by_s1sp}</table>'
        f'<table id="locked-no"><tr><th>registered NO</th><th>devices</th></tr>{by_no}</table>'
    )


def _gaps_and_holds(report: dict) -> str:
    out = []
    gaps = report.get("registry_gaps") or []
    if gaps:
        rows = "".join(
            f'<tr><td>{_e(g["network_operator_id"])}</td><td class="n" data-gap="{_e(g["network_operator_id"])}">{g["devices"]}</td></tr>'
            for g in gaps
        )
        out.append(
            "<h2>Registry coverage: RDP network operators missing from the NO registry</h2>"
            f'<table id="registry-gaps"><tr><th>RDP network operator id</th><th>in-scope devices</th></tr>{rows}</table>'
            '<p class="note">Their devices are UNKNOWN_NO and can never be corrected until the registry lists them; plan refuses unless --allow-unknown-no.</p>'
        )
    causes = report.get("devices_by_cause") or {}
    if causes:
        rows = "".join(
            f'<tr><td>{_e(c)}</td><td>{_e(k)}</td><td class="n" data-cause="{_e(c)}/{_e(k)}">{n}</td></tr>'
            for c, by in causes.items()
            for k, n in by.items()
        )
        out.append(
            f'<h2>Causes per category</h2><table id="causes"><tr><th>category</th><th>cause</th><th>devices</th></tr>{rows}</table>'
        )
    holds = report.get("security_hold") or []
    if holds:
        rows = "".join(
            f"<tr><td>{_e(h['issuer'])}</td><td>{_e(h['serial'])}</td><td>{_e(h['subject'])}</td><td><code>{_e(h['fingerprint'])}</code></td>"
            f'<td>{_e(h["cause"])}</td><td class="n" data-hold="{_e(h["fingerprint"])}">{h["devices"]}</td></tr>'
            for h in holds
        )
        out.append(
            "<h2>SECURITY_HOLD: certificates to investigate (never overwritten)</h2>"
            f'<table id="security-hold"><tr><th>issuer</th><th>serial</th><th>subject</th><th>SHA-256 fingerprint</th><th>why</th><th>devices</th></tr>{rows}</table>'
        )
    return "".join(out)


def _run(report: dict) -> str:
    states = report.get("apply_outcome")
    if not states:
        return ""
    rows = "".join(
        f"<tr><td>{_e(s1sp)}</td>"
        + "".join(f'<td class="n" data-run-s1sp="{_e(s1sp)}" data-state="{_e(k)}">{v}</td>' for k, v in counts.items())
        + "</tr>"
        for s1sp, counts in states.items()
    )
    head = "".join(f"<th>{_e(k)}</th>" for k in next(iter(states.values()), {}))
    return f'<h2>Apply outcome per S1SP</h2><table id="run"><tr><th>S1SP</th>{head}</tr>{rows}</table>' + _problems(
        report
    )


def _problems(report: dict) -> str:
    p = report.get("problem_devices")
    if not p:
        return ""
    if not p["devices"]:
        return '<p id="problems-none">No failed or drifted devices.</p>'
    rows = "".join(
        f'<tr data-problem-state="{_e(r["state"])}"><td>{_e(r["device_id"])}</td><td>{_e(r["s1sp"])}</td><td>{_e(r["mpxn"])}</td>'
        f"<td>{_e(r['state'])}</td><td>{_e(r['reason'])}</td></tr>"
        for r in p["shown"]
    )
    more = (
        f'<p class="note">Showing {len(p["shown"])} of {p["devices"]}; outcomes.csv has them all.</p>'
        if len(p["shown"]) < p["devices"]
        else ""
    )
    by_state = ", ".join(f"{_e(k)} {v}" for k, v in p["by_state"].items())
    return (
        f"<h3>Failed, drifted and other devices not at target ({p['devices']}: {by_state})</h3>{more}"
        f'<table id="problems"><tr><th>device</th><th>S1SP</th><th>MPxN</th><th>state</th><th>reason</th></tr>{rows}</table>'
    )


def _status(report: dict) -> str:
    state = report.get("run_state")
    if state:
        cls = "ok" if state["status"] == "completed" else "bad" if state["status"] in ("interrupted",) else "attention"
        paused = "".join(
            f"<li>{_e(s1sp)} paused: {_e(reason)}</li>" for s1sp, reason in sorted(state["paused"].items())
        )
        paused = f'<ul id="paused">{paused}</ul>' if paused else ""
        return f'<div class="status {cls}" id="status" data-status="{_e(state["status"])}">Run status: {_e(state["status"])}{paused}</div>'
    if report.get("dry_run") is not None:
        return '<div class="status attention" id="status" data-status="dry-run">Dry run: live slots were read, nothing was written.</div>'
    return ""


def _ticket(report: dict) -> str:
    """Who, when, under which change: the rows a change ticket asks for."""
    gov, auth, state = report.get("governance"), report.get("authority"), report.get("run_state")
    if gov is None and auth is None:
        return ""
    rows = [
        ("change record", (gov or {}).get("change_record") or "not recorded"),
        ("decision", (gov or {}).get("decision") or "not recorded"),
    ]
    if auth:
        p = auth["planned_by"]
        rows.append(("planned by", _who(p)))
        rows.append(("approved by", "; ".join(_who(a) for a in auth["approved_by"]) or "no approval recorded"))
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
    body = "".join(f'<tr><td>{_e(k)}</td><td data-ticket="{_e(k)}">{_e(v)}</td></tr>' for k, v in rows)
    return f'<h2>Change ticket</h2><table class="meta" id="ticket">{body}</table>'


def _who(entry: dict) -> str:
    text = entry.get("name") or "(unknown)"
    if entry.get("key_id"):
        text += f" (key {entry['key_id']})"
    if entry.get("at"):
        text += f" at {entry['at']}"
    if entry.get("change_ref"):
        text += f" under {entry['change_ref']}"
    return text


def _costs(report: dict) -> str:
    from remediation.report.text import money

    costs = report.get("costs")
    if not costs:
        return ""
    cur = costs["currency"]
    rows = "".join(
        f'<tr><td>{_e(r["s1sp"])}</td><td>{_e(r["registered_no"])}</td><td class="n">{r["planned_devices"]}</td><td class="n">{r["held_devices"]}</td>'
        f'<td class="n">{_e(_hours(r["apply_hours"]))}</td><td class="n" data-cost-row="{_e(r["s1sp"])}/{_e(r["registered_no"])}">{_e(money(r["cost"], cur))}</td></tr>'
        for r in costs["by_s1sp_and_no"]
    )
    subtotal = "".join(
        f'<tr><th>{_e(s["s1sp"])} ({_e(s["mode"])})</th><td class="n">{s["planned_devices"]}</td><td class="n">{s["held_devices"]}</td>'
        f'<td class="n">{_e(_hours(s["apply_hours"]))}</td><td class="n">{_e(money(s["fixed_cost"], cur) if s["fixed_cost"] is not None else "in shared figure" if s["fixed_in_shared_figure"] else "not costed")}</td>'
        f'<td class="n" data-cost-s1sp="{_e(s["s1sp"])}">{_e(money(s["cost"], cur))}</td></tr>'
        for s in costs["by_s1sp"]
    )
    shared = costs.get("fixed_shared")
    shared_row = (
        (
            f'<tr><th>{_e("+".join(shared["s1sps"]))}</th><td colspan="3">{_e(shared["label"])}</td><td class="n">{_e(money(shared["amount"], cur))}</td>'
            f'<td class="n" data-cost-shared="1">{_e(money(shared["amount"], cur))}</td></tr>'
        )
        if shared
        else ""
    )
    t = costs["totals"]
    total = (
        f'<tr><th>total</th><td class="n">{t["planned_devices"]}</td><td class="n">{t["held_devices"]}</td><td class="n">{_e(_hours(t["apply_hours"]))}</td>'
        f'<td class="n">{_e(money(t["fixed_cost"], cur))}</td><td class="n" data-cost-total="1">{_e(money(t["cost"], cur))}</td></tr>'
    )
    not_costed = (
        f'<p class="note">Not costed (no fixed figure): {_e(", ".join(costs["not_costed"]))}.</p>'
        if costs["not_costed"]
        else ""
    )
    not_costed += "".join(f'<p class="automation">{_e(line)}</p>' for line in automation_lines(costs))
    return (
        f'<h2>Cost and effort estimate ({_e(cur)})</h2><p class="note">{_e(costs.get("unit_costs_label") or "configured unit costs")}</p>{_cost_chart(costs)}'
        f'<table id="costs-by-s1sp"><tr><th>S1SP</th><th>planned</th><th>held</th><th>apply time</th><th>fixed</th><th>cost</th></tr>{subtotal}{shared_row}{total}</table>{not_costed}'
        f'<h3>By S1SP and registered NO</h3><table id="costs"><tr><th>S1SP</th><th>registered NO</th><th>planned</th><th>held</th>'
        f"<th>apply time</th><th>cost</th></tr>{rows}</table>"
    )


def _hours(hours) -> str:
    return "-" if hours is None else format_duration(hours * 3600)


def _impact(report: dict) -> str:
    impact = report.get("alert_routing_impact")
    if impact is None:
        return ""
    if not impact:
        return "<h2>Alert routing</h2><p>No device sent its alerts to an organisation other than its registered NO.</p>"
    after = lambda e, k: "-" if e["after"] is None else e["after"][k]  # noqa: E731
    rows = "".join(
        f'<tr><td>{_e(e["holder"])}</td><td>{_e(e["registered_no"])}</td><td class="n">{e["before"]["NO_DS"]}</td><td class="n">{e["before"]["NO_KA"]}</td>'
        f'<td class="n" data-impact-before="{_e(e["holder"])}/{_e(e["registered_no"])}">{e["before"]["devices"]}</td>'
        f'<td class="n">{after(e, "NO_DS")}</td><td class="n">{after(e, "NO_KA")}</td><td class="n">{after(e, "devices")}</td></tr>'
        for e in impact
    )
    t = report["alert_routing_totals"]
    ta = t["after"] or {}
    return (
        f"<h2>Alert routing: holder → registered NO</h2>{_impact_chart(t)}<p>Devices whose alerts went to the slot holder instead of the registered NO: "
        f"<strong>{t['before']['devices']}</strong> before the run, <strong>{ta.get('devices', '-')}</strong> after.</p>"
        f'<table id="impact"><tr><th>holder</th><th>registered NO</th><th>before NO_DS</th><th>before NO_KA</th><th>before devices</th>'
        f"<th>after NO_DS</th><th>after NO_KA</th><th>after devices</th></tr>{rows}</table>"
    )


def _change_requests(report: dict) -> str:
    cr = report.get("change_requests")
    if not cr:
        return ""
    per = ", ".join(f"{_e(k)} {v}" for k, v in cr["by_s1sp"].items())
    return (
        f'<h2>Manual S1SPs: change requests</h2><p id="change-requests" data-devices="{cr["devices"]}">{cr["devices"]} devices ({per}) are in the '
        "plan's change-request export (change_requests/), for the S1SP to apply under its own four-eyes control; apply makes no API call for them.</p>"
    )


def _impact_chart(totals: dict) -> str:
    """Before and after bars per slot: devices whose alerts reached an organisation other than the registered NO."""
    rows = [
        ("NO_DS", "before"),
        ("NO_DS", "after"),
        ("NO_KA", "before"),
        ("NO_KA", "after"),
        ("devices", "before"),
        ("devices", "after"),
    ]
    top = max([totals["before"][k] for k in ("NO_DS", "NO_KA", "devices")] + [1])
    parts = []
    for i, (slot, when) in enumerate(rows):
        source = totals.get(when)
        if source is None:
            continue
        n = source[slot]
        w = 500 * n / top
        y = 6 + i * 22
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="12">{slot} {when}</text><rect x="120" y="{y}" width="{max(w, 1):.1f}" height="16" '
            f'fill="{"#b71c1c" if when == "before" else "#2e7d32"}" data-impact-slot="{slot}" data-impact-when="{when}" data-devices="{n}"/>'
            f'<text x="{126 + w:.1f}" y="{y + 13}" font-size="12">{n}</text>'
        )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="700" height="{len(rows) * 22 + 10}" role="img" aria-label="alert routing before and after">{"".join(parts)}</svg>'


def _cost_chart(costs: dict) -> str:
    """One bar per S1SP: variable cost and its own fixed figure; the shared fixed figure as its own bar."""
    bars = [(s["s1sp"], s["variable_cost"] or 0, s["fixed_cost"] or 0) for s in costs["by_s1sp"]]
    if costs.get("fixed_shared"):
        bars.append(("+".join(costs["fixed_shared"]["s1sps"]) + " shared", 0, costs["fixed_shared"]["amount"]))
    top = max([v + f for _, v, f in bars] + [1])
    parts = []
    for i, (label, variable, fixed) in enumerate(bars):
        y = 6 + i * 24
        wv, wf = 500 * variable / top, 500 * fixed / top
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12">{_e(label)}</text>'
            f'<rect x="130" y="{y}" width="{max(wv, 0):.1f}" height="18" fill="#0277bd" data-cost-bar="{_e(label)}" data-variable="{variable}"/>'
            f'<rect x="{130 + wv:.1f}" y="{y}" width="{max(wf, 0):.1f}" height="18" fill="#90a4ae" data-cost-bar="{_e(label)}" data-fixed="{fixed}"/>'
            f'<text x="{136 + wv + wf:.1f}" y="{y + 14}" font-size="12">{_e(f"{variable + fixed:,.2f}")}</text>'
        )
    legend = '<div class="legend"><span><i class="sw" style="background:#0277bd"></i>variable</span><span><i class="sw" style="background:#90a4ae"></i>fixed</span></div>'
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{len(bars) * 24 + 10}" role="img" aria-label="cost by S1SP">{"".join(parts)}</svg>{legend}'


def _links(report: dict) -> str:
    links = report.get("links") or {}
    if not links:
        return ""
    items = "".join(
        f'<li>{_e(kind)}: <a href="file://{_e(v["path"])}">{_e(v["path"])}</a> (written {_e(v.get("written_at"))})</li>'
        for kind, v in sorted(links.items())
    )
    return f'<h2>Notification packs and worklist</h2><ul id="links">{items}</ul>'


def _dry_run(report: dict) -> str:
    dry = report.get("dry_run")
    if not dry:
        return ""
    rows = "".join(
        f'<tr><td>{_e(s1sp)}</td><td>{_e(state)}</td><td class="n">{n}</td></tr>'
        for s1sp, states in dry["states"].items()
        for state, n in states.items()
    )
    return (
        f'<h2>Dry run: what apply would do</h2><table id="dry-run"><tr><th>S1SP</th><th>state</th><th>devices</th></tr>{rows}</table>'
        + _problems(report)
    )


def render_html(report: dict) -> str:
    title = f"MP107 R2 remediation — {report['kind']} report — case {report['case']}"
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
    meta_rows = "".join(
        f'<tr><td>{_e(k)}</td><td data-meta="{_e(k)}">{_e(v)}</td></tr>' for k, v in meta if v is not None
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
{_status(report)}
<table class="meta">{meta_rows}</table>
{_ticket(report)}
{_run(report)}
{_dry_run(report)}
{_links(report)}
{_change_requests(report)}
{_costs(report)}
{_impact(report)}
{_locked_out(report)}
<h2>Devices by category per S1SP</h2>
{_category_chart(report["devices_by_s1sp"])}
{_category_table(report)}
{_gaps_and_holds(report)}
<h2>Wrong owner → expected owner</h2>
{_matrix(report)}
<h2>Estimated apply duration per S1SP</h2>
{_estimate(report)}
<h2>Excluded devices and why</h2>
{_excluded(report)}
<p class="note">Quarantine: {report["quarantine"]["issues"]} issue(s) on {report["quarantine"]["extract_rows"]} extract row(s) and {report["quarantine"]["rdp_rows"]} RDP row(s); see quarantine.csv.</p>
</body></html>
"""
