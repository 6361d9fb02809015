"""What a run directory's state is, from its journal: the one answer `status`, the exit code and the reports share.

`run_state(run_dir)` verifies the journal (chain, recorded heads, replay) before saying anything, takes the counts
from the journal's replay (not from the index, which may be missing or behind), tells a live lock holder from a
stale record by the holder's pid on the same host, and names the exact command that continues the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from remediation.apply.checkpoint import AT_TARGET_ON_RESUME, DRIFTED, FAILED, FINAL_STATES
from remediation.apply.index import IndexCheck, check_index, run_policy
from remediation.apply.lock import RunLock, holder_alive, read_holder
from remediation.artefacts.plan_dir import load_plan
from remediation.artefacts.run_dir import RunDir, read_run
from remediation.errors import SafetyRefusal

STATES = ("new", "running", "paused", "interrupted", "incomplete", "needs_attention", "completed", "superseded")


@dataclass(frozen=True)
class RunState:
    run_dir: Path
    state: str  # one of STATES
    cause: str | None  # why it is not completed (pause reasons, the signal, a killed process, failed devices)
    next_command: str | None  # the exact command that continues it, when one does
    counts: dict[str, dict[str, int]]  # S1SP -> state -> devices, from the journal
    paused: dict[str, str] = field(default_factory=dict)
    lock: dict | None = None  # the lock record, when there is one
    lock_live: bool | None = None  # True live holder, False stale record (holder gone), None cannot tell (other host)
    index: IndexCheck | None = None
    journal_head: dict | None = None

    @property
    def failed(self) -> int:
        return sum(c.get(FAILED, 0) for c in self.counts.values())

    @property
    def drifted(self) -> int:
        return sum(c.get(DRIFTED, 0) for c in self.counts.values())

    @property
    def at_target_on_resume(self) -> int:
        """Devices found at target on a resume with no write of this run on record: possibly written by it."""
        return sum(c.get(AT_TARGET_ON_RESUME, 0) for c in self.counts.values())

    @property
    def open(self) -> int:
        return sum(v for c in self.counts.values() for k, v in c.items() if k not in FINAL_STATES)

    @property
    def exit_code(self) -> int:
        """0 only for a completed run with no failed or drifted device; 1 for anything that needs someone; 3 when the
        checkpoint index is missing, unreadable or contradicts the journal (the evidence needs looking at)."""
        if self.index is not None and self.index.verdict in ("missing", "empty", "corrupt", "disagrees"):
            return 3
        return 0 if self.state == "completed" and not self.failed and not self.drifted else 1


def run_state(run_dir: str | Path) -> RunState:
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    plan = load_plan(run.plan_dir)
    if plan.plan_hash != run.plan_hash:
        raise SafetyRefusal(
            f"run {run_dir} records plan {run.plan_hash[:12]}…, but {run.plan_dir} now holds plan {plan.plan_hash[:12]}…"
        )
    lock = read_holder(run_dir / RunLock.NAME) or None
    live = holder_alive(lock, run_dir / RunLock.NAME) if lock else False
    resume = f"remediation resume {run_dir}"
    journal = RunDir(run_dir).journal
    if not journal.exists() or journal.stat().st_size == 0:
        if run.journal_seq:
            raise SafetyRefusal(
                f"{journal}: the journal is missing or empty, but run.json records {run.journal_seq} entries"
            )
        return RunState(run_dir, "running" if live else "new", None, None if live else resume, {}, {}, lock, live)
    result, index = check_index(run_dir, plan.rows, run.journal_head, run_policy(plan), run)
    counts = result.counts()
    failed = sum(c.get(FAILED, 0) for c in counts.values())
    last = result.last_run_event or {}
    event = last.get("event")
    paused = dict(last.get("paused") or {}) if event in ("run_finished", "run_interrupted") else {}
    retry = f"{resume} --retry-failed" if failed else resume
    if live or (live is None and event in ("run_started", "run_resumed")):
        state, cause, command = (
            "running",
            f"pid {lock.get('pid')} on {lock.get('host')} ({lock.get('who')}) since {lock.get('since')}",
            None,
        )
    elif run.status == "superseded" or event == "run_superseded":
        state, cause, command = "superseded", f"superseded by {run.superseded_by or last.get('by_run')}", None
    elif event == "run_interrupted":
        state, cause, command = (
            "interrupted",
            f"stopped by {last.get('signal') or 'an interrupt'} at {last.get('at')}",
            resume,
        )
    elif event in ("run_started", "run_resumed"):
        why = "the process ended without a finish record (killed or crashed)"
        if lock:
            why += f"; stale lock record of pid {lock.get('pid')} on {lock.get('host')} (not running): the next resume takes over"
        state, cause, command = "interrupted", why, resume
    else:
        status = last.get("status", "incomplete")
        state = status if status in STATES else "incomplete"
        if state == "paused":
            cause = "; ".join(f"{s}: {r}" for s, r in sorted(paused.items()))
            command = retry
        elif state == "incomplete":
            cause, command = "devices were left open (an S1SP filter, or an S1SP that stopped with an error)", resume
        elif state == "needs_attention":
            drifted = sum(c.get(DRIFTED, 0) for c in counts.values())
            cause = ", ".join(
                p
                for p in (
                    f"{failed} failed" if failed else "",
                    f"{drifted} drifted (re-plan them: runbook 5)" if drifted else "",
                )
                if p
            )
            command = retry if failed else None
        else:
            cause, command = None, None
    return RunState(run_dir, state, cause, command, counts, paused, lock, live, index, result.head)
