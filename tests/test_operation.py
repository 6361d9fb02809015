"""The typed Operation: apply's in-memory payload uses the plan's names, while the checkpoint database keeps the
column names runs made before it wrote, so those runs still open, resume and compare against their journals."""

from __future__ import annotations

import sqlite3

import pandas as pd

from remediation.apply.checkpoint import (
    FRAME_COLUMNS,
    OP_COLUMNS,
    PENDING,
    Operation,
    SqliteCheckpoints,
    write_index,
)

PLAN = pd.DataFrame(
    {
        "operation_id": ["op-1", "op-2"],
        "device_id": ["00-11-22-33-44-55-66-77", "00-11-22-33-44-55-66-78"],
        "s1sp": ["MOC", "FOC"],
        "expected_ds_fingerprint": ["E1", ""],
        "expected_ka_fingerprint": ["K1", "K2"],
        "target_ds_fingerprint": ["T1", "T3"],
        "target_ka_fingerprint": ["U1", "U3"],
    }
)


def test_an_index_written_with_the_stored_column_names_opens_as_operations_under_the_plans_names(tmp_path):
    db = tmp_path / "checkpoints.sqlite"
    SqliteCheckpoints(db).close()  # the schema, as every version has created it
    conn = sqlite3.connect(db)
    # A row as the dict-based apply wrote it: stored names, a device mid-write.
    conn.execute(
        "INSERT INTO ops(operation_id, device_id, s1sp, seq, expected_ds, expected_ka, target_ds_fp, target_ka_fp,"
        " state, attempts, version_seen, prior_ds_fp) VALUES ('op-1', 'D1', 'MOC', 0, 'E1', 'K1', 'T1', 'U1',"
        " 'writing', 1, 7, 'E1')"
    )
    conn.commit()
    conn.close()
    checkpoints = SqliteCheckpoints(db)
    (op,) = checkpoints.open_ops("MOC")
    checkpoints.close()
    assert (op.expected_ds_fingerprint, op.expected_ka_fingerprint) == ("E1", "K1")
    assert (op.target_ds_fingerprint, op.target_ka_fingerprint, op.state, op.attempts) == ("T1", "U1", "writing", 1)
    assert list(op.row()) == list(OP_COLUMNS) and op.row()["target_ds_fp"] == "T1"


def test_seeding_and_rebuilding_write_the_stored_column_names(tmp_path):
    db = tmp_path / "checkpoints.sqlite"
    checkpoints = SqliteCheckpoints(db)
    checkpoints.seed(PLAN)
    ops = dict(checkpoints.ops)
    frame = checkpoints.ops_frame()
    checkpoints.close()
    assert ops["op-2"].expected_ds_fingerprint == "" and ops["op-2"].state == PENDING and ops["op-2"].seq == 1
    # The ops frame (and so outcomes.csv, dry_run.csv, reports) carries the plan's names, not the stored ones.
    assert list(frame.columns) == list(FRAME_COLUMNS) and frame["expected_ka_fingerprint"].tolist() == ["K1", "K2"]
    assert not {"expected_ds", "expected_ka", "target_ds_fp", "target_ka_fp"} & set(frame.columns)
    assert Operation.from_record(frame.to_dict("records")[0]) == ops["op-1"]
    rebuilt = tmp_path / "rebuilt.sqlite"
    write_index(rebuilt, ops, [], {"seq": 0, "hash": "0" * 64})
    for path in (db, rebuilt):
        conn = sqlite3.connect(path)
        rows = conn.execute("SELECT operation_id, expected_ds, target_ds_fp, target_ka_fp FROM ops ORDER BY seq")
        assert rows.fetchall() == [("op-1", "E1", "T1", "U1"), ("op-2", "", "T3", "U3")]
        conn.close()
    assert Operation.from_row(ops["op-1"].row()) == ops["op-1"]
