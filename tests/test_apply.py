"""Apply against real simulators on 127.0.0.1: the contract, the state machine, dry run, refusals, lock, pause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.apply.pacing import WavePolicy
from remediation.apply.runner import ApplyOptions
from remediation.cli import main
from remediation.errors import SafetyRefusal
from remediation.evidence.journal import read_journal, verify_journal
from tests.simulation import api_writes, planned_case, run_apply, run_resume, start_sim
from tests.support import REPO, key_env, signer


@pytest.fixture()
def world(tmp_path):
    case, config, plan_dir = planned_case(tmp_path)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    yield case, config, plan_dir, sim
    sim.stop()


def options(sim, **kw) -> ApplyOptions:
    return ApplyOptions(who="carol", endpoints={"MOC": sim.url}, **kw)


def plan_rows(plan_dir):
    return pd.read_parquet(plan_dir / "plan.parquet")


# ------------------------------------------------------------------------------------------------ the contract


def test_simulator_speaks_the_contract(world):
    _, _, plan_dir, sim = world
    row = plan_rows(plan_dir).iloc[0]
    base = f"{sim.url}/v1/devices/{row.device_id}/anchor-slots"
    with httpx.Client() as client:
        got = client.get(base)
        assert got.status_code == 200 and got.headers["ETag"] == '"1"' and got.json()["version"] == 1
        body = {
            "slots": {"NO_DS": {"cert": row.target_ds_cert}, "NO_KA": {"cert": row.target_ka_cert}},
            "reason": "MP107-R2",
            "operation_id": row.operation_id,
        }
        assert (
            client.put(base, json=body, headers={"If-Match": '"7"', "Idempotency-Key": row.operation_id}).status_code
            == 412
        )
        first = client.put(base, json=body, headers={"If-Match": '"1"', "Idempotency-Key": row.operation_id})
        assert first.status_code == 200 and first.json()["version"] == 2
        replay = client.put(base, json=body, headers={"If-Match": '"1"', "Idempotency-Key": row.operation_id})
        assert replay.status_code == 200 and replay.json() == first.json()  # replays the first response
        other = dict(body, reason="something else")
        assert (
            client.put(base, json=other, headers={"If-Match": '"2"', "Idempotency-Key": row.operation_id}).status_code
            == 409
        )
        assert client.get(f"{sim.url}/v1/devices/00-00-00-00-00-00-00-00/anchor-slots").status_code == 404
    assert len(sim.writes()) == 1


def test_bearer_token_is_required_when_configured(tmp_path):
    from remediation.apply.gateway import GatewayError, HttpGateway

    _, config, plan_dir = planned_case(tmp_path, wrong=2, ok=0)
    sim = start_sim(tmp_path / "t.sqlite", config, token="s3cret-token")
    device = plan_rows(plan_dir).iloc[0].device_id
    try:
        with pytest.raises(GatewayError, match="401"):
            HttpGateway(sim.url).read(device)
        assert HttpGateway(sim.url, token="s3cret-token").read(device).version == 1
    finally:
        sim.stop()


# ------------------------------------------------------------------------------------------------ apply


def test_apply_writes_each_planned_device_once_and_nothing_else(world, tmp_path):
    _, config, plan_dir, sim = world
    result = run_apply(plan_dir, tmp_path / "run", options(sim))
    rows = plan_rows(plan_dir)
    assert result.status == "completed" and result.counts["MOC"]["done"] == len(rows) == 30
    writes = api_writes(tmp_path / "moc.sqlite")
    assert Counter(d for d, _ in writes) == Counter(rows["device_id"])  # each planned device exactly once, no other
    assert {op for _, op in writes} == set(rows["operation_id"])
    for r in rows.itertuples():
        now = sim.store.get(r.device_id)
        assert (now.ds, now.ka) == (r.target_ds_cert, r.target_ka_cert)
    outcomes = pd.read_parquet(tmp_path / "run" / "outcomes.parquet")
    assert set(outcomes["state"]) == {"done"} and (outcomes["prior_ds_fp"] == outcomes["expected_ds_fingerprint"]).all()
    ok, why = verify_journal(tmp_path / "run" / "journal.jsonl")
    assert ok, why
    events = [e["event"] for e in read_journal(tmp_path / "run" / "journal.jsonl")]
    assert events[0] == "run_started" and events[-1] == "run_finished"


def test_second_apply_and_replan_write_nothing(world, tmp_path):
    _, config, plan_dir, sim = world
    run_apply(plan_dir, tmp_path / "run", options(sim))
    before = len(sim.writes())
    again = run_apply(plan_dir, tmp_path / "run", options(sim))  # same run: nothing open
    assert again.counts["MOC"]["done"] == 30 and len(sim.writes()) == before
    fresh = run_apply(plan_dir, tmp_path / "run2", options(sim))  # new run of the same plan: all noop
    assert fresh.counts["MOC"]["noop"] == 30 and len(sim.writes()) == before


def test_drifted_devices_are_never_written(tmp_path):
    from remediation.simulator.service import make_drift

    _, config, plan_dir = planned_case(tmp_path)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        drifted = list(plan_rows(plan_dir)["device_id"][:4])
        make_drift(sim.store, drifted, 0, 0)
        result = run_apply(plan_dir, tmp_path / "run", options(sim))
        assert (
            result.status == "needs_attention"
            and result.counts["MOC"]["drifted"] == 4
            and result.counts["MOC"]["done"] == 26
        )
        assert not {d for d, _ in api_writes(tmp_path / "moc.sqlite")} & set(drifted)
        outcomes = pd.read_parquet(tmp_path / "run" / "outcomes.parquet").set_index("device_id")
        assert (outcomes.loc[drifted, "state"] == "drifted").all()
    finally:
        sim.stop()


def test_dry_run_reports_and_writes_nothing(tmp_path):
    from remediation.simulator.service import make_drift

    _, config, plan_dir = planned_case(tmp_path)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        make_drift(sim.store, list(plan_rows(plan_dir)["device_id"][:3]), 0, 0)
        result = CliRunner().invoke(
            main, ["apply", str(plan_dir), "--dry-run", str(tmp_path / "dry"), "--endpoint", f"MOC={sim.url}"]
        )
        assert result.exit_code == 0, result.stderr
        states = json.loads((tmp_path / "dry" / "dry_run.json").read_text())["states"]["MOC"]
        assert states == {"drifted": 3, "would_write": 27}
        assert sim.store.counters().get("put", 0) == 0 and len(api_writes(tmp_path / "moc.sqlite")) == 0
    finally:
        sim.stop()


def test_dropped_after_commit_is_confirmed_by_reading_not_rewritten(world, tmp_path):
    _, _, plan_dir, sim = world
    sim.set_faults("drop=1.0,seed=3")  # every successful PUT loses its response
    from remediation.apply.executor import RetryPolicy

    # The default number of attempts (each replayed PUT is dropped too), with backoffs of milliseconds, not seconds.
    brisk = RetryPolicy(attempts=RetryPolicy().attempts, initial=0.002, max_wait=0.01)
    result = run_apply(plan_dir, tmp_path / "run", options(sim, retry=brisk))
    assert result.counts["MOC"]["done"] == 30
    counters = sim.store.counters()
    assert counters["put_committed"] == 30 and counters["dropped_after_commit"] >= 30 and counters["put_replayed"] > 0
    assert Counter(d for d, _ in api_writes(tmp_path / "moc.sqlite")).most_common(1)[0][1] == 1


def test_transient_faults_and_throttling_are_retried(world, tmp_path):
    _, _, plan_dir, sim = world
    from remediation.apply.executor import RetryPolicy

    sim.set_faults("error=0.2,throttle=0.1,latency=2ms,seed=11")
    # 30% of requests fail: with 10 attempts a call is given up with probability 0.3**10, so the run completes.
    patient = RetryPolicy(attempts=10, initial=0.005, max_wait=0.5)
    result = run_apply(
        plan_dir, tmp_path / "run", options(sim, retry=patient, waves=WavePolicy(pause_failure_rate=1.0))
    )
    counters = sim.store.counters()
    assert counters.get("fault_429", 0) > 0 and counters.get("fault_503", 0) + counters.get("fault_500", 0) > 0
    outcomes = pd.read_parquet(tmp_path / "run" / "outcomes.parquet")
    assert result.counts["MOC"]["done"] == 30, outcomes[outcomes["state"] != "done"].to_dict("records")
    assert len(api_writes(tmp_path / "moc.sqlite")) == 30


def test_failure_rate_pauses_and_resume_continues(world, tmp_path):
    _, _, plan_dir, sim = world
    sim.set_faults("error=1.0,seed=1")
    from remediation.apply.executor import RetryPolicy

    quick = RetryPolicy(attempts=2, initial=0.01, max_wait=0.02)
    paused = run_apply(plan_dir, tmp_path / "run", options(sim, retry=quick))
    assert paused.status == "paused" and "canary" in paused.paused["MOC"]
    assert paused.counts["MOC"]["failed"] == 5 and paused.counts["MOC"]["pending"] == 25  # stopped after the canary
    status = CliRunner().invoke(main, ["status", str(tmp_path / "run")])
    assert "paused MOC" in status.stdout
    sim.set_faults("")
    resumed = run_resume(tmp_path / "run", options(sim, retry_failed=True))
    assert resumed.status == "completed" and resumed.counts["MOC"]["done"] == 30


def test_unapproved_or_stale_plan_is_refused(tmp_path):
    from tests.support import CaseFiles, mpan, no_cert

    case = CaseFiles(tmp_path)
    m = mpan(15, 1)
    case.device("00-1D-00-00-00-02-00-01", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    case.register(m, "AAAA")
    case.write()
    case.plan(planner="alice")
    result = CliRunner(env=key_env("carol")).invoke(
        main,
        [
            "apply",
            str(tmp_path / "plan"),
            "--run",
            str(tmp_path / "run"),
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ],
    )
    assert result.exit_code == 3 and "quorum not met: 0 of 1" in result.stderr
    pipeline.run_approve(tmp_path / "plan", signer("bob"))
    (tmp_path / "rdp.csv").write_text((tmp_path / "rdp.csv").read_text() + "\n")
    result = CliRunner(env=key_env("carol")).invoke(
        main,
        [
            "apply",
            str(tmp_path / "plan"),
            "--run",
            str(tmp_path / "run"),
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ],
    )
    assert (
        result.exit_code == 3
        and "stale plan" in result.stderr
        and not (tmp_path / "run" / "checkpoints.sqlite").exists()
    )


def test_run_directory_of_another_plan_is_refused(world, tmp_path):
    _, config, plan_dir, sim = world
    run_apply(plan_dir, tmp_path / "run", options(sim))
    run_json = tmp_path / "run" / "run.json"
    run = json.loads(run_json.read_text())
    run["plan_hash"] = "0" * 64
    run_json.write_text(json.dumps(run))
    with pytest.raises(SafetyRefusal, match="belongs to plan"):
        run_apply(plan_dir, tmp_path / "run", options(sim))


HOLD_LOCK = """
import sys, time
from pathlib import Path
from remediation.apply.lock import RunLock
RunLock(Path(sys.argv[1])).acquire("holder")
print("held", flush=True)
time.sleep(60)
"""


def test_lock_refuses_while_held_and_is_taken_over_after_the_holder_dies(world, tmp_path):
    _, _, plan_dir, sim = world
    run_dir = tmp_path / "run"
    run_apply(plan_dir, run_dir, options(sim, s1sps=("FOC",)))  # creates the run directory, applies nothing
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner(env=key_env("carol")).invoke(
            main,
            [
                "apply",
                str(plan_dir),
                "--run",
                str(run_dir),
                "--endpoint",
                f"MOC={sim.url}",
                "--trust-policy",
                str(tmp_path / "people.toml"),
            ],
        )
        assert result.exit_code == 3 and f"locked by pid {holder.pid}" in result.stderr
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    done = run_apply(plan_dir, run_dir, options(sim))
    assert done.status == "completed"
    resumed = [e for e in read_journal(run_dir / "journal.jsonl") if e["event"] == "run_resumed"]
    assert resumed[-1]["previous_lock_holder"]["pid"] == holder.pid


def test_verify_on_fresh_exports(tmp_path):
    """After apply, a fresh export shows no residual WRONG_NO; a device drifted before apply is named (exit 1)."""
    from remediation.simulator.service import export_extract, make_drift

    _, config, plan_dir = planned_case(tmp_path, wrong=8, ok=3)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        drifted = plan_rows(plan_dir)["device_id"].iloc[0]
        make_drift(sim.store, [drifted], 0, 0)
        run_apply(plan_dir, tmp_path / "run", options(sim))
        export_extract(sim.store, tmp_path / "fresh" / "moc.csv")
    finally:
        sim.stop()
    result = CliRunner().invoke(
        main,
        [
            "verify",
            "--config",
            str(config),
            "--fresh",
            str(tmp_path / "fresh"),
            "--plan",
            str(plan_dir),
            "--out",
            str(tmp_path / "verify"),
        ],
    )
    assert result.exit_code == 1, result.output
    verdict = json.loads((tmp_path / "verify" / "verify.json").read_text())
    assert verdict["residual_wrong"] == 1 and verdict["planned"] == 8 and verdict["planned_at_target"] == 7
    residual = pd.read_csv(tmp_path / "verify" / "residual_wrong.csv")
    assert residual["device_id"].tolist() == [drifted] and residual["planned"].tolist() == [True]
    assert pd.read_csv(tmp_path / "verify" / "planned_not_at_target.csv")["device_id"].tolist() == [drifted]


def _tls_material(tmp_path):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with cryptography."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(subject, key, issuer, issuer_key, *, ca=False, usage=None, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name, cert, key):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test S1SP CA")])
    ca = issue("test S1SP CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = issue(
        "127.0.0.1",
        server_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = issue("dcc-remediation", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return write("ca", ca, ca_key)[0], write("server", server, server_key), write("client", client, client_key)


def test_mutual_tls(tmp_path):
    from remediation.apply.gateway import HttpGateway, TransientError

    ca, (server_cert, server_key), client = _tls_material(tmp_path)
    _, config, plan_dir = planned_case(tmp_path, wrong=2, ok=0)
    sim = start_sim(tmp_path / "tls.sqlite", config, tls_cert=server_cert, tls_key=server_key, client_ca=ca)
    url = f"https://127.0.0.1:{sim.server.server_address[1]}"
    device = plan_rows(plan_dir).iloc[0].device_id
    try:
        assert HttpGateway(url, client_cert=client, ca_bundle=ca).read(device).version == 1
        with pytest.raises(TransientError):  # no client certificate: the handshake is refused
            HttpGateway(url, ca_bundle=ca).read(device)
        result = run_apply(
            plan_dir,
            tmp_path / "run",
            ApplyOptions(who="carol", endpoints={"MOC": url}, client_cert=client, ca_bundle=ca),
        )
        assert result.status == "completed" and len(api_writes(tmp_path / "tls.sqlite")) == 2
    finally:
        sim.stop()
