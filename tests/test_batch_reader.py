"""The batch reader's read-ahead thread: order, errors and early stops behave as a plain loop would."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from remediation.errors import InputError
from remediation.ingest.tables import prefetched


def test_items_arrive_in_order_then_the_producer_error_in_its_place():
    def produce():
        yield from range(50)
        raise InputError("line 51 has 3 of 7 columns", file="x.csv")

    seen = []
    with pytest.raises(InputError, match="line 51"):
        for item in prefetched(produce(), depth=2):
            seen.append(item)
    assert seen == list(range(50))


def test_a_consumer_that_stops_early_closes_the_producer_and_its_thread():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    before = {t.ident for t in threading.enumerate()}
    items = prefetched(produce(), depth=2)
    with pytest.raises(RuntimeError):
        for item in items:
            if item == 3:
                raise RuntimeError("consumer failed")
    items.close()
    assert closed.wait(5), "the producing generator was not closed"
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name == "batch-reader"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_small_blocks_handed_on_in_groups_keep_every_row_and_its_number(tmp_path, monkeypatch, fmt):
    """Blocks are read small (bounded read-ahead memory) and grouped: every row arrives once, in order, and each batch's
    first_row is its first data row's number in the file, so quarantine rows name the right line."""
    from remediation.config import canonical_dialect, load_dialect
    from remediation.ingest import tables

    n = 5000
    if fmt == "csv":
        dialect = canonical_dialect()
        path = tmp_path / "x.csv"
        lines = ["s1sp,device_id,device_type,mpxn,no_ds_cert,no_ka_cert,extracted_at"]
        lines += [f"MOC,{i:016X},ESME,{i},,,2026-11-19T00:00:00Z" for i in range(n)]
        path.write_text("\n".join(lines) + "\n")
        canonical = ("s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at")
    else:
        dialect = load_dialect(Path(__file__).resolve().parent.parent / "configs" / "dialects" / "foc.toml")
        path = tmp_path / "x.jsonl"
        path.write_text(
            "".join(
                f'{{"device":{{"guid":"{i:016X}","kind":"electricity","supplyPoint":"{i}"}},'
                f'"slot":{{"name":"nwo-digital-signing","certificate":null}},"capturedAtEpochMs":1}}\n'
                for i in range(n)
            )
        )
        from remediation.config import EXTRACT_FIELDS_SLOT as canonical
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(tables, "JSON_BLOCK_BYTES", 4096)
    monkeypatch.setattr(tables, "GROUP_BLOCKS", 3)
    batches = list(tables.iter_batches(path, dialect, canonical))
    assert len(batches) > 5  # several groups of several small blocks
    ids = [v for b in batches for v in b.table.column("device_id").to_pylist()]
    assert ids == [f"{i:016X}" for i in range(n)]
    expected_first = 1
    for batch in batches:
        assert batch.first_row == expected_first
        assert batch.table.column("device_id")[0].as_py() == f"{expected_first - 1:016X}"
        expected_first += batch.table.num_rows
