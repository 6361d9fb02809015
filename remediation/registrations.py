"""The RDP registrations as detection needs them: a compact index keyed by MPxN+fuel, built from the rows alone.

Built as soon as the RDP files are read (before the extracts), so the rows (a quarter of a gigabyte at national
scale) never share memory with the device records. Pure: rows in, sorted arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from remediation.config import Policy


def file_names(files: pd.Series) -> pd.Series:
    names = {f: Path(f).name for f in pd.unique(files)}
    return pd.Series(files).map(names)


def reg_keys_of(mpxn_key: np.ndarray, fuel: np.ndarray) -> np.ndarray:
    """MPxN + fuel as one int64; -1 where either is unknown (negative)."""
    keys = mpxn_key * 2
    keys += np.maximum(fuel, 0)
    keys[(mpxn_key < 0) | (fuel < 0)] = -1
    return keys


def starts_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in a sorted array."""
    starts = np.empty(len(ordered), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts


@dataclass
class RdpIndex:
    """What detection needs of the RDP rows, as sorted arrays keyed by MPxN+fuel (see `reg_keys_of`): built from the
    rows alone, so the rows (a quarter of a gigabyte at national scale) are freed before any per-device work."""

    no_ids: np.ndarray  # NO id per code
    width: int  # pair packing: (MPxN+fuel key) * width + NO code
    reg_keys: np.ndarray  # sorted distinct keys with a registration effective on the as-of date
    counts: np.ndarray  # distinct NOs effective per key (at most 127: only 0, 1 and more matter)
    first_no: np.ndarray  # the first (the only one, when counts == 1) of them
    shared_keys: np.ndarray  # (key, NO) pairs of the keys with several effective NOs, for the detail text
    shared_nos: np.ndarray
    rejected_keys: np.ndarray  # sorted keys with a rejected row of known fuel
    rejected_mpxns: np.ndarray  # sorted MPxN keys with a rejected row whose fuel is unreadable (touches both fuels)
    rejected_where: pd.Series  # MPxN key -> "file row N; ..." of its rejected rows
    soon_pairs: np.ndarray  # sorted distinct pairs of registrations starting within the pending horizon
    soon_first_pairs: np.ndarray  # sorted distinct such pairs, and the earliest start day of each
    soon_first_day: np.ndarray
    ended_keys: np.ndarray  # sorted keys with a registration that ended before the as-of date
    future_keys: np.ndarray  # sorted keys with a registration that starts after it
    ended_pairs: np.ndarray  # sorted distinct pairs of registrations ended before the as-of date

    def release(self) -> None:
        """Drop the arrays (the matched devices keep what they need): the index is used once."""
        for field in fields(self):
            setattr(self, field.name, None)

    @classmethod
    def build(cls, registrations: pd.DataFrame, as_of: date, policy: Policy) -> RdpIndex:
        """The registrations effective on the as-of date (how many distinct NOs per key, which one), the rejected
        rows, the registrations that ended before it (for WRONG_NO causes) and those that start within the pending
        horizon. Masks are built in place, one at a time: at national scale every 80 MB temporary counts."""
        day = (as_of - date(1970, 1, 1)).days  # RDP dates are int32 days since 1970-01-01, NO_DAY for an open end
        no_cat = registrations["network_operator_id"].astype("category")
        no_ids = np.asarray(no_cat.cat.categories, dtype=object)
        codes = no_cat.cat.codes.to_numpy()
        invalid = registrations["invalid"].to_numpy(dtype=bool)
        fuel = registrations["fuel"].to_numpy(dtype=np.int8)
        mpxn = registrations["mpxn_key"].to_numpy(dtype=np.int64)
        effective = ~invalid
        effective &= mpxn >= 0
        usable = effective.copy()
        start = registrations["from_day"].to_numpy(dtype=np.int32)
        effective &= start <= day
        end = registrations["to_day"].to_numpy(dtype=np.int32)
        still = (end >= day) if policy.rdp_effective_to_inclusive else (end > day)  # NO_DAY (open) passes both
        effective &= still
        ended = usable & ~still
        del still, end
        # Registrations still to come: the few rows starting after the as-of date (any, for NO_RDP causes; within
        # the horizon, for PENDING_NO_CHANGE).
        future = usable & (start > day)
        soon = future & (start <= day + policy.pending_change_horizon_days)
        del usable
        # Distinct (key, NO) pairs as one int64 each (MPxN+fuel < 2**50 for any valid MPxN, NO codes < width),
        # sorted; runs of equal keys give the count of distinct NOs. Sorting beats hashing at 10 million rows.
        width = max(4096, len(no_ids) + 1)
        combined = reg_keys_of(mpxn[effective], fuel[effective])
        combined *= width
        combined += codes[effective]
        del effective
        combined.sort()
        if len(combined):
            combined = combined[starts_of_runs(combined)]
        pair_nos = (combined % width).astype(np.int32)
        pair_keys = combined
        pair_keys //= width
        del combined
        run_starts = np.flatnonzero(starts_of_runs(pair_keys))
        reg_keys = pair_keys[run_starts]
        # Only 0, 1 and "more" matter of a count, and NO codes are few: int8 and (mostly) int16 halve the index.
        counts = np.minimum(np.diff(np.append(run_starts, len(pair_keys))), 127).astype(np.int8)
        first_no = pair_nos[run_starts].astype(np.int16 if len(no_ids) < 2**15 else np.int32)
        del run_starts
        shared = np.repeat(counts > 1, counts)  # only the pairs of keys with several NOs are needed again (details)
        shared_keys, shared_nos = pair_keys[shared], pair_nos[shared]
        del shared, pair_keys, pair_nos

        # A rejected row could be the registration that counts: never trust the rest of that MPxN's history.
        rejected_rows = invalid & (mpxn >= 0)
        known_fuel = rejected_rows & (fuel >= 0)
        rejected_where = pd.Series(dtype=object)
        if rejected_rows.any():
            bad = registrations[rejected_rows]
            rejected_where = (
                (file_names(bad["source_file"].astype(str)) + " row " + bad["source_row"].astype(str))
                .groupby(bad["mpxn_key"].to_numpy())
                .agg("; ".join)
            )

        def pairs(mask: np.ndarray) -> np.ndarray:
            return np.unique(reg_keys_of(mpxn[mask], fuel[mask]) * width + codes[mask])

        soon_keys = reg_keys_of(mpxn[soon], fuel[soon]) * width + codes[soon]
        soon_start = start[soon]
        order = np.lexsort((soon_start, soon_keys))
        first = order[starts_of_runs(soon_keys[order])]  # each pair's earliest start
        return cls(
            no_ids=no_ids,
            width=width,
            reg_keys=reg_keys,
            counts=counts,
            first_no=first_no,
            shared_keys=shared_keys,
            shared_nos=shared_nos,
            rejected_keys=np.unique(reg_keys_of(mpxn[known_fuel], fuel[known_fuel])),
            rejected_mpxns=np.unique(mpxn[rejected_rows & (fuel < 0)]),
            rejected_where=rejected_where,
            soon_pairs=pairs(soon),
            soon_first_pairs=soon_keys[first],
            soon_first_day=soon_start[first],
            ended_keys=np.unique(reg_keys_of(mpxn[ended], fuel[ended])),
            future_keys=np.unique(reg_keys_of(mpxn[future], fuel[future])),
            ended_pairs=pairs(ended),
        )
