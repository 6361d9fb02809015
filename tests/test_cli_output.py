"""The operator CLI's output modes (issue 13): --json, -q/-v, progress per stage and per device, shell completion.

In-process with click's CliRunner against a real planned, applied, exported case (simulator on 127.0.0.1).
"""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from rich.console import Console

from remediation import pipeline
from remediation.apply.pacing import WavePolicy
from remediation.apply.runner import ApplyOptions
from remediation.cli import main
from remediation.report import cli_json
from remediation.report.progress_bars import DeviceBars, StageBar
from tests.simulation import planned_case, run_apply, start_sim
from tests.support import REPO, key_env, signer

README = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Planned (8 WRONG_NO, 3 OK), one device drifted underneath, applied, exported fresh and audit-exported."""
    from remediation.simulator.service import export_extract, make_drift

    root = tmp_path_factory.mktemp("cli-output")
    _, config, plan_dir = planned_case(root, wrong=8, ok=3)
    sim = start_sim(root / "moc.sqlite", config)
    try:
        drifted = pd.read_parquet(plan_dir / "plan.parquet")["device_id"].iloc[0]
        make_drift(sim.store, [drifted], 0, 0)
        result = run_apply(plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
        assert result.status == "needs_attention"
        export_extract(sim.store, root / "fresh" / "moc.csv")
    finally:
        sim.stop()
    pipeline.run_audit_export(root / "run", root / "export", None, "erin", key=signer("erin"))
    return {"root": root, "config": config, "plan": plan_dir, "run": root / "run", "url": sim.url}


def invoke(args: list[str], env: dict | None = None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def parse(result) -> dict:
    """stdout is exactly one JSON object (json.loads refuses anything before or after it)."""
    document = json.loads(result.stdout)
    assert set(document) == {"schema", "command", "tool_version", "exit_code", "result", "error"}
    assert document["schema"] == cli_json.SCHEMA and document["exit_code"] == result.exit_code
    return document


def documented(command: str, keys) -> None:
    """Every result key is named in the README's --json table row for the command and in the command's --help."""
    row = next(line for line in README.splitlines() if line.startswith(f"| `{command}` |"))
    help_text = invoke([*command.split(), "--help"]).stdout
    for key in keys:
        assert f"`{key}`" in row, (command, key)
        assert key in " ".join(help_text.split()), (command, key)


# ------------------------------------------------------------------------------------------------ --json


def test_detect_json_is_summary_json(world, tmp_path):
    result = invoke(["detect", "--config", world["config"], "--out", tmp_path / "d", "--json"])
    assert result.exit_code == 0, result.output
    doc = parse(result)
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    got = doc["result"]
    assert doc["command"] == "detect" and doc["error"] is None
    assert got["summary"] == summary
    assert got["devices"] == summary["devices"] == 11 == sum(got["devices_by_category"].values())
    assert got["devices_by_category"]["WRONG_NO"] == 8 and got["rows_read"] == summary["rows_read"]
    assert str((tmp_path / "d" / "findings.parquet").resolve()) in got["files"]
    assert result.stderr == ""  # not a terminal: no progress; nothing else anywhere
    documented("detect", got)


def test_plan_json_is_plan_json(world, tmp_path):
    result = invoke(["plan", "--config", world["config"], "--out", tmp_path / "p", "--json"], key_env("alice"))
    assert result.exit_code == 0, result.output
    got = parse(result)["result"]
    assert got["plan"] == json.loads((tmp_path / "p" / "plan.json").read_text())
    assert got["devices"] == len(pd.read_parquet(tmp_path / "p" / "plan.parquet")) == 8
    assert got["signed"] is True and got["key_id"] == got["plan"]["signature"]["key_id"]
    assert got["plan_hash"] == got["plan"]["plan_hash"] and got["next_command"].startswith("remediation approve ")
    documented("plan", got)


def test_status_json_counts_are_the_journal_s(world):
    result = invoke(["status", world["run"], "--json"])
    doc = parse(result)
    assert result.exit_code == 1  # a drifted device needs someone: the exit code is unchanged by --json
    got = doc["result"]
    state = pipeline.run_status(world["run"])
    outcomes = pd.read_parquet(world["run"] / "outcomes.parquet")["state"].value_counts().to_dict()
    assert got["state"] == state.state == "needs_attention"
    assert got["counts"] == state.counts and {k: v for k, v in got["totals"].items() if v} == outcomes
    assert got["drifted"] == 1 and got["failed"] == 0 and got["open"] == 0
    assert got["journal_head"]["seq"] == state.journal_head["seq"] and got["index"]["verdict"] == "ok"
    documented("status", got)


def test_verify_json_is_verify_json(world, tmp_path):
    result = invoke(
        [
            "verify",
            "--config",
            world["config"],
            "--fresh",
            world["root"] / "fresh",
            "--plan",
            world["plan"],
            "--out",
            tmp_path / "v",
            "--json",
        ]
    )
    got = parse(result)["result"]
    assert result.exit_code == 1  # the drifted device is residual
    verdict = json.loads((tmp_path / "v" / "verify.json").read_text())
    assert got["verify"] == verdict
    assert got["residual_wrong"] == verdict["residual_wrong"] == 1
    assert (got["planned"], got["planned_at_target"]) == (8, 7)
    documented("verify", got)


def test_audit_verify_json_is_the_manifest(world):
    sha = __import__("hashlib").sha256((world["root"] / "people.toml").read_bytes()).hexdigest()
    result = invoke(["audit", "verify", world["root"] / "export", "--expect-policy-sha256", sha, "--json"])
    assert result.exit_code == 0, result.output
    doc = parse(result)
    got = doc["result"]
    manifest = json.loads((world["root"] / "export" / "manifest.json").read_text())
    assert doc["command"] == "audit verify" and got["manifest"] == manifest
    assert got["verified"] is True and got["files_verified"] == len(manifest["files"])
    assert got["trust_policy_sha256"] == sha and got["signed_by"] == manifest["signed_by"]
    documented("audit verify", got)


def test_json_errors_keep_the_exit_code_and_are_one_object(world, tmp_path):
    # An input error (exit 2): the error object on stdout, the usual one line on stderr.
    result = invoke(["detect", "--config", tmp_path / "missing.toml", "--out", tmp_path / "d", "--json"])
    doc = parse(result)
    assert result.exit_code == 2 and doc["result"] is None
    assert doc["error"]["exit_code"] == 2 and "missing.toml" in doc["error"]["message"]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("remediation: error: ")
    # A refusal (exit 3): an altered export.
    export = tmp_path / "export"
    shutil.copytree(world["root"] / "export", export)
    (export / "plan.json").write_text((export / "plan.json").read_text() + " ")
    sha = __import__("hashlib").sha256((world["root"] / "people.toml").read_bytes()).hexdigest()
    result = invoke(["audit", "verify", export, "--expect-policy-sha256", sha, "--json"])
    doc = parse(result)
    assert result.exit_code == 3 and doc["error"]["type"] == "AuditFailure" and "plan.json" in doc["error"]["message"]
    # A usage error click finds while parsing (exit 2), reported as JSON too because --json is eager.
    result = invoke(["verify", "--config", world["config"], "--json"])
    doc = parse(result)
    assert result.exit_code == 2 and doc["command"] == "verify" and "--fresh" in doc["error"]["message"]
    assert "Usage:" in result.stderr


# ------------------------------------------------------------------------------------------------ -q / -v


def test_quiet_prints_only_the_one_line_result(world, tmp_path):
    for args in (["-q", "detect"], ["detect", "--quiet"]):
        out = tmp_path / "-".join(args)
        result = invoke([*args, "--config", world["config"], "--out", out])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert result.stdout == (
            f"detect: {summary['devices']} devices, 8 WRONG_NO, 0 SECURITY_HOLD, "
            f"{summary['no_locked_out']['devices']} no NO can manage; wrote {out}\n"
        )
        assert result.stderr == ""
    result = invoke(["-q", "status", world["run"]])
    assert result.exit_code == 1 and result.stdout.count("\n") == 1
    assert result.stdout.startswith(f"run {world['run']}: needs_attention") and "drifted 1" in result.stdout
    # an error is still printed (and only it)
    result = invoke(["-q", "status", tmp_path])
    assert result.exit_code != 0 and result.stdout == "" and result.stderr.startswith("remediation: error: ")
    assert invoke(["-q", "-v", "status", world["run"]]).exit_code == 2


def test_verbose_adds_stage_timings_and_written_paths(world, tmp_path):
    result = invoke(["detect", "-v", "--config", world["config"], "--out", tmp_path / "d"])
    assert result.exit_code == 0, result.output
    assert "Devices by category and S1SP" in result.stdout  # the normal output is all there
    for stage in ("reading extracts", "reading RDP", "classifying: matching RDP registrations", "writing findings"):
        assert f"stage {stage}" in result.stderr, result.stderr
    assert " s, " in result.stderr  # timings with amounts
    assert f"wrote {(tmp_path / 'd' / 'summary.json').resolve()}" in result.stderr


def test_quiet_dry_run_and_verbose_apply_with_retries(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=6, ok=1)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        endpoint = ["--endpoint", f"MOC={sim.url}"]
        result = invoke(["-q", "apply", plan_dir, "--dry-run", tmp_path / "dry", *endpoint])
        assert result.exit_code == 0, result.output
        assert result.stdout == f"dry run: would_write 6; wrote {tmp_path / 'dry'}\n" and result.stderr == ""
        sim.set_faults("throttle=0.3,seed=3")
        args = ["apply", plan_dir, *endpoint, "--trust-policy", tmp_path / "people.toml", "--run", tmp_path / "run"]
        result = invoke(["-v", *args], key_env("carol"))
        assert result.exit_code == 0, result.output
        assert "remediation.apply retry 1 in" in result.stderr and "HTTP 429" in result.stderr
        assert "apply MOC: 6 of 6 devices in" in result.stderr
        assert f"wrote {(tmp_path / 'run' / 'journal.jsonl').resolve()}" in result.stderr
        assert "Run " in result.stdout and "completed" in result.stdout
    finally:
        sim.stop()


# ------------------------------------------------------------------------------------------------ progress


def _terminal() -> Console:
    return Console(file=StringIO(), force_terminal=True, record=True, width=160)


def _rendered(progress) -> str:
    console = Console(file=StringIO(), width=160, record=True)
    console.print(progress.get_renderable())
    return console.export_text()


def test_detect_progress_names_each_stage_and_reaches_its_totals(world, tmp_path):
    console = _terminal()
    with StageBar(console, verbose=True) as bar:
        pipeline.run_detect(world["config"], tmp_path / "d", progress=bar)
    names = [s["name"] for s in bar.stages]
    assert names == [
        "loading PKI, ORL and NO registry",
        "reading RDP",
        "reading extracts, parsing certificates",
        "classifying: forming devices, collapsing duplicates",
        "classifying: matching RDP registrations",
        "classifying: judging slot certificates",
        "classifying: causes, lock-outs and details",
        "summarising and reconciling counts",
        "writing findings and summary",
    ]
    sized = [s for s in bar.stages if s["total"] is not None]
    assert [s["unit"] for s in sized] == ["bytes", "bytes"]
    extracts = sum(p.stat().st_size for p in Path(world["root"]).glob("*.csv") if p.name != "rdp.csv")
    assert sized[0]["total"] == (world["root"] / "rdp.csv").stat().st_size and sized[1]["total"] == extracts
    assert all(s["completed"] == s["total"] for s in sized)
    text = console.export_text()
    assert all(name in text for name in names)


def test_stage_bar_shows_amounts_detail_and_eta_while_running():
    bar = StageBar(_terminal())
    with bar:
        bar.stage("reading extracts, parsing certificates", 4_000_000, "bytes")
        bar.advance(1_000_000, "moc.csv: 10,000 rows")
        bar.advance(1_000_000, "moc.csv: 20,000 rows")
        text = _rendered(bar.progress)
    assert "reading extracts" in text and "2.0 MB/4.0 MB" in text and "moc.csv: 20,000 rows" in text
    assert "ETA " in text


def test_dry_run_and_apply_progress_move_per_device_with_rate_and_eta(tmp_path):
    _, config, plan_dir = planned_case(tmp_path, wrong=30, ok=2)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        for label in ("dry run", "apply"):
            bars = DeviceBars(_terminal(), label)
            calls, midway = [], []

            def hook(s1sp, done, total, bars=bars, calls=calls, midway=midway):
                bars(s1sp, done, total)
                calls.append(done)
                if done == total // 2:
                    midway.append(_rendered(bars.progress))

            options = ApplyOptions(who="carol", endpoints={"MOC": sim.url}, waves=WavePolicy(canary=5, max_wave=20))
            with bars:
                if label == "dry run":
                    pipeline.run_dry_run(plan_dir, tmp_path / "dry", options, hook)
                else:
                    run_apply(plan_dir, tmp_path / "run", options, progress=hook)
            assert calls == list(range(31)), calls  # one call per device (waves of 5, 20, 5 would give 4 calls)
            assert bars.counts == {"MOC": [30, 30]}
            assert f"{label} MOC" in midway[0] and "15/30" in midway[0] and "devices/s" in midway[0]
            assert "ETA " in midway[0]
    finally:
        sim.stop()


def test_progress_is_off_when_not_a_terminal_or_quiet_or_json():
    from remediation.cli import Output

    tty, plain = _terminal(), Console(file=StringIO(), force_terminal=False)
    assert Output(_err=tty).progress_shown and Output(_err=tty).stages().progress is not None
    assert Output(_err=tty).devices("apply").progress is not None
    for output in (Output(_err=plain), Output(quiet=True, _err=tty), Output(json=True, _err=tty)):
        assert not output.progress_shown
        assert output.stages().progress is None and output.devices("apply").progress is None
    bars = DeviceBars(plain, show=False)
    with bars:
        bars("MOC", 0, 2)
        bars("MOC", 2, 2)
    assert bars.counts == {"MOC": [2, 2]} and plain.file.getvalue() == ""


# ------------------------------------------------------------------------------------------------ completion


def test_shell_completion_scripts_and_completions():
    runner = CliRunner()
    script = runner.invoke(main, [], prog_name="remediation", env={"_REMEDIATION_COMPLETE": "bash_source"})
    assert script.exit_code == 0 and "_remediation_completion()" in script.stdout
    assert "complete -o nosort -F _remediation_completion remediation" in script.stdout
    zsh = runner.invoke(main, [], prog_name="remediation", env={"_REMEDIATION_COMPLETE": "zsh_source"})
    assert "#compdef remediation" in zsh.stdout
    words = runner.invoke(
        main,
        [],
        prog_name="remediation",
        env={"_REMEDIATION_COMPLETE": "bash_complete", "COMP_WORDS": "remediation de", "COMP_CWORD": "1"},
    )
    assert words.stdout.split() == ["plain,detect"]
    for shell in ("bash_source", "zsh_source", "fish_source"):
        assert f"_REMEDIATION_COMPLETE={shell}" in README
