"""Plans: determinism, operation ids, refusal of unfit replacement certificates, approval and staleness."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.artefacts.plan_dir import check_fresh, load_plan, read_approvals
from remediation.authority import AuthorityRefusal, authorise_run
from remediation.cli import main
from remediation.errors import SafetyRefusal
from remediation.plan import PlanTampered, StalePlan
from tests.support import REPO, STRANGER, CaseFiles, cert, key_env, mpan, no_cert, revoked_serial, signer


def wrong_case(tmp_path, n: int = 5) -> CaseFiles:
    case = CaseFiles(tmp_path)
    for i in range(n):
        m = mpan(12, 1000 + i)
        case.device(f"00-1D-00-00-00-00-10-{i:02X}", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
        case.register(m, "AAAA")
    ok = mpan(12, 2000)
    case.device("00-1D-00-00-00-00-20-00", ok, no_cert("AAAA", "DS"), no_cert("AAAA", "KA"))
    case.register(ok, "AAAA")
    swapped = mpan(12, 2001)
    case.device("00-1D-00-00-00-00-20-01", swapped, no_cert("AAAA", "KA"), no_cert("AAAA", "DS"))
    case.register(swapped, "AAAA")
    return case


def test_plan_rows_are_the_wrong_devices_with_cas_preconditions_and_targets(tmp_path):
    case = wrong_case(tmp_path)
    result = case.plan()
    rows = result.rows
    assert len(rows) == 5 and set(rows["category"]) == {"WRONG_NO"}
    findings = result.detect.findings.set_index("device_id")
    for r in rows.itertuples():
        assert r.expected_ds_fingerprint == findings.loc[r.device_id, "ds_fingerprint"]  # what the slot holds now
        assert r.target_ds_cert and r.target_ka_cert and r.registered_no == "AAAA"
    catalog = result.detect.case.catalog
    assert rows["target_ds_fingerprint"].iloc[0] == catalog.facts[catalog.intern_der(no_cert("AAAA", "DS"))].fingerprint
    assert result.document["counts"]["devices"] == 5


def test_policy_can_include_key_usage_mismatch(tmp_path):
    case = wrong_case(tmp_path)
    case.policy["correct_key_usage_mismatch"] = True
    assert set(case.plan().rows["category"]) == {"WRONG_NO", "KEY_USAGE_MISMATCH"}


def test_plan_is_deterministic_byte_for_byte(tmp_path):
    case = wrong_case(tmp_path)
    first, second = case.plan("p1"), case.plan("p2")
    assert first.document["plan_hash"] == second.document["plan_hash"]
    for name in ("plan.json", "plan.parquet", "plan.csv", "findings.parquet", "summary.json"):
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes(), name


def test_operation_id_depends_only_on_device_and_targets(tmp_path):
    case = wrong_case(tmp_path)
    before = case.plan("p1").rows.set_index("device_id")["operation_id"]
    # Other slot content and other as-of date: same device, same targets -> same operation ids.
    for row in case.rows[:5]:
        row["no_ka_cert"] = row["no_ds_cert"]
    after = case.plan("p2").rows.set_index("device_id")["operation_id"]
    assert before.to_dict() == after.reindex(before.index).to_dict()
    assert before.is_unique
    # A new target certificate for the NO gives new ids.
    case.registry_certs[("AAAA", "DS")] = no_cert("AAAA", "DS", generation="previous")
    third = case.plan("p3").rows.set_index("device_id")["operation_id"]
    assert not set(third) & set(before)


def test_plan_refuses_to_overwrite_a_plan(tmp_path):
    case = wrong_case(tmp_path)
    case.plan("p")
    with pytest.raises(Exception, match="never overwritten"):
        case.plan("p")


@pytest.mark.parametrize(
    "usage, replacement, reason",
    [
        ("DS", lambda: no_cert("AAAA", "DS", generation="expired"), "not valid on"),
        ("DS", lambda: no_cert("AAAA", "DS", generation="revoked"), "revoked"),
        ("KA", lambda: cert("90-B3-D5-1F-30-00-00-0A", "KA", role=2), "role 02 is not networkOperator"),
        ("DS", lambda: no_cert("AAAA", "KA"), "key usage KA, expected DS"),
        ("KA", lambda: no_cert("AAAA", "KA", untrusted=True), "not issued by the configured Organisation CA"),
        ("DS", lambda: cert(STRANGER, "DS"), "is not the NO's"),
    ],
)
def test_plan_refuses_unfit_replacement_certificate(tmp_path, usage, replacement, reason):
    case = wrong_case(tmp_path)
    case.revoked.append(revoked_serial("AAAA", "DS"))
    case.registry_certs[("AAAA", usage)] = replacement()
    with pytest.raises(SafetyRefusal) as exc:
        case.plan()
    message = str(exc.value)
    assert (
        reason in message and "network operator AAAA" in message and f"AAAA-{usage}.pem" in message and usage in message
    )


def test_plan_refusal_exits_3_through_the_cli(tmp_path):
    case = wrong_case(tmp_path)
    case.registry_certs[("AAAA", "DS")] = no_cert("AAAA", "DS", generation="expired")
    result = CliRunner(env=key_env("alice")).invoke(
        main, ["plan", "--config", str(case.write()), "--out", str(tmp_path / "p"), "--by", "alice"]
    )
    assert result.exit_code == 3 and len(result.stderr.strip().splitlines()) == 1 and "AAAA" in result.stderr


def test_an_unfit_certificate_of_an_unplanned_no_does_not_block(tmp_path):
    case = wrong_case(tmp_path)
    case.registry_certs[("GASX", "DS")] = no_cert("GASX", "DS", generation="expired")
    assert len(case.plan().rows) == 5


def test_s1sp_filter(tmp_path):
    case = wrong_case(tmp_path)
    m = mpan(12, 3000)
    case.device("00-1D-00-00-00-00-30-00", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"), s1sp="FOC")
    case.register(m, "AAAA")
    assert set(case.plan("all").rows["s1sp"]) == {"MOC", "FOC"}
    only = case.plan("foc", s1sps=("FOC",))
    assert only.rows["s1sp"].tolist() == ["FOC"] and only.document["s1sp_filter"] == ["FOC"]


# ------------------------------------------------------------------------------------------------ approval


def test_altered_plan_json_is_rejected(tmp_path):
    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    pipeline.run_approve(plan_dir, signer("bob"))
    doc = json.loads((plan_dir / "plan.json").read_text())
    doc["counts"]["devices"] = 4
    (plan_dir / "plan.json").write_text(json.dumps(doc))
    with pytest.raises(PlanTampered):
        load_plan(plan_dir)
    result = CliRunner(env=key_env("dave")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 3 and "altered" in result.stderr


def test_altered_plan_rows_are_rejected_even_if_resealed(tmp_path):
    """Changing plan.parquet breaks its recorded SHA-256; re-sealing plan.json changes the hash the approval is bound to."""
    from remediation.evidence.hashing import sha256_file
    from remediation.outputs import write_parquet
    from remediation.plan import seal

    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    pipeline.run_approve(plan_dir, signer("bob"))
    rows = pd.read_parquet(plan_dir / "plan.parquet")
    rows.loc[0, "device_id"] = "00-1D-00-00-00-00-99-99"  # someone adds a device outside the detection
    write_parquet(plan_dir / "plan.parquet", rows)
    with pytest.raises(PlanTampered, match="plan.parquet"):
        load_plan(plan_dir)
    doc = json.loads((plan_dir / "plan.json").read_text())
    doc["outputs"]["plan.parquet"] = sha256_file(plan_dir / "plan.parquet")
    (plan_dir / "plan.json").write_text(json.dumps(seal(doc)))
    resealed = load_plan(plan_dir)  # the hashes agree again, but the planner's signature is over the old plan hash
    with pytest.raises(AuthorityRefusal, match="plan signature by key .* does not verify"):
        authorise_run(resealed, read_approvals(plan_dir), signer("carol"))


def test_altered_approval_is_not_valid(tmp_path):
    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    pipeline.run_approve(plan_dir, signer("bob"))
    data = json.loads((plan_dir / "approvals.json").read_text())
    data["approvals"][0]["note"] = "approved by the board"
    (plan_dir / "approvals.json").write_text(json.dumps(data))
    with pytest.raises(AuthorityRefusal, match="approval 1 .*signature does not verify"):
        authorise_run(load_plan(plan_dir), read_approvals(plan_dir), signer("carol"))


def test_same_approver_twice_is_refused(tmp_path):
    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    pipeline.run_approve(plan_dir, signer("bob"))
    with pytest.raises(Exception, match="already approved"):
        pipeline.run_approve(plan_dir, signer("bob"))


# ------------------------------------------------------------------------------------------------ staleness

DRIFTS = {
    "extract": lambda root: root / "moc.csv",
    "rdp": lambda root: root / "rdp.csv",
    "case": lambda root: root / "case.toml",
    "dialect": lambda root: root / "dialects" / "canonical.toml",
    "registry": lambda root: root / "registry.toml",
    "organisation_ca": lambda root: root / "pki" / "ca.pem",
    "orl": lambda root: root / "pki" / "orl.csv",
}


@pytest.mark.parametrize("kind", DRIFTS)
def test_stale_plan_is_refused_for_each_kind_of_drift(tmp_path, kind):
    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    pipeline.run_approve(plan_dir, signer("bob"))
    check_fresh(load_plan(plan_dir))  # fresh now
    path = DRIFTS[kind](tmp_path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n# changed\n" if path.suffix in (".toml",) else "\n")
    with pytest.raises(StalePlan, match=path.name):
        check_fresh(load_plan(plan_dir))
    result = CliRunner(env=key_env("dave")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 3 and "stale plan" in result.stderr


def test_stale_when_an_input_disappears(tmp_path):
    case = wrong_case(tmp_path)
    plan_dir = case.plan().directory
    (tmp_path / "rdp.csv").unlink()
    with pytest.raises(StalePlan, match="no longer exists"):
        check_fresh(load_plan(plan_dir))


def test_plan_on_the_sample_case(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data")
    result = CliRunner().invoke(
        main,
        ["plan", "--config", str(tmp_path / "configs" / "sample.toml"), "--out", str(tmp_path / "p"), "--by", "alice"],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads((tmp_path / "p" / "plan.json").read_text())
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert doc["counts"]["devices"] == summary["devices_by_category"]["WRONG_NO"]
    assert sum(doc["counts"]["by_s1sp"].values()) == doc["counts"]["devices"]


# ------------------------------------------------------------------------------------------------ plan --from


def test_plan_from_a_detect_result_is_byte_identical_to_a_plan_from_scratch(tmp_path):
    """Sample case: detect once, then plan from that result: the same plan, byte for byte, with no second detection."""
    case = REPO / "configs" / "sample.toml"
    runner = CliRunner()
    assert runner.invoke(main, ["detect", "--config", str(case), "--out", str(tmp_path / "detect")]).exit_code == 0
    scratch = runner.invoke(main, ["plan", "--config", str(case), "--out", str(tmp_path / "scratch"), "--by", "alice"])
    reused = runner.invoke(
        main,
        [
            "plan",
            "--config",
            str(case),
            "--out",
            str(tmp_path / "reused"),
            "--by",
            "alice",
            "--from",
            str(tmp_path / "detect"),
        ],
    )
    assert scratch.exit_code == 0 and reused.exit_code == 0, reused.output
    names = sorted(p.name for p in (tmp_path / "scratch").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "reused").iterdir())
    for name in names:
        assert (tmp_path / "scratch" / name).read_bytes() == (tmp_path / "reused" / name).read_bytes(), name


_SLOW_HASH = """
import sys, time
from pathlib import Path
import remediation.evidence.hashing as hashing
real, release = hashing.sha256_file, Path(sys.argv.pop(1))
def slow(path):  # a national extract takes seconds to hash: this one until the test releases it
    if Path(path).name == "moc.csv":
        while not release.exists():
            time.sleep(0.01)
    return real(path)
hashing.sha256_file = slow
from remediation.__main__ import run
run()
"""


def test_ctrl_c_during_plan_from_leaves_no_plan_files(tmp_path):
    """An operator presses Ctrl-C while plan --from waits for the inputs' SHA-256 (checked after the plan's files are
    written, before plan.json seals them): a real process, a real SIGINT, the extract's hash held back (fault
    injection: a slow 12 GB file) until the signal is sent. Before, the files written so far stayed behind."""
    case = wrong_case(tmp_path)
    config = case.write()
    detect_dir, out, release = tmp_path / "detect", tmp_path / "plan", tmp_path / "release"
    runner = CliRunner(env=key_env("alice"))
    assert runner.invoke(main, ["detect", "--config", str(config), "--out", str(detect_dir)]).exit_code == 0
    command = [sys.executable, "-c", _SLOW_HASH, str(release), "plan", "--config", str(config), "--out", str(out)]
    command += ["--by", "alice", "--from", str(detect_dir)]
    proc = subprocess.Popen(
        command, env={**os.environ, **key_env("alice")}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "plan.parquet").exists():  # the plan's files are written; plan.json waits for the hash
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    finally:
        release.touch()  # the hashing thread may finish now, so the process can exit
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode not in (0, None) and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in out.iterdir()) == []


def test_plan_from_holds_the_inputs_to_the_summary_it_verified_not_a_later_copy(tmp_path):
    """An insider who edits an extract while plan --from runs, and rewrites the detect result's summary.json to match
    it before the deferred hash check: the inputs are held to the summary verified at the start, so the plan is
    refused (exit 3) and nothing is left. Before, the check re-read summary.json and the plan was sealed."""
    case = wrong_case(tmp_path)
    config = case.write()
    detect_dir, out, release = tmp_path / "detect", tmp_path / "plan", tmp_path / "release"
    runner = CliRunner(env=key_env("alice"))
    assert runner.invoke(main, ["detect", "--config", str(config), "--out", str(detect_dir)]).exit_code == 0
    command = [sys.executable, "-c", _SLOW_HASH, str(release), "plan", "--config", str(config), "--out", str(out)]
    command += ["--by", "alice", "--from", str(detect_dir)]
    proc = subprocess.Popen(
        command, env={**os.environ, **key_env("alice")}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "plan.parquet").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        extract = tmp_path / "moc.csv"
        extract.write_text(extract.read_text() + "\n")
        summary = json.loads((detect_dir / "summary.json").read_text())
        for entry in summary["files"]:
            if entry["path"] == str(extract):
                entry["sha256"] = hashlib.sha256(extract.read_bytes()).hexdigest()
        (detect_dir / "summary.json").write_text(json.dumps(summary))
    finally:
        release.touch()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "moc.csv changed since detect" in stderr and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in out.iterdir()) == []


def test_plan_from_into_its_own_detect_directory_is_refused(tmp_path):
    """--out the same directory as --from (a slip of the keyboard): refused before anything is written, the detect
    result untouched. Before, the copy of the detect files onto themselves failed with a traceback."""
    case = wrong_case(tmp_path)
    config = case.write()
    detect_dir = tmp_path / "detect"
    runner = CliRunner(env=key_env("alice"))
    assert runner.invoke(main, ["detect", "--config", str(config), "--out", str(detect_dir)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in detect_dir.iterdir()}
    args = ["plan", "--config", str(config), "--out", str(detect_dir / "."), "--by", "alice", "--from", str(detect_dir)]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "directory of its own" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in detect_dir.iterdir()} == before


@pytest.mark.parametrize("damage", ["garbage", "not base64"])
def test_plan_from_refuses_an_unreadable_certificates_file(tmp_path, damage):
    """certificates.parquet (the slot certificates detect saw, parsed again by plan --from) damaged: exit 3 naming
    the file, no traceback, no plan files. Before, a flipped byte gave a ValueError traceback."""
    case = wrong_case(tmp_path)
    config = case.write()
    detect_dir, out = tmp_path / "detect", tmp_path / "plan"
    runner = CliRunner(env=key_env("alice"))
    assert runner.invoke(main, ["detect", "--config", str(config), "--out", str(detect_dir)]).exit_code == 0
    certificates = detect_dir / "certificates.parquet"
    if damage == "garbage":
        certificates.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    else:
        table = pd.read_parquet(certificates)
        table.loc[0, "der_b64"] = "not*base64!"
        table.to_parquet(certificates)
    result = runner.invoke(
        main, ["plan", "--config", str(config), "--out", str(out), "--by", "alice", "--from", str(detect_dir)]
    )
    assert result.exit_code == 3 and "certificates.parquet: unreadable" in result.output, result.output
    assert "Traceback" not in result.output and sorted(p.name for p in out.iterdir()) == []


def test_a_ctrl_c_while_the_tool_starts_is_one_line_and_exit_130(tmp_path):
    """A SIGINT that arrives before click runs the command (while the CLI is imported) used to end in a
    KeyboardInterrupt traceback from the early handler; now one line and the shell's 128 + SIGINT."""
    script = "import os, signal, remediation.cli as cli, remediation.__main__ as entry\n"
    script += "cli.main = lambda: os.kill(os.getpid(), signal.SIGINT)\nentry.run()\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "remediation: interrupted before the command started; nothing was done"


@pytest.mark.parametrize(
    "change, expected",
    [
        ("extract", "changed since detect"),
        ("registry", "changed since detect"),
        ("findings", "altered after detect"),
        ("manifest", "detect.json"),
        ("as_of", "not 2026-01-02"),
    ],
)
def test_plan_from_refuses_a_detect_result_that_no_longer_matches(tmp_path, change, expected):
    case = wrong_case(tmp_path)
    config = case.write()
    detect_dir = tmp_path / "detect"
    runner = CliRunner(env=key_env("alice"))  # the planner's key: the case names a trust policy
    assert runner.invoke(main, ["detect", "--config", str(config), "--out", str(detect_dir)]).exit_code == 0
    args = [
        "plan",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "plan"),
        "--by",
        "alice",
        "--from",
        str(detect_dir),
    ]
    if change == "extract":
        extract = tmp_path / "moc.csv"
        extract.write_text(extract.read_text() + "\n")
    elif change == "registry":
        registry = tmp_path / "registry.toml"
        registry.write_text(registry.read_text() + "\n# edited\n")
    elif change == "findings":
        # an insider adds a device to the plannable findings: the manifest no longer matches
        table = pd.read_parquet(detect_dir / "findings.parquet")
        table.loc[0, "category"] = "WRONG_NO"
        table.to_parquet(detect_dir / "findings.parquet")
    elif change == "manifest":
        (detect_dir / "detect.json").write_text("[]")
    else:
        args += ["--as-of", "2026-01-02"]
    result = runner.invoke(main, args)
    assert result.exit_code == 3, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "plan" / "plan.json").exists()
    # The inputs' SHA-256 are checked while the plan is made, before it is sealed: a refused plan leaves no files.
    left = sorted(p.name for p in (tmp_path / "plan").iterdir()) if (tmp_path / "plan").exists() else []
    assert left == []
