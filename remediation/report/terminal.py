"""Terminal summaries with rich: what an operator reads first after each command."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from remediation.artefacts.detect_result import DetectSummary
from remediation.artefacts.plan_dir import apply_estimates
from remediation.model import CATEGORIES, STATES, Category
from remediation.report.text import automation_lines, format_duration, format_hours, money  # noqa: F401 - re-exported for callers

_STYLE = {
    Category.INVALID_INPUT.value: "red",
    Category.DUPLICATE_CONFLICT.value: "red",
    Category.WRONG_NO.value: "bold yellow",
    Category.SECURITY_HOLD.value: "bold red",
    Category.OK.value: "green",
}


def detect_table(summary: dict) -> Table:
    """The category x S1SP table, from a summary's (or a report's) counts: case, as_of, devices_by_s1sp,
    devices_by_category, rows_by_category, devices and rows_read."""
    s1sps = list(summary["devices_by_s1sp"])
    table = Table(
        title=f"Devices by category and S1SP — case {summary['case']}, as of {summary['as_of']}", title_justify="left"
    )
    table.add_column("category")
    for s in s1sps:
        table.add_column(s, justify="right")
    table.add_column("devices", justify="right", style="bold")
    table.add_column("rows", justify="right")
    for category in CATEGORIES:
        cells = [str(summary["devices_by_s1sp"][s][category]) for s in s1sps]
        style = _STYLE.get(category, "")
        table.add_row(
            category,
            *cells,
            str(summary["devices_by_category"][category]),
            str(summary["rows_by_category"][category]),
            style=style,
        )
    table.add_section()
    totals = [str(sum(summary["devices_by_s1sp"][s].values())) for s in s1sps]
    table.add_row("total", *totals, str(summary["devices"]), str(summary["rows_read"]["extracts"]), style="bold")
    return table


def matrix_table(summary: DetectSummary, limit: int = 12) -> Table | None:
    rows = summary.wrong_owner_matrix
    if not rows:
        return None
    table = Table(title="WRONG_NO: slot owner → registered owner (first wrong slot)", title_justify="left")
    table.add_column("slot holds")
    table.add_column("registered NO")
    table.add_column("devices", justify="right")
    for row in rows[:limit]:
        table.add_row(row["wrong_owner"], row["expected_owner"], str(row["devices"]))
    if len(rows) > limit:
        table.add_row(
            f"… {len(rows) - limit} more pairs in summary.json", "", str(sum(r["devices"] for r in rows[limit:]))
        )
    return table


def locked_out_lines(summary: DetectSummary) -> list[str]:
    """The headline (devices no NO can manage), the registry coverage gaps and the held certificates, as lines."""
    lines = []
    locked = summary.no_locked_out
    if locked is not None:
        by_s1sp = ", ".join(f"{k} {v}" for k, v in locked["by_s1sp"].items()) or "none"
        by_no = ", ".join(f"{k} {v}" for k, v in list(locked["by_registered_no"].items())[:8])
        more = " …" if len(locked["by_registered_no"]) > 8 else ""
        lines.append(
            f"[bold]devices no NO can manage: {locked['devices']}[/] (by S1SP: {by_s1sp}; by registered NO: {by_no or 'none'}{more})"
        )
    for gap in summary.registry_gaps or []:
        lines.append(
            f"[bold red]registry gap[/]: RDP network operator {gap['network_operator_id']} has {gap['devices']} in-scope device(s) "
            f"but no registry entry (UNKNOWN_NO; plan refuses without --allow-unknown-no)"
        )
    holds = summary.security_hold or []
    if holds:
        lines.append(f"[bold red]SECURITY_HOLD[/]: {len(holds)} certificate(s) to investigate (never overwritten):")
        for h in holds[:10]:
            lines.append(
                f"  issuer {h['issuer']} serial {h['serial']} subject {h['subject']} sha256 {h['fingerprint'][:16]}… "
                f"({h['cause']}, {h['devices']} device(s))"
            )
        if len(holds) > 10:
            lines.append(f"  … {len(holds) - 10} more in summary.json")
    return lines


def cause_table(summary: DetectSummary) -> Table | None:
    causes = summary.devices_by_cause or {}
    if not causes:
        return None
    table = Table(title="Causes per category", title_justify="left")
    table.add_column("category")
    table.add_column("cause")
    table.add_column("devices", justify="right")
    for category, by in causes.items():
        for cause, n in by.items():
            table.add_row(category, cause, str(n), style=_STYLE.get(category, ""))
    return table


def print_detect(summary: DetectSummary, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    console.print(detect_table(summary.to_json()))
    causes = cause_table(summary)
    if causes is not None:
        console.print(causes)
    matrix = matrix_table(summary)
    if matrix is not None:
        console.print(matrix)
    for line in locked_out_lines(summary):
        console.print(line)
    files = ", ".join(f"{Path(f['path']).name} {f['rows_read']}" for f in summary.files)
    q = summary.quarantine
    console.print(f"rows read: {files}")
    console.print(
        f"quarantine: {q['issues']} issue(s) on {q['extract_rows']} extract row(s) and {q['rdp_rows']} RDP row(s); "
        f"every extract row is in exactly one category (reconciled)"
    )
    console.print(f"wrote findings.parquet, findings.csv, quarantine.csv, summary.json, detect.json to {out_dir}")


def print_plan(document: dict, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    counts = document["counts"]
    table = Table(
        title=f"Correction plan — {counts['devices']} devices, as of {document['as_of']}", title_justify="left"
    )
    table.add_column("S1SP")
    table.add_column("devices", justify="right")
    table.add_column("rate /s", justify="right")
    table.add_column("est. apply time", justify="right")
    for row in apply_estimates(document):
        rate = row["rate_per_second"]
        table.add_row(row["s1sp"], str(row["devices"]), f"{rate:g}" if rate else "-", format_duration(row["seconds"]))
    console.print(table)
    if document.get("costs"):
        console.print(cost_table(document["costs"]))
        for line in automation_lines(document["costs"]):
            console.print(line)
    if document.get("change_requests"):
        console.print(
            f"manual S1SPs ({', '.join(document['manual_s1sps'])}): {document['change_requests']['devices']} devices in the change-request export "
            f"(change_requests/), not written through any API"
        )
    gov = document.get("governance") or {}
    if gov.get("change_record") or gov.get("decision"):
        console.print(f"change record {gov.get('change_record') or '-'}; decision {gov.get('decision') or '-'}")
    manual = document.get("manual") or {}
    if manual.get("devices") and not document.get("change_requests"):  # the export line above says it
        by = ", ".join(f"{k} {v}" for k, v in manual["by_s1sp"].items())
        console.print(
            f"manual S1SP(s): {manual['devices']} device(s) listed in manual_change_requests.csv for a scope decision ({by}); never written"
        )
    if document.get("allow_unknown_no") and document.get("registry_gaps"):
        gaps = ", ".join(f"{g['network_operator_id']} {g['devices']}" for g in document["registry_gaps"])
        console.print(
            f"[yellow]--allow-unknown-no: planned despite registry gaps ({gaps}); their devices stay UNKNOWN_NO[/]"
        )
    console.print(f"plan hash {document['plan_hash']}  planned by {document['planned_by'] or '(unknown)'}")
    signature = document.get("signature")
    if signature:
        console.print(
            f"signed with key {signature['key_id']} under trust policy {document['trust_policy']['path']} (sha256 {document['trust_policy']['sha256']})"
        )
    else:
        console.print(
            "[yellow]unsigned[/]: the case names no trust policy, so this plan can be read and dry-run but not approved or applied"
        )
    console.print(
        f"wrote plan.parquet, plan.csv, plan.json, findings.parquet, summary.json to {out_dir}; next: remediation approve {out_dir} --key YOUR_KEY"
    )


def print_detect_brief(report: dict, console: Console | None = None) -> None:
    """A one-table terminal summary of a report's content (same numbers as the file)."""
    console = console or Console()
    console.print(detect_table({**report, "rows_by_category": {c: "" for c in CATEGORIES}}))


def print_run(
    counts: dict, status: str, paused: dict, run_dir: Path, lock: dict | None = None, console: Console | None = None
) -> None:
    console = console or Console()
    table = Table(title=f"Run {run_dir} — {status}", title_justify="left")
    table.add_column("S1SP")
    for s in STATES:
        table.add_column(s, justify="right")
    for s1sp, c in sorted(counts.items()):
        table.add_row(s1sp, *(str(c.get(s, 0)) for s in STATES))
    console.print(table)
    retry = (
        " --retry-failed" if any(c.get("failed", 0) for c in counts.values()) else ""
    )  # the same rule as status's `next:`
    for s1sp, reason in sorted(paused.items()):
        console.print(
            f"[yellow]paused {s1sp}: {reason}[/]; resume with: remediation resume {run_dir}{retry}", soft_wrap=True
        )
    if lock:
        console.print(
            f"lock held by pid {lock.get('pid')} on {lock.get('host')} ({lock.get('who')}) since {lock.get('since')}"
        )


def print_dry_run(frame, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Dry run: what apply would do (nothing was written)", title_justify="left")
    table.add_column("S1SP")
    table.add_column("state")
    table.add_column("devices", justify="right")
    for (s1sp, state), n in frame.groupby(["s1sp", "state"]).size().items():
        table.add_row(s1sp, state, str(n))
    console.print(table)
    console.print(f"wrote dry_run.csv and dry_run.json to {out_dir}")


def print_verify(verdict: dict, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    style = "green" if not verdict["residual_wrong"] else "bold red"
    console.print(f"[{style}]residual WRONG_NO devices: {verdict['residual_wrong']}[/] of {verdict['devices']}")
    if "planned" in verdict:
        console.print(f"planned devices at target: {verdict['planned_at_target']} of {verdict['planned']}")
        if "manual_change_requests" in verdict:
            console.print(
                f"manual S1SP change-request devices at target: {verdict['manual_at_target']} of {verdict['manual_change_requests']}"
            )
        if verdict["residual_wrong"]:
            why = ", ".join(f"{k} {v}" for k, v in verdict["residual_by_category_at_plan"].items())
            console.print(
                f"residual devices by their category when planned: {why} ({verdict['residual_planned']} were planned)"
            )
    console.print(f"wrote residual_wrong.csv, verify.json to {out_dir}")


def print_interrupted(run_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"[yellow]interrupted[/]: devices in flight were left checkpointed and are re-read on resume; continue with: remediation resume {run_dir}",
        soft_wrap=True,
    )


def print_failures(failures: dict, console: Console | None = None) -> None:
    """Why devices failed, grouped by S1SP and reason (outcomes.csv has them per device)."""
    if not failures:
        return
    console = console or Console()
    console.print(f"[red]failed devices by reason[/] ({sum(failures.values())}; per device in outcomes.csv):")
    for (s1sp, reason), n in failures.items():
        console.print(f"  {s1sp}: {n} × {reason}", soft_wrap=True)


def print_unread(frame, console: Console | None = None) -> int:
    """A dry run's devices that could not be read, grouped by S1SP and cause; returns how many there were."""
    failed = frame[frame["state"] == "failed"]
    if failed.empty:
        return 0
    console = console or Console()
    # A cause names its device ("GET 00-1D-…: ConnectError"): read past the id, so like causes group together.
    causes = [
        str(e or "?").removeprefix(f"{d}: ").replace(str(d), "<device>")
        for d, e in zip(failed["device_id"], failed["last_error"])
    ]
    groups = failed.assign(cause=causes).groupby(["s1sp", "cause"]).size().sort_values(ascending=False)
    console.print(
        f"[bold red]{len(failed)} device(s) could not be read[/] — the dry run cannot say what apply would do for them:"
    )
    for (s1sp, cause), n in groups.items():
        console.print(f"  {s1sp}: {n} × {cause}")
    return len(failed)


def print_run_state(state, console: Console | None = None) -> None:
    """`status`: the run's state, why, what to run next, the lock and the index (apply/state.py RunState)."""
    console = console or Console()
    print_run(state.counts, state.state, {}, state.run_dir, console=console)
    style = "green" if state.exit_code == 0 else "yellow"
    cause = (
        state.cause if state.cause and not (state.state == "paused" and state.paused) else None
    )  # the lines below say it
    console.print(f"[{style}]state: {state.state}[/]" + (f" — {cause}" if cause else ""), soft_wrap=True)
    for s1sp, reason in sorted(state.paused.items()):
        console.print(f"[yellow]paused {s1sp}: {reason}[/]", soft_wrap=True)
    if getattr(state, "at_target_on_resume", 0):
        console.print(
            f"[yellow]{state.at_target_on_resume} device(s) at_target_on_resume[/]: found at target when the run was "
            "resumed, with no write of this run on record — possibly written by an earlier process of it (not noop); "
            "rollback offers them as possibly written (runbook 5)",
            soft_wrap=True,
        )
    if state.next_command:
        console.print(f"next: {state.next_command}", soft_wrap=True)  # a command to copy: never wrapped
    if state.lock and state.lock_live:
        console.print(
            f"lock held by pid {state.lock.get('pid')} on {state.lock.get('host')} ({state.lock.get('who')}) since {state.lock.get('since')}"
        )
    elif state.lock and state.lock_live is None:
        console.print(
            f"lock record names pid {state.lock.get('pid')} on {state.lock.get('host')} (another host: cannot check it from here)"
        )
    elif state.lock:
        console.print(
            f"stale lock record: pid {state.lock.get('pid')} on {state.lock.get('host')} is not running; the next resume takes over"
        )
    if state.index is not None and state.index.verdict != "ok":
        console.print(
            f"checkpoint index {state.index.verdict}: {state.index.reason}; the counts above are the journal's; resume rebuilds the index from it"
        )
    if state.journal_head:
        console.print(f"journal verified: {state.journal_head['seq']} entries, head {state.journal_head['hash'][:16]}…")


def print_notify(summary: dict, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"Notification packs — run {summary['run_status']}, {summary['devices_written']} devices written",
        title_justify="left",
    )
    table.add_column(
        "organisation", no_wrap=True, min_width=23
    )  # an SMKI entity id must never be cut: three suppliers differ only at the end
    table.add_column("name", ratio=1)
    table.add_column("now at its certs", justify="right")
    table.add_column("released", justify="right")
    for p in summary["packs"]:
        table.add_row(
            p["organisation"], p["name"] or "", str(p["devices_now_registered"]), str(p["devices_no_longer_controlled"])
        )
    console.print(table)
    totals = summary["alert_routing_totals"]
    after = totals["after"] or {}
    console.print(
        f"alert routing: {totals['before']['devices']} devices in {totals['pairs']} holder → registered NO pairs sent alerts to the wrong NO "
        f"before the run (NO_DS {totals['before']['NO_DS']}, NO_KA {totals['before']['NO_KA']}); after: {after.get('devices', '-')} "
        f"(NO_DS {after.get('NO_DS', '-')}, NO_KA {after.get('NO_KA', '-')})"
    )
    console.print(
        f"wrote {len(summary['packs'])} pack folders (CSV + letter.md + letter.html), summary.json and manifest.json (SHA-256 of every file) to {out_dir}"
    )


def print_worklist(index: dict, out_dir: Path, console: Console | None = None, limit: int = 15) -> None:
    console = console or Console()
    table = Table(
        title=f"SRV 6.15.1 worklist — {index['devices']} locked-out devices the fix leaves ({index['source_kind']} directory)",
        title_justify="left",
    )
    table.add_column("to (current slot holder)", no_wrap=True, min_width=23)
    table.add_column("cc (registered NO)")
    table.add_column("devices", justify="right")
    csvs = [f for f in index["files"] if f["name"].endswith(".csv")]
    for f in csvs[:limit]:
        cc = ", ".join(f["cc"])
        table.add_row(f["to"], cc if len(cc) < 40 else cc[:37] + "…", str(f["devices"]))
    if len(csvs) > limit:
        table.add_row(
            f"… {len(csvs) - limit} more holders in index.json", "", str(sum(f["devices"] for f in csvs[limit:]))
        )
    console.print(table)
    if index.get("run_status") not in (None, "completed", "needs_attention"):
        console.print(
            f"[yellow]run {index['run_status']}: {index['open_devices']} listed devices are still open and a resume would write them; "
            f"make the worklist again once the run has finished[/]"
        )
    console.print("by route: " + ", ".join(f"{k} {v}" for k, v in index["by_route"].items()))
    console.print("by category: " + ", ".join(f"{k} {v}" for k, v in index["by_category"].items()))
    console.print(
        f"wrote {len(index['files'])} files (CSV + JSON per holder) and index.json (columns documented) to {out_dir}"
    )


def cost_table(costs: dict, per_s1sp_nos: int = 4) -> Table:
    """Cost and effort by S1SP and registered NO (the largest NOs per S1SP, the rest summed), S1SP subtotals with
    their fixed component, and the total."""
    cur = costs["currency"]
    table = Table(
        title=f"Cost and effort estimate ({cur}; {costs.get('unit_costs_label') or 'configured unit costs'})",
        title_justify="left",
    )
    for name in ("S1SP", "registered NO", "planned", "held", "apply", "fixed", "cost"):
        table.add_column(name, justify="left" if name in ("S1SP", "registered NO") else "right")
    for s in costs["by_s1sp"]:
        rows = sorted((r for r in costs["by_s1sp_and_no"] if r["s1sp"] == s["s1sp"]), key=lambda r: -(r["cost"] or 0))
        for r in rows[:per_s1sp_nos]:
            table.add_row(
                s["s1sp"],
                r["registered_no"],
                str(r["planned_devices"]),
                str(r["held_devices"]),
                format_hours(r["apply_hours"]),
                "",
                money(r["cost"], cur),
            )
        if len(rows) > per_s1sp_nos:
            rest = rows[per_s1sp_nos:]
            table.add_row(
                s["s1sp"],
                f"+{len(rest)} NOs",
                str(sum(r["planned_devices"] for r in rest)),
                str(sum(r["held_devices"] for r in rest)),
                "",
                "",
                money(round(sum(r["cost"] or 0 for r in rest), 2), cur),
            )
        fixed = (
            money(s["fixed_cost"], cur)
            if s["fixed_cost"] is not None
            else "shared"
            if s["fixed_in_shared_figure"]
            else "not costed"
        )
        table.add_row(
            s["s1sp"],
            f"all ({s['mode']})",
            str(s["planned_devices"]),
            str(s["held_devices"]),
            format_hours(s["apply_hours"]),
            fixed,
            money(s["cost"], cur),
            style="bold",
        )
        table.add_section()
    shared = costs.get("fixed_shared")
    if shared:
        table.add_row(
            "+".join(shared["s1sps"]),
            "shared fixed (1)",
            "",
            "",
            "",
            money(shared["amount"], cur),
            money(shared["amount"], cur),
        )
    t = costs["totals"]
    table.add_row(
        "total",
        "",
        str(t["planned_devices"]),
        str(t["held_devices"]),
        format_hours(t["apply_hours"]),
        money(t["fixed_cost"], cur),
        money(t["cost"], cur),
        style="bold",
    )
    notes = [f"(1) {shared['label']}"] if shared else []
    if costs["not_costed"]:
        notes.append(f"no fixed figure (not costed): {', '.join(costs['not_costed'])}")
    table.caption = "; ".join(notes)
    table.caption_justify = "left"
    return table


def print_report_brief(report: dict, console: Console | None = None) -> None:
    """After `report`: a run's or dry run's status and outcome per S1SP (the same numbers as the file); for a
    detect or plan directory, the category table."""
    console = console or Console()
    state, outcome = report.get("run_state"), report.get("apply_outcome")
    if state is None and report.get("dry_run") is None:
        print_detect_brief(report, console)
        return
    if state is not None:
        console.print(
            f"run status: {state['status']}" + "".join(f"; {s} paused: {r}" for s, r in sorted(state["paused"].items()))
        )
    if outcome:
        table = Table(title="Apply outcome per S1SP", title_justify="left")
        head = list(next(iter(outcome.values())))
        for name in ("S1SP", *head):
            table.add_column(name, justify="left" if name == "S1SP" else "right")
        for s1sp, counts in outcome.items():
            table.add_row(s1sp, *(str(counts[k]) for k in head))
        console.print(table)
    problems = report.get("problem_devices")
    if problems and problems["devices"]:
        console.print(
            f"devices not at target: {problems['devices']} ("
            + ", ".join(f"{k} {v}" for k, v in problems["by_state"].items())
            + ")"
        )


# ------------------------------------------------------------------------------------------------ --quiet
# One line per command: the result an operator or a script needs when the tables are not wanted.


def detect_line(summary: DetectSummary, out_dir: Path) -> str:
    by = summary.devices_by_category
    locked = "-" if summary.locked_out_devices is None else summary.locked_out_devices
    return (
        f"detect: {summary.devices} devices, {by.get(Category.WRONG_NO.value, 0)} WRONG_NO, "
        f"{by.get(Category.SECURITY_HOLD.value, 0)} SECURITY_HOLD, {locked} no NO can manage; wrote {out_dir}"
    )


def plan_line(document: dict, out_dir: Path) -> str:
    signature = document.get("signature")
    signed = f"signed with key {signature['key_id']}" if signature else "unsigned"
    return f"plan {document['plan_hash'][:16]}…: {document['counts']['devices']} devices, {signed}; wrote {out_dir}"


def _state_counts(counts: dict) -> str:
    totals: dict[str, int] = {}
    for by_state in counts.values():
        for name, n in by_state.items():
            totals[name] = totals.get(name, 0) + n
    return ", ".join(f"{name} {n}" for name, n in totals.items() if n) or "no devices"


def run_line(counts: dict, status: str, run_dir: Path) -> str:
    return f"run {run_dir}: {status}; {_state_counts(counts)}"


def dry_run_line(frame, out_dir: Path) -> str:
    states = ", ".join(f"{state} {n}" for state, n in frame["state"].value_counts().sort_index().items())
    return f"dry run: {states or 'no devices'}; wrote {out_dir}"


def status_line(state) -> str:
    cause = f" — {state.cause}" if state.cause else ""
    following = f"; next: {state.next_command}" if state.next_command else ""
    return f"run {state.run_dir}: {state.state}{cause}; {_state_counts(state.counts)}{following}"


def verify_line(verdict: dict, out_dir: Path) -> str:
    planned = (
        f"; planned devices at target {verdict['planned_at_target']} of {verdict['planned']}"
        if "planned" in verdict
        else ""
    )
    return f"verify: residual WRONG_NO {verdict['residual_wrong']} of {verdict['devices']}{planned}; wrote {out_dir}"


def notify_line(summary: dict, out_dir: Path) -> str:
    return (
        f"notify: {len(summary['packs'])} packs, run {summary['run_status']}, "
        f"{summary['devices_written']} devices written; wrote {out_dir}"
    )


def worklist_line(index: dict, out_dir: Path) -> str:
    return f"worklist: {index['devices']} locked-out devices, {len(index['files'])} files; wrote {out_dir}"
