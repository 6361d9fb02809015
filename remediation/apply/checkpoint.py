"""Checkpoints: every device's state, each transition recorded before and after the S1SP is touched.

The hash-chained journal is the record: a transition is appended to it first (with every field it sets), then
applied to an in-memory mirror the run reads from, then committed to the SQLite index together with the journal
head (seq, hash) it reflects. The index is rebuildable from the plan and the journal (`apply/index.py`); if a
commit to it fails mid-run (file deleted, truncated, disk trouble) the run carries on from the journal and the
next resume rebuilds it. `MemoryCheckpoints` is the same interface without durability, for dry runs and
benchmarks."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import pandas as pd

from remediation.evidence.journal import Journal
from remediation.model import (  # noqa: F401 - the states are re-exported for apply's modules
    AT_TARGET_ON_RESUME,
    CONFIRMING,
    DONE,
    DRIFTED,
    FAILED,
    FINAL_STATES,
    IN_FLIGHT,
    NOOP,
    OPEN_STATES,
    PENDING,
    READING,
    STATES,
    WRITING,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    operation_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, s1sp TEXT NOT NULL, seq INTEGER NOT NULL,
    expected_ds TEXT, expected_ka TEXT, target_ds_fp TEXT, target_ka_fp TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, version_seen INTEGER, result_version INTEGER,
    prior_ds_fp TEXT, prior_ka_fp TEXT, prior_ds_cert TEXT, prior_ka_cert TEXT, final_ds_fp TEXT, final_ka_fp TEXT, last_error TEXT, updated_at REAL
);
CREATE INDEX IF NOT EXISTS ops_state ON ops(s1sp, state, seq);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, operation_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, at REAL NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
OP_FIELDS = (
    "version_seen",
    "result_version",
    "prior_ds_fp",
    "prior_ka_fp",
    "prior_ds_cert",
    "prior_ka_cert",
    "final_ds_fp",
    "final_ka_fp",
    "last_error",
    "attempts",
)


OP_COLUMNS = (
    "operation_id",
    "device_id",
    "s1sp",
    "seq",
    "expected_ds",
    "expected_ka",
    "target_ds_fp",
    "target_ka_fp",
    "state",
    "attempts",
    "version_seen",
    "result_version",
    "prior_ds_fp",
    "prior_ka_fp",
    "prior_ds_cert",
    "prior_ka_cert",
    "final_ds_fp",
    "final_ka_fp",
    "last_error",
    "updated_at",
)


@dataclass(slots=True)
class Operation:
    """One planned device's operation and where it stands: the in-memory payload of apply, replay and the index.

    The plan's fingerprints keep the plan's names here and in everything built from ops (the ops frame, outcomes.csv,
    dry_run.csv, reports, exports): `expected_ds_fingerprint`, `target_ds_fingerprint`, ... Only the checkpoint
    database's columns (and the journal) keep their stored names (`expected_ds`, `target_ds_fp`, ...), so runs made
    before this class still resume, verify and export. The two meet only in `from_row`/`row`."""

    operation_id: str
    device_id: str
    s1sp: str
    seq: int
    expected_ds_fingerprint: str | None
    expected_ka_fingerprint: str | None
    target_ds_fingerprint: str | None
    target_ka_fingerprint: str | None
    state: str = PENDING
    attempts: int | None = 0
    version_seen: int | None = None
    result_version: int | None = None
    prior_ds_fp: str | None = None
    prior_ka_fp: str | None = None
    prior_ds_cert: str | None = None
    prior_ka_cert: str | None = None
    final_ds_fp: str | None = None
    final_ka_fp: str | None = None
    last_error: str | None = None
    updated_at: float | None = None

    # attribute -> the checkpoint database's (and ops frame's) column, where the two differ
    STORED: ClassVar[dict[str, str]] = {
        "expected_ds_fingerprint": "expected_ds",
        "expected_ka_fingerprint": "expected_ka",
        "target_ds_fingerprint": "target_ds_fp",
        "target_ka_fingerprint": "target_ka_fp",
    }

    @classmethod
    def from_row(cls, row: dict) -> Operation:
        """An op from a checkpoint database row or an ops-frame record (stored column names)."""
        return cls(**{f.name: row.get(cls.STORED.get(f.name, f.name)) for f in fields(cls)})

    def row(self) -> dict:
        """The op under its stored column names, in OP_COLUMNS order."""
        return {self.STORED.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict) -> Operation:
        """An op from an ops-frame record (the plan's names, FRAME_COLUMNS)."""
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})

    def record(self) -> dict:
        """The op under the plan's names, in FRAME_COLUMNS order: a row of the ops frame."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, sets: dict, **more) -> None:
        """Set checkpointed fields (names as in OP_FIELDS, state, updated_at)."""
        for name, value in {**sets, **more}.items():
            setattr(self, name, value)

    def copy(self) -> Operation:
        return replace(self)


# the ops frame's columns: Operation's fields under the plan's names (OP_COLUMNS with the fingerprints renamed)
FRAME_COLUMNS = tuple(f.name for f in fields(Operation))


def ops_frame(records: list[dict]) -> pd.DataFrame:
    """The ops frame (FRAME_COLUMNS) from `Operation.record()`s, in the order given; empty with its columns if none."""
    return pd.DataFrame(records, columns=list(FRAME_COLUMNS))


def seed_ops(plan: pd.DataFrame) -> dict[str, Operation]:
    """One pending op per plan row, in plan order: the state every replay and every index starts from."""
    return {
        r.operation_id: Operation(
            r.operation_id,
            r.device_id,
            r.s1sp,
            i,
            r.expected_ds_fingerprint,
            r.expected_ka_fingerprint,
            r.target_ds_fingerprint,
            r.target_ka_fingerprint,
        )
        for i, r in enumerate(plan.itertuples(index=False))
    }


def counts_of(ops) -> dict[str, dict[str, int]]:
    c = Counter((o.s1sp, o.state) for o in ops)
    out: dict[str, dict[str, int]] = {}
    for (s1sp, state), n in sorted(c.items()):
        out.setdefault(s1sp, {s: 0 for s in STATES})[state] = n
    return out


class MemoryCheckpoints:
    """Every op's state in memory, optionally journaled first. Nothing survives the process: the base of the durable
    index, and on its own for dry runs and benchmarks."""

    def __init__(self, journal: Journal | None = None):
        self.ops: dict[str, Operation] = {}
        self.lock = threading.Lock()
        self.journal = journal

    def close(self) -> None:
        if self.journal:
            self.journal.close()

    def seed(self, plan: pd.DataFrame) -> int:
        """Insert one pending op per plan row that is not there yet (idempotent)."""
        added = {k: v for k, v in seed_ops(plan).items() if k not in self.ops}
        with self.lock:
            self.ops.update(added)
            self._persist_seed(list(added.values()))
        return len(added)

    def load(self, ops: dict[str, Operation]) -> None:
        with self.lock:
            self.ops = {k: v.copy() for k, v in ops.items()}

    def open_ops(self, s1sp: str) -> list[Operation]:
        """Copies of the S1SP's ops not in a final state, in plan order (the executor moves them by `transition`)."""
        with self.lock:
            return [
                o.copy()
                for o in sorted(self.ops.values(), key=lambda o: o.seq)
                if o.s1sp == s1sp and o.state in OPEN_STATES
            ]

    def transition(self, op: Operation, to_state: str, detail: dict | None = None, **fields) -> None:
        from_state = op.state
        sets = {k: v for k, v in fields.items() if k in OP_FIELDS}
        with self.lock:  # one lock: the journal's order is the index's order
            head = None
            if self.journal:
                self.journal.append(
                    "transition",
                    operation_id=op.operation_id,
                    device_id=op.device_id,
                    s1sp=op.s1sp,
                    from_state=from_state,
                    to_state=to_state,
                    fields=sets,
                    **({"s1sp_response": detail} if detail else {}),
                )
                head = self.journal.head
            self.ops[op.operation_id].update(sets, state=to_state, updated_at=time.time())
            self._persist_transition(op.operation_id, from_state, to_state, detail, sets, head)
        op.update(sets, state=to_state)

    def _persist_seed(self, rows: list[Operation]) -> None:
        pass

    def _persist_transition(self, operation_id, from_state, to_state, detail, sets, head) -> None:
        pass

    def counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return counts_of(self.ops.values())

    def ops_frame(self) -> pd.DataFrame:
        with self.lock:
            rows = [o.record() for o in sorted(self.ops.values(), key=lambda o: o.seq)]
        return ops_frame(rows)


class SqliteCheckpoints(MemoryCheckpoints):
    """The durable index: the mirror's state in the run directory's SQLite database (WAL), with the journal head each
    commit reflects. Opening it reads every op into the mirror; `index_error` is set (and the index left alone) when
    a commit fails, so a broken index never stops a run whose journal is sound."""

    def __init__(self, path: str | Path, journal: Journal | None = None):
        super().__init__(journal)
        self.path = Path(path)
        self.index_error: str | None = None
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed transaction survives the process being killed (it is in the WAL in the OS cache);
        # only a power cut can lose the last few, and those are in the journal (appended first) anyway.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        cur = self.conn.execute("SELECT * FROM ops ORDER BY seq")
        names = [d[0] for d in cur.description]
        self.ops = {row[0]: Operation.from_row(dict(zip(names, row))) for row in cur.fetchall()}

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            super().close()

    def _failed(self, exc: Exception) -> None:
        if self.index_error is None:
            self.index_error = f"{type(exc).__name__}: {exc}"
            if self.journal:
                self.journal.append("checkpoint_index_failed", error=self.index_error, path=str(self.path))

    def _persist_seed(self, rows: list[Operation]) -> None:
        if self.index_error or not rows:
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                f"INSERT OR IGNORE INTO ops({', '.join(OP_COLUMNS)}) VALUES ({', '.join('?' * len(OP_COLUMNS))})",
                [tuple(r.row().values()) for r in rows],
            )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._failed(exc)

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _persist_transition(self, operation_id, from_state, to_state, detail, sets, head) -> None:
        if self.index_error:
            return
        assignments = "".join(f", {k}=?" for k in sets)
        now = time.time()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                f"UPDATE ops SET state=?, updated_at=?{assignments} WHERE operation_id=?",
                (to_state, now, *sets.values(), operation_id),
            )
            self.conn.execute(
                "INSERT INTO transitions(operation_id, from_state, to_state, at, detail) VALUES (?,?,?,?,?)",
                (operation_id, from_state, to_state, now, json.dumps(detail) if detail else None),
            )
            if head is not None:
                self.conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    [("journal_seq", str(head["seq"])), ("journal_hash", head["hash"])],
                )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._failed(exc)


def write_index(path: Path, ops: dict[str, Operation], transitions: list[tuple], head: dict) -> None:
    """A fresh index file from replayed ops: built beside the old one, then renamed into place (atomic)."""
    tmp = path.with_name(path.name + ".rebuild")
    for stale in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        stale.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO ops({', '.join(OP_COLUMNS)}) VALUES ({', '.join('?' * len(OP_COLUMNS))})",
            [tuple(o.row().values()) for o in ops.values()],
        )
        conn.executemany(
            "INSERT INTO transitions(operation_id, from_state, to_state, at, detail) VALUES (?,?,?,?,?)", transitions
        )
        conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [("journal_seq", str(head["seq"])), ("journal_hash", head["hash"])],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    os.replace(tmp, path)
