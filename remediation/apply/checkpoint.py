"""Checkpoints: every device's state in the run directory's SQLite database (WAL), each transition recorded before
and after the S1SP is touched, and mirrored to the hash-chained journal. `MemoryCheckpoints` is the same interface
without durability, for measuring the cost of the real one."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from remediation.evidence.journal import Journal

PENDING, READING, WRITING, CONFIRMING = "pending", "reading", "writing", "confirming"
DONE, NOOP, DRIFTED, FAILED = "done", "noop", "drifted", "failed"
IN_FLIGHT = (READING, WRITING, CONFIRMING)
OPEN_STATES = (PENDING, *IN_FLIGHT)
FINAL_STATES = (DONE, NOOP, DRIFTED, FAILED)
STATES = (*OPEN_STATES, *FINAL_STATES)

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
OP_FIELDS = ("version_seen", "result_version", "prior_ds_fp", "prior_ka_fp", "prior_ds_cert", "prior_ka_cert", "final_ds_fp", "final_ka_fp", "last_error", "attempts")


class SqliteCheckpoints:
    def __init__(self, path: str | Path, journal: Journal | None = None):
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed transaction survives the process being killed (it is in the WAL in the OS cache);
        # only a power cut can lose the last few, and resume re-reads every in-flight device anyway.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.journal = journal

    def close(self) -> None:
        self.conn.close()
        if self.journal:
            self.journal.close()

    def seed(self, plan: pd.DataFrame) -> int:
        """Insert one pending op per plan row that is not there yet (idempotent)."""
        rows = [
            (r.operation_id, r.device_id, r.s1sp, i, r.expected_ds_fingerprint, r.expected_ka_fingerprint, r.target_ds_fingerprint,
             r.target_ka_fingerprint, PENDING, time.time())
            for i, r in enumerate(plan.itertuples(index=False))
        ]  # fmt: skip
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO ops(operation_id, device_id, s1sp, seq, expected_ds, expected_ka, target_ds_fp, target_ka_fp, state, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self.conn.execute("COMMIT")
            return self.conn.total_changes - before

    def open_ops(self, s1sp: str) -> list[dict]:
        with self.lock:
            cur = self.conn.execute("SELECT * FROM ops WHERE s1sp=? AND state IN (?,?,?,?) ORDER BY seq", (s1sp, *OPEN_STATES))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def transition(self, op: dict, to_state: str, detail: dict | None = None, **fields) -> None:
        from_state = op["state"]
        sets = {k: v for k, v in fields.items() if k in OP_FIELDS}
        assignments = ", ".join(f"{k}=?" for k in sets)
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(f"UPDATE ops SET state=?, updated_at=?{', ' + assignments if assignments else ''} WHERE operation_id=?",
                              (to_state, time.time(), *sets.values(), op["operation_id"]))  # fmt: skip
            self.conn.execute("INSERT INTO transitions(operation_id, from_state, to_state, at, detail) VALUES (?,?,?,?,?)",
                              (op["operation_id"], from_state, to_state, time.time(), json.dumps(detail) if detail else None))  # fmt: skip
            self.conn.execute("COMMIT")
        op.update(sets, state=to_state)
        if self.journal:
            self.journal.append("transition", operation_id=op["operation_id"], device_id=op["device_id"], s1sp=op["s1sp"],
                                from_state=from_state, to_state=to_state, **({"s1sp_response": detail} if detail else {}))  # fmt: skip

    def counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            rows = self.conn.execute("SELECT s1sp, state, count(*) FROM ops GROUP BY s1sp, state").fetchall()
        out: dict[str, dict[str, int]] = {}
        for s1sp, state, n in rows:
            out.setdefault(s1sp, {s: 0 for s in STATES})[state] = n
        return out

    def ops_frame(self) -> pd.DataFrame:
        with self.lock:
            return pd.read_sql_query("SELECT * FROM ops ORDER BY seq", self.conn)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))


class MemoryCheckpoints:
    """The same interface in memory: nothing survives the process. For benchmarks and dry runs only."""

    def __init__(self):
        self.ops: dict[str, dict] = {}
        self.meta: dict[str, str] = {}
        self.lock = threading.Lock()
        self.journal = None

    def close(self) -> None:
        pass

    def seed(self, plan: pd.DataFrame) -> int:
        added = 0
        for i, r in enumerate(plan.itertuples(index=False)):
            if r.operation_id not in self.ops:
                self.ops[r.operation_id] = {"operation_id": r.operation_id, "device_id": r.device_id, "s1sp": r.s1sp, "seq": i,
                                            "expected_ds": r.expected_ds_fingerprint, "expected_ka": r.expected_ka_fingerprint,
                                            "target_ds_fp": r.target_ds_fingerprint, "target_ka_fp": r.target_ka_fingerprint,
                                            "state": PENDING, "attempts": 0}  # fmt: skip
                added += 1
        return added

    def open_ops(self, s1sp: str) -> list[dict]:
        with self.lock:
            return [dict(o) for o in self.ops.values() if o["s1sp"] == s1sp and o["state"] in OPEN_STATES]

    def transition(self, op: dict, to_state: str, detail: dict | None = None, **fields) -> None:
        sets = {k: v for k, v in fields.items() if k in OP_FIELDS}
        with self.lock:
            self.ops[op["operation_id"]].update(sets, state=to_state)
        op.update(sets, state=to_state)

    def counts(self) -> dict[str, dict[str, int]]:
        with self.lock:
            c = Counter((o["s1sp"], o["state"]) for o in self.ops.values())
        out: dict[str, dict[str, int]] = {}
        for (s1sp, state), n in c.items():
            out.setdefault(s1sp, {s: 0 for s in STATES})[state] = n
        return out

    def ops_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.ops.values()))

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        return self.meta.get(key, default)

    def set_meta(self, key: str, value: str) -> None:
        self.meta[key] = value
