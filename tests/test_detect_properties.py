"""Property tests of the detection rules against a plain scalar oracle, and of row accounting."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    AS_OF,
    OPERATORS,
    STRANGER,
    SUPPLIER,
    CaseFiles,
    b64,
    cert,
    der,
    impostor_ca,
    make_org_certificate,
    mpan,
    no_cert,
    org_ca,
    revoked_serial,
)

A, B, GAS = OPERATORS["AAAA"][1], OPERATORS["BBBB"][1], OPERATORS["GASX"][1]
HOLD = {"untrusted": "untrusted_issuer", "policy": "policy_not_accepted", "profile": "profile_violation"}
# kind -> (DER or text or None, owner entity, role, hold cause or None, usage, valid on AS_OF, revoked)
CERTS = {
    "empty": (None,),
    "garbage": ("MIIBAgIBAQ==",),
    "A_DS": (no_cert("AAAA", "DS"), A, 3, None, "DS", True, False),
    "A_KA": (no_cert("AAAA", "KA"), A, 3, None, "KA", True, False),
    "A_DS_prev": (no_cert("AAAA", "DS", generation="previous"), A, 3, None, "DS", True, False),
    "A_DS_expired": (no_cert("AAAA", "DS", generation="expired"), A, 3, None, "DS", False, False),
    "A_KA_revoked": (no_cert("AAAA", "KA", generation="revoked"), A, 3, None, "KA", True, True),
    "A_DS_untrusted": (no_cert("AAAA", "DS", untrusted=True), A, 3, "untrusted", "DS", True, False),
    "A_KA_other_policy": (
        der(make_org_certificate(org_ca(), A, 3, "KA", seed="prop/policy", policy_oid="1.2.826.0.1.8641679.1.2.1.1")),
        A,
        3,
        "policy",
        "KA",
        True,
        False,
    ),
    "B_DS_ku_not_critical": (
        der(make_org_certificate(org_ca(), B, 3, "DS", seed="prop/ku", critical_key_usage=False)),
        B,
        3,
        "profile",
        "DS",
        True,
        False,
    ),
    "A_as_supplier": (cert(A, "DS", role=2), A, 2, None, "DS", True, False),
    "B_DS": (no_cert("BBBB", "DS"), B, 3, None, "DS", True, False),
    "B_KA": (no_cert("BBBB", "KA"), B, 3, None, "KA", True, False),
    "B_KA_expired": (no_cert("BBBB", "KA", generation="expired"), B, 3, None, "KA", False, False),
    "GAS_DS": (no_cert("GASX", "DS"), GAS, 3, None, "DS", True, False),
    "stranger": (cert(STRANGER, "KA"), STRANGER, 3, None, "KA", True, False),
    "supplier": (cert(SUPPLIER, "DS", role=2), SUPPLIER, 2, None, "DS", True, False),
}
_ = impostor_ca  # the untrusted certificate above is issued by it


def _day(offset: int) -> str:
    return (AS_OF + timedelta(days=offset)).isoformat()


REGISTRATIONS = {
    "none": [],
    "A": [("AAAA", "2020-01-01", "")],
    "B": [("BBBB", "2020-01-01", "")],
    "A_then_B_ended": [("BBBB", "2010-01-01", "2019-12-31"), ("AAAA", "2020-01-01", "")],  # BBBB: the previous NO
    "A_ended": [("AAAA", "2010-01-01", "2026-05-01")],
    "A_future": [("AAAA", _day(100), "")],
    "A_and_B": [("AAAA", "2020-01-01", ""), ("BBBB", "2021-01-01", "")],
    "A_then_B_soon": [("AAAA", "2020-01-01", _day(4)), ("BBBB", _day(5), "")],  # a change of NO within the horizon
    "A_then_B_later": [("AAAA", "2020-01-01", _day(59)), ("BBBB", _day(60), "")],  # beyond it
    "unknown": [("ZZZZ", "2020-01-01", "")],
    "gas_no": [("GASX", "2020-01-01", "")],  # a gas transporter registered for an MPAN
}
REGISTERED = {"A": A, "B": B, "A_then_B_ended": A, "A_then_B_soon": A, "A_then_B_later": A}
PREVIOUS = {"A_then_B_ended": B}
REGISTRY_FUEL = {A: "E", B: "E", GAS: "G"}

device = st.fixed_dictionaries(
    {
        "ds": st.sampled_from(sorted(CERTS)),
        "ka": st.sampled_from(sorted(CERTS)),
        "registration": st.sampled_from(sorted(REGISTRATIONS)),
        "device_type": st.sampled_from(["ESME"] * 8 + ["CHF", "BOGUS"]),
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
    _, owner, role, hold, cert_usage, valid, revoked = spec
    if hold:
        return "HOLD"
    if owner != expected or role != 3:
        return "WRONG"
    if cert_usage != usage:
        return "KEY_USAGE"
    if revoked:
        return "REVOKED"
    if not valid:
        return "EXPIRED"
    return "OK"


def wrong_cause(kind: str, registration: str) -> str:
    _, owner, role, *_ = CERTS[kind]
    if role != 3:
        return "non_no_role"
    if PREVIOUS.get(registration) == owner:
        return "previous_no_of_mpxn"
    return {"E": "other_no_same_fuel", "G": "other_fuel_no"}.get(REGISTRY_FUEL.get(owner), "unregistered_entity")


def oracle(d: dict) -> tuple[str, str, bool]:
    """The contract's version 2 precedence, causes and lock-out, written the plain way: (category, cause, locked)."""
    ds, ka = slot_verdict(d["ds"], "", "DS"), slot_verdict(d["ka"], "", "KA")
    if d["device_type"] == "BOGUS":
        return "INVALID_INPUT", "unconfigured_device_type", False
    if d["device_type"] == "ESME" and d["bad_mpan"]:  # a type without NO slots has no fuel, so no MPxN rule
        return "INVALID_INPUT", "invalid_mpxn", False
    if "UNDECODABLE" in (ds, ka):
        return "INVALID_INPUT", "undecodable_certificate", False
    if d["device_type"] == "CHF":
        return "OUT_OF_SCOPE", "device_type_without_no_slots", False
    if d["repeat"] == "differing":
        return "DUPLICATE_CONFLICT", "differing_records", False
    for kind in (d["ds"], d["ka"]):
        if len(CERTS[kind]) > 1 and CERTS[kind][3]:
            return "SECURITY_HOLD", HOLD[CERTS[kind][3]], False
    reg = d["registration"]
    if reg in ("none", "A_ended", "A_future"):
        return (
            "NO_RDP",
            {"none": "no_registration", "A_ended": "registration_ended", "A_future": "registration_not_yet_effective"}[
                reg
            ],
            False,
        )
    if reg == "A_and_B":
        return "RDP_AMBIGUOUS", "several_registrations", False
    if reg in ("unknown", "gas_no"):
        return "UNKNOWN_NO", "not_in_registry" if reg == "unknown" else "other_fuel_operator", False
    if reg == "A_then_B_soon":
        holds_b = any(len(CERTS[k]) > 1 and CERTS[k][1] == B for k in (d["ds"], d["ka"]))
        return "PENDING_NO_CHANGE", "slots_hold_incoming_no" if holds_b else "change_of_no_pending", False
    expected = REGISTERED[reg]
    ds, ka = slot_verdict(d["ds"], expected, "DS"), slot_verdict(d["ka"], expected, "KA")
    if "WRONG" in (ds, ka):
        return "WRONG_NO", wrong_cause(d["ds"] if ds == "WRONG" else d["ka"], reg), True
    if "EMPTY" in (ds, ka):
        return (
            "SLOT_EMPTY",
            {(True, True): "both_empty", (True, False): "ds_empty", (False, True): "ka_empty"}[
                (ds == "EMPTY", ka == "EMPTY")
            ],
            True,
        )
    if "KEY_USAGE" in (ds, ka):
        cause = {(True, True): "swapped", (True, False): "ds_slot_holds_ka", (False, True): "ka_slot_holds_ds"}[
            (ds == "KEY_USAGE", ka == "KEY_USAGE")
        ]
        return "KEY_USAGE_MISMATCH", cause, True
    if "REVOKED" in (ds, ka):
        return "EXPIRED_OR_REVOKED", "revoked", True
    if "EXPIRED" in (ds, ka):
        return "EXPIRED_OR_REVOKED", "expired", True  # the test's MOC enforces validity
    return "OK", "", False


@settings(
    max_examples=int(os.environ.get("DETECT_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(device, min_size=1, max_size=25))
def test_detection_matches_oracle_and_accounts_for_every_row(devices):
    with tempfile.TemporaryDirectory() as tmp:
        case = CaseFiles(Path(tmp))
        case.revoked.append(revoked_serial("AAAA", "KA"))
        case.s1sp_settings = {"MOC": {"enforces_validity": True}}
        expected, rows_written = {}, 0
        for i, d in enumerate(devices):
            device_id = f"00-1D-00-00-00-00-{i // 256:02X}-{i % 256:02X}"
            m = mpan(11, i)
            for no, start, end in REGISTRATIONS[d["registration"]]:
                case.register(m, no, start=start, end=end)
            if d["bad_mpan"]:
                m = m[:-1] + str((int(m[-1]) + 1) % 10)
            row = case.device(device_id, m, CERTS[d["ds"]][0], CERTS[d["ka"]][0], device_type=d["device_type"])
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
        f = result.findings
        got = dict(zip(f["device_id"], zip(f["category"], f["cause"].astype(str), f["no_locked_out"].astype(bool))))
        assert got == expected
        assert sum(result.summary.rows_by_category.values()) == rows_written == result.summary.rows_read["extracts"]
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
    wanted = np.concatenate(
        [rng.choice(hay, 150_000), rng.integers(0, 2**50, 50_000), [-1, hay[0], hay[-1], hay[-1] + 1]]
    )
    rng.shuffle(wanted)
    slot, found = _find(hay, wanted)
    expected = _indexer(hay, wanted)
    assert found.sum() >= 150_000
    assert found.tolist() == (expected >= 0).tolist()
    assert np.array_equal(slot[found], expected[expected >= 0])
