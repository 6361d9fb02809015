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


def eui64_hex(canonical: str) -> str:
    """Canonical EUI-64 -> 16 upper-case hex digits without hyphens."""
    return canonical.replace("-", "")


def mpan_check_digit(first12: str) -> int:
    total = sum(int(d) * int(w) for d, w in zip(first12, MPAN_WEIGHTS))
    return total % 11 % 10


def is_valid_mpan(text: str | None) -> bool:
    return bool(text) and bool(_MPAN_RE.match(text)) and mpan_check_digit(text[:12]) == int(text[12])


def is_valid_mprn(text: str | None) -> bool:
    return bool(text) and bool(_MPRN_RE.match(text))


# ---------------------------------------------------------------- vectorised forms


def canonicalise_eui64_array(values: pa.Array) -> pa.Array:
    """Vectorised `canonical_eui64`: invalid or null inputs give null."""
    compact = pc.utf8_upper(pc.replace_substring(pc.utf8_trim_whitespace(values), "-", ""))
    ok = pc.match_substring_regex(compact, r"^[0-9A-F]{16}$")
    hyphenated = pc.replace_substring_regex(compact, _EIGHT_PAIRS, _HYPHENATE)
    return pc.if_else(pc.fill_null(ok, False), hyphenated, pa.scalar(None, pa.string()))


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
