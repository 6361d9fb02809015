"""A self-contained HTML report: inline CSS and SVG, no scripts, no network. Figures carry data-* attributes so
tests (and other tools) can read them back and check them against summary.json."""

from __future__ import annotations

from html import escape

from remediation.model import CATEGORIES
from remediation.report.terminal import format_duration

COLOURS = {
    "INVALID_INPUT": "#b71c1c", "OUT_OF_SCOPE": "#9e9e9e", "DUPLICATE_CONFLICT": "#e65100", "SECURITY_HOLD": "#d50000",
    "NO_RDP": "#6d4c41", "RDP_AMBIGUOUS": "#8d6e63", "UNKNOWN_NO": "#7b1fa2", "PENDING_NO_CHANGE": "#5c6bc0", "WRONG_NO": "#f9a825", "SLOT_EMPTY": "#0277bd", "KEY_USAGE_MISMATCH": "#00838f",
    "EXPIRED_OR_REVOKED": "#546e7a", "OK": "#2e7d32",
}  # fmt: skip
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px}td.n{text-align:right}
th{background:#f4f4f4}.legend span{display:inline-block;margin-right:1em}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
.meta td{border:none;padding:1px 8px 1px 0}.note{color:#666}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _category_chart(by_s1sp: dict) -> str:
    s1sps = list(by_s1sp)
    width, bar_h, label_w = 900, 26, 90
    height = len(s1sps) * (bar_h + 10) + 10
    widest = max((sum(c.values()) for c in by_s1sp.values()), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="devices by category per S1SP">']
    for i, s1sp in enumerate(s1sps):
        y = 10 + i * (bar_h + 10)
        parts.append(f'<text x="0" y="{y + bar_h * 0.7}" font-size="13">{_e(s1sp)}</text>')
        x = label_w
        for category in CATEGORIES:
            n = by_s1sp[s1sp][category]
            if not n:
                continue
            w = (width - label_w - 60) * n / widest
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" fill="{COLOURS[category]}" '
                         f'data-s1sp="{_e(s1sp)}" data-category="{category}" data-devices="{n}"><title>{_e(s1sp)} {category}: {n}</title></rect>')  # fmt: skip
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
        cells = "".join(f'<td class="n" data-s1sp="{_e(s)}" data-category="{c}">{report["devices_by_s1sp"][s][c]}</td>' for s in s1sps)
        rows.append(f'<tr><th><i class="sw" style="background:{COLOURS[c]}"></i>{c}</th>{cells}'
                    f'<td class="n" data-total-category="{c}">{report["devices_by_category"][c]}</td></tr>')  # fmt: skip
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
            tds.append(f'<td class="n" style="{shade}" data-wrong="{_e(o)}" data-expected="{_e(e)}" data-devices="{n}">{n or ""}</td>')
        body.append(f"<tr><th>{_e(o)}</th>{''.join(tds)}</tr>")
    return (f'<table id="matrix"><tr><th>slot holds ↓ / registered NO →</th>{head}</tr>{"".join(body)}</table>'
            '<p class="note">Owner of the first wrong slot (DS, else KA) against the NO the RDP registers on the as-of date.</p>')  # fmt: skip


def _estimate(report: dict) -> str:
    rows = report["estimated_apply"]
    if not rows:
        return "<p>No plan in this directory: no apply estimate.</p>"
    longest = max((r["seconds"] or 0) for r in rows) or 1
    bars = []
    for i, r in enumerate(rows):
        w = 600 * (r["seconds"] or 0) / longest
        bars.append(f'<text x="0" y="{22 + i * 30}" font-size="13">{_e(r["s1sp"])}</text>'
                    f'<rect x="60" y="{8 + i * 30}" width="{max(w, 1):.1f}" height="20" fill="#0277bd" data-s1sp="{_e(r["s1sp"])}" data-seconds="{r["seconds"]}"/>'
                    f'<text x="{66 + w:.1f}" y="{22 + i * 30}" font-size="12">{format_duration(r["seconds"])}</text>')  # fmt: skip
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{len(rows) * 30 + 10}">{"".join(bars)}</svg>'
    table = "".join(f'<tr><td>{_e(r["s1sp"])}</td><td class="n" data-planned-s1sp="{_e(r["s1sp"])}">{r["devices"]}</td>'
                    f'<td class="n">{_e(r["rate_per_second"])}</td><td class="n">{format_duration(r["seconds"])}</td></tr>' for r in rows)  # fmt: skip
    return svg + f'<table id="estimate"><tr><th>S1SP</th><th>planned devices</th><th>requests/s</th><th>estimated duration</th></tr>{table}</table>' + \
        '<p class="note">Three requests per device (read, conditional write, read back) at the configured rate; retries not included.</p>'


def _excluded(report: dict) -> str:
    ex = report["excluded"]
    rows = "".join(
        f'<tr data-category="{_e(r["category"])}"><td>{_e(r["device_id"])}</td><td>{_e(r["s1sp"])}</td><td>{_e(r["mpxn"])}</td>'
        f'<td>{_e(r["category"])}<br><small>{_e(r.get("cause", ""))}</small></td><td>{_e(r["detail"])}</td></tr>'
        for r in ex["shown"]
    )
    more = f'<p class="note">Showing {len(ex["shown"])} of {ex["devices"]}; findings.parquet has them all.</p>' if len(ex["shown"]) < ex["devices"] else ""
    summary = ", ".join(f"{c} {n}" for c, n in ex["by_category"].items())
    return (f'<p>{ex["devices"]} devices are not planned and not OK ({_e(summary)}). They are reported, never written.</p>{more}'
            f'<table id="excluded"><tr><th>device</th><th>S1SP</th><th>MPxN</th><th>category</th><th>why</th></tr>{rows}</table>')  # fmt: skip


def _locked_out(report: dict) -> str:
    """The MP107 headline: devices no NO can manage, by S1SP and by registered NO."""
    locked = report.get("no_locked_out")
    if not locked:
        return ""
    by_s1sp = "".join(f'<tr><td>{_e(k)}</td><td class="n" data-locked-s1sp="{_e(k)}">{v}</td></tr>' for k, v in locked["by_s1sp"].items())
    by_no = "".join(f'<tr><td>{_e(k)}</td><td class="n" data-locked-no="{_e(k)}">{v}</td></tr>' for k, v in locked["by_registered_no"].items())
    cats = ", ".join(f"{k} {v}" for k, v in locked["by_category"].items())
    return (f'<h2>Devices no NO can manage: <span data-locked-out="{locked["devices"]}">{locked["devices"]}</span></h2>'
            f'<p>The registered NO cannot send SRV 6.15.1 to these devices ({_e(cats)}).</p>'
            f'<table id="locked-s1sp"><tr><th>S1SP</th><th>devices</th></tr>{by_s1sp}</table>'
            f'<table id="locked-no"><tr><th>registered NO</th><th>devices</th></tr>{by_no}</table>')  # fmt: skip


def _gaps_and_holds(report: dict) -> str:
    out = []
    gaps = report.get("registry_gaps") or []
    if gaps:
        rows = "".join(f'<tr><td>{_e(g["network_operator_id"])}</td><td class="n" data-gap="{_e(g["network_operator_id"])}">{g["devices"]}</td></tr>' for g in gaps)
        out.append('<h2>Registry coverage: RDP network operators missing from the NO registry</h2>'
                   f'<table id="registry-gaps"><tr><th>RDP network operator id</th><th>in-scope devices</th></tr>{rows}</table>'
                   '<p class="note">Their devices are UNKNOWN_NO and can never be corrected until the registry lists them; plan refuses unless --allow-unknown-no.</p>')  # fmt: skip
    causes = report.get("devices_by_cause") or {}
    if causes:
        rows = "".join(f'<tr><td>{_e(c)}</td><td>{_e(k)}</td><td class="n" data-cause="{_e(c)}/{_e(k)}">{n}</td></tr>'
                       for c, by in causes.items() for k, n in by.items())  # fmt: skip
        out.append(f'<h2>Causes per category</h2><table id="causes"><tr><th>category</th><th>cause</th><th>devices</th></tr>{rows}</table>')
    holds = report.get("security_hold") or []
    if holds:
        rows = "".join(f'<tr><td>{_e(h["issuer"])}</td><td>{_e(h["serial"])}</td><td>{_e(h["subject"])}</td><td><code>{_e(h["fingerprint"])}</code></td>'
                       f'<td>{_e(h["cause"])}</td><td class="n" data-hold="{_e(h["fingerprint"])}">{h["devices"]}</td></tr>' for h in holds)  # fmt: skip
        out.append('<h2>SECURITY_HOLD: certificates to investigate (never overwritten)</h2>'
                   f'<table id="security-hold"><tr><th>issuer</th><th>serial</th><th>subject</th><th>SHA-256 fingerprint</th><th>why</th><th>devices</th></tr>{rows}</table>')  # fmt: skip
    return "".join(out)


def _run(report: dict) -> str:
    run = report.get("run")
    if not run:
        return ""
    states = run.get("counts", {})
    rows = "".join(f'<tr><td>{_e(s1sp)}</td>' + "".join(f'<td class="n" data-run-s1sp="{_e(s1sp)}" data-state="{_e(k)}">{v}</td>' for k, v in counts.items()) + "</tr>"
                   for s1sp, counts in states.items())  # fmt: skip
    head = "".join(f"<th>{_e(k)}</th>" for k in next(iter(states.values()), {}))
    return f'<h2>Apply outcome</h2><table id="run"><tr><th>S1SP</th>{head}</tr>{rows}</table>'


def render_html(report: dict) -> str:
    title = f"MP107 R2 remediation — {report['kind']} report — case {report['case']}"
    meta = [("case", report["case"]), ("as-of date", report["as_of"]), ("devices", report["devices"]),
            ("extract rows read", report["rows_read"]["extracts"]), ("planned devices", report["planned_devices"]),
            ("plan hash", report["plan_hash"]), ("MPxN", "redacted (keyed hash)" if report["mpxn_redacted"] else "shown"),
            ("tool version", report["tool_version"])]  # fmt: skip
    meta_rows = "".join(f'<tr><td>{_e(k)}</td><td data-meta="{_e(k)}">{_e(v)}</td></tr>' for k, v in meta if v is not None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<table class="meta">{meta_rows}</table>
{_locked_out(report)}
<h2>Devices by category per S1SP</h2>
{_category_chart(report["devices_by_s1sp"])}
{_category_table(report)}
{_gaps_and_holds(report)}
<h2>Wrong owner → expected owner</h2>
{_matrix(report)}
<h2>Estimated apply duration per S1SP</h2>
{_estimate(report)}
{_run(report)}
<h2>Excluded devices and why</h2>
{_excluded(report)}
<p class="note">Quarantine: {report["quarantine"]["issues"]} issue(s) on {report["quarantine"]["extract_rows"]} extract row(s) and {report["quarantine"]["rdp_rows"]} RDP row(s); see quarantine.csv.</p>
</body></html>
"""
