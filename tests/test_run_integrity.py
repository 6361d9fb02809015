"""Run integrity (issue 10): each attack or mistake on a real simulator over HTTP, real files, real SQLite, real
signals to real `remediation` subprocesses. Each test fails on the code before the journal-first rework."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.apply.executor import RetryPolicy
from remediation.apply.runner import ApplyOptions
from remediation.artefacts.audit_export import generate_key
from remediation.cli import main
from remediation.evidence.hashing import canonical_json
from remediation.evidence.journal import GENESIS, entry_hash, read_journal, verify_journal
from tests.simulation import api_writes, apply_command, planned_case, run_apply, run_resume, start_sim
from tests.support import REPO, key_env, signer

ENV = {**os.environ, **key_env("carol")}  # the operator's key signs each run record (issue 9)

QUICK = RetryPolicy(attempts=2, initial=0.01, max_wait=0.02)
# The client rate of a run a test interrupts part-way (33 devices/s at most): the run is still going, with a second or
# more of work left, when the test acts on what it saw in the journal.
INTERRUPTIBLE = 100.0


def journal_count(run_dir, to_state: str) -> int:
    path = run_dir / "journal.jsonl"
    return path.read_bytes().count(f'"to_state":"{to_state}"'.encode()) if path.exists() else 0


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def _ts(entry: dict) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


# ------------------------------------------------------------------------------------------------ safe interruption


def test_ctrl_c_stops_dispatching_journals_and_keeps_the_lock_until_the_process_ends(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=120, ok=0, rate=INTERRUPTIBLE)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=10ms")
    run_dir = tmp_path / "run"
    try:
        first = subprocess.Popen(
            apply_command(plan_dir, run_dir, sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: journal_count(run_dir, "done") >= 20)
        sim.set_faults("latency=4000ms,latency_sigma=0")  # the requests now in flight take 4 s to answer
        time.sleep(0.4)
        first.send_signal(signal.SIGINT)
        interrupted_at = time.time()
        refused = 0
        while first.poll() is None:  # an immediate resume, again and again while the first process lives
            # (--s1sp FOC: one that gets in after the first has ended has nothing to do, so the slow S1SP is not waited for)
            second = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "remediation",
                    "resume",
                    str(run_dir),
                    "--by",
                    "dave",
                    "--endpoint",
                    f"MOC={sim.url}",
                    "--s1sp",
                    "FOC",
                    "--trust-policy",
                    str(tmp_path / "people.toml"),
                ],
                cwd=REPO,
                env=ENV,
                capture_output=True,
                text=True,
            )
            if first.poll() is None:
                assert second.returncode == 3 and f"by pid {first.pid}" in second.stderr, second.stderr
                refused += 1
        out, err = first.communicate()
        took = time.time() - interrupted_at
        assert first.returncode == 1, err
        assert refused >= 1 and took < 15, (refused, took)
        assert f"remediation resume {run_dir}" in out and "SIGINT" in err
        entries = read_journal(run_dir / "journal.jsonl")
        ok, why = verify_journal(run_dir / "journal.jsonl")
        assert ok, why
        stop = next(e for e in entries if e["event"] == "run_interrupted")
        assert stop["signal"] == "SIGINT" and not [
            e for e in entries if e["seq"] > stop["seq"] and e["event"] == "transition"
        ]
        assert all(w["at"] <= _ts(stop) for w in sim.writes())  # no write landed after it
        assert len({e["seq"] for e in entries}) == len(entries)
        status = CliRunner().invoke(
            main, ["status", str(run_dir)]
        )  # interrupted, or incomplete if a --s1sp FOC resume got in after
        assert status.exit_code == 1 and f"next: remediation resume {run_dir}" in status.stdout
        sim.set_faults("")
        done = run_resume(run_dir, ApplyOptions(who="dave", endpoints={"MOC": sim.url}))
        assert done.status == "completed" and done.counts["MOC"]["done"] == 120
        assert max(Counter(d for d, _ in api_writes(tmp_path / "moc.sqlite")).values()) == 1
        assert verify_journal(run_dir / "journal.jsonl")[0]
    finally:
        sim.stop()


def test_second_ctrl_c_exits_at_once_and_resume_writes_each_device_once(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=60, ok=0, rate=INTERRUPTIBLE)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=10ms")
    run_dir = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            apply_command(plan_dir, run_dir, sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: journal_count(run_dir, "done") >= 10)
        sim.set_faults("latency=4000ms,latency_sigma=0")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130 and time.monotonic() - started < 2, err
        assert "exiting now" in err
        status = CliRunner().invoke(main, ["status", str(run_dir)])
        screen = " ".join(status.stdout.split())
        assert status.exit_code == 1 and "state: interrupted — the process ended without a finish record" in screen
        assert "stale lock record" in screen and f"next: remediation resume {run_dir}" in status.stdout
        sim.set_faults("")
        done = run_resume(run_dir, ApplyOptions(who="dave", endpoints={"MOC": sim.url}))
        assert done.status == "completed" and done.counts["MOC"]["done"] == 60
        assert max(Counter(d for d, _ in api_writes(tmp_path / "moc.sqlite")).values()) == 1
    finally:
        sim.stop()


def test_a_ctrl_c_during_start_up_is_not_lost_when_the_process_was_started_with_sigint_ignored(tmp_path):
    """A background job of a non-interactive shell starts with SIGINT ignored, and Python keeps it so: the old apply
    ignored a Ctrl-C (kill -INT) until its orderly-stop handler was installed, and then ran the whole plan, exit 0.
    The entry point now installs its own handler before the imports (remediation/interrupts.py)."""
    _, config, plan_dir = planned_case(tmp_path, wrong=40, ok=0, rate=INTERRUPTIBLE)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        proc = subprocess.Popen(
            apply_command(plan_dir, tmp_path / "run", sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        time.sleep(0.25)  # still importing (start-up to the first device takes over a second)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, err
        assert len(api_writes(tmp_path / "moc.sqlite")) < 40  # not the whole plan
    finally:
        sim.stop()


def test_a_ctrl_c_swallowed_during_start_up_still_stops_the_run_in_order(tmp_path):
    """A KeyboardInterrupt raised where Python swallows it (a `__del__` during the imports) left no trace, and the
    run went on to the end (seen once in the soak test under load). The early handler also records the signal, and
    the orderly-stop handler then starts stopped: nothing is written and the interruption is journaled."""
    from remediation import interrupts

    _, config, plan_dir = planned_case(tmp_path, wrong=10, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    interrupts.EARLY.set()  # what remediation.interrupts._early leaves behind when its KeyboardInterrupt is swallowed
    try:
        result = run_apply(plan_dir, tmp_path / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
        assert result.status == "interrupted" and api_writes(tmp_path / "moc.sqlite") == []
        events = [e["event"] for e in read_journal(tmp_path / "run" / "journal.jsonl")]
        assert "run_interrupted" in events and "run_finished" not in events
    finally:
        interrupts.EARLY.clear()
        sim.stop()


def test_sigterm_is_an_orderly_stop_too(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=60, ok=0, rate=INTERRUPTIBLE)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=10ms")
    run_dir = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            apply_command(plan_dir, run_dir, sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: journal_count(run_dir, "done") >= 10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        sim.stop()
    assert proc.returncode == 1 and f"remediation resume {run_dir}" in " ".join(out.split()), err
    entries = read_journal(run_dir / "journal.jsonl")
    assert entries[-1]["event"] == "run_interrupted" and entries[-1]["signal"] == "SIGTERM"
    assert all(w["at"] <= _ts(entries[-1]) for w in sim.writes())


# ------------------------------------------------------------------------------------------------ journal first


def _delete(db):
    db.unlink()


def _empty(db):
    os.truncate(db, 0)


def _garble(db):
    for path in (db, db.with_name(db.name + "-wal")):  # both: SQLite rebuilds pages from an intact WAL by itself
        path.write_bytes(b"this is not a database" * 100)


@pytest.mark.parametrize("damage", [_delete, _empty, _garble], ids=["deleted", "emptied", "corrupted"])
def test_checkpoint_index_damaged_mid_run_never_turns_a_written_device_into_noop(tmp_path, damage):
    _, config, plan_dir = planned_case(tmp_path, wrong=80, ok=0, rate=INTERRUPTIBLE)
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
        wait_for(lambda: journal_count(run_dir, "done") >= 15)
        damage(run_dir / "checkpoints.sqlite")
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if damage is _garble:
            damage(
                run_dir / "checkpoints.sqlite"
            )  # the live process's SQLite may have rewritten its pages over the garbage
        written = {d for d, _ in api_writes(tmp_path / "moc.sqlite")}
        assert written
        result = run_resume(run_dir, ApplyOptions(who="dave", endpoints={"MOC": sim.url}))
        assert result.status == "completed" and result.counts["MOC"]["done"] == 80 and result.counts["MOC"]["noop"] == 0
        rebuilt = [e for e in read_journal(run_dir / "journal.jsonl") if e["event"] == "checkpoints_rebuilt"]
        assert rebuilt and rebuilt[0]["written_devices"] >= len(written) - 4  # a few may be in flight when killed
        assert max(Counter(d for d, _ in api_writes(tmp_path / "moc.sqlite")).values()) == 1
        rollback = pipeline.run_rollback(run_dir, tmp_path / "rb", key=signer("alice"))
        assert len(rollback.rows) == 80  # rollback still lists every device the run wrote
    finally:
        sim.stop()


def test_journal_cut_while_the_run_writes_it_is_refused_then_and_after(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=50, ok=0, rate=INTERRUPTIBLE)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=15ms")
    run_dir = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            apply_command(plan_dir, run_dir, sim),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: journal_count(run_dir, "done") >= 10)
        os.truncate(run_dir / "journal.jsonl", 0)
        _, err = proc.communicate(timeout=60)
    finally:
        sim.stop()
    assert proc.returncode == 3 and "the journal was changed underneath this run" in err
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert "previous-entry hash does not match" in one_line_error(status, 3)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    _, config, plan_dir = planned_case(root, wrong=12, ok=3)
    sim = start_sim(root / "moc.sqlite", config)
    try:
        assert (
            run_apply(plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url})).status
            == "completed"
        )
    finally:
        sim.stop()
    generate_key(root / "audit.key", root / "audit.pub")
    return root, plan_dir


def _copy_run(finished, tmp_path):
    root, _ = finished
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run", root / "audit.key"


def _rechain(lines):
    out, prev = [], GENESIS
    for seq, line in enumerate(lines, start=1):
        entry = {**json.loads(line), "seq": seq, "prev": prev}
        out.append(canonical_json(entry))
        prev = entry_hash(entry)
    return out, prev


def _export(run_dir, key, tmp_path):
    """`audit export` signed with the operator's key from the trust policy (issue 9); `key` is kept for the old path."""
    return CliRunner(env=key_env("carol")).invoke(
        main, ["audit", "export", str(run_dir), "--out", str(tmp_path / "export")]
    )


def test_journal_head_is_recorded_in_run_json_and_with_the_index(finished):
    root, plan_dir = finished
    from remediation.evidence.journal import check_journal

    _, head = check_journal(root / "run" / "journal.jsonl")
    assert json.loads((root / "run" / "run.json").read_text())["journal_head"] == head
    with sqlite3.connect(root / "run" / "checkpoints.sqlite") as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    last_transition = [e for e in read_journal(root / "run" / "journal.jsonl") if e["event"] == "transition"][-1]
    assert int(meta["journal_seq"]) == last_transition["seq"] and meta["journal_hash"] != head["hash"]
    owner = json.loads((plan_dir / "active_run.json").read_text())
    assert owner["run_dir"] == str((root / "run").resolve()) and owner["status"] == "completed"


def test_one_device_removed_from_the_journal_and_rechained_is_refused(finished, tmp_path):
    run_dir, key = _copy_run(finished, tmp_path)
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines()
    victim = json.loads(next(line for line in lines if b'"transition"' in line))["device_id"]
    kept, _ = _rechain([line for line in lines if json.loads(line).get("device_id") != victim])
    (run_dir / "journal.jsonl").write_bytes(b"\n".join(kept) + b"\n")
    assert verify_journal(run_dir / "journal.jsonl")[0]  # the chain alone is fooled ...
    line = one_line_error(_export(run_dir, key, tmp_path), 3)  # ... the recorded head is not
    assert "journal" in line and ("rewritten" in line or "truncated" in line)


def test_rechained_journal_with_forged_heads_is_caught_by_the_finish_record_counts(finished, tmp_path):
    """The insider also rewrites run.json's head and the index's head: the run_finished counts still disagree."""
    run_dir, key = _copy_run(finished, tmp_path)
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines()
    victim = json.loads(next(line for line in lines if b'"transition"' in line))["device_id"]
    kept, head = _rechain([line for line in lines if json.loads(line).get("device_id") != victim])
    (run_dir / "journal.jsonl").write_bytes(b"\n".join(kept) + b"\n")
    run = json.loads((run_dir / "run.json").read_text())
    run["journal_head"] = {"seq": len(kept), "hash": head}
    (run_dir / "run.json").write_text(json.dumps(run))
    (run_dir / "checkpoints.sqlite").unlink()
    line = one_line_error(_export(run_dir, key, tmp_path), 3)
    assert "run_finished" in line and "counts" in line


def test_forged_done_to_noop_appended_to_the_journal_is_refused(finished, tmp_path):
    """An insider appends a well-chained transition turning a written device into noop, a run_finished with counts to
    match, and fixes run.json's head: the replay knows apply never moves a device it wrote to noop."""
    run_dir, key = _copy_run(finished, tmp_path)
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines()
    entries = [json.loads(line) for line in lines]
    done = next(e for e in entries if e["event"] == "transition" and e["to_state"] == "done")
    finish = dict(entries[-1])
    finish["counts"] = {"MOC": {**finish["counts"]["MOC"], "done": finish["counts"]["MOC"]["done"] - 1, "noop": 1}}
    forged = {k: done[k] for k in ("operation_id", "device_id", "s1sp")} | {
        "event": "transition",
        "from_state": "done",
        "to_state": "noop",
        "fields": {},
        "at": finish["at"],
    }
    rechained, head = _rechain([*lines, canonical_json(forged), canonical_json(finish)])
    (run_dir / "journal.jsonl").write_bytes(b"\n".join(rechained) + b"\n")
    run = json.loads((run_dir / "run.json").read_text())
    run["journal_head"] = {"seq": len(rechained), "hash": head}
    (run_dir / "run.json").write_text(json.dumps(run))
    (run_dir / "checkpoints.sqlite").unlink()
    line = one_line_error(_export(run_dir, key, tmp_path), 3)
    assert done["device_id"] in line and "cannot move from 'done' to 'noop'" in line


def test_journal_cut_short_is_refused(finished, tmp_path):
    run_dir, key = _copy_run(finished, tmp_path)
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines()
    (run_dir / "journal.jsonl").write_bytes(
        b"\n".join(lines[:-20]) + b"\n"
    )  # run_finished and the last transitions gone
    line = one_line_error(_export(run_dir, key, tmp_path), 3)
    assert "journal truncated" in line
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 3 and "journal truncated" in status.stderr


def test_outcome_edited_in_the_index_is_refused_by_export_and_undone_by_resume(finished, tmp_path):
    run_dir, key = _copy_run(finished, tmp_path)
    with sqlite3.connect(run_dir / "checkpoints.sqlite") as conn:
        device = conn.execute("SELECT device_id FROM ops WHERE state='done' ORDER BY seq LIMIT 1").fetchone()[0]
        conn.execute("UPDATE ops SET state='noop' WHERE device_id=?", (device,))
    line = one_line_error(_export(run_dir, key, tmp_path), 3)
    assert device in line and "'noop'" in line and "'done'" in line
    rollback = CliRunner(env=key_env("alice")).invoke(main, ["rollback", str(run_dir), "--out", str(tmp_path / "rb")])
    assert device in one_line_error(rollback, 3)
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 3 and "disagrees" in status.stdout
    run_resume(
        run_dir, ApplyOptions(who="dave", endpoints={"MOC": "http://127.0.0.1:9"})
    )  # nothing is open: no request is sent
    with sqlite3.connect(run_dir / "checkpoints.sqlite") as conn:
        assert conn.execute("SELECT state FROM ops WHERE device_id=?", (device,)).fetchone()[0] == "done"
    assert _export(run_dir, key, tmp_path).exit_code == 0


def test_run_json_counts_edited_do_not_reach_the_json_report(finished, tmp_path):
    """Attack review: run.json's status and counts (a cache, unsigned) were copied into report.json as they stood,
    so an edited run.json (one `done` made `noop`, status changed) reached the report beside the journal's figures."""
    run_dir, _ = _copy_run(finished, tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    honest = record["counts"]
    record["counts"] = {"MOC": {**honest["MOC"], "done": honest["MOC"]["done"] - 1, "noop": 1}}
    record["status"], record["paused"] = "doctored", {"MOC": "doctored"}
    (run_dir / "run.json").write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["run"]["status"] == "completed" and report["run"]["paused"] == {}
    assert {k: v for k, v in report["run"]["counts"]["MOC"].items() if v} == {
        k: v for k, v in honest["MOC"].items() if v
    }


def test_report_of_an_edited_plan_json_is_refused_in_one_line(tmp_path):
    """Attack review: `report` read plan.json without checking its seal, so a plan.json edited to valid JSON of the
    wrong shape (counts: 5) was a Python traceback, and an edited one of the right shape was rendered as planned."""
    _, _, plan_dir = planned_case(tmp_path, wrong=2, ok=0)
    document = json.loads((plan_dir / "plan.json").read_text())
    document["counts"] = 5
    (plan_dir / "plan.json").write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["report", str(plan_dir), "--format", "md", "--out", str(tmp_path / "r.md")])
    assert "altered after planning" in one_line_error(result, 3)


# ------------------------------------------------------------------------------------------------ replies


@pytest.mark.parametrize(
    ("lie", "reason"),
    [
        ("wrong_device=1.0", "reply names device 'FF-FF-FF-FF-FF-FF-FF-FF'"),
        ("bad_version=1.0", "version 'seven' is not an integer"),
        ("no_slots=1.0", "reply has no NO_DS slot"),
    ],
    ids=["wrong-device", "version-not-int", "no-slots"],
)
def test_a_reply_that_is_not_about_the_device_asked_for_is_a_protocol_error(tmp_path, lie, reason):
    _, config, plan_dir = planned_case(tmp_path, wrong=8, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults=lie)
    try:
        result = CliRunner(env=key_env("carol")).invoke(
            main,
            [
                "apply",
                str(plan_dir),
                "--run",
                str(tmp_path / "run"),
                "--endpoint",
                f"MOC={sim.url}",
                "--by",
                "carol",
                "--trust-policy",
                str(tmp_path / "people.toml"),
            ],
        )
    finally:
        sim.stop()
    assert result.exit_code == 1, result.output
    screen = " ".join(result.stdout.split())
    assert "protocol error" in screen and reason in screen  # in the pause message, on screen
    assert "failed devices by reason" in screen and f"MOC: 5 × protocol error: {reason}" in screen
    outcomes = pd.read_parquet(tmp_path / "run" / "outcomes.parquet")
    assert set(outcomes["state"]) - {"pending"} == {"failed"} and "noop" not in set(outcomes["state"])
    assert outcomes.loc[outcomes["state"] == "failed", "last_error"].str.contains(reason, regex=False).all()
    assert api_writes(tmp_path / "moc.sqlite") == [] and sim.store.counters().get("put", 0) == 0


def _serve_version(version) -> ThreadingHTTPServer:
    """A real HTTP S1SP on 127.0.0.1 whose every read answers for the device asked, with `version`, slots empty."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            device = self.path.split("/")[3]
            slots = {"NO_DS": {"cert": None}, "NO_KA": {"cert": None}}
            body = json.dumps({"device_id": device, "version": version, "slots": slots}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("ETag", f'"{version}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("version", [10**30, -1], ids=["beyond-64-bit", "negative"])
def test_a_version_the_index_cannot_hold_is_a_protocol_error_not_a_python_message(tmp_path, version):
    """An integer version outside 0..2**63-1 was believed: 10**30 paused the S1SP with SQLite's own message ("Python
    int too large to convert to SQLite INTEGER"); -1 was stored and the device reported drifted."""
    _, _, plan_dir = planned_case(tmp_path, wrong=3, ok=0)
    server = _serve_version(version)
    try:
        result = CliRunner(env=key_env("carol")).invoke(
            main,
            [
                "apply",
                str(plan_dir),
                "--run",
                str(tmp_path / "run"),
                "--endpoint",
                f"MOC=http://127.0.0.1:{server.server_address[1]}",
                "--by",
                "carol",
                "--trust-policy",
                str(tmp_path / "people.toml"),
            ],
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    screen = " ".join(result.stdout.split())
    assert "Python int" not in screen and "SQLite" not in screen
    assert f"protocol error: version '{str(version)[:20]}' is out of range" in screen
    outcomes = pd.read_parquet(tmp_path / "run" / "outcomes.parquet")
    assert set(outcomes["state"]) == {"failed"}
    assert outcomes["last_error"].str.contains("out of range", regex=False).all()


# ------------------------------------------------------------------------------------------------ one run per plan


def test_two_run_directories_for_one_plan_at_once_one_is_refused(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=60, ok=0, rate=40)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="latency=50ms")  # a run long enough that the two overlap
    try:
        procs = [
            subprocess.Popen(
                apply_command(plan_dir, tmp_path / name, sim),
                cwd=REPO,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("a", "b")
        ]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        sim.stop()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    refused = outs[[p.returncode for p in procs].index(3)][1]
    assert "one active run per plan" in refused or "belongs to run" in refused
    writes = api_writes(tmp_path / "moc.sqlite")
    assert len(writes) == 60 and max(Counter(d for d, _ in writes).values()) == 1


def test_second_run_directory_refused_while_the_first_is_incomplete_unless_superseded(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=10, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="error=1.0")
    try:
        first = run_apply(plan_dir, tmp_path / "a", ApplyOptions(who="carol", endpoints={"MOC": sim.url}, retry=QUICK))
        assert first.status == "paused"
        args = [
            "apply",
            str(plan_dir),
            "--run",
            str(tmp_path / "b"),
            "--endpoint",
            f"MOC={sim.url}",
            "--by",
            "dave",
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ]
        refused = CliRunner(env=key_env("carol")).invoke(main, args)
        assert "belongs to run" in one_line_error(refused, 3) and not (tmp_path / "b").exists()
        sim.set_faults("")
        taken = CliRunner(env=key_env("carol")).invoke(main, [*args, "--supersede"])
        assert taken.exit_code == 0, taken.output + taken.stderr
    finally:
        sim.stop()
    old = [e["event"] for e in read_journal(tmp_path / "a" / "journal.jsonl")]
    new = read_journal(tmp_path / "b" / "journal.jsonl")
    assert old[-1] == "run_superseded" and any(
        e["event"] == "supersedes" and e["run_dir"] == str(tmp_path / "a") for e in new
    )
    resumed = CliRunner(env=key_env("carol")).invoke(
        main,
        [
            "resume",
            str(tmp_path / "a"),
            "--endpoint",
            f"MOC={sim.url}",
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ],
    )
    assert "superseded" in one_line_error(resumed, 3)


# ------------------------------------------------------------------------------------------------ exit codes and status


def test_dry_run_with_unreadable_devices_exits_1_with_grouped_causes_and_run_with_dry_run_is_a_usage_error(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=6, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="error=1.0")
    try:
        dry = CliRunner().invoke(
            main,
            [
                "apply",
                str(plan_dir),
                "--dry-run",
                str(tmp_path / "dry"),
                "--endpoint",
                f"MOC={sim.url}",
                "--timeout",
                "1",
            ],
        )
        both = CliRunner(env=key_env("carol")).invoke(
            main,
            [
                "apply",
                str(plan_dir),
                "--dry-run",
                str(tmp_path / "dry2"),
                "--run",
                str(tmp_path / "run"),
                "--endpoint",
                f"MOC={sim.url}",
                "--trust-policy",
                str(tmp_path / "people.toml"),
            ],
        )
    finally:
        sim.stop()
    assert dry.exit_code == 1, dry.output
    screen = " ".join(dry.stdout.split())
    assert "6 device(s) could not be read" in screen and "MOC: " in screen and "HTTP 5" in screen
    assert both.exit_code == 2 and "exclude each other" in both.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "dry2").exists()


def test_dry_run_against_a_dead_s1sp_groups_the_causes_not_one_line_per_device(tmp_path):
    """Attack review: against S1SPs with nothing listening, every device printed its own cause line, because each
    message names its device; the grouping now reads past the device id."""
    import socket

    _, _, plan_dir = planned_case(tmp_path, wrong=6, ok=0)
    with socket.socket() as probe:  # a loopback port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dry = CliRunner().invoke(
        main, ["apply", str(plan_dir), "--dry-run", str(tmp_path / "dry"), "--endpoint", f"MOC=http://127.0.0.1:{port}"]
    )
    assert dry.exit_code == 1, dry.output
    lines = [line for line in dry.stdout.splitlines() if line.strip().startswith("MOC: ")]
    assert len(lines) == 1 and lines[0].strip().startswith("MOC: 6 ×"), dry.stdout


HOLD_LOCK = """
import sys, time
from pathlib import Path
from remediation.apply.lock import RunLock
RunLock(Path(sys.argv[1])).acquire("holder")
print("held", flush=True)
time.sleep(60)
"""


def test_status_says_running_paused_stale_and_completed_with_honest_exit_codes(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=10, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config, faults="error=1.0")
    run_dir = tmp_path / "run"
    try:
        run_apply(plan_dir, run_dir, ApplyOptions(who="carol", endpoints={"MOC": sim.url}, retry=QUICK))
        paused = CliRunner().invoke(main, ["status", str(run_dir)])
        assert paused.exit_code == 1 and "state: paused" in paused.stdout and "canary wave" in paused.stdout
        assert f"next: remediation resume {run_dir} --retry-failed" in paused.stdout
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            running = CliRunner().invoke(main, ["status", str(run_dir)])
            assert (
                running.exit_code == 1 and "state: running" in running.stdout and f"pid {holder.pid}" in running.stdout
            )
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        stale = CliRunner().invoke(main, ["status", str(run_dir)])  # the killed holder's record is still in run.lock
        assert (
            stale.exit_code == 1
            and "stale lock record" in " ".join(stale.stdout.split())
            and "state: paused" in stale.stdout
        )
        sim.set_faults("")
        run_resume(run_dir, ApplyOptions(who="carol", endpoints={"MOC": sim.url}, retry_failed=True))
        done = CliRunner().invoke(main, ["status", str(run_dir)])
        assert done.exit_code == 0 and "state: completed" in done.stdout and "journal verified" in done.stdout
    finally:
        sim.stop()


def test_a_lock_record_whose_pid_was_reused_is_stale_not_running(tmp_path):
    """Attack review: a killed apply leaves its record in run.lock; once its pid is given to another live process on
    this host, `status` said "running" (exit 1) for a completed run forever, and rollback refused it as "in
    progress". Nobody holds the flock, so the record is stale: the test names its own (live) pid in the record."""
    _, config, plan_dir = planned_case(tmp_path, wrong=3, ok=0)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    run_dir = tmp_path / "run"
    try:
        run_apply(plan_dir, run_dir, ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
    finally:
        sim.stop()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "who": "killed", "since": "2026-01-01T00:00:00+00:00"}
    (run_dir / "run.lock").write_text(json.dumps(record))
    status = CliRunner().invoke(main, ["status", str(run_dir)])
    screen = " ".join(status.stdout.split())
    assert status.exit_code == 0 and "state: completed" in screen and "state: running" not in screen, status.output
    rollback = CliRunner(env=key_env("alice")).invoke(main, ["rollback", str(run_dir), "--out", str(tmp_path / "rb")])
    assert rollback.exit_code == 0, rollback.output


# ------------------------------------------------------------------------------------------------ simulator fails closed


def test_simulator_refuses_to_start_open(tmp_path):
    """Real `remediation simulator serve` processes: each must exit 2 at once instead of serving (the old one served)."""
    _, config, _ = planned_case(tmp_path, wrong=1, ok=0)
    env = {k: v for k, v in os.environ.items() if k != "SIM_TOKEN_UNSET"}
    args = [
        sys.executable,
        "-m",
        "remediation",
        "simulator",
        "serve",
        "--config",
        str(config),
        "--s1sp",
        "MOC",
        "--db",
        str(tmp_path / "s.sqlite"),
    ]
    unset = subprocess.run(
        [*args, "--token-env", "SIM_TOKEN_UNSET"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert unset.returncode == 2 and "SIM_TOKEN_UNSET is not set" in unset.stderr
    (tmp_path / "ca.pem").write_text("x")
    plain = subprocess.run(
        [*args, "--client-ca", str(tmp_path / "ca.pem")], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert plain.returncode == 2 and "--client-ca needs --tls-cert" in plain.stderr


def test_simulator_refuses_a_bad_start_in_one_line(tmp_path):
    """Attack review: --tls-key without --tls-cert served plain HTTP; a garbage TLS certificate, a --db that is not a
    database and a port already taken were each a Python traceback (exit 1)."""
    _, config, _ = planned_case(tmp_path, wrong=1, ok=0)
    args = ["simulator", "serve", "--config", str(config), "--s1sp", "MOC"]
    (tmp_path / "junk.pem").write_text("not a PEM\n")
    (tmp_path / "junk.sqlite").write_text("not a database\n")
    key_only = subprocess.run(  # a real process: the old code served (and never returned)
        [
            sys.executable,
            "-m",
            "remediation",
            *args,
            "--db",
            str(tmp_path / "s.sqlite"),
            "--tls-key",
            str(tmp_path / "junk.pem"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert key_only.returncode == 2 and "--tls-key needs --tls-cert" in key_only.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            "--tls-cert": [
                *args,
                "--db",
                str(tmp_path / "s.sqlite"),
                "--tls-cert",
                str(tmp_path / "junk.pem"),
                "--tls-key",
                str(tmp_path / "junk.pem"),
            ],
            "not a simulator database": [*args, "--db", str(tmp_path / "junk.sqlite")],
            "Address already in use": [*args, "--db", str(tmp_path / "s.sqlite"), "--port", port],
        }
        for expected, argv in cases.items():
            result = CliRunner().invoke(main, argv)
            assert result.exit_code == 2 and "Traceback" not in result.output, result.output
            line = result.stderr.strip().splitlines()[-1]  # after "loaded N devices" when the database is new
            assert expected in line or expected == "--tls-cert" and "cannot load the TLS certificate" in line, line


def test_simulator_checks_the_token_before_reading_the_body(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=1, ok=0)
    sim = start_sim(tmp_path / "s.sqlite", config, token="s3cret")
    try:
        with socket.create_connection(("127.0.0.1", sim.server.server_address[1]), timeout=3) as conn:
            conn.sendall(
                b"PUT /v1/devices/00-1D-00-00-00-01-00-00/anchor-slots HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            )
            reply = conn.recv(200)  # a body of a megabyte was announced and never sent: the 401 must not wait for it
        assert reply.startswith(b"HTTP/1.1 401")
    finally:
        sim.stop()


def test_tls_simulator_serves_others_while_one_client_sits_idle(tmp_path):
    from remediation.apply.gateway import HttpGateway
    from tests.test_apply import _tls_material

    ca, (cert, key), client = _tls_material(tmp_path)
    _, config, plan_dir = planned_case(tmp_path, wrong=1, ok=0)
    sim = start_sim(tmp_path / "tls.sqlite", config, tls_cert=cert, tls_key=key, client_ca=ca)
    device = pd.read_parquet(plan_dir / "plan.parquet")["device_id"].iloc[0]
    idle = socket.create_connection(("127.0.0.1", sim.server.server_address[1]))  # connects, never says hello
    try:
        started = time.monotonic()
        gateway = HttpGateway(
            f"https://127.0.0.1:{sim.server.server_address[1]}", client_cert=client, ca_bundle=ca, timeout=3
        )
        assert gateway.read(device).version == 1 and time.monotonic() - started < 2
        gateway.close()
    finally:
        idle.close()
        sim.stop()


# ------------------------------------------------------------------------------------------------ malformed artefacts


def test_malformed_run_artefacts_are_one_line_errors(finished, tmp_path):
    root, plan_dir = finished
    run_dir, _ = _copy_run(finished, tmp_path)
    (run_dir / "checkpoints.sqlite").write_bytes(b"garbage" * 1000)
    corrupt = CliRunner().invoke(main, ["status", str(run_dir)])
    assert corrupt.exit_code == 3 and "corrupt" in corrupt.stdout and "Traceback" not in corrupt.output
    (run_dir / "run.json").write_text("{not json")
    assert "run.json" in one_line_error(CliRunner().invoke(main, ["status", str(run_dir)]), 2)
    (run_dir / "run.json").write_text("[1, 2]")
    assert "not a run record" in one_line_error(
        CliRunner(env=key_env("carol")).invoke(
            main, ["resume", str(run_dir), "--trust-policy", str(root / "people.toml")]
        ),
        2,
    )
    plan_copy = tmp_path / "plan"
    shutil.copytree(plan_dir, plan_copy)
    (plan_copy / "approvals.json").write_text("[]")
    apply_copy = ["apply", str(plan_copy), "--run", str(tmp_path / "r"), "--trust-policy", str(root / "people.toml")]
    assert "approvals.json" in one_line_error(CliRunner(env=key_env("carol")).invoke(main, apply_copy), 3)
    (plan_copy / "plan.json").write_text('"a string"')
    assert "not a JSON object" in one_line_error(CliRunner(env=key_env("carol")).invoke(main, apply_copy), 3)


def test_export_whose_outcomes_disagree_with_its_journal_does_not_verify(finished, tmp_path):
    """Even signed with the right key (a bug, or an insider holding it), outcomes the journal does not show are named."""
    import base64

    from remediation.artefacts.audit_export import _sign, load_private_key
    from remediation.evidence.hashing import sha256_file

    run_dir, key = _copy_run(finished, tmp_path)
    assert _export(run_dir, key, tmp_path).exit_code == 0
    export = tmp_path / "export"
    outcomes = pd.read_parquet(export / "outcomes.parquet")
    device = outcomes.loc[outcomes["final_state"] == "done", "device_id"].iloc[0]
    outcomes.loc[outcomes["device_id"] == device, "final_state"] = "noop"
    outcomes.to_parquet(export / "outcomes.parquet", index=False)
    summary = json.loads((export / "summary.json").read_text())
    summary["devices_by_final_state"] = {
        k: int(v) for k, v in outcomes["final_state"].value_counts().sort_index().items()
    }
    (export / "summary.json").write_text(json.dumps(summary))
    manifest = json.loads((export / "manifest.json").read_text())
    for f in manifest["files"]:
        f["sha256"] = sha256_file(export / f["name"])
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (export / "manifest.json").write_bytes(data)
    from tests.support import key_file

    (export / "manifest.sig").write_text(base64.b64encode(_sign(load_private_key(key_file("carol")), data)).decode())
    result = CliRunner().invoke(
        main, ["audit", "verify", str(export), "--expect-policy-sha256", sha256_file(finished[0] / "people.toml")]
    )
    line = one_line_error(result, 3)
    assert device in line and "'noop'" in line and "journal entries say 'done'" in line
