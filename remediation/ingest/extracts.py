"""Anchor-slot extracts (any dialect) -> compact canonical device records plus a quarantine of row faults.

A record is one device as one file states it. Certificate text is interned to integer ids on the way in, so the
records stay small at national scale. Rows that fail a field check are kept (they are counted and reported as
INVALID_INPUT) and each fault is written to the quarantine with file, row, field, reason and the raw value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from remediation.certificates import CertificateCatalog
from remediation.config import (
    EXTRACT_FIELDS_SLOT,
    EXTRACT_FIELDS_WIDE,
    DeviceType,
    Dialect,
    ExtractSource,
    default_device_types,
)
from remediation.identifiers import eui64_keys, mpxn_keys
from remediation.ingest.faults import FieldFaults, check_mpxn, concat_quarantine, map_values, trim
from remediation.ingest.tables import file_size, iter_batches
from remediation.memory import consumption_order, release_memory
from remediation.model import EMPTY_SLOT, SLOTS
from remediation.progress import NO_PROGRESS, StageProgress

# One record per device as one file states it, in compact columns: a device id is a uint64, an MPxN an int64 key,
# certificates are interned ids, and the raw text is kept only for the rare rows whose id or MPxN is unreadable.
RECORD_COLUMNS = [
    "s1sp",
    "source_file",
    "source_row",
    "n_rows",
    "key",
    "key_ok",
    "device_raw",
    "device_type",
    "mpxn_key",
    "mpxn_raw",
    "ds",
    "ka",
    "extracted_at",
    "invalid",
    "fault",
    "conflict",
]
SLOT_CODES = {"NO_DS": 0, "NO_KA": 1}


@dataclass(frozen=True)
class DeviceRules:
    """What a record's device type and MPxN must be: the case's device types (a record's `device_type` is a code into
    `types`, -1 when unconfigured) and the policy's MPRN length."""

    types: tuple[DeviceType, ...] = tuple(default_device_types().values())
    mprn_lengths: tuple[int, int] = (6, 10)

    @classmethod
    def of(cls, config) -> DeviceRules:
        return cls(tuple(config.device_types.values()), (config.policy.mprn_min_length, config.policy.mprn_max_length))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def codes_of(self, fuel: str) -> list[str]:
        return [t.name for t in self.types if t.fuel == fuel]


@dataclass
class ExtractRead:
    records: pd.DataFrame  # RECORD_COLUMNS
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS
    rows_read: dict[str, int]  # file -> data rows read


_NAT = np.iinfo(np.int64).min


def parse_timestamps(col, fmt: str) -> np.ndarray:
    """Timestamps -> UTC datetime64[ns] (NaT where unparseable). Text is parsed once per distinct value."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_timestamp(arr.type):
        nanos = pc.cast(arr.cast(pa.timestamp("ns", tz=arr.type.tz)), pa.int64())  # Arrow keeps timestamps as UTC
        return pc.fill_null(nanos, _NAT).to_numpy(zero_copy_only=False).view("datetime64[ns]")
    if fmt in ("epoch_seconds", "epoch_millis"):
        numbers = pc.cast(arr, pa.float64(), safe=False) if not pa.types.is_floating(arr.type) else arr
        values = pc.fill_null(numbers, np.nan).to_numpy(zero_copy_only=False) * (1e9 if fmt == "epoch_seconds" else 1e6)
        ok = np.isfinite(values) & (np.abs(values) < 9.2e18)
        out = np.full(len(values), _NAT, dtype=np.int64)
        out[ok] = values[ok].astype(np.int64)
        return out.view("datetime64[ns]")
    encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(arr))
    parsed = pd.to_datetime(
        pd.Series(encoded.dictionary.to_pylist(), dtype=object), utc=True, format="ISO8601", errors="coerce"
    )
    lookup = np.append(parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64), _NAT)
    indices = pc.fill_null(encoded.indices, len(parsed)).to_numpy(zero_copy_only=False)
    return lookup[indices].view("datetime64[ns]")


def _check_certificates(faults: FieldFaults, ids: np.ndarray, texts, field: str, catalog: CertificateCatalog) -> None:
    errors = np.array([f.error or "" for f in catalog.facts] + [""], dtype=object)
    row_errors = errors[ids]  # EMPTY_SLOT (-1) picks the trailing ""
    bad = row_errors != ""
    faults.add(bad, field, np.char.add("undecodable certificate: ", row_errors.astype(str)) if bad.any() else "", texts)


def _validate_batch(
    table: pa.Table, first_row: int, source: ExtractSource, catalog: CertificateCatalog, rules: DeviceRules
) -> tuple[pd.DataFrame, FieldFaults]:
    dialect = source.dialect
    n = table.num_rows
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    faults = FieldFaults(str(source.path), source.s1sp, rows)

    raw_id = trim(table.column("device_id"))
    keys, key_ok = eui64_keys(raw_id)
    faults.add(~key_ok, "device_id", "not an EUI-64 (16 hex digits, hyphens optional)", raw_id)

    s1sp = trim(table.column("s1sp"))
    faults.add(
        ~pc.fill_null(pc.equal(s1sp, source.s1sp), False).to_numpy(zero_copy_only=False),
        "s1sp",
        f"S1SP code does not match the configured {source.s1sp}",
        s1sp,
    )

    raw_type = trim(table.column("device_type"))
    device_type = map_values(raw_type, dialect.values.get("device_type", {}), rules.names)
    faults.add(
        device_type.is_null().to_numpy(zero_copy_only=False),
        "device_type",
        f"device type not configured for this case (configured: {', '.join(rules.names)})",
        raw_type,
    )

    mpxn = trim(table.column("mpxn"))
    is_e = pc.fill_null(pc.is_in(device_type, value_set=pa.array(rules.codes_of("E"), pa.string())), False).to_numpy(
        zero_copy_only=False
    )
    is_g = pc.fill_null(pc.is_in(device_type, value_set=pa.array(rules.codes_of("G"), pa.string())), False).to_numpy(
        zero_copy_only=False
    )
    digits = check_mpxn(faults, mpxn, is_e, is_g, rules.mprn_lengths)

    extracted_at = parse_timestamps(table.column("extracted_at"), dialect.timestamp_format)
    faults.add(
        np.isnat(extracted_at),
        "extracted_at",
        f"not a timestamp ({dialect.timestamp_format})",
        table.column("extracted_at").combine_chunks(),
    )

    mpxn_key = mpxn_keys(mpxn, digits)
    frame = {
        "source_row": rows.astype(np.int32),  # 2**31 rows per file is far beyond any extract
        "key": keys,
        "key_ok": key_ok,
        "device_raw": _sparse_text(raw_id, ~key_ok),
        "device_type": _codes(device_type, {name: i for i, name in enumerate(rules.names)}),
        "mpxn_key": mpxn_key,
        "mpxn_raw": _sparse_text(mpxn, mpxn_key < 0),
        "extracted_at": extracted_at,
    }
    if dialect.layout == "wide":
        for slot_col, key in (("no_ds_cert", "ds"), ("no_ka_cert", "ka")):
            texts = table.column(slot_col).combine_chunks()
            ids = catalog.intern_array(texts)
            _check_certificates(faults, ids, texts, slot_col, catalog)
            frame[key] = ids
    else:
        raw_slot = trim(table.column("slot"))
        slot = map_values(raw_slot, dialect.values.get("slot", {}), SLOTS)
        faults.add(
            slot.is_null().to_numpy(zero_copy_only=False),
            "slot",
            "unknown anchor slot (expected NO_DS or NO_KA)",
            raw_slot,
        )
        texts = table.column("cert").combine_chunks()
        ids = catalog.intern_array(texts)
        _check_certificates(faults, ids, texts, "cert", catalog)
        frame["slot"] = _codes(slot, SLOT_CODES)
        frame["cert"] = ids
    frame["invalid"] = faults.any
    frame["fault"] = faults.first
    return pd.DataFrame(frame, copy=False), faults


def _sparse_text(values: pa.Array, keep: np.ndarray) -> pd.Series:
    """Text where `keep`, null elsewhere, arrow-backed: about four bytes per row when almost all rows are null."""
    positions = np.flatnonzero(keep)
    index = np.full(len(keep), -1, dtype=np.int32)
    index[positions] = np.arange(len(positions), dtype=np.int32)
    # A take from the few kept values allocates text for them alone (if_else would size it for every row).
    kept = pc.take(pc.take(values, pa.array(positions)), pa.array(index, mask=index < 0))
    return pd.Series(pd.arrays.ArrowExtensionArray(kept))


def _codes(values: pa.Array, codes: dict[str, int]) -> np.ndarray:
    """Canonical text values -> small integer codes; null -> -1."""
    keys = pa.array(list(codes), pa.string())
    index = pc.index_in(values, value_set=keys)
    lookup = np.array(list(codes.values()) + [-1], dtype=np.int8)
    return lookup[pc.fill_null(index, len(codes)).to_numpy(zero_copy_only=False)]


def _pivot_slot_records(df: pd.DataFrame) -> pd.DataFrame:
    """One record per slot -> one record per device; disagreeing records for a device mark it a conflict.

    Sort once by (device, row) and reduce each run of equal keys with numpy: no per-device Python, and only a few
    arrays of the 7 million FOC rows alive at a time."""
    key_ok = df["key_ok"].to_numpy(dtype=bool)
    alone = df[~key_ok].copy()  # no usable id: each row stands on its own
    alone["ds"] = np.where(alone["slot"] == SLOT_CODES["NO_DS"], alone["cert"], EMPTY_SLOT).astype(np.int32)
    alone["ka"] = np.where(alone["slot"] == SLOT_CODES["NO_KA"], alone["cert"], EMPTY_SLOT).astype(np.int32)
    alone["n_rows"] = np.ones(len(alone), dtype=np.int32)
    alone["conflict"] = np.zeros(len(alone), dtype=bool)

    keyed = np.flatnonzero(key_ok)
    # File order is row order, so a stable sort by device keeps each device's records in row order.
    order = keyed[np.argsort(df["key"].to_numpy()[keyed], kind="stable")]
    del keyed
    key = df["key"].to_numpy()[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.empty(0, dtype=np.int64)
    same_device = np.concatenate([[False], key[1:] == key[:-1]]) if len(key) else np.empty(0, dtype=bool)

    def column(name):
        """The column in device order; the frame's own copy is dropped (this frame is ours to consume)."""
        values = df[name].to_numpy()[order]
        if name not in ("device_raw", "mpxn_raw", "key_ok"):
            del df[name]
        return values

    def per_device_any(values: np.ndarray) -> np.ndarray:
        return np.logical_or.reduceat(values, starts) if len(starts) else np.empty(0, dtype=bool)

    first = order[starts]
    devices = {"key": key[starts], "key_ok": np.ones(len(starts), dtype=bool)}
    devices["source_row"] = df["source_row"].to_numpy()[first]
    devices["n_rows"] = np.diff(np.append(starts, len(key))).astype(np.int32)
    del key
    stamps = column("extracted_at")
    devices["extracted_at"] = np.maximum.reduceat(stamps, starts) if len(starts) else stamps[:0]
    del stamps
    devices["invalid"] = per_device_any(column("invalid"))
    fault = column("fault")
    devices["fault"] = (
        np.minimum.reduceat(fault, starts) if len(starts) else fault[:0]
    )  # the device's first fault over its records
    del fault
    conflict = np.zeros(len(starts), dtype=bool)
    for name in ("device_type", "mpxn_key"):  # the device's identity must agree across its records
        values = column(name)
        devices[name] = values[starts]
        changed = np.zeros(len(values), dtype=bool)
        changed[1:] = values[1:] != values[:-1]
        conflict |= per_device_any(changed & same_device)
        del values, changed
    slot, cert = column("slot"), column("cert")
    for code, name in ((SLOT_CODES["NO_DS"], "ds"), (SLOT_CODES["NO_KA"], "ka")):
        mine = slot == code
        high = np.maximum.reduceat(np.where(mine, cert, -2), starts) if len(starts) else cert[:0]
        low = np.minimum.reduceat(np.where(mine, cert, 2**30), starts) if len(starts) else cert[:0]
        conflict |= (high >= -1) & (high != low)  # two records for this slot with different certificates
        devices[name] = np.where(high >= -1, high, EMPTY_SLOT).astype(np.int32)
    del slot, cert
    devices["conflict"] = conflict
    for name in ("device_raw", "mpxn_raw"):
        devices[name] = df[name].iloc[first].reset_index(drop=True)
    frame = pd.DataFrame({name: devices[name] for name in _BATCH_COLUMNS}, copy=False)
    if alone.empty:
        return frame
    return pd.concat([alone[_BATCH_COLUMNS].reset_index(drop=True), frame], ignore_index=True)


_BATCH_COLUMNS = [c for c in RECORD_COLUMNS if c not in ("s1sp", "source_file")]


def read_extract(
    source: ExtractSource,
    catalog: CertificateCatalog,
    progress: StageProgress = NO_PROGRESS,
    rules: DeviceRules = DeviceRules(),
) -> ExtractRead:
    canonical = EXTRACT_FIELDS_SLOT if source.dialect.layout == "slot_per_row" else EXTRACT_FIELDS_WIDE
    frames, quarantine, rows, done = [], [], 0, 0
    for batch in iter_batches(source.path, source.dialect, canonical):
        frame, faults = _validate_batch(batch.table, batch.first_row, source, catalog, rules)
        frames.append(frame)
        quarantine.extend(faults.frames)
        rows += batch.table.num_rows
        progress.advance(batch.bytes_done - done, f"{Path(source.path).name}: {rows:,} rows")
        done = batch.bytes_done
    progress.advance(file_size(source.path) - done)  # the estimate's remainder: the file is read
    records = _concat_consuming(frames) if frames else _empty_records(source.dialect)
    if source.dialect.layout == "slot_per_row":
        records = _pivot_slot_records(records)
    else:
        records["n_rows"] = np.ones(len(records), dtype=np.int32)
        records["conflict"] = np.zeros(len(records), dtype=bool)
    records["s1sp"] = pd.Categorical.from_codes(np.zeros(len(records), dtype=np.int8), categories=[source.s1sp])
    records["source_file"] = pd.Categorical.from_codes(
        np.zeros(len(records), dtype=np.int8), categories=[str(source.path)]
    )
    return ExtractRead(records[RECORD_COLUMNS], concat_quarantine(quarantine), {str(source.path): rows})


def _concat_consuming(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat, one column at a time, dropping each batch's column once copied: the peak is the result plus one
    column instead of twice the result (at national scale the difference is most of a gigabyte)."""
    columns = {}
    order = list(frames[0].columns)
    for name in consumption_order(frames[0]):
        parts = [f.pop(name) for f in frames]
        columns[name] = pd.concat(parts, ignore_index=True)
        del parts
    frames.clear()
    return pd.DataFrame({name: columns.pop(name) for name in order}, copy=False)


def _empty_records(dialect: Dialect) -> pd.DataFrame:
    dtypes = {
        "source_row": np.int64,
        "key": np.uint64,
        "key_ok": bool,
        "device_type": np.int8,
        "mpxn_key": np.int64,
        "extracted_at": "datetime64[ns]",
        "invalid": bool,
        "fault": np.int8,
        "ds": np.int32,
        "ka": np.int32,
        "slot": np.int8,
        "cert": np.int32,
    }
    columns = [
        "source_row",
        "key",
        "key_ok",
        "device_raw",
        "device_type",
        "mpxn_key",
        "mpxn_raw",
        "extracted_at",
        "invalid",
        "fault",
    ]
    columns += ["slot", "cert"] if dialect.layout == "slot_per_row" else ["ds", "ka"]
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "string[pyarrow]")) for c in columns})


def read_extracts(
    sources, catalog: CertificateCatalog, progress: StageProgress = NO_PROGRESS, rules: DeviceRules = DeviceRules()
) -> ExtractRead:
    progress.stage("reading extracts, parsing certificates", sum(file_size(s.path) for s in sources), "bytes")
    # Slot-per-row files first: their pivot (every slot row alive, then sorted) is the read's largest transient,
    # so it runs before other files' records are held. The records are joined in the case's order all the same.
    sources = list(sources)
    first = sorted(range(len(sources)), key=lambda i: sources[i].dialect.layout != "slot_per_row")
    reads: list = [None] * len(sources)
    for i in first:
        reads[i] = read_extract(sources[i], catalog, progress, rules)
        release_memory()  # the reader's transient buffers, before the next file
    categorical = ("s1sp", "source_file")
    columns = {}
    # One column at a time, each file's copy dropped once joined: no second copy of all.
    for column in consumption_order(reads[0].records):
        parts = [r.records.pop(column) for r in reads]
        # plain concat of categoricals with different categories would fall back to objects
        columns[column] = union_categoricals(parts) if column in categorical else pd.concat(parts, ignore_index=True)
        del parts
    records = pd.DataFrame({name: columns.pop(name) for name in RECORD_COLUMNS}, copy=False)
    del columns
    quarantine = concat_quarantine([r.quarantine for r in reads if len(r.quarantine)])
    rows_read: dict[str, int] = {}
    for r in reads:
        for path, n in r.rows_read.items():
            rows_read[path] = rows_read.get(path, 0) + n
    return ExtractRead(records, quarantine, rows_read)
