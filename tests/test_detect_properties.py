"""Property tests of the detection rules against a plain scalar oracle, and of row accounting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import OPERATORS, b64, STRANGER, SUPPLIER, CaseFiles, cert, mpan, no_cert, revoked_serial

A, B = OPERATORS["AAAA"][1], OPERATORS["BBBB"][1]
# kind -> (DER or text or None, owner entity, role, trusted, usage, valid on AS_OF, revoked)
CERTS = {
    "empty": (None,),
    "garbage": ("MIIBAgIBAQ==",),
    "A_DS": (no_cert("AAAA", "DS"), A, 3, True, "DS", True, False),
    "A_KA": (no_cert("AAAA", "KA"), A, 3, True, "KA", True, False),
    "A_DS_prev": (no_cert("AAAA", "DS", generation="previous"), A, 3, True, "DS", True, False),
    "A_DS_expired": (no_cert("AAAA", "DS", generation="expired"), A, 3, True, "DS", False, False),
    "A_KA_revoked": (no_cert("AAAA", "KA", generation="revoked"), A, 3, True, "KA", True, True),
    "A_DS_untrusted": (no_cert("AAAA", "DS", untrusted=True), A, 3, False, "DS", True, False),
    "A_as_supplier": (cert(A, "DS", role=2), A, 2, True, "DS", True, False),
    "B_DS": (no_cert("BBBB", "DS"), B, 3, True, "DS", True, False),
    "B_KA": (no_cert("BBBB", "KA"), B, 3, True, "KA", True, False),
    "B_KA_expired": (no_cert("BBBB", "KA", generation="expired"), B, 3, True, "KA", False, False),
    "stranger": (cert(STRANGER, "KA"), STRANGER, 3, True, "KA", True, False),
    "supplier": (cert(SUPPLIER, "DS", role=2), SUPPLIER, 2, True, "DS", True, False),
}
REGISTRATIONS = {
    "none": [],
    "A": [("AAAA", "2020-01-01", "")],
    "B": [("BBBB", "2020-01-01", "")],
    "A_then_B_ended": [("BBBB", "2010-01-01", "2019-12-31"), ("AAAA", "2020-01-01", "")],
    "A_ended": [("AAAA", "2010-01-01", "2026-05-01")],
    "A_and_B": [("AAAA", "2020-01-01", ""), ("BBBB", "2021-01-01", "")],
    "unknown": [("ZZZZ", "2020-01-01", "")],
}
REGISTERED = {"A": A, "B": B, "A_then_B_ended": A}

device = st.fixed_dictionaries(
    {
        "ds": st.sampled_from(sorted(CERTS)),
        "ka": st.sampled_from(sorted(CERTS)),
        "registration": st.sampled_from(sorted(REGISTRATIONS)),
        "bad_mpan": st.integers(0, 9).map(lambda n: n == 0),
        "repeat": st.sampled_from(["none"] * 6 + ["identical", "identical_twice", "differing"]),
    }
)


def slot_verdict(kind: str, expected: str, usage: str) -> str:
    spec = CERTS[kind]
    if spec[0] is None:
        return "EMPTY"
    if len(spec) == 1:
        return "UNDECODABLE"
    _, owner, role, trusted, cert_usage, valid, revoked = spec
    if owner != expected or role != 3 or not trusted:
        return "WRONG"
    if cert_usage != usage:
        return "KEY_USAGE"
    if not valid or revoked:
        return "EXPIRED"
    return "OK"


def oracle(d: dict) -> str:
    """The contract's precedence, written the plain way."""
    if d["bad_mpan"] or "UNDECODABLE" in (slot_verdict(d["ds"], "", "DS"), slot_verdict(d["ka"], "", "KA")):
        return "INVALID_INPUT"
    if d["repeat"] == "differing":
        return "DUPLICATE_CONFLICT"
    reg = d["registration"]
    if reg in ("none", "A_ended"):
        return "NO_RDP"
    if reg == "A_and_B":
        return "RDP_AMBIGUOUS"
    if reg == "unknown":
        return "UNKNOWN_NO"
    verdicts = {slot_verdict(d["ds"], REGISTERED[reg], "DS"), slot_verdict(d["ka"], REGISTERED[reg], "KA")}
    for verdict, category in (("WRONG", "WRONG_NO"), ("EMPTY", "SLOT_EMPTY"), ("KEY_USAGE", "KEY_USAGE_MISMATCH"), ("EXPIRED", "EXPIRED_OR_REVOKED")):
        if verdict in verdicts:
            return category
    return "OK"


@settings(max_examples=int(os.environ.get("DETECT_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(device, min_size=1, max_size=25))
def test_detection_matches_oracle_and_accounts_for_every_row(devices):
    with tempfile.TemporaryDirectory() as tmp:
        case = CaseFiles(Path(tmp))
        case.revoked.append(revoked_serial("AAAA", "KA"))
        expected, rows_written = {}, 0
        for i, d in enumerate(devices):
            device_id = f"00-1D-00-00-00-00-{i // 256:02X}-{i % 256:02X}"
            m = mpan(11, i)
            for no, start, end in REGISTRATIONS[d["registration"]]:
                case.register(m, no, start=start, end=end)
            if d["bad_mpan"]:
                m = m[:-1] + str((int(m[-1]) + 1) % 10)
            row = case.device(device_id, m, CERTS[d["ds"]][0], CERTS[d["ka"]][0])
            copies = {"none": 0, "identical": 1, "identical_twice": 2, "differing": 1}[d["repeat"]]
            for _ in range(copies):
                twin = dict(row)
                if d["repeat"] == "differing":
                    twin["no_ds_cert"] = "" if row["no_ds_cert"] else b64(CERTS["B_DS"][0])
                    twin["extracted_at"] = "2026-05-30T01:00:00Z"
                case.rows.append(twin)
            rows_written += 1 + copies
            expected[device_id] = oracle(d)
        result = case.detect()
        got = dict(zip(result.findings["device_id"], result.findings["category"]))
        assert got == expected
        assert sum(result.summary["rows_by_category"].values()) == rows_written == result.summary["rows_read"]["extracts"]
        assert result.findings["rows"].sum() == rows_written


# ------------------------------------------------------------------------------------------------ key lookups


def _indexer(haystack, needles):
    import pandas as pd

    return pd.Index(haystack).get_indexer(needles)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 60), max_size=40), st.lists(st.integers(-5, 60), max_size=200))
def test_find_agrees_with_a_hash_lookup(haystack, needles):
    import numpy as np

    from remediation.detect import _find

    hay = np.unique(np.array(haystack, dtype=np.int64))
    wanted = np.array(needles, dtype=np.int64)
    slot, found = _find(hay, wanted)
    expected = _indexer(hay, wanted)
    assert found.tolist() == (expected >= 0).tolist()
    assert slot[found].tolist() == expected[expected >= 0].tolist()


def test_find_in_sorted_order_path_agrees_with_a_hash_lookup():
    """Millions of needles in a haystack beyond the CPU caches take the sorted-needles path: same answers."""
    import numpy as np

    from remediation.detect import _find

    rng = np.random.default_rng(7)
    hay = np.unique(rng.integers(0, 2**50, 1_200_000))
    wanted = np.concatenate([rng.choice(hay, 150_000), rng.integers(0, 2**50, 50_000), [-1, hay[0], hay[-1], hay[-1] + 1]])
    rng.shuffle(wanted)
    slot, found = _find(hay, wanted)
    expected = _indexer(hay, wanted)
    assert found.sum() >= 150_000
    assert found.tolist() == (expected >= 0).tolist()
    assert np.array_equal(slot[found], expected[expected >= 0])
