"""The simulator's state in SQLite: anchor slots with versions, idempotency records and a write log.

The write log is the ground truth the fault tests check: one row per committed change of a device's slots.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, s1sp TEXT NOT NULL, device_type TEXT, mpxn TEXT,
    version INTEGER NOT NULL, ds TEXT, ka TEXT
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, device_id TEXT NOT NULL, body_sha256 TEXT NOT NULL, status INTEGER NOT NULL, response TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, operation_id TEXT, source TEXT NOT NULL,
    old_version INTEGER, new_version INTEGER, old_ds TEXT, old_ka TEXT, new_ds TEXT, new_ka TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Slots:
    device_id: str
    version: int
    ds: str | None
    ka: str | None


class SlotStore:
    """Thread-safe: one connection, one lock; each request is one short transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    def load(self, rows) -> int:
        """rows: iterable of (device_id, s1sp, device_type, mpxn, ds_b64|None, ka_b64|None)."""
        with self.lock:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO devices(device_id, s1sp, device_type, mpxn, version, ds, ka) VALUES (?,?,?,?,1,?,?)",
                rows,
            )
            self.conn.execute("COMMIT")
            return self.conn.execute("SELECT count(*) FROM devices").fetchone()[0]

    def get(self, device_id: str) -> Slots | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT device_id, version, ds, ka FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
        return Slots(*row) if row else None

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (name, by, by),
            )

    def counters(self) -> dict[str, int]:
        with self.lock:
            return dict(self.conn.execute("SELECT name, value FROM counters").fetchall())

    def conditional_write(
        self, device_id: str, if_version: int, ds: str | None, ka: str | None, key: str, body_sha256: str, response_for
    ) -> tuple[int, str, bool]:
        """Compare-and-swap in one transaction: (status, response or reason, replayed); records idempotency."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                prior = self.conn.execute(
                    "SELECT body_sha256, status, response FROM idempotency WHERE key=?", (key,)
                ).fetchone()
                if prior is not None:
                    self.conn.execute("COMMIT")
                    return (
                        (prior[1], prior[2], True)
                        if prior[0] == body_sha256
                        else (409, "idempotency key reused with a different body", False)
                    )
                row = self.conn.execute(
                    "SELECT version, ds, ka FROM devices WHERE device_id=?", (device_id,)
                ).fetchone()
                if row is None:
                    self.conn.execute("COMMIT")
                    return 404, "unknown device", False
                version, old_ds, old_ka = row
                if version != if_version:
                    self.conn.execute("COMMIT")
                    return 412, f"version is {version}, not {if_version}", False
                new_version = version + 1
                self.conn.execute(
                    "UPDATE devices SET version=?, ds=?, ka=? WHERE device_id=?", (new_version, ds, ka, device_id)
                )
                self.conn.execute(
                    "INSERT INTO writes(device_id, operation_id, source, old_version, new_version, old_ds, old_ka, new_ds, new_ka, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (device_id, key, "api", version, new_version, old_ds, old_ka, ds, ka, time.time()),
                )
                response = response_for(new_version)
                self.conn.execute(
                    "INSERT INTO idempotency(key, device_id, body_sha256, status, response) VALUES (?,?,?,?,?)",
                    (key, device_id, body_sha256, 200, response),
                )
                self.conn.execute("COMMIT")
                return 200, response, False
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def tamper(self, device_id: str, ds: str | None, ka: str | None) -> None:
        """Change a device underneath (another party's write): bumps the version and is logged with source 'drift'."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            version, old_ds, old_ka = self.conn.execute(
                "SELECT version, ds, ka FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
            self.conn.execute(
                "UPDATE devices SET version=?, ds=?, ka=? WHERE device_id=?", (version + 1, ds, ka, device_id)
            )
            self.conn.execute(
                "INSERT INTO writes(device_id, operation_id, source, old_version, new_version, old_ds, old_ka, new_ds, new_ka, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (device_id, None, "drift", version, version + 1, old_ds, old_ka, ds, ka, time.time()),
            )
            self.conn.execute("COMMIT")

    def writes(self) -> list[dict]:
        with self.lock:
            cur = self.conn.execute("SELECT * FROM writes ORDER BY seq")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def devices(self) -> list[tuple]:
        with self.lock:
            return self.conn.execute(
                "SELECT s1sp, device_id, device_type, mpxn, ds, ka, version FROM devices ORDER BY device_id"
            ).fetchall()
