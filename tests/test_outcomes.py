"""Outcomes people act on, on a real small run: packs reconcile with the journal, the worklist is exactly the
locked-out devices the run did not correct, the cost table sums, a manual S1SP gets a change-request export and no
API call, a paused run's report says paused and why, and input text cannot inject Markdown."""

from __future__ import annotations

import csv
import hashlib
import json
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.apply.runner import ApplyOptions
from remediation.cli import main
from remediation.errors import ConfigError
from remediation.evidence.journal import read_journal
from remediation.simulator.service import make_drift
from tests.simulation import api_writes, run_apply, start_sim
from tests.support import SUPPLIER, CaseFiles, cert, key_env, key_file, mpan, no_cert, revoked_serial, signer

GOVERNANCE = '[governance]\nchange_record = "CHG-1234"\ndecision = "MP107 R2 decision 7"\n'
COSTS = """[costs]
currency = "GBP"
fixed_shared = 30157
fixed_shared_s1sps = ["MOC"]
fixed_shared_label = "MP107 working group figure"
per_device = 2.5
per_network_operator = 100
manual_per_held_device = 20
apply_hour = 60
"""


def _dev(n: int) -> str:
    return f"00-1D-00-00-00-02-00-{n:02X}"


def build_case(root: Path, *, manual_ioc: bool = True, costs: str = COSTS) -> tuple[CaseFiles, Path, dict]:
    """MOC automated, IOC manual. Returns the case, its file and the device ids by intent."""
    case = CaseFiles(root)
    case.revoked.append(revoked_serial("AAAA", "DS"))
    kinds = (
        "wrong",
        "mixed",
        "supplier",
        "drift",
        "impostor",
        "empty",
        "swapped",
        "revoked",
        "expired",
        "ok",
        "manual",
    )
    ids: dict[str, list[str]] = {k: [] for k in kinds}
    n = 0

    def add(kind, ds, ka, s1sp="MOC"):
        nonlocal n
        n += 1
        m = mpan(14, 7000 + n)
        case.device(_dev(n), m, ds, ka, s1sp=s1sp)
        case.register(m, "AAAA")
        ids[kind].append(_dev(n))

    for _ in range(8):
        add("wrong", no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    add("mixed", no_cert("BBBB", "DS"), no_cert("GASX", "KA"))  # two previous holders, one per slot
    add("supplier", cert(SUPPLIER, "DS", role=2), no_cert("AAAA", "KA"))  # a supplier's certificate in NO_DS
    add("drift", no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    add(
        "impostor", no_cert("BBBB", "DS", untrusted=True), no_cert("BBBB", "KA", untrusted=True)
    )  # claims to be BBBB: SECURITY_HOLD
    for _ in range(2):
        add("empty", None, no_cert("AAAA", "KA"))
    add("swapped", no_cert("AAAA", "KA"), no_cert("AAAA", "DS"))
    add("revoked", no_cert("AAAA", "DS", generation="revoked"), no_cert("AAAA", "KA"))
    add("expired", no_cert("AAAA", "DS", generation="expired"), no_cert("AAAA", "KA"))
    for _ in range(2):
        add("ok", no_cert("AAAA", "DS"), no_cert("AAAA", "KA"))
    for _ in range(3):
        add("manual", no_cert("BBBB", "DS"), no_cert("BBBB", "KA"), s1sp="IOC")
    settings = {
        "MOC": {"base_url": "http://127.0.0.1:9"},
        "IOC": {"base_url": "http://127.0.0.1:9", **({"mode": "manual"} if manual_ioc else {})},
    }
    if hasattr(case, "s1sp_settings"):  # the validated config's test helper writes every [s1sp.CODE] table itself
        case.s1sp_settings = settings
        config = case.write()
        config.write_text(config.read_text() + GOVERNANCE + costs)
    else:
        config = case.write()
        tables = "".join(
            f"[s1sp.{code}]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())
            for code, values in settings.items()
        )
        config.write_text(config.read_text() + GOVERNANCE + costs + tables)
    return case, config, ids


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcomes")
    case, config, ids = build_case(root)
    plan_dir = root / "plan"
    pipeline.run_plan(config, plan_dir, key=signer("alice"))
    pipeline.run_approve(plan_dir, signer("bob"))
    moc = start_sim(root / "moc.sqlite", config, "MOC")
    ioc = start_sim(root / "ioc.sqlite", config, "IOC")
    make_drift(moc.store, ids["drift"], 0, 1)
    try:
        result = run_apply(
            plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": moc.url, "IOC": ioc.url})
        )
    finally:
        moc.stop()
        ioc.stop()
    yield {"root": root, "config": config, "ids": ids, "plan": plan_dir, "run": root / "run", "result": result}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _journal_done(run_dir: Path) -> set[str]:
    return {
        e["device_id"]
        for e in read_journal(run_dir / "journal.jsonl")
        if e["event"] == "transition" and e["to_state"] == "done"
    }


# ------------------------------------------------------------------------------------------------ packs


def test_packs_reconcile_with_the_journal(world, tmp_path):
    result = CliRunner().invoke(main, ["notify", str(world["run"]), "--out", str(tmp_path / "packs")])
    assert result.exit_code == 0, result.output + result.stderr
    packs = tmp_path / "packs"
    done = _journal_done(world["run"])
    ids = world["ids"]
    assert done == set(ids["wrong"] + ids["mixed"] + ids["supplier"])  # the drifted device was not written

    registered = {p.parent.name: _read_csv(p) for p in packs.glob("*/devices-now-registered.csv")}
    assert set(registered) == {"AAAA"}
    listed = [r["device_id"] for rows in registered.values() for r in rows]
    assert sorted(listed) == sorted(done)  # every done device in exactly one registered-NO pack, nothing else
    plan = pd.read_parquet(world["plan"] / "plan.parquet").set_index("device_id")
    for r in registered["AAAA"]:
        assert r["ds_fingerprint"] == plan.loc[r["device_id"], "target_ds_fingerprint"]
        assert r["ds_cert_id"].endswith("(Z1)") and r["written_at"].endswith("Z")

    released = {p.parent.name: _read_csv(p) for p in packs.glob("*/devices-no-longer-controlled.csv")}
    supplier_folder = SUPPLIER  # not in the registry: named by its SMKI entity id
    assert set(released) == {"BBBB", "GASX", supplier_folder}
    by_holder = {k: sorted(r["device_id"] for r in v) for k, v in released.items()}
    assert by_holder["BBBB"] == sorted(ids["wrong"] + ids["mixed"])
    assert by_holder["GASX"] == ids["mixed"] and released["GASX"][0]["slots"] == "NO_KA"
    assert by_holder[supplier_folder] == ids["supplier"] and released[supplier_folder][0]["slots"] == "NO_DS"
    for _holder, rows in by_holder.items():
        assert len(rows) == len(set(rows)) and set(rows) <= done  # once per holder pack, only written devices

    letter = (packs / "BBBB" / "letter.md").read_text()
    assert "Data protection" in letter and "purge" in letter.lower() and "CHG-1234" in letter
    assert (
        "SRV 6.24.1" in (packs / "AAAA" / "letter.md").read_text()
        and "SRV 6.24.1" in (packs / "AAAA" / "letter.html").read_text()
    )

    manifest = json.loads((packs / "manifest.json").read_text())
    files = {f["name"]: f["sha256"] for f in manifest["files"]}
    on_disk = {p.relative_to(packs).as_posix() for p in packs.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(files) == on_disk
    assert all(hashlib.sha256((packs / n).read_bytes()).hexdigest() == h for n, h in files.items())

    summary = json.loads((packs / "summary.json").read_text())
    pair = {(e["holder"], e["registered_no"]): e for e in summary["alert_routing_impact"]}
    bbbb = pair[("BBBB", "AAAA")]
    # before: the 8 wrong + mixed (DS) + drifted + 3 manual IOC; after: the drifted and the manual ones remain
    assert bbbb["before"] == {"NO_DS": 13, "NO_KA": 12, "devices": 13}
    assert bbbb["after"] == {"NO_DS": 4, "NO_KA": 4, "devices": 4}
    assert pair[("GASX", "AAAA")]["before"]["NO_KA"] == 1 and pair[("GASX", "AAAA")]["after"]["devices"] == 0
    assert pair[("BBBB (untrusted issuer)", "AAAA")]["after"]["devices"] == 1  # an impostor is not named as BBBB
    assert "Notification packs" in result.stdout


def test_notify_refuses_a_plan_directory_and_a_used_output(world, tmp_path):
    result = CliRunner().invoke(main, ["notify", str(world["plan"]), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "run directory" in result.stderr and "Traceback" not in result.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    result = CliRunner().invoke(main, ["notify", str(world["run"]), "--out", str(tmp_path / "used")])
    assert result.exit_code == 2 and "not empty" in result.stderr


# ------------------------------------------------------------------------------------------------ worklist


def test_worklist_is_exactly_the_locked_out_devices_not_corrected(world, tmp_path):
    result = CliRunner().invoke(main, ["worklist", str(world["run"]), "--out", str(tmp_path / "wl")])
    assert result.exit_code == 0, result.output + result.stderr
    ids = world["ids"]
    rows = [r for p in (tmp_path / "wl").glob("worklist-*.csv") for r in _read_csv(p)]
    expected = ids["drift"] + ids["empty"] + ids["swapped"] + ids["revoked"] + ids["manual"]
    # not the expired (the S1SP does not enforce validity), the held impostor (investigated, not handed over), ok or
    # corrected
    assert sorted(r["device_id"] for r in rows) == sorted(expected)
    assert {r["remote_party_role"] for r in rows} == {"NetworkOperator"}
    by_id = {r["device_id"]: r for r in rows}
    assert (
        by_id[ids["drift"][0]]["route"].startswith("apply drifted")
        and by_id[ids["drift"][0]]["current_holder"] == "BBBB"
    )
    assert by_id[ids["manual"][0]]["route"].startswith("manual S1SP")
    assert (
        by_id[ids["revoked"][0]]["cause"] == "revoked" and by_id[ids["swapped"][0]]["category"] == "KEY_USAGE_MISMATCH"
    )
    assert all(r["target_ds_cert_id"].endswith("(Z1)") and r["registered_no"] == "AAAA" for r in rows)
    text = (tmp_path / "wl" / "worklist-BBBB.json").read_text()
    bbbb = json.loads(text)
    assert bbbb["to"] == "BBBB" and bbbb["cc"] == ["AAAA"] and "6.15.1" in bbbb["service_request"]
    # One device a line (made by the C encoder: an indented dump of 700k devices was most of a national worklist).
    lines = [line for line in text.splitlines() if line.startswith('    {"device_id": ')]
    assert len(lines) == len(bbbb["devices"]) and all(json.loads(line.rstrip(",")) in bbbb["devices"] for line in lines)
    assert bbbb["devices"][0]["current_certificates"]["NO_DS"]["issuer"] == "Z1"
    index = json.loads((tmp_path / "wl" / "index.json").read_text())
    assert index["devices"] == len(expected) and set(index["columns"]) == set(rows[0])
    assert "SRV 6.15.1 worklist" in result.stdout


def test_worklist_of_the_plan_directory_leaves_out_only_planned_devices(world, tmp_path):
    index = pipeline.run_worklist(world["plan"], tmp_path / "wl")
    ids = world["ids"]
    assert index["devices"] == len(ids["empty"] + ids["swapped"] + ids["revoked"] + ids["manual"])


# ------------------------------------------------------------------------------------------------ manual S1SP


def test_manual_s1sp_gets_a_change_request_export_and_no_api_call(world):
    root, ids = world["root"], world["ids"]
    assert api_writes(root / "ioc.sqlite") == []  # the IOC simulator's write log is empty
    assert len(api_writes(root / "moc.sqlite")) == len(ids["wrong"] + ids["mixed"] + ids["supplier"])
    plan = pd.read_parquet(world["plan"] / "plan.parquet")
    assert "IOC" not in set(plan["s1sp"])
    rows = _read_csv(world["plan"] / "change_requests" / "ioc.csv")
    assert sorted(r["device_id"] for r in rows) == sorted(ids["manual"])
    findings = pd.read_parquet(world["plan"] / "findings.parquet").set_index("device_id")
    document = json.loads((world["plan"] / "plan.json").read_text())
    assert "change_requests/ioc.csv" in document["outputs"] and document["change_requests"]["devices"] == 3
    for r in rows:
        assert r["current_ds_fingerprint"] == findings.loc[r["device_id"], "ds_fingerprint"]
        assert r["target_ds_fingerprint"] and r["target_ka_fingerprint"] and r["target_ds_cert"]
        assert r["current_ds_cert_id"].endswith("(Z1)") and r["target_ka_cert_id"].endswith("(Z1)")
        assert r["four_eyes_checked"] == "[ ]" and r["applied_by"] == "" and r["checked_by"] == ""


def test_verify_reads_the_manual_s1sps_fresh_extract(world, tmp_path):
    """The S1SP carries out two of its three change requests by hand; verify sees exactly those two at target."""
    from remediation.simulator.service import export_extract
    from remediation.simulator.store import SlotStore

    requests = pd.read_parquet(world["plan"] / "change_requests.parquet")
    ioc = SlotStore(world["root"] / "ioc.sqlite")
    for r in requests.head(2).itertuples():
        ioc.tamper(r.device_id, r.target_ds_cert, r.target_ka_cert)
    export_extract(ioc, tmp_path / "fresh" / "ioc.csv")
    ioc.close()
    moc = SlotStore(world["root"] / "moc.sqlite")
    export_extract(moc, tmp_path / "fresh" / "moc.csv")
    moc.close()
    verdict = pipeline.run_verify(world["config"], tmp_path / "fresh", tmp_path / "verify", world["plan"])
    assert verdict["manual_change_requests"] == 3 and verdict["manual_at_target"] == 2
    left = pd.read_csv(tmp_path / "verify" / "manual_not_at_target.csv")["device_id"].tolist()
    assert left == requests["device_id"].iloc[2:].tolist()
    # written by hand, so the tamper shows up in the IOC log as the S1SP's own change, never as an API write
    assert api_writes(world["root"] / "ioc.sqlite") == []


def test_a_bad_s1sp_mode_is_a_config_error(tmp_path):
    _, config, _ = build_case(tmp_path)
    config.write_text(config.read_text().replace('mode = "manual"', 'mode = "by hand"'))
    result = CliRunner(env=key_env("alice")).invoke(
        main, ["plan", "--config", str(config), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 2 and "s1sp.IOC.mode" in result.stderr


# ------------------------------------------------------------------------------------------------ costs and governance


def test_cost_table_sums_and_governance_is_recorded(world):
    document = json.loads((world["plan"] / "plan.json").read_text())
    costs = document["costs"]
    rows = costs["by_s1sp_and_no"]
    assert (
        sum(r["planned_devices"] for r in rows) == document["counts"]["devices"] == costs["totals"]["planned_devices"]
    )
    for r in rows:
        expected = 2.5 * r["planned_devices"] + 100 + 20 * r["held_devices"] + 60 * (r["apply_hours"] or 0)
        assert r["cost"] == pytest.approx(expected, abs=0.01)
    for s in costs["by_s1sp"]:
        mine = [r for r in rows if r["s1sp"] == s["s1sp"]]
        assert s["cost"] == pytest.approx(sum(r["cost"] for r in mine) + (s["fixed_cost"] or 0), abs=0.005)
    assert costs["totals"]["cost"] == pytest.approx(sum(r["cost"] for r in rows) + 30157, abs=0.005)
    assert costs["not_costed"] == ["IOC"] and costs["fixed_shared"]["label"] == "MP107 working group figure"
    ioc = next(s for s in costs["by_s1sp"] if s["s1sp"] == "IOC")
    assert ioc["mode"] == "manual" and ioc["held_devices"] == 3 and ioc["apply_hours"] == 0
    assert document["governance"] == {"change_record": "CHG-1234", "decision": "MP107 R2 decision 7"}
    # is the manual S1SP worth automating? 3 devices, one NO: by hand 3 × 20 + 100; through the API
    # 3 × 2.5 + 100 + apply time
    choice = {a["s1sp"]: a for a in costs["automate_or_manual"]}["IOC"]
    assert choice["devices"] == 3 and choice["manual_cost"] == 160.0
    assert choice["automation_pays_below_fixed_cost"] == pytest.approx(
        choice["manual_cost"] - choice["automated_variable_cost"], abs=0.01
    )
    assert choice["automated_variable_cost"] == pytest.approx(3 * 2.5 + 100 + 60 * 3 * 3 / 20 / 3600, abs=0.01)


@pytest.mark.parametrize(
    "costs, field",
    [
        ("[costs]\nper_device = -1\n", "costs.per_device"),
        ("[costs]\nper_devise = 1\n", "costs.per_devise"),
        ('[costs]\nper_device = "1"\n', "costs.per_device"),
        ("[costs]\nfixed_per_s1sp = { XYZ = 5 }\n", "costs.fixed_per_s1sp.XYZ"),
    ],
)
def test_bad_costs_are_config_errors_naming_the_field(tmp_path, costs, field):
    _, config, _ = build_case(tmp_path, costs=costs)
    with pytest.raises(ConfigError) as err:
        pipeline.run_plan(config, tmp_path / "p", key=signer("alice"))
    assert field in str(err.value) and str(config) in str(err.value)


def test_change_ref_overrides_the_case(tmp_path):
    _, config, _ = build_case(tmp_path)
    result = CliRunner(env=key_env("alice")).invoke(
        main, ["plan", "--config", str(config), "--out", str(tmp_path / "p"), "--change-ref", "CHG-9"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["governance"]["change_record"] == "CHG-9"
    assert "Cost and effort estimate" in result.stdout and "IOC" in result.stdout


# ------------------------------------------------------------------------------------------------ reports


def _report(directory: Path, fmt: str, out: Path) -> str:
    result = CliRunner().invoke(main, ["report", str(directory), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out.read_text()


def test_run_report_says_the_same_in_every_format(world, tmp_path):
    pipeline.run_notify(world["run"], tmp_path / "packs")
    html = _report(world["run"], "html", tmp_path / "r.html")
    md = _report(world["run"], "md", tmp_path / "r.md")
    data = json.loads(_report(world["run"], "json", tmp_path / "r.json"))
    state = data["run_state"]
    assert state["status"] == "needs_attention" and state["started_at"] and state["finished_at"]
    assert state["applied_by"] == [f"carol (key {signer('carol').key_id})"]  # by name and key id
    assert data["apply_outcome"]["MOC"] == {
        "done": 10,
        "noop": 0,
        "at_target_on_resume": 0,
        "drifted": 1,
        "failed": 0,
        "open": 0,
    }
    assert [r["device_id"] for r in data["problem_devices"]["shown"]] == world["ids"]["drift"]
    assert data["authority"]["planned_by"] == {"name": "alice", "key_id": signer("alice").key_id, "at": None}
    assert [(a["name"], a["key_id"]) for a in data["authority"]["approved_by"]] == [("bob", signer("bob").key_id)]
    for text in (html, md):
        assert "needs_attention" in text and "carol" in text and "bob" in text and "CHG" in text
        assert signer("carol").key_id in text and signer("bob").key_id in text and signer("alice").key_id in text
        assert world["ids"]["drift"][0] in text and "drifted" in text
        assert str((tmp_path / "packs").resolve()) in text
        assert "30,157" in text and "3 devices (IOC 3)" in text  # the manual S1SP's change requests
    assert 'data-run-s1sp="MOC" data-state="done">10<' in html
    # the charts carry the JSON's numbers
    from html.parser import HTMLParser

    class Attrs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found = []

        def handle_starttag(self, tag, attrs):
            self.found.append(dict(attrs))

    page = Attrs()
    page.feed(html)
    impact = {
        (a["data-impact-slot"], a["data-impact-when"]): int(a["data-devices"])
        for a in page.found
        if "data-impact-slot" in a
    }
    totals = data["alert_routing_totals"]
    assert impact == {(k, w): totals[w][k] for k in ("NO_DS", "NO_KA", "devices") for w in ("before", "after")}
    variable = {a["data-cost-bar"]: float(a["data-variable"]) for a in page.found if "data-variable" in a}
    assert variable == {**{s["s1sp"]: s["variable_cost"] for s in data["costs"]["by_s1sp"]}, "MOC shared": 0.0}
    assert "| MOC | 10 | 0 | 0 | 1 | 0 | 0 |" in md
    assert "@media print" in html


def test_report_of_a_paused_run_says_paused_and_why(tmp_path):
    from remediation.apply.executor import RetryPolicy
    from tests.simulation import planned_case

    _, config, plan_dir = planned_case(tmp_path, wrong=12, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="error=1.0")
    try:
        result = run_apply(
            plan_dir,
            tmp_path / "run",
            ApplyOptions(
                who="carol", endpoints={"MOC": sim.url}, retry=RetryPolicy(attempts=1, initial=0.01, max_wait=0.01)
            ),
        )
    finally:
        sim.stop()
    assert result.status == "paused"
    reason = result.paused["MOC"]
    data = json.loads(_report(tmp_path / "run", "json", tmp_path / "r.json"))
    assert data["run_state"]["status"] == "paused" and data["run_state"]["paused"] == {"MOC": reason}
    html = _report(tmp_path / "run", "html", tmp_path / "r.html")
    # the reason quotes the S1SP's reply (escaped: markupsafe writes a quote as &#34;, html.escape as &quot;)
    assert 'data-status="paused"' in html and "<li>MOC paused: " + reason + "</li>" in unescape(html)
    md = _report(tmp_path / "run", "md", tmp_path / "r.md")
    assert "**Run status: paused**" in md and "MOC paused: canary wave had" in md
    assert data["problem_devices"]["by_state"] == {"failed": 5}
    # the worklist of a paused run lists its open devices but says a resume would still write them
    result = CliRunner().invoke(main, ["worklist", str(tmp_path / "run"), "--out", str(tmp_path / "wl")])
    assert result.exit_code == 0, result.stderr
    index = json.loads((tmp_path / "wl" / "index.json").read_text())
    assert (
        index["run_status"] == "paused"
        and index["open_devices"] == 7
        and index["by_route"] == {"apply failed": 5, "apply pending": 7}
    )
    assert "run paused: 7 listed devices are still open" in " ".join(result.stdout.split())


def test_report_accepts_a_dry_run_directory(world, tmp_path):
    sim = start_sim(tmp_path / "moc.sqlite", world["config"], "MOC")
    make_drift(sim.store, world["ids"]["drift"], 0, 1)
    try:
        pipeline.run_dry_run(world["plan"], tmp_path / "dry", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
    finally:
        sim.stop()
    data = json.loads(_report(tmp_path / "dry", "json", tmp_path / "r.json"))
    planned = len(pd.read_parquet(world["plan"] / "plan.parquet"))
    assert data["kind"] == "dry-run" and data["dry_run"]["states"]["MOC"] == {"drifted": 1, "would_write": planned - 1}
    assert [(r["device_id"], r["state"]) for r in data["problem_devices"]["shown"]] == [
        (world["ids"]["drift"][0], "drifted")
    ]
    reason = data["problem_devices"]["shown"][0]["reason"]
    plan = pd.read_parquet(world["plan"] / "plan.parquet").set_index("device_id")
    expected_ds = plan.loc[world["ids"]["drift"][0], "expected_ds_fingerprint"]
    assert reason.startswith("live slots differ from the plan") and f"expected {expected_ds[:12]}…" in reason
    md = _report(tmp_path / "dry", "md", tmp_path / "r.md")
    assert "Dry run" in md and "CHG" in md
    # dry_run.csv names the fingerprints as the plan does (issue 13: one name per concept from input to export).
    dry_csv = tmp_path / "dry" / "dry_run.csv"
    header = dry_csv.read_text().splitlines()[0].split(",")
    assert {"expected_ds_fingerprint", "expected_ka_fingerprint", "target_ds_fingerprint"} <= set(header)
    assert not {"expected_ds", "expected_ka", "target_ds_fp", "target_ka_fp"} & set(header)
    # A dry run written by an earlier version (the stored short names) still reports the same reasons.
    old = {"expected_ds_fingerprint": "expected_ds", "expected_ka_fingerprint": "expected_ka"}
    old |= {"target_ds_fingerprint": "target_ds_fp", "target_ka_fingerprint": "target_ka_fp"}
    frame = pd.read_csv(dry_csv, dtype=str, keep_default_na=False).rename(columns=old)
    frame.to_csv(dry_csv, index=False)
    again = json.loads(_report(tmp_path / "dry", "json", tmp_path / "r2.json"))
    assert again["problem_devices"] == data["problem_devices"]


def test_markdown_injection_in_inputs_is_escaped(tmp_path):
    case = CaseFiles(tmp_path)
    evil_id = "00-1D-[click](http://evil.example)"
    evil_mpxn = "12|<b>x</b>|# 3"
    case.device(evil_id, mpan(14, 9001), no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    case.device("00-1D-00-00-00-03-00-01", evil_mpxn, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    m = mpan(14, 9002)
    case.device("00-1D-00-00-00-03-00-02", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    case.register(m, "AAAA")
    case.plan()
    md = _report(tmp_path / "plan", "md", tmp_path / "r.md")
    html = _report(tmp_path / "plan", "html", tmp_path / "r.html")
    assert "[click](http" not in md and "<b>" not in md and "|<b>" not in md
    assert "\\[click\\](http:/\\/evil" in md  # escaped, still readable
    rows = [line for line in md.splitlines() if line.startswith("| 00-1D-")]
    assert rows and all(
        line.count(" | ") == 5 for line in rows
    )  # six columns (device, S1SP, MPxN, category, cause, why), no extra
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    # Rendered by a real CommonMark parser (markdown-it, which rich already brings): no link, no markup, and each
    # device's row keeps its five cells with the hostile text shown as text.
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<a " not in rendered and "<b>" not in rendered
    assert (
        "<td>00-1D-[click](http://evil.example)</td>" in rendered and "<td>12|&lt;b&gt;x&lt;/b&gt;|# 3</td>" in rendered
    )


def test_audit_export_carries_signed_packs(world, tmp_path):
    pipeline.run_audit_export(world["run"], tmp_path / "audit", key_file("erin"), "erin")  # the auditor's key
    from remediation.evidence.hashing import sha256_file

    policy = sha256_file(world["root"] / "people.toml")  # the reviewed trust policy's hash, as an auditor passes it
    manifest = pipeline.run_audit_verify(tmp_path / "audit", expect_policy_sha256=policy)
    names = {f["name"] for f in manifest["files"]}
    assert (
        "packs/AAAA/devices-now-registered.csv" in names
        and "packs/BBBB/letter.md" in names
        and "packs/manifest.json" in names
    )
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["governance"]["change_record"] == "CHG-1234"
    assert (
        summary["alert_routing_totals"]["after"]["devices"] == 5
    )  # the drifted, the impostor and the three manual devices
    letter = tmp_path / "audit" / "packs" / "BBBB" / "letter.md"
    letter.write_text(letter.read_text() + "\nedited\n")
    with pytest.raises(Exception, match="letter.md"):
        pipeline.run_audit_verify(tmp_path / "audit", expect_policy_sha256=policy)
    (tmp_path / "audit" / "packs" / "extra.csv").write_text("x")
    letter.unlink()
    with pytest.raises(Exception, match="letter.md|extra.csv"):
        pipeline.run_audit_verify(tmp_path / "audit", expect_policy_sha256=policy)


def test_report_of_an_interrupted_run_says_so(world, tmp_path):
    """A resume that was killed leaves a run_resumed entry with no run_finished after it and no live lock holder."""
    import shutil

    from remediation.evidence.journal import Journal

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    journal = Journal(run / "journal.jsonl")
    journal.append(  # signed by an operator's key, as apply signs it (an unsigned one is refused as inserted)
        "run_resumed",
        plan_hash=json.loads((run / "run.json").read_text())["plan_hash"],
        run_by="dave",
        signer=signer("carol").sign,
    )
    journal.close()
    data = json.loads(_report(run, "json", tmp_path / "r.json"))
    assert data["run_state"]["status"] == "interrupted" and data["run_state"]["finished_at"] is None
    assert (
        data["run_state"]["applied_by"] == [f"carol (key {signer('carol').key_id})", "dave"]
        and data["run_state"]["invocations"] == 2
    )
    assert "**Run status: interrupted**" in _report(run, "md", tmp_path / "r.md")


def test_plan_from_a_detect_result_names_slot_certificates_too(tmp_path):
    """plan --from reads no extract: the certificates detect saved are parsed again so ids are serial + issuer."""
    _, config, ids = build_case(tmp_path)
    pipeline.run_detect(config, tmp_path / "detect")
    pipeline.run_plan(config, tmp_path / "plan", key=signer("alice"), from_detect=tmp_path / "detect")
    rows = _read_csv(tmp_path / "plan" / "change_requests" / "ioc.csv")
    assert sorted(r["device_id"] for r in rows) == sorted(ids["manual"])
    assert all(r["current_ds_cert_id"].endswith("(Z1)") and r["target_ds_cert_id"].endswith("(Z1)") for r in rows)
    index = pipeline.run_worklist(tmp_path / "plan", tmp_path / "wl")
    assert index["devices"] == len(ids["empty"] + ids["swapped"] + ids["revoked"] + ids["manual"])


def test_fixed_figures_per_s1sp_and_request_rates(tmp_path):
    costs = (
        "[costs]\nfixed_per_s1sp = { MOC = 1000 }\nper_device = 1\napply_hour = 3600\n"
        "requests_per_second = { MOC = 3 }\n"
    )
    _, config, ids = build_case(tmp_path, costs=costs)
    document = pipeline.run_plan(config, tmp_path / "plan", key=signer("alice")).document
    costs = document["costs"]
    moc = next(s for s in costs["by_s1sp"] if s["s1sp"] == "MOC")
    planned = document["counts"]["by_s1sp"]["MOC"]
    # 3 requests per device at 3 requests/s: one second per device, priced at 1 per second of apply time
    assert moc["apply_hours"] == pytest.approx(planned / 3600, abs=1e-6)
    assert moc["cost"] == pytest.approx(1000 + planned * 1 + planned * 1, abs=0.01)
    assert costs["not_costed"] == ["IOC"] and costs["fixed_shared"] is None
    assert costs["totals"]["cost"] == pytest.approx(sum(s["cost"] for s in costs["by_s1sp"]), abs=0.01)


def test_previous_holders_are_not_sent_mpxns(world, tmp_path):
    """Data minimisation: a holder's pack names devices (what its alert data is keyed by), never supply points."""
    pipeline.run_notify(world["run"], tmp_path / "packs")
    plan = pd.read_parquet(world["plan"] / "plan.parquet")
    mpxns = set(plan["mpxn"])
    for folder in ("BBBB", "GASX", SUPPLIER):
        text = "".join(p.read_text() for p in (tmp_path / "packs" / folder).iterdir())
        assert not [m for m in mpxns if m in text]
    written = plan[plan["device_id"].isin(_journal_done(world["run"]))]
    registered = (tmp_path / "packs" / "AAAA" / "devices-now-registered.csv").read_text()
    assert all(m in registered for m in written["mpxn"])  # the registered NO does get its own supply points


def test_notify_waits_for_a_run_in_progress(world, tmp_path):
    import shutil

    from remediation.apply.lock import RunLock
    from remediation.evidence.journal import Journal

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    journal = Journal(run / "journal.jsonl")
    journal.append(  # signed by an operator's key, as apply signs it (an unsigned one is refused as inserted)
        "run_resumed",
        plan_hash=json.loads((run / "run.json").read_text())["plan_hash"],
        run_by="dave",
        signer=signer("carol").sign,
    )
    journal.close()
    lock = RunLock(run).acquire("dave")  # a live holder: this process
    try:
        result = CliRunner().invoke(main, ["notify", str(run), "--out", str(tmp_path / "packs")])
        assert result.exit_code == 2 and "in progress" in result.stderr
    finally:
        lock.release()
    assert pipeline.run_notify(run, tmp_path / "packs-after")["run_status"] == "interrupted"  # the holder is gone now
