"""Device and supply-point identifiers: EUI-64, MPAN core, MPRN.

Each rule exists twice on purpose: a scalar form for single values (registry entries, messages, tests) and a
vectorised form over Arrow/NumPy arrays for the millions of rows in an extract. The scalar form is the
specification; the vectorised form is tested against it with hypothesis.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EUI64_RE = re.compile(r"^[0-9A-F]{16}$")
_MPRN_RE = re.compile(r"^[0-9]{6,10}$")
_MPAN_RE = re.compile(r"^[0-9]{13}$")
MPAN_WEIGHTS = np.array([3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43], dtype=np.int64)
_HYPHENATE = r"\1-\2-\3-\4-\5-\6-\7-\8"
_EIGHT_PAIRS = "^" + "(..)" * 8 + "$"


def canonical_eui64(text: str | None) -> str | None:
    """`001d000000000001` or `00-1d-00-...` (any case) -> `00-1D-00-00-00-00-00-01`; None if not an EUI-64."""
    if text is None:
        return None
    compact = text.strip().replace("-", "").upper()
    if not _EUI64_RE.match(compact):
        return None
    return "-".join(compact[i : i + 2] for i in range(0, 16, 2))


def mpan_check_digit(first12: str) -> int:
    total = sum(int(d) * int(w) for d, w in zip(first12, MPAN_WEIGHTS))
    return total % 11 % 10


def is_valid_mpan(text: str | None) -> bool:
    return bool(text) and bool(_MPAN_RE.match(text)) and mpan_check_digit(text[:12]) == int(text[12])


def is_valid_mprn(text: str | None) -> bool:
    return bool(text) and bool(_MPRN_RE.match(text))


# ---------------------------------------------------------------- vectorised forms


def mpan_valid_array(values: pa.Array) -> np.ndarray:
    """Vectorised `is_valid_mpan` -> bool ndarray (nulls are invalid)."""
    n = len(values)
    shaped = pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{13}$"), False).to_numpy(zero_copy_only=False)
    result = np.zeros(n, dtype=bool)
    if not shaped.any():
        return result
    candidates = pc.filter(values, pa.array(shaped)).to_numpy(zero_copy_only=False).astype("S13")
    digits = np.frombuffer(candidates.tobytes(), dtype=np.uint8).reshape(-1, 13).astype(np.int64) - ord("0")
    check = (digits[:, :12] @ MPAN_WEIGHTS) % 11 % 10
    result[shaped] = check == digits[:, 12]
    return result


def mprn_valid_array(values: pa.Array) -> np.ndarray:
    """Vectorised `is_valid_mprn` -> bool ndarray (nulls are invalid)."""
    return pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{6,10}$"), False).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------- compact keys (national scale)

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _NIBBLE[_c] = _i
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


def eui64_keys(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """EUI-64 text (any accepted spelling) -> (uint64 keys, valid mask). Invalid entries get key 0 and valid False.

    A device is then 8 bytes instead of a Python string, and grouping or joining devices is integer work."""
    compact = pc.utf8_upper(pc.replace_substring(pc.utf8_trim_whitespace(values), "-", ""))
    ok = pc.fill_null(pc.match_substring_regex(compact, r"^[0-9A-F]{16}$"), False)
    filled = pc.if_else(ok, compact, pa.scalar("0" * 16, pa.string()))
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    filled = pa.concat_arrays([filled]) if filled.offset else filled  # rebased buffers: row i starts at byte 16 * i
    offsets = np.frombuffer(filled.buffers()[1], dtype=np.int32, count=len(filled) + 1)
    data = np.frombuffer(filled.buffers()[2], dtype=np.uint8, count=int(offsets[-1]), offset=0)[offsets[0] :]
    nibbles = _NIBBLE[data.reshape(-1, 16)].astype(np.uint64)
    keys = (nibbles << _SHIFTS).sum(axis=1, dtype=np.uint64)
    return keys, ok.to_numpy(zero_copy_only=False)


def eui64_text(keys: np.ndarray) -> pa.Array:
    """uint64 keys -> canonical `00-1D-...` text, vectorised."""
    octets = np.ascontiguousarray(keys, dtype=">u8").view(np.uint8).reshape(-1, 8)
    out = np.full((len(keys), 23), ord("-"), dtype=np.uint8)
    out[:, 0::3], out[:, 1::3] = _HEX[octets >> 4], _HEX[octets & 15]
    return pa.array(out.view("S23").ravel()).cast(pa.string())


def mpxn_keys(values: pa.Array) -> np.ndarray:
    """Digit strings of 1..15 digits -> value * 16 + length (keeps leading zeros apart); anything else -> -1."""
    digits = pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{1,15}$"), False)
    numbers = pc.cast(pc.if_else(digits, values, pa.scalar("0", pa.string())), pa.int64())
    lengths = pc.utf8_length(pc.fill_null(values, ""))
    keys = numbers.to_numpy(zero_copy_only=False) * 16 + lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(digits.to_numpy(zero_copy_only=False), keys, -1)


def mpxn_text(keys: np.ndarray) -> pa.Array:
    """Inverse of `mpxn_keys` for valid keys (>= 0); -1 gives null."""
    out = pa.nulls(len(keys), pa.string())
    lengths = np.where(keys >= 0, keys % 16, 0)
    values = np.where(keys >= 0, keys // 16, 0)
    for length in np.unique(lengths[keys >= 0]):
        mask = (keys >= 0) & (lengths == length)
        width = int(length)
        digits = (values[mask][:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10
        text = pa.array(np.ascontiguousarray((digits + ord("0")).astype(np.uint8)).view(f"S{width}").ravel()).cast(pa.string())
        positions = np.flatnonzero(mask)
        filler = np.full(len(keys), -1, dtype=np.int64)
        filler[positions] = np.arange(len(positions))
        taken = pc.take(text, pa.array(filler, mask=filler < 0))
        out = pc.if_else(pa.array(mask), taken, out)
    return out
