"""The journal is the record; the checkpoint database is an index of it. This module replays a run's journal over its
plan, checks the journal against the heads recorded in run.json and in the index, and says whether the index agrees.

Why: an index that was deleted, emptied, corrupted or edited must never turn a device this run wrote into `noop`
(a fresh seed would re-read it at target and call it untouched), and an export must never sign outcomes the
journal does not show. So every consumer (status, resume, rollback, audit export) starts from `verify_run`:

- the chain verifies (`check_journal`), and run.json's recorded head (seq, hash) is an entry of it: a journal cut
  short or re-chained after the head was recorded is refused (exit 3) naming the entry;
- the replay is consistent: every transition names a planned operation and starts from the state the op was in,
  and each run_finished / run_interrupted record's counts equal the replay's at that point (a device's entries
  deleted and the rest re-chained shows up here);
- the index is compared with the replay: `ok`, or `missing` / `empty` / `corrupt` / `behind` (an accident: resume
  rebuilds it from the journal, never from a fresh read of the S1SPs), or `disagrees` (an edit: resume rebuilds it,
  rollback and export refuse naming the device), or `ahead` (the index has seen entries the journal lost: refused).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from remediation.apply.checkpoint import (
    AT_TARGET_ON_RESUME,
    CONFIRMING,
    DONE,
    DRIFTED,
    FAILED,
    NOOP,
    OP_FIELDS,
    PENDING,
    READING,
    WRITING,
    Operation,
    counts_of,
    ops_frame,
    seed_ops,
    write_index,
)
from remediation.artefacts.run_dir import CHECKPOINTS, RUN_JSON, RunDir, RunRecord
from remediation.evidence.journal import JournalBroken, check_journal

COMPARED = ("state", *OP_FIELDS)  # what an index row must agree with the journal on
# The executor's state machine: any other move in a journal was not made by apply (done, noop and drifted are final;
# only --retry-failed reopens a failed device; `noop` is reached only from a first read, never after a write, and
# never once the run has been resumed: there a device found at target is `at_target_on_resume`).
ALLOWED = {
    PENDING: {READING},
    READING: {DONE, NOOP, AT_TARGET_ON_RESUME, DRIFTED, WRITING, FAILED},
    WRITING: {WRITING, CONFIRMING, DONE, DRIFTED, FAILED},
    CONFIRMING: {DONE, DRIFTED, WRITING, FAILED},
    FAILED: {PENDING},
}
RUN_END_EVENTS = ("run_finished", "run_interrupted")


class IndexInconsistent(JournalBroken):
    """The checkpoint index contradicts the journal (exit 3)."""


@dataclass
class Replay:
    ops: dict[str, Operation]
    head: dict
    entries: int
    transitions: list[tuple] = field(default_factory=list)  # rows for the index's transitions table
    last_run_event: dict | None = None
    resumed: bool = False  # a run_resumed record has been replayed: from there on nothing becomes `noop`
    snapshot: dict[str, tuple] | None = None  # compared fields of every op at the index's head, when asked for

    def counts(self) -> dict[str, dict[str, int]]:
        return counts_of(self.ops.values())

    def frame(self) -> pd.DataFrame:
        return ops_frame([o.record() for o in sorted(self.ops.values(), key=lambda o: o.seq)])

    def written(self) -> set[str]:
        """Operation ids this run sent a write for (attempts counts PUTs): these can never be `noop`."""
        return {k for k, o in self.ops.items() if o.attempts}


def _at(entry: dict) -> float | None:
    try:
        return datetime.fromisoformat(entry["at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def replay(
    path: Path, plan_rows: pd.DataFrame, snapshot_at: int | None = None, checked: tuple[list[dict], dict] | None = None
) -> Replay:
    """Plan + journal -> every op's state. JournalBroken naming the entry when the journal contradicts itself.
    `checked`: the journal's (entries, head) when the caller has verified it already (national runs: ~36 µs an entry)."""
    entries, head = checked or check_journal(path)
    ops = seed_ops(plan_rows)
    result = Replay(ops, head, len(entries))
    for entry in entries:
        try:
            _replay_entry(path, entry, ops, result)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise JournalBroken(
                f"{path}: journal entry {entry.get('seq')} ({entry.get('event')}) is malformed ({type(exc).__name__}: {exc})"
            ) from None
        if snapshot_at is not None and entry.get("seq") == snapshot_at:
            result.snapshot = {k: _compared(o) for k, o in ops.items()}
    if snapshot_at == 0:
        result.snapshot = {k: _compared(o) for k, o in seed_ops(plan_rows).items()}
    return result


def _compared(op: Operation) -> tuple:
    return tuple(getattr(op, c) for c in COMPARED)


def _replay_entry(path: Path, entry: dict, ops: dict[str, Operation], result: Replay) -> None:
    """One journal entry applied to the replay; JournalBroken when it contradicts what came before."""
    event, seq = entry.get("event"), entry.get("seq")
    if event == "transition":
        op = ops.get(entry.get("operation_id"))
        if op is None or op.device_id != entry.get("device_id"):
            raise JournalBroken(
                f"{path}: journal entry {seq}: operation {entry.get('operation_id')} of device {entry.get('device_id')} is not in the run's plan"
            )
        if op.state != entry.get("from_state"):
            raise JournalBroken(
                f"{path}: journal entry {seq}: device {op.device_id} moves from {entry.get('from_state')!r} but the journal "
                f"left it {op.state!r} (entries removed?)"
            )
        if entry["to_state"] not in ALLOWED.get(op.state, ()) or (entry["to_state"] == NOOP and op.attempts):
            raise JournalBroken(
                f"{path}: journal entry {seq}: device {op.device_id} cannot move from {op.state!r} to {entry['to_state']!r}"
                + (" after this run wrote it" if op.attempts else "")
            )
        if entry["to_state"] == NOOP and result.resumed:
            raise JournalBroken(
                f"{path}: journal entry {seq}: device {op.device_id} recorded as 'noop' after the run was resumed; apply "
                f"records a device found at target on resume as {AT_TARGET_ON_RESUME!r} (entry forged, or made by an older version)"
            )
        if "fields" not in entry:
            raise JournalBroken(
                f"{path}: journal entry {seq} has no checkpoint fields: this run was made by a version before the journal "
                f"became the record, and its index cannot be rebuilt from it; finish it with that version"
            )
        fields = entry["fields"] or {}
        op.update({k: v for k, v in fields.items() if k in OP_FIELDS}, state=entry["to_state"], updated_at=_at(entry))
        result.transitions.append((op.operation_id, entry["from_state"], entry["to_state"], _at(entry) or 0.0, None))
    elif event in RUN_END_EVENTS and "counts" in entry:
        counts = result.counts()
        recorded = {s: {k: v for k, v in c.items() if v} for s, c in entry["counts"].items()}
        if recorded != {s: {k: v for k, v in c.items() if v} for s, c in counts.items() if any(c.values())}:
            raise JournalBroken(
                f"{path}: journal entry {seq} ({event}) records counts {recorded}, but its transitions add up to "
                f"{ {s: {k: v for k, v in c.items() if v} for s, c in counts.items()} } (entries removed and re-chained?)"
            )
    if event in (*RUN_END_EVENTS, "run_started", "run_resumed", "run_superseded"):
        result.last_run_event = entry
    if event == "run_resumed":
        result.resumed = True


def check_recorded_head(
    path: Path,
    recorded: dict | None,
    entries: list[dict] | None = None,
    head: dict | None = None,
    source: str = RUN_JSON,
) -> None:
    """A recorded head (run.json's, the index's) must be an entry of the journal with the same hash: else the journal
    was cut short or rewritten after it was recorded."""
    if entries is None:
        entries, head = check_journal(path)
    if not recorded:
        if source == RUN_JSON and len(entries) > 1:
            raise JournalBroken(
                f"{path}: run.json records no journal head, but the journal has {len(entries)} entries (run.json replaced?)"
            )
        return
    try:
        seq, want = int(recorded.get("seq", 0)), str(recorded.get("hash"))
    except (AttributeError, TypeError, ValueError):
        raise JournalBroken(
            f"{path}: {source} records a journal head that is not (seq, hash): {str(recorded)[:80]}"
        ) from None
    if seq > len(entries):
        raise JournalBroken(
            f"{path}: journal truncated: {source} records head entry {seq}, the journal ends at entry {len(entries)}"
        )
    if seq <= 0:
        return
    have = entries[seq]["prev"] if seq < len(entries) else head["hash"]
    if have != want:
        raise JournalBroken(
            f"{path}: journal rewritten: {source} records entry {seq} with hash {want[:16]}…, the journal's entry {seq} hashes to {have[:16]}…"
        )


RUN_EVENTS_SIGNED = ("run_started", "run_resumed", "run_interrupted", "run_finished")  # signed by the operator


def head_payload(run: RunRecord, head: dict) -> dict:
    """What the operator signs when run.json records the journal head: the head, bound to this plan and run."""
    return {
        "run_journal_head": {"seq": head.get("seq"), "hash": head.get("hash")},
        "plan_hash": run.plan_hash,
        "run_created_at": run.created_at,
    }


def run_policy(plan):
    """The trust policy a plan was sealed under (pinned by $REMEDIATION_TRUST_POLICY, hash-checked), or None for a
    plan made without one (nothing of its runs is signed)."""
    from remediation.authority import policy_for_plan

    return policy_for_plan(plan) if plan.document.get("trust_policy") else None


def check_signed(path: Path, entries: list[dict], run: RunRecord | None, policy) -> None:
    """A run made under a trust policy: every start / resume / interruption / finish record carries an operator's
    signature over the whole record (sequence, time and chain link included), and run.json's recorded head is
    operator-signed. Re-chaining the journal through a signed record breaks that record's signature; forging
    run.json's head to fit a cut or re-chained journal needs an operator's key. JournalBroken naming the entry."""
    if policy is None:
        return  # a plan made without a trust policy cannot be applied; nothing of such a run is signed
    records = [e for e in entries if e.get("event") in RUN_EVENTS_SIGNED]
    for entry in records:
        name = f"{path}: journal entry {entry.get('seq')} ({entry.get('event')})"
        _check_operator_signature(
            policy,
            entry.get("signature"),
            {k: v for k, v in entry.items() if k != "signature"},
            name,
            unsigned="is not signed by an operator (inserted or altered)",
            forged="the operator's signature does not verify: the record, its position or an entry before it was "
            "changed (journal re-chained?)",
        )
    if not any(e.get("journal_head_signed") for e in records):
        return  # a run made before heads were signed (the signed records say so; they cannot be edited to say it)
    head = run.journal_head if run is not None else None
    if not head:
        # Killed between its start record and run.json's first save: the journal then holds that one record only
        # (more entries and no head is refused by check_recorded_head).
        return
    if not isinstance(head.get("seq"), int) or head["seq"] < 1:
        # Apply records the head after its signed start record, so a head before entry 1 was written by someone else.
        raise JournalBroken(
            f"{path}: run.json's recorded journal head (entry {head.get('seq')}) is before the run's first entry, "
            "which apply never records (run.json edited?)"
        )
    _check_operator_signature(
        policy,
        run.journal_head_signature if run is not None else None,
        head_payload(run, head),
        f"{path}: run.json's recorded journal head (entry {head.get('seq')})",
        unsigned="is not operator-signed (run.json replaced or edited?)",
        forged="the operator's signature does not verify (head forged?)",
    )


def _check_operator_signature(policy, signature, payload: dict, where: str, *, unsigned: str, forged: str) -> None:
    """`signature` over `payload` is by a key the trust policy gives the operator role; JournalBroken otherwise."""
    from remediation.authority import AuthorityRefusal, signature_holds

    if not isinstance(signature, dict):
        raise JournalBroken(f"{where} {unsigned}")
    try:
        _, public = policy.holder(str(signature.get("key_id")), "operator", where)
    except AuthorityRefusal as exc:
        raise JournalBroken(str(exc)) from None
    if not signature_holds(public, signature, payload):
        raise JournalBroken(f"{where}: {forged}")


@dataclass
class IndexCheck:
    verdict: str  # ok | missing | empty | corrupt | behind | disagrees
    reason: str

    @property
    def accident(self) -> bool:
        return self.verdict in ("missing", "empty", "corrupt", "behind")


def read_index(db: Path) -> tuple[dict[str, tuple], dict] | str:
    """(compared fields per op, head) of an index file, or why it cannot be read."""
    if not db.exists():
        return "missing"
    if db.stat().st_size == 0:
        return "empty"
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one read snapshot: the ops and the head they reflect, even while a run commits
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "ops" not in names:
                return "empty"
            rows = conn.execute(f"SELECT operation_id, {', '.join(COMPARED)} FROM ops").fetchall()
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in names else {}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"corrupt ({exc})"
    if not rows:
        return "empty"
    try:
        head = {"seq": int(meta.get("journal_seq", 0)), "hash": meta.get("journal_hash")}
    except ValueError:
        return "corrupt (journal head is not a number)"
    return {r[0]: tuple(r[1:]) for r in rows}, head


def check_index(
    run_dir: Path,
    plan_rows: pd.DataFrame,
    recorded_head: dict | None = None,
    policy=None,
    run=None,
    other_heads: tuple[tuple[dict, str], ...] = (),
) -> tuple[Replay, IndexCheck]:
    """Verify the journal once (chain; `other_heads`, (head, who recorded it) such as the plan leases'; run.json's
    `recorded_head`; the index's head; with the plan's trust `policy`, the operator-signed records and run.json's
    signed head), replay it, and compare the index with the replay (see the module docstring for the verdicts).
    `run`: run.json's RunRecord as read with `recorded_head` (read here if not given)."""
    journal, db = RunDir(run_dir).journal, RunDir(run_dir).checkpoints
    index = read_index(db)  # before the journal: a live run's journal is then at least as far as its index
    entries, head = check_journal(journal)
    for other, source in other_heads:
        check_recorded_head(journal, other, entries, head, source=source)
    check_recorded_head(journal, recorded_head, entries, head)
    result = _checked_replay(run_dir, journal, plan_rows, entries, head, index, policy, run, recorded_head)
    if isinstance(index, str):
        verdict = index.split(" ")[0]
        return result, IndexCheck(verdict, f"{db.name} is {index}")
    return result, _compare(db, journal, result, index, head)


def _checked_replay(run_dir, journal, plan_rows, entries, head, index, policy, run, recorded_head) -> Replay:
    snapshot_at = None if isinstance(index, str) else index[1]["seq"]
    if snapshot_at is not None and snapshot_at > head["seq"]:
        raise JournalBroken(
            f"{journal}: journal truncated: checkpoints.sqlite reflects entry {snapshot_at}, the journal ends at entry {head['seq']}"
        )
    if snapshot_at:
        check_recorded_head(journal, index[1], entries, head, source=CHECKPOINTS)
    result = replay(journal, plan_rows, snapshot_at=snapshot_at, checked=(entries, head))
    if policy is not None:
        if run is None:
            run = RunDir(run_dir).record()
        check_signed(journal, entries, run, policy)
    return result


def _compare(db: Path, journal: Path, result: Replay, index: tuple, head: dict) -> IndexCheck:
    rows, index_head = index
    current = {k: _compared(o) for k, o in result.ops.items()}
    if rows == current:
        return IndexCheck("ok", "agrees with the journal")
    if result.snapshot is not None and rows == result.snapshot:
        return IndexCheck("behind", f"{db.name} reflects journal entry {index_head['seq']} of {head['seq']}")
    order = sorted(set(current) | set(rows), key=lambda k: result.ops[k].seq if k in result.ops else -1)
    first = next(k for k in order if rows.get(k) != current.get(k))
    op = result.ops.get(first)
    if op is None:
        return IndexCheck("disagrees", f"{db.name} holds operation {first}, which is not in the plan")
    if first not in rows:
        return IndexCheck("disagrees", f"{db.name} lacks device {op.device_id}")
    return IndexCheck(
        "disagrees",
        f"{db.name} says device {op.device_id} is {rows[first][0]!r}, the journal says {op.state!r}"
        + ("" if rows[first][0] != op.state else " (fields differ)"),
    )


def rebuild_index(run_dir: Path, result: Replay) -> Path | None:
    """Write the index afresh from the replay; the old files (if any) are kept beside it for whoever investigates."""
    db = RunDir(run_dir).checkpoints
    kept = None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for suffix in ("", "-wal", "-shm"):
        old = db.with_name(db.name + suffix)
        if old.exists():
            target = run_dir / f"checkpoints.replaced-{stamp}.sqlite{suffix}"
            old.rename(target)
            kept = kept or target
    write_index(db, result.ops, result.transitions, result.head)
    return kept


def refuse_unless_consistent(check: IndexCheck, what: str) -> None:
    """For rollback and export: an index that was edited is a reason to stop, not to guess."""
    if check.verdict == "disagrees":
        raise IndexInconsistent(
            f"refusing to {what}: {check.reason}; the journal is the record — resume the run to rebuild the index, and find out who changed it"
        )


def verified_ops(
    run_dir: Path,
    plan_rows: pd.DataFrame,
    recorded_head: dict | None,
    what: str,
    require_end: bool = False,
    policy=None,
    run: dict | None = None,
) -> Replay:
    """For rollback and export: the replayed ops of a run that is not running, whose journal verifies against its
    recorded heads and whose index (if any) does not contradict it; with `require_end`, whose journal ends with a
    finish or interruption record (a killed or cut-short run is resumed first)."""
    from remediation.apply.lock import holder_alive, read_holder

    holder = read_holder(RunDir(run_dir).lock)
    if holder and holder_alive(holder, RunDir(run_dir).lock):
        raise IndexInconsistent(
            f"refusing to {what}: run {run_dir} is in progress (pid {holder.get('pid')} on {holder.get('host')}); wait for it to finish"
        )
    result, index = check_index(run_dir, plan_rows, recorded_head, policy, run)
    refuse_unless_consistent(index, what)
    if require_end and (result.last_run_event or {}).get("event") not in RUN_END_EVENTS:
        raise IndexInconsistent(
            f"refusing to {what}: {RunDir(run_dir).journal} does not end with a finish or interruption record "
            f"(last run event: {(result.last_run_event or {}).get('event', 'none')}); resume the run first"
        )
    return result
