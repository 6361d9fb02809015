"""Registered Data Provider extracts: which Network Operator is registered for each MPAN/MPRN, and when.

Rows that fail a field check are kept with `invalid=True` (detection treats their MPxN as ambiguous rather
than silently trusting the remaining rows) and each fault goes to the quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from remediation.config import RDP_FIELDS, RdpSource
from remediation.identifiers import mpxn_keys
from remediation.ingest.faults import FieldFaults, check_mpxn, concat_quarantine, map_values, trim
from remediation.ingest.tables import file_size, iter_batches
from remediation.model import FUEL_CODES, FUELS
from remediation.progress import NO_PROGRESS, StageProgress

# Compact: MPxN as an int64 key (see identifiers.mpxn_keys), fuel 0 = E / 1 = G / -1 unknown, NO id categorical,
# dates as int32 days since 1970-01-01 (NO_DAY where absent: an open end, or an unreadable start on a rejected row).
RDP_COLUMNS = ["mpxn_key", "fuel", "network_operator_id", "from_day", "to_day", "source_file", "source_row", "invalid"]
NO_DAY = np.iinfo(np.int32).max


@dataclass
class RdpRead:
    registrations: pd.DataFrame | None  # RDP_COLUMNS; None once indexed (see ingest/case.py)
    quarantine: pd.DataFrame
    rows_read: dict[str, int]
    rejected_by_file: dict[str, int]


def _dates(col: pa.Array, fmt: str) -> pa.Array:
    """Text dates -> date32, null where not a real date. Arrow's strptime rolls 31/02 over to 3 March, so each
    distinct value is parsed strictly by pandas instead; there are few distinct dates even in a national file."""
    encoded = pc.dictionary_encode(col)
    distinct = pd.Series(encoded.dictionary.to_pylist(), dtype=object)
    parsed = pd.to_datetime(distinct, format=fmt, errors="coerce")
    as_dates = pa.array(parsed.dt.date.where(parsed.notna(), None), pa.date32())
    return pc.take(as_dates, encoded.indices)


def _days(dates: pa.Array) -> np.ndarray:
    return pc.fill_null(dates.cast(pa.int32()), NO_DAY).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)


def _validate(
    table: pa.Table, first_row: int, source: RdpSource, mprn_lengths: tuple[int, int] = (6, 10)
) -> tuple[pd.DataFrame, FieldFaults]:
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    faults = FieldFaults(str(source.path), "RDP", rows)
    mpxn = trim(table.column("mpxn"))
    raw_fuel = trim(table.column("fuel"))
    fuel = map_values(raw_fuel, source.dialect.values.get("fuel", {}), FUELS)
    faults.add(fuel.is_null().to_numpy(zero_copy_only=False), "fuel", "unknown fuel (expected E or G)", raw_fuel)
    is_e = pc.fill_null(pc.equal(fuel, "E"), False).to_numpy(zero_copy_only=False)
    is_g = pc.fill_null(pc.equal(fuel, "G"), False).to_numpy(zero_copy_only=False)
    digits = check_mpxn(faults, mpxn, is_e, is_g, mprn_lengths)
    no_id = trim(table.column("network_operator_id"))
    faults.add(
        ~pc.fill_null(pc.greater(pc.utf8_length(no_id), 0), False).to_numpy(zero_copy_only=False),
        "network_operator_id",
        "empty network operator id",
        no_id,
    )
    raw_from = trim(table.column("effective_from"))
    eff_from = _dates(raw_from, source.dialect.date_format)
    faults.add(
        eff_from.is_null().to_numpy(zero_copy_only=False),
        "effective_from",
        f"not a date ({source.dialect.date_format})",
        raw_from,
    )
    raw_to = trim(table.column("effective_to"))
    to_given = pc.fill_null(pc.greater(pc.utf8_length(raw_to), 0), False)
    eff_to = _dates(pc.if_else(to_given, raw_to, pa.scalar(None, pa.string())), source.dialect.date_format)
    to_given_np = to_given.to_numpy(zero_copy_only=False)
    faults.add(
        to_given_np & eff_to.is_null().to_numpy(zero_copy_only=False),
        "effective_to",
        f"not a date ({source.dialect.date_format})",
        raw_to,
    )
    backwards = pc.fill_null(pc.less(eff_to, eff_from), False).to_numpy(zero_copy_only=False)
    faults.add(backwards, "effective_to", "effective_to is before effective_from", raw_to)
    frame = pd.DataFrame(
        {
            "mpxn_key": mpxn_keys(mpxn, digits),
            "fuel": np.where(is_e, FUEL_CODES["E"], np.where(is_g, FUEL_CODES["G"], -1)).astype(np.int8),
            "network_operator_id": no_id.dictionary_encode().to_pandas(),
            "from_day": _days(eff_from),
            "to_day": _days(eff_to),
            "source_row": rows.astype(np.int32),
            "invalid": faults.any,
        },
        copy=False,
    )
    return frame, faults


def read_rdp(sources, mprn_lengths: tuple[int, int] = (6, 10), progress: StageProgress = NO_PROGRESS) -> RdpRead:
    progress.stage("reading RDP", sum(file_size(s.path) for s in sources), "bytes")
    frames, quarantine, rows_read = [], [], {}
    for source in sources:
        n = done = 0
        for batch in iter_batches(source.path, source.dialect, RDP_FIELDS):
            frame, faults = _validate(batch.table, batch.first_row, source, mprn_lengths)
            frame["source_file"] = pd.Categorical.from_codes(
                np.zeros(len(frame), dtype=np.int8), categories=[str(source.path)]
            )
            frames.append(frame)
            quarantine.extend(faults.frames)
            n += batch.table.num_rows
            progress.advance(batch.bytes_done - done, f"{Path(source.path).name}: {n:,} rows")
            done = batch.bytes_done
        progress.advance(file_size(source.path) - done)
        rows_read[str(source.path)] = rows_read.get(str(source.path), 0) + n
    if frames:
        columns = {}
        for column in RDP_COLUMNS:  # one column at a time, each batch's copy dropped once joined: never two copies
            parts = [f.pop(column) for f in frames]
            categorical = column in ("network_operator_id", "source_file")
            columns[column] = union_categoricals(parts) if categorical else pd.concat(parts, ignore_index=True)
            del parts
        frames.clear()
        registrations = pd.DataFrame(columns, copy=False)
        del columns
    else:
        registrations = pd.DataFrame(
            {
                "mpxn_key": pd.Series(dtype=np.int64),
                "fuel": pd.Series(dtype=np.int8),
                "network_operator_id": pd.Categorical([]),
                "from_day": pd.Series(dtype=np.int32),
                "to_day": pd.Series(dtype=np.int32),
                "source_row": pd.Series(dtype=np.int32),
                "invalid": pd.Series(dtype=bool),
                "source_file": pd.Categorical([]),
            }
        )
    rejected = registrations.groupby("source_file", observed=True)["invalid"].sum()
    return RdpRead(
        registrations[RDP_COLUMNS],
        concat_quarantine(quarantine),
        rows_read,
        {str(k): int(v) for k, v in rejected.items()},
    )
