"""Row-level field checks shared by every reader: a vector of faults per batch becomes quarantine rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from remediation.identifiers import digit_counts, mpan_valid_array, mprn_valid_array

QUARANTINE_COLUMNS = ["file", "s1sp", "row", "field", "reason", "value"]
# A faulty record's first fault, as a small code (the INVALID_INPUT cause of its device): fields in this order.
FAULT_FIELDS = ("device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "cert", "extracted_at", "s1sp", "slot")
NO_FAULT = np.iinfo(np.int8).max
_VALUE_CHARS = 80


def trim(col) -> pa.Array:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return pc.utf8_trim_whitespace(arr.cast(pa.string()))


def map_values(arr: pa.Array, mapping: dict[str, str], canonical: tuple[str, ...]) -> pa.Array:
    """Dialect value map plus the canonical values themselves; anything else becomes null."""
    full = {**{c: c for c in canonical}, **mapping}
    keys = pa.array(list(full.keys()), pa.string())
    values = pa.array(list(full.values()), pa.string())
    return pc.take(values, pc.index_in(arr, value_set=keys))


class FieldFaults:
    """Collects field faults of one batch as vectors; becomes quarantine rows and a per-row invalid flag."""

    def __init__(self, path: str, s1sp: str, rows: np.ndarray):
        self.path, self.s1sp, self.rows = path, s1sp, rows
        self.any = np.zeros(len(rows), dtype=bool)
        self.first = np.full(len(rows), NO_FAULT, dtype=np.int8)  # index into FAULT_FIELDS of the row's first fault
        self.frames: list[pd.DataFrame] = []

    def add(self, mask: np.ndarray, field: str, reason, values: pa.Array) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        self.any |= mask
        rank = FAULT_FIELDS.index(field) if field in FAULT_FIELDS else len(FAULT_FIELDS)
        np.minimum(self.first, np.where(mask, rank, NO_FAULT).astype(np.int8), out=self.first)
        shown = pc.utf8_slice_codeunits(pc.fill_null(values.cast(pa.string()), ""), 0, _VALUE_CHARS)
        picked = pc.filter(shown, pa.array(mask)).to_pandas()
        self.frames.append(
            pd.DataFrame(
                {
                    "file": self.path,
                    "s1sp": self.s1sp,
                    "row": self.rows[mask],
                    "field": field,
                    "reason": reason[mask] if isinstance(reason, np.ndarray) else reason,
                    "value": picked.to_numpy(),
                }
            )
        )


def concat_quarantine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    return pd.concat(frames, ignore_index=True).sort_values(["file", "row", "field"], kind="stable", ignore_index=True)


def check_mpxn(
    faults: FieldFaults,
    mpxn: pa.Array,
    is_electricity: np.ndarray,
    is_gas: np.ndarray,
    mprn_lengths: tuple[int, int] = (6, 10),
) -> np.ndarray:
    """MPAN core (13 digits, valid check digit) for electricity, MPRN (policy length, default 6 to 10 digits) for gas;
    faults named apart. Returns `digit_counts(mpxn)` for the caller's MPxN keys."""
    counts = digit_counts(mpxn)
    mpan_shape = counts == 13
    faults.add(is_electricity & ~mpan_shape, "mpxn", "not an MPAN core (13 digits)", mpxn)
    faults.add(
        is_electricity & mpan_shape & ~mpan_valid_array(mpxn, counts), "mpxn", "MPAN core check digit is wrong", mpxn
    )
    lo, hi = mprn_lengths
    faults.add(
        is_gas & ~mprn_valid_array(mpxn, counts, mprn_lengths), "mpxn", f"not an MPRN ({lo} to {hi} digits)", mpxn
    )
    return counts
