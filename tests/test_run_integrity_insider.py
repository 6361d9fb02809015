"""Run integrity, second round (issue 10's attack review from a fresh clone): an insider on an unfinished run, devices
whose write may have committed unseen, a copied plan directory, dead S1SPs and a report on a tampered journal.
Real simulator over HTTP, real files and SQLite; each test fails on the code before its fix."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter

import pandas as pd
import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.apply.executor import RetryPolicy, fingerprint
from remediation.apply.runner import ApplyOptions
from remediation.cli import main
from remediation.errors import RemediationError
from remediation.evidence.hashing import canonical_json, sha256_file
from remediation.evidence.journal import GENESIS, entry_hash, read_journal, verify_journal
from tests.simulation import api_writes, planned_case, run_apply, run_resume, settled_writes, start_sim
from tests.support import REPO, key_env, signer
from tests.test_run_integrity import ENV, apply_command, journal_count, wait_for

QUICK = RetryPolicy(attempts=2, initial=0.01, max_wait=0.02)


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def _rechain(entries: list[dict]) -> tuple[list[bytes], dict]:
    out, prev = [], GENESIS
    for seq, entry in enumerate(entries, start=1):
        entry = {**entry, "seq": seq, "prev": prev}
        out.append(canonical_json(entry))
        prev = entry_hash(entry)
    return out, {"seq": len(out), "hash": prev}


def _rewrite(run_dir, entries: list[dict], forge_head: bool = True) -> None:
    """What an insider with write access to the run directory does: journal rewritten and re-chained, run.json's
    recorded head forged to match (`forge_head`), the checkpoint index deleted."""
    lines, head = _rechain(entries)
    (run_dir / "journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    if forge_head:
        run = json.loads((run_dir / "run.json").read_text())
        run["journal_head"] = head
        (run_dir / "run.json").write_text(json.dumps(run))
    for name in ("checkpoints.sqlite", "checkpoints.sqlite-wal", "checkpoints.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)


@pytest.fixture
def written(tmp_path):
    """A completed run of 12 devices against a live simulator (kept running for the test)."""
    _, config, plan_dir = planned_case(tmp_path, wrong=12, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    run_dir = tmp_path / "run"
    at_start = tmp_path / "run.json.at-start"

    def keep_run_json(s1sp, done, total):  # called first before any device: run.json as a killed run leaves it
        if not at_start.exists():
            shutil.copy2(run_dir / "run.json", at_start)

    try:
        options = ApplyOptions(who="carol", endpoints={"MOC": sim.url})
        assert run_apply(plan_dir, run_dir, options, progress=keep_run_json).status == "completed"
        yield tmp_path, plan_dir, run_dir, sim
    finally:
        sim.stop()


def _approve_and_apply_rollback(root, rb_dir, sim):
    pipeline.run_approve(rb_dir, signer("bob"))
    return run_apply(rb_dir, root / "rb-run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))


# ------------------------------------------------------------------------------------------------ (A) the insider


@pytest.mark.parametrize("attack", ["cut-after-start", "one-device-removed"])
def test_written_devices_never_become_noop_after_the_journal_of_an_unfinished_run_is_rewritten(tmp_path, attack):
    """A real apply is killed (SIGKILL) mid-run; the insider then cuts its journal back to run_started (or deletes one
    written device's entries and re-chains the rest) and deletes the index. run.json and the plan leases of a killed
    run record only the head at its start, which the rewritten journal still holds. The old resume re-read the
    written devices at target and recorded them `noop`: rollback then said nothing was written. Now a device found at
    target on a resume with no write on record is `at_target_on_resume`, and rollback offers (and can undo) it."""
    _, config, plan_dir = planned_case(tmp_path, wrong=40, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=15ms")
    run_dir = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            apply_command(plan_dir, run_dir, sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: journal_count(run_dir, "done") >= 10)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sim.set_faults("")
        written_before = {d for d, _ in settled_writes(tmp_path / "moc.sqlite")}
        entries = read_journal(run_dir / "journal.jsonl")
        if attack == "cut-after-start":
            kept = entries[:1]  # run_started, operator-signed and untouched: only what came after it is gone
            victims = sorted(written_before)
        else:
            victims = [next(e["device_id"] for e in entries if e.get("to_state") == "done")]
            kept = [e for e in entries if e.get("device_id") not in victims]
        _rewrite(run_dir, kept, forge_head=False)

        result = run_resume(run_dir, ApplyOptions(who="dave", endpoints={"MOC": sim.url}))
        outcomes = pd.read_parquet(run_dir / "outcomes.parquet").set_index("device_id")
        assert set(outcomes.loc[victims, "state"]) == {"at_target_on_resume"}
        assert result.counts["MOC"]["noop"] == 0 and result.counts["MOC"]["at_target_on_resume"] == len(victims)
        writes = api_writes(tmp_path / "moc.sqlite")
        assert len(writes) == 40 and max(Counter(d for d, _ in writes).values()) == 1  # the resume only read them
        assert verify_journal(run_dir / "journal.jsonl")[0]

        status = CliRunner().invoke(main, ["status", str(run_dir)])
        assert status.exit_code == 0 and "at_target_on_resume" in status.stdout, status.output
        out = tmp_path / "r.json"
        report = CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--out", str(out)])
        assert report.exit_code == 0, report.output
        assert json.loads(out.read_text())["apply_outcome"]["MOC"]["at_target_on_resume"] == len(victims)
        export = CliRunner(env=key_env("carol")).invoke(
            main, ["audit", "export", str(run_dir), "--out", str(tmp_path / "export")]
        )
        assert export.exit_code == 0, export.output + export.stderr
        summary = json.loads((tmp_path / "export" / "summary.json").read_text())
        assert summary["devices_by_final_state"]["at_target_on_resume"] == len(victims)
        assert "noop" not in summary["devices_by_final_state"]
        policy = sha256_file(tmp_path / "people.toml")
        verified = CliRunner().invoke(
            main, ["audit", "verify", str(tmp_path / "export"), "--expect-policy-sha256", policy]
        )
        assert verified.exit_code == 0, verified.output + verified.stderr

        rollback = pipeline.run_rollback(run_dir, tmp_path / "rb", key=signer("alice"))
        marked = rollback.rows.set_index("device_id")["category"]
        assert marked[victims].eq("ROLLBACK_POSSIBLY_WRITTEN").all() and len(marked) == 40
        assert rollback.document["rollback_of"]["possibly_written"] == len(victims)
        # The rollback restores what the plan expected to find, even where the resume's read found only the target.
        undone = _approve_and_apply_rollback(tmp_path, tmp_path / "rb", sim)
        assert undone.status == "completed" and undone.counts["MOC"]["done"] == 40
        plan = pd.read_parquet(plan_dir / "plan.parquet").set_index("device_id")
        for device in victims:
            slots = sim.store.get(device)
            assert (fingerprint(slots.ds), fingerprint(slots.ka)) == tuple(
                plan.loc[device, ["expected_ds_fingerprint", "expected_ka_fingerprint"]]
            )
    finally:
        sim.stop()


def test_a_noop_forged_after_the_run_was_resumed_is_refused(written):
    """Apply never records `noop` once a run has been resumed: a journal saying so was written by someone else."""
    root, _, run_dir, _ = written
    entries = read_journal(run_dir / "journal.jsonl")
    first = next(e for e in entries if e["event"] == "transition")
    device = first["device_id"]
    kept = [e for e in entries if e.get("device_id") != device and e["event"] != "run_finished"]
    resumed = {**entries[0], "event": "run_resumed"}
    forged = [
        {**first, "from_state": "pending", "to_state": "reading", "fields": {}},
        {**first, "from_state": "reading", "to_state": "noop", "fields": {}},
    ]
    _rewrite(run_dir, [*kept, resumed, *forged])
    line = one_line_error(CliRunner().invoke(main, ["status", str(run_dir)]), 3)
    assert device in line and "'noop' after the run was resumed" in line


def test_a_rechained_journal_is_caught_by_the_operator_signed_records_it_passes_through(written):
    """The insider removes one device's entries, re-chains, edits run_finished's counts to match the replay and
    forges run.json's head: chain, recorded head and counts all agree. The operator signed run_finished over its
    sequence number and chain link, so its signature no longer holds; status, rollback and export refuse."""
    root, _, run_dir, _ = written
    entries = read_journal(run_dir / "journal.jsonl")
    device = next(e["device_id"] for e in entries if e["event"] == "transition")
    kept = [e for e in entries if e.get("device_id") != device]
    finish = kept[-1]
    assert finish["event"] == "run_finished"
    finish["counts"] = {"MOC": {**finish["counts"]["MOC"], "done": finish["counts"]["MOC"]["done"] - 1, "pending": 1}}
    _rewrite(run_dir, kept)
    expected = f"journal entry {len(kept)} (run_finished): the operator's signature does not verify"
    assert expected in one_line_error(CliRunner().invoke(main, ["status", str(run_dir)]), 3)
    export = CliRunner(env=key_env("carol")).invoke(main, ["audit", "export", str(run_dir), "--out", str(root / "x")])
    assert expected in one_line_error(export, 3)


def test_run_json_head_forged_to_fit_a_cut_journal_is_caught_by_its_signature(written):
    """The journal cut after its last transitions (run_finished gone: the run looks killed) and run.json's head moved
    to the new end: the old checks agreed with each other. run.json's head is now operator-signed."""
    root, _, run_dir, _ = written
    entries = read_journal(run_dir / "journal.jsonl")
    _rewrite(run_dir, entries[:-4])
    line = one_line_error(CliRunner().invoke(main, ["status", str(run_dir)]), 3)
    assert (
        f"run.json's recorded journal head (entry {len(entries) - 4}): the operator's signature does not verify" in line
    )
    rollback = CliRunner(env=key_env("alice")).invoke(main, ["rollback", str(run_dir), "--out", str(root / "rb")])
    assert "run.json's recorded journal head" in one_line_error(rollback, 3)


@pytest.mark.parametrize("head", [{"seq": 0, "hash": GENESIS}, {"seq": 0}])
def test_run_json_head_forged_to_before_the_first_entry_is_refused(written, head):
    """run.json's head set to entry 0 (a journal cut to its start record looks like a run killed at once): the old
    checks skipped both the head and its signature for a head of seq 0. Apply never records one."""
    root, _, run_dir, sim = written
    entries = read_journal(run_dir / "journal.jsonl")
    _rewrite(run_dir, entries[:1], forge_head=False)
    run = json.loads((run_dir / "run.json").read_text())
    run["journal_head"] = head
    (run_dir / "run.json").write_text(json.dumps(run))
    line = one_line_error(CliRunner().invoke(main, ["status", str(run_dir)]), 3)
    assert "run.json's recorded journal head (entry 0) is before the run's first entry" in line
    report = CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--out", str(root / "r.json")])
    assert "is before the run's first entry" in one_line_error(report, 3)
    with pytest.raises(RemediationError, match="journal truncated"):  # and the plan's lease remembers the real head
        run_resume(run_dir, ApplyOptions(who="dave", endpoints={"MOC": sim.url}))


# ------------------------------------------------------------------------------------------------ (C) rollback


def test_rollback_offers_a_device_whose_put_reply_named_another_device(tmp_path):
    """The S1SP commits each PUT and answers naming another device: apply fails the device with a protocol error
    (it never believes the reply), but the write landed. The old rollback offered only `done` devices: "no device
    written by this run". It now offers them as possibly written, and applying it puts the prior certificates back."""
    _, config, plan_dir = planned_case(tmp_path, wrong=6, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="wrong_device_put=1.0")
    try:
        result = run_apply(
            plan_dir, tmp_path / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}, retry=QUICK)
        )
        failed = pd.read_parquet(tmp_path / "run" / "outcomes.parquet").query("state == 'failed'")
        assert len(failed) and failed["last_error"].str.contains("protocol error: reply names device").all()
        assert result.counts["MOC"]["done"] == 0 and len(api_writes(tmp_path / "moc.sqlite")) == len(failed)

        screen = CliRunner(env=key_env("alice")).invoke(
            main, ["rollback", str(tmp_path / "run"), "--out", str(tmp_path / "rb")]
        )
        assert screen.exit_code == 0, screen.output + screen.stderr
        assert f"{len(failed)} of these device(s) were possibly written" in " ".join(screen.stdout.split())
        rows = pd.read_parquet(tmp_path / "rb" / "plan.parquet")
        assert set(rows["device_id"]) == set(failed["device_id"])
        assert set(rows["category"]) == {"ROLLBACK_POSSIBLY_WRITTEN"}

        sim.set_faults("")
        undone = _approve_and_apply_rollback(tmp_path, tmp_path / "rb", sim)
        assert undone.counts["MOC"]["done"] == len(failed)
        for device in failed["device_id"]:
            slots = sim.store.get(device)
            prior = failed.set_index("device_id").loc[device, ["prior_ds_fp", "prior_ka_fp"]]
            assert (fingerprint(slots.ds), fingerprint(slots.ka)) == tuple(prior)
    finally:
        sim.stop()


def test_rollback_offers_devices_left_writing_or_confirming(written):
    """A run killed with devices in flight (the journal a SIGKILL leaves is a prefix of it): the devices left
    `writing` or `confirming` may have been written; rollback offers them, marked, beside the `done` ones. A
    possibly written device that was not in fact written is already at the rollback's target: noop, nothing sent."""
    root, _, run_dir, sim = written
    entries = read_journal(run_dir / "journal.jsonl")
    states: dict[str, str] = {}
    cut = None
    for i, e in enumerate(entries):
        if e["event"] == "transition":
            states[e["device_id"]] = e["to_state"]
        values = Counter(states.values())
        if values["writing"] and values["confirming"] and values["done"]:
            cut = i + 1
            break
    assert cut, "no moment with a device writing, one confirming and one done"
    (run_dir / "journal.jsonl").write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries[:cut]))
    shutil.copy2(root / "run.json.at-start", run_dir / "run.json")  # what a killed run's run.json records
    assert json.loads((run_dir / "run.json").read_text())["journal_head"]["seq"] == 1
    for name in ("checkpoints.sqlite", "checkpoints.sqlite-wal", "checkpoints.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)

    screen = CliRunner(env=key_env("alice")).invoke(main, ["rollback", str(run_dir), "--out", str(root / "rb")])
    assert screen.exit_code == 0, screen.output + screen.stderr
    assert "the run ended without a finish or interruption record" in " ".join(screen.stdout.split())
    category = pd.read_parquet(root / "rb" / "plan.parquet").set_index("device_id")["category"]
    for device, state in states.items():
        if state in ("writing", "confirming"):
            assert category[device] == "ROLLBACK_POSSIBLY_WRITTEN", (device, state)
        elif state == "done":
            assert category[device] == "ROLLBACK", device
        else:
            assert device not in category.index, (device, state)


# ------------------------------------------------------------------------------------------------ (D) plan copies


def test_a_copy_of_the_plan_directory_is_the_same_plan(tmp_path):
    """The lease lived only in the plan directory: copying it (before the first run made its record) and applying
    the copy started a second run of the same plan. The host-wide registry keyed by the plan hash refuses it."""
    _, config, plan_dir = planned_case(tmp_path, wrong=6, ok=0)
    copy = tmp_path / "plan-copy"
    shutil.copytree(plan_dir, copy)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="error=1.0")
    args = ["--endpoint", f"MOC={sim.url}", "--trust-policy", str(tmp_path / "people.toml"), "--by", "dave"]
    try:
        first = run_apply(plan_dir, tmp_path / "a", ApplyOptions(who="carol", endpoints={"MOC": sim.url}, retry=QUICK))
        assert first.status == "paused"
        refused = CliRunner(env=key_env("carol")).invoke(
            main, ["apply", str(copy), "--run", str(tmp_path / "b"), *args]
        )
        line = one_line_error(refused, 3)
        assert str(tmp_path / "a") in line and not (tmp_path / "b").exists()
        sim.set_faults("")
        taken = CliRunner(env=key_env("carol")).invoke(
            main, ["apply", str(copy), "--run", str(tmp_path / "b"), *args, "--supersede"]
        )
        assert taken.exit_code == 0, taken.output + taken.stderr
    finally:
        sim.stop()
    old = read_journal(tmp_path / "a" / "journal.jsonl")
    new = read_journal(tmp_path / "b" / "journal.jsonl")
    assert old[-1]["event"] == "run_superseded" and old[-1]["by_run"] == str((tmp_path / "b").resolve())
    assert any(e["event"] == "supersedes" and e["run_dir"] == str((tmp_path / "a").resolve()) for e in new)
    writes = api_writes(tmp_path / "moc.sqlite")
    assert len(writes) == 6 and max(Counter(d for d, _ in writes).values()) == 1


def test_the_host_registry_remembers_a_run_whose_journal_was_deleted(written):
    """An insider deletes the journal and the index and blanks run.json's head, so the run looks new and a resume
    would start afresh (every written device `noop`). The plan leases recorded the run's journal head outside it."""
    root, plan_dir, run_dir, sim = written
    (plan_dir / "active_run.json").unlink()  # the insider can write the plan directory too; not the host's registry
    for name in ("journal.jsonl", "checkpoints.sqlite", "checkpoints.sqlite-wal", "checkpoints.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)
    run = json.loads((run_dir / "run.json").read_text())
    run["journal_head"] = None
    (run_dir / "run.json").write_text(json.dumps(run))
    resumed = CliRunner(env=key_env("carol")).invoke(
        main,
        ["resume", str(run_dir), "--endpoint", f"MOC={sim.url}", "--trust-policy", str(root / "people.toml")],
    )
    line = one_line_error(resumed, 3)
    assert "lease registry records" in line and "journal is missing" in line


# ------------------------------------------------------------------------------------------------ (E) dead S1SPs


def test_dry_run_against_a_dead_s1sp_fails_fast_with_one_grouped_cause(tmp_path):
    """Each device used to retry its own way to failure (about 20 s for 60 devices here, 48 s for 449): after a few
    connection failures in a row the S1SP's remaining devices are marked unread with the same cause, undialled."""
    _, _, plan_dir = planned_case(tmp_path, wrong=60, ok=0)
    with socket.socket() as probe:  # a loopback port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    dry = CliRunner().invoke(
        main, ["apply", str(plan_dir), "--dry-run", str(tmp_path / "dry"), "--endpoint", f"MOC=http://127.0.0.1:{port}"]
    )
    took = time.monotonic() - started
    assert dry.exit_code == 1, dry.output
    assert took < 5, took
    screen = " ".join(dry.stdout.split())
    assert "60 device(s) could not be read" in screen
    lines = [line for line in dry.stdout.splitlines() if line.strip().startswith("MOC: ")]
    assert len(lines) == 1 and "MOC: 60 × S1SP unreachable" in " ".join(lines[0].split()), dry.stdout
    assert "ConnectError" in screen


def test_apply_against_a_dead_s1sp_pauses_it_with_the_cause_and_leaves_its_devices_open(tmp_path):
    _, _, plan_dir = planned_case(tmp_path, wrong=40, ok=0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = run_apply(
        plan_dir, tmp_path / "run", ApplyOptions(who="carol", endpoints={"MOC": f"http://127.0.0.1:{port}"})
    )
    assert time.monotonic() - started < 5
    assert result.status == "paused" and "S1SP unreachable" in result.paused["MOC"], result.paused
    counts = result.counts["MOC"]
    assert counts["pending"] + counts["reading"] == 40 and counts["failed"] == 0  # nothing failed for good
    status = CliRunner().invoke(main, ["status", str(tmp_path / "run")])
    assert status.exit_code == 1 and "S1SP unreachable" in status.stdout


# ------------------------------------------------------------------------------------------------ (F) report


def test_report_on_a_run_with_a_tampered_journal_is_refused_naming_the_entry(written):
    root, _, run_dir, _ = written
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines()
    at = next(i for i, line in enumerate(lines) if b'"to_state":"done"' in line)
    lines[at] = lines[at].replace(b'"to_state":"done"', b'"to_state":"noop"')
    (run_dir / "journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(main, ["report", str(run_dir), "--format", "md", "--out", str(root / "r.md")])
    line = one_line_error(result, 3)
    assert f"journal line {at + 2}" in line and "previous-entry hash does not match" in line
    assert not (root / "r.md").exists()
