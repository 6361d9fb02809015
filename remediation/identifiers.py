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


def digit_counts(values: pa.Array) -> np.ndarray:
    """Per value, its length when it is one or more ASCII digits, else 0 (null too). One pass answers the MPAN,
    MPRN and MPxN-key shape questions, each of which was a regular-expression scan of its own."""
    digits = pc.fill_null(pc.ascii_is_decimal(values), False).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    return np.where(digits, lengths, 0).astype(np.int32)


def _fixed_width(values: pa.Array, width: int) -> np.ndarray:
    """Strings all `width` bytes long -> their bytes as an (n, width) uint8 view of the Arrow buffer, no copies."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    values = pa.concat_arrays([values]) if values.offset else values  # rebased buffers: row i starts at width * i
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1)
    return np.frombuffer(values.buffers()[2], dtype=np.uint8, count=int(offsets[-1]))[offsets[0] :].reshape(-1, width)


def mpan_valid_array(values: pa.Array, counts: np.ndarray | None = None) -> np.ndarray:
    """Vectorised `is_valid_mpan` -> bool ndarray (nulls are invalid). `counts`: `digit_counts(values)` if known."""
    shaped = (digit_counts(values) if counts is None else counts) == 13
    result = np.zeros(len(shaped), dtype=bool)
    if not shaped.any():
        return result
    digits = _fixed_width(pc.filter(values, pa.array(shaped)), 13) - np.uint8(ord("0"))
    total = np.zeros(len(digits), dtype=np.int32)
    for i, weight in enumerate(MPAN_WEIGHTS.tolist()):  # twelve column passes: integer matmul has no fast path
        total += digits[:, i] * np.int32(weight)
    result[shaped] = total % 11 % 10 == digits[:, 12]
    return result


def mprn_valid_array(
    values: pa.Array, counts: np.ndarray | None = None, lengths: tuple[int, int] = (6, 10)
) -> np.ndarray:
    """Vectorised `is_valid_mprn` -> bool ndarray (nulls are invalid); `lengths` is the policy's (min, max) digits.
    No check digit is ever enforced: its rule is unverified (DOMAIN.md)."""
    counts = digit_counts(values) if counts is None else counts
    return (counts >= lengths[0]) & (counts <= lengths[1])


# ---------------------------------------------------------------- compact keys (national scale)

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _NIBBLE[_c] = _i
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def eui64_keys(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """EUI-64 text (any accepted spelling) -> (uint64 keys, valid mask). Invalid entries get key 0 and valid False.

    A device is then 8 bytes instead of a Python string, and grouping or joining devices is integer work."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    return _eui64_keys_fixed(values) or _eui64_keys_any(values)


# An extract spells its ids one way: all 16 hex digits, or all eight pairs joined by hyphens. Then the bytes are
# decoded where they lie, and only the values that are not that spelling take the general path.
_NIBBLE_ANY_CASE = _NIBBLE.copy()
for _i, _c in enumerate(b"abcdef"):
    _NIBBLE_ANY_CASE[_c] = 10 + _i
_DIGIT_COLUMNS = {16: np.arange(16), 23: np.array([i for i in range(23) if i % 3 != 2])}


def _eui64_keys_fixed(values: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    if not len(values) or values.null_count:
        return None
    low, high = pc.min_max(pc.binary_length(values)).values()
    width = low.as_py()
    if width != high.as_py() or width not in _DIGIT_COLUMNS:
        return None
    raw = _fixed_width(values, width)
    nibbles = _NIBBLE_ANY_CASE[raw[:, _DIGIT_COLUMNS[width]]]
    ok = (nibbles != 255).all(axis=1)
    if width == 23:
        ok &= (raw[:, 2::3] == ord("-")).all(axis=1)
    octets = (nibbles[:, 0::2] << np.uint8(4)) | nibbles[:, 1::2]
    keys = np.ascontiguousarray(octets).view(">u8").ravel().astype(np.uint64)
    other = np.flatnonzero(~ok)
    if len(other):  # e.g. padded with spaces, or not an id at all: the general rule decides
        keys[other], ok[other] = _eui64_keys_any(pc.take(values, pa.array(other)))
    return keys, ok


def _eui64_keys_any(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    compact = pc.utf8_upper(pc.replace_substring(pc.utf8_trim_whitespace(values), "-", ""))
    ok = pc.fill_null(pc.match_substring_regex(compact, r"^[0-9A-F]{16}$"), False)
    filled = pc.if_else(ok, compact, pa.scalar("0" * 16, pa.string()))
    nibbles = _NIBBLE[_fixed_width(filled, 16)]
    # Two hex digits -> one octet, eight octets read as one big-endian integer: byte-sized work, no (n, 16) uint64s.
    octets = (nibbles[:, 0::2] << np.uint8(4)) | nibbles[:, 1::2]
    keys = np.ascontiguousarray(octets).view(">u8").ravel().astype(np.uint64)
    return keys, ok.to_numpy(zero_copy_only=False)


def eui64_text(keys: np.ndarray) -> pa.Array:
    """uint64 keys -> canonical `00-1D-...` text, vectorised."""
    octets = np.ascontiguousarray(keys, dtype=">u8").view(np.uint8).reshape(-1, 8)
    out = np.full((len(keys), 23), ord("-"), dtype=np.uint8)
    out[:, 0::3], out[:, 1::3] = _HEX[octets >> 4], _HEX[octets & 15]
    return _strings(np.arange(0, 23 * len(keys) + 1, 23, dtype=np.int32), out.ravel())


def _strings(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """An Arrow string array straight from its buffers: int32 offsets, UTF-8 bytes and an optional validity mask."""
    bitmap = None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if bitmap is None else int(len(valid) - valid.sum())
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)


def mpxn_keys(values: pa.Array, counts: np.ndarray | None = None) -> np.ndarray:
    """Digit strings of 1..15 digits -> value * 16 + length (keeps leading zeros apart); anything else -> -1.
    `counts`: `digit_counts(values)` if known."""
    counts = digit_counts(values) if counts is None else counts
    digits = (counts >= 1) & (counts <= 15)
    numbers = pc.cast(pc.if_else(pa.array(digits), values, pa.scalar("0", pa.string())), pa.int64()).to_numpy(
        zero_copy_only=False
    )
    return np.where(digits, numbers * 16 + counts, -1)


def mpxn_text(keys: np.ndarray) -> pa.Array:
    """Inverse of `mpxn_keys` for valid keys (>= 0); -1 gives null.

    All at once: the digits of every key right-aligned in an (n, 15) byte matrix, each row's own digits picked out
    in row order, and the string array made from those bytes and the lengths' running sum."""
    valid = keys >= 0
    lengths = np.where(valid, keys % 16, 0)
    values = np.where(valid, keys // 16, 0)
    width = int(lengths.max(initial=0))
    digits = np.empty((len(keys), width), dtype=np.uint8)
    for place in range(width - 1, -1, -1):
        digits[:, place] = values % 10
        values //= 10
    digits += ord("0")
    wanted = np.arange(width) >= (width - lengths)[:, None]  # a row's last `length` columns are its digits
    offsets = np.zeros(len(keys) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return _strings(offsets, digits[wanted], valid)
