"""Where outcomes learn what a directory is and what a run did: one module, so switching to the run-integrity
branch's single run-state function is a change here only.

A run's state comes from run.json, the journal's run events (who started, resumed and finished it, when, and why
it paused) and the checkpointed per-device outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from remediation.artefacts.plan_dir import PLAN_JSON, PlanDir, load_plan
from remediation.artefacts.run_dir import DRY_RUN_JSON, RUN_JSON, RunDir, read_run
from remediation.errors import InputError
from remediation.outputs import read_json_object

FINAL = ("done", "noop", "at_target_on_resume", "drifted", "failed")
# At target after the run: written by it, found already there, or found there on resume (possibly written by it).
CORRECTED = ("done", "noop", "at_target_on_resume")


@dataclass
class Sources:
    """A plan, run or dry-run directory and the plan directory behind it."""

    directory: Path
    kind: str  # "plan" | "run" | "dry-run"
    plan_dir: Path
    plan: dict
    run: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> Path | None:
        return self.directory if self.kind == "run" else None


def _json(path: Path) -> dict:
    return read_json_object(path, "plan, run or dry-run")


def resolve(directory: str | Path) -> Sources:
    """Identify a plan, run or dry-run directory; an input error (exit 2) names what is missing."""
    directory = Path(directory)
    run_dir = RunDir(directory)
    if run_dir.is_run():
        run = _json(run_dir.record_path)
        plan = PlanDir(Path(run.get("plan_dir", "")))
        if not plan.exists():
            raise InputError(f"the run's plan directory {plan.directory} is missing", file=str(run_dir.record_path))
        return Sources(directory, "run", plan.directory, _json(plan.document_path), run)
    if run_dir.dry_run_record.exists():
        dry = _json(run_dir.dry_run_record)
        plan = PlanDir(Path(dry.get("plan_dir", "")))
        if not dry.get("plan_dir") or not plan.exists():
            raise InputError(
                "dry run does not name an existing plan directory (made by an older version?)",
                file=str(run_dir.dry_run_record),
            )
        return Sources(directory, "dry-run", plan.directory, _json(plan.document_path), extra={"dry_run": dry})
    if PlanDir(directory).exists():
        return Sources(directory, "plan", directory, _json(PlanDir(directory).document_path))
    raise InputError(
        f"not a plan, run or dry-run directory (no {PLAN_JSON}, {RUN_JSON} or {DRY_RUN_JSON})", file=str(directory)
    )


def device_outcomes(run_dir: Path) -> pd.DataFrame:
    """Per planned device of a run: state, attempts, prior and final fingerprints, last error and when it reached
    its state (UTC ISO text). Empty (with the columns) when apply never started.

    Taken from the journal's replay, never from the checkpoint index: the journal is the record, verified (chain,
    recorded heads, signed counts) before anything is believed; an index that was edited to disagree with it makes
    this refuse (exit 3) rather than hand an NO a pack built on a doctored outcome."""
    from remediation.apply.index import run_policy, verified_ops

    columns = [
        "operation_id",
        "device_id",
        "s1sp",
        "state",
        "attempts",
        "prior_ds_fp",
        "prior_ka_fp",
        "final_ds_fp",
        "final_ka_fp",
        "expected_ds_fingerprint",
        "expected_ka_fingerprint",
        "target_ds_fingerprint",
        "target_ka_fingerprint",
        "last_error",
        "updated_at",
    ]
    run_dir = Path(run_dir)
    journal = RunDir(run_dir).journal
    run = read_run(run_dir)
    if not journal.exists() or journal.stat().st_size == 0:
        if run.journal_seq:
            from remediation.errors import SafetyRefusal

            raise SafetyRefusal(
                f"{journal}: the journal is missing or empty, but run.json records {run.journal_seq} entries"
            )
        return pd.DataFrame(columns=[*columns, "at"])
    plan = load_plan(run.plan_dir)
    ops = verified_ops(
        run_dir, plan.rows, run.journal_head, "report the run's outcomes", policy=run_policy(plan), run=run
    ).frame()
    ops = ops.reindex(columns=columns)
    ops["at"] = pd.to_datetime(ops["updated_at"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ops.reset_index(drop=True)


def _run_events(journal: Path) -> list[dict]:
    """The journal's run-level events, skipping per-device transitions before parsing (millions nationally)."""
    if not journal.exists():
        return []
    events = []
    with open(journal, "rb") as fh:
        for line in fh:
            if b'"event":"transition"' in line or not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def _parse(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(ts) if ts else None
    except ValueError:
        return None


def run_state(run_dir: Path) -> dict:
    """status (completed / paused / needs_attention / incomplete / interrupted / new), pause reasons per S1SP,
    who applied it and when it started and last finished, with the actual duration."""
    from remediation.apply.state import run_state as journal_state

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    verified = journal_state(run_dir)  # the journal's verdict (chain, heads, replay): what status says too
    events = _run_events(RunDir(run_dir).journal)
    started = next((e for e in events if e.get("event") == "run_started"), None)
    finished = [e for e in events if e.get("event") == "run_finished"]
    status = verified.state
    operators = []
    for e in events:
        if e.get("event") not in ("run_started", "run_resumed"):
            continue
        # A signed run names its operator by key (the authority block); an unsigned one by the typed --by label.
        operator = (e.get("authority") or {}).get("operator") or {}
        who = (
            f"{operator.get('name') or e.get('run_by')} (key {operator['key_id']})"
            if operator.get("key_id")
            else e.get("run_by")
        )
        if who and who not in operators:
            operators.append(who)
    start = _parse(started.get("at")) if started else None
    end = _parse(finished[-1].get("at")) if finished else None
    return {
        "status": status,
        "paused": dict(verified.paused),
        "cause": verified.cause,
        "next_command": verified.next_command,
        "applied_by": operators or ([run.created_by] if run.created_by else []),
        "started_at": start.astimezone(UTC).isoformat(timespec="seconds") if start else None,
        "finished_at": end.astimezone(UTC).isoformat(timespec="seconds") if end and status != "interrupted" else None,
        "duration_seconds": (end - start).total_seconds() if start and end and status != "interrupted" else None,
        "invocations": sum(1 for e in events if e.get("event") in ("run_started", "run_resumed")),
        "counts": verified.counts,
    }
