"""Every finding category, and the precedence between them, on real files with real certificates."""

from __future__ import annotations

import pytest

from tests.support import (
    AS_OF,
    OPERATORS,
    STRANGER,
    SUPPLIER,
    CaseFiles,
    category_of,
    cert,
    mpan,
    no_cert,
    revoked_serial,
)


def dev(n: int) -> str:
    return f"00-1D-00-00-00-00-{n // 256:02X}-{n % 256:02X}"


A_DS, A_KA = no_cert("AAAA", "DS"), no_cert("AAAA", "KA")
B_DS, B_KA = no_cert("BBBB", "DS"), no_cert("BBBB", "KA")


def single(tmp_path, ds, ka, *, register=True, **kw):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, ds, ka, **kw)
    if register:
        case.register(m, "AAAA")
    return case, m


CASES = {
    # name: (ds, ka, expected category)
    "ok": (A_DS, A_KA, "OK"),
    "ok_previous_generation": (no_cert("AAAA", "DS", generation="previous"), A_KA, "OK"),
    "wrong_both": (B_DS, B_KA, "WRONG_NO"),
    "wrong_ds_only": (B_DS, A_KA, "WRONG_NO"),
    "wrong_ka_only": (A_DS, B_KA, "WRONG_NO"),
    "wrong_unregistered_org": (cert(STRANGER, "DS"), A_KA, "WRONG_NO"),
    "wrong_supplier_role": (cert(SUPPLIER, "DS", role=2), A_KA, "WRONG_NO"),
    "wrong_own_entity_but_supplier_role": (cert(OPERATORS["AAAA"][1], "DS", role=2), A_KA, "WRONG_NO"),
    "hold_untrusted_issuer_claiming_registered_no": (no_cert("AAAA", "DS", untrusted=True), A_KA, "SECURITY_HOLD"),
    "wrong_gas_transporter_on_electricity": (no_cert("GASX", "DS"), no_cert("GASX", "KA"), "WRONG_NO"),
    "slot_empty_ds": (None, A_KA, "SLOT_EMPTY"),
    "slot_empty_both": (None, None, "SLOT_EMPTY"),
    "key_usage_swapped": (A_KA, A_DS, "KEY_USAGE_MISMATCH"),
    "expired": (no_cert("AAAA", "DS", generation="expired"), A_KA, "EXPIRED_OR_REVOKED"),
    "revoked": (no_cert("AAAA", "DS", generation="revoked"), A_KA, "EXPIRED_OR_REVOKED"),
    # precedence between slot verdicts
    "wrong_beats_empty": (B_DS, None, "WRONG_NO"),
    "wrong_beats_expired": (no_cert("AAAA", "DS", generation="expired"), B_KA, "WRONG_NO"),
    "wrong_beats_key_usage": (A_KA, B_KA, "WRONG_NO"),
    "empty_beats_key_usage": (None, A_DS, "SLOT_EMPTY"),
    "key_usage_beats_expired": (A_KA, no_cert("AAAA", "DS", generation="expired"), "KEY_USAGE_MISMATCH"),
    "untrusted_expired_is_held": (no_cert("AAAA", "DS", generation="expired", untrusted=True), A_KA, "SECURITY_HOLD"),
    "hold_beats_wrong": (no_cert("BBBB", "DS", untrusted=True), B_KA, "SECURITY_HOLD"),
    "undecodable": (b"\x30\x82\x01\x0a\x02\x01", A_KA, "INVALID_INPUT"),
    "undecodable_beats_wrong": (B_DS, "bm90IGEgY2VydGlmaWNhdGU=", "INVALID_INPUT"),
}


@pytest.mark.parametrize("name", CASES)
def test_slot_content_category(tmp_path, name):
    ds, ka, expected = CASES[name]
    case, _ = single(tmp_path, ds, ka)
    case.revoked.append(revoked_serial("AAAA"))
    assert category_of(case.detect(), dev(1)) == expected


def test_wrong_no_names_owners(tmp_path):
    case, _ = single(tmp_path, B_DS, A_KA)
    f = case.detect().findings.iloc[0]
    assert (f.slot_ds_owner, f.slot_ka_owner, f.expected_owner) == (
        "90-B3-D5-1F-30-00-00-0B",
        "90-B3-D5-1F-30-00-00-0A",
        "90-B3-D5-1F-30-00-00-0A",
    )
    assert "NO_DS: another organisation's certificate" in f.detail


@pytest.mark.parametrize(
    "mutation, field",
    [
        ({"device_id": "00-1D-00-00-00-00-00-0G"}, "device_id"),
        ({"device_id": "001D0000000001"}, "device_id"),
        ({"device_type": "SMARTPLUG"}, "device_type"),  # a type nobody configured (HCALCS is OUT_OF_SCOPE)
        ({"mpxn": "1000000000010"}, "mpxn"),  # check digit wrong
        ({"s1sp": "FOC", "_file": "MOC"}, "s1sp"),  # a MOC file claiming a FOC device
        ({"extracted_at": "yesterday"}, "extracted_at"),
    ],
)
def test_invalid_input_beats_everything_and_is_quarantined(tmp_path, mutation, field):
    case, m = single(tmp_path, B_DS, B_KA)  # would be WRONG_NO
    case.rows[0].update(mutation)
    result = case.detect()
    assert result.findings["category"].tolist() == ["INVALID_INPUT"]
    q = result.quarantine
    assert q["field"].tolist() == [field] and q["row"].tolist() == [1] and q["file"].str.endswith("moc.csv").all()
    assert field in result.findings["detail"].iloc[0]


def test_mpan_check_digit_example_from_domain():
    from remediation.identifiers import is_valid_mpan, mpan_check_digit

    body = "123456789012"  # 1*3+2*5+3*7+4*13+5*17+6*19+7*23+8*29+9*31+0*37+1*41+2*43 = 1084; 1084 % 11 = 6; 6 % 10 = 6
    assert mpan_check_digit(body) == 6 and is_valid_mpan(body + "6") and not is_valid_mpan(body + "7")
    assert mpan_check_digit("100000000001") == 2  # 1*3 + 1*43 = 46; 46 % 11 = 2


def test_duplicate_identical_collapses_and_counts_both_rows(tmp_path):
    case, _ = single(tmp_path, A_DS, A_KA)
    case.rows.append(dict(case.rows[0]))
    result = case.detect()
    assert result.findings["category"].tolist() == ["OK"]
    assert result.summary.rows_by_category["OK"] == 2 and result.summary.devices == 1


def test_duplicate_with_different_id_spelling_is_the_same_device(tmp_path):
    case, _ = single(tmp_path, A_DS, A_KA)
    case.rows.append(dict(case.rows[0], device_id=dev(1).replace("-", "").lower()))
    assert case.detect().findings["category"].tolist() == ["OK"]


def test_duplicate_conflict_beats_wrong(tmp_path):
    """A device that is both duplicated with differing content and wrong is a DUPLICATE_CONFLICT, not planned."""
    case, _ = single(tmp_path, B_DS, B_KA)
    case.rows.append(dict(case.rows[0], no_ka_cert=b64_of(A_KA)))
    result = case.detect()
    assert category_of(result, dev(1)) == "DUPLICATE_CONFLICT"
    assert "moc.csv row 1" in result.findings["detail"].iloc[0] and "moc.csv row 2" in result.findings["detail"].iloc[0]


def test_duplicate_across_s1sps_conflicts_even_with_same_slots(tmp_path):
    case, _ = single(tmp_path, B_DS, B_KA)
    case.rows.append(dict(case.rows[0], s1sp="FOC"))
    result = case.detect()
    assert result.findings["category"].tolist() == ["DUPLICATE_CONFLICT"]
    assert result.findings["s1sp"].tolist() == ["FOC+MOC"]
    assert result.summary.rows_by_category["DUPLICATE_CONFLICT"] == 2


def test_invalid_beats_duplicate(tmp_path):
    case, _ = single(tmp_path, B_DS, B_KA)
    case.rows.append(dict(case.rows[0], no_ds_cert=b64_of(A_DS), mpxn="1000000000010"))
    assert case.detect().findings["category"].tolist() == ["INVALID_INPUT"]


def b64_of(d: bytes) -> str:
    import base64

    return base64.b64encode(d).decode()


@pytest.mark.parametrize(
    "registrations, expected",
    [
        ([], "NO_RDP"),
        ([("AAAA", "2015-01-01", "2026-05-31")], "NO_RDP"),  # ended the day before the as-of date
        ([("AAAA", "2026-06-02", "")], "NO_RDP"),  # starts after
        ([("AAAA", "2015-01-01", "2026-06-01")], "WRONG_NO"),  # effective_to inclusive: still AAAA today
        ([("AAAA", "2015-01-01", ""), ("BBBB", "2019-01-01", "")], "RDP_AMBIGUOUS"),
        ([("AAAA", "2015-01-01", ""), ("AAAA", "2019-01-01", "")], "WRONG_NO"),  # two rows, same NO: not ambiguous
        ([("BBBB", "2010-01-01", "2014-12-31"), ("AAAA", "2015-01-01", "")], "WRONG_NO"),  # history ignored
        ([("ZZZZ", "2015-01-01", "")], "UNKNOWN_NO"),
        ([("GASX", "2015-01-01", "")], "UNKNOWN_NO"),  # a gas transporter registered for an MPAN: other fuel
    ],
)
def test_registration_categories(tmp_path, registrations, expected):
    """The device holds BBBB's certificates; what it is depends only on the registration effective on the as-of date."""
    case, m = single(tmp_path, B_DS, B_KA, register=False)
    for no, start, end in registrations:
        case.register(m, no, start=start, end=end)
    assert category_of(case.detect(), dev(1)) == expected


def test_rejected_rdp_row_makes_the_mpxn_ambiguous(tmp_path):
    case, m = single(tmp_path, B_DS, B_KA)
    case.register(m, "BBBB", start="31/02/2021")
    result = case.detect()
    assert category_of(result, dev(1)) == "RDP_AMBIGUOUS"
    q = result.quarantine
    assert q[["s1sp", "row", "field"]].values.tolist() == [["RDP", 2, "effective_from"]]
    assert result.summary.quarantine["rdp_rows"] == 1


def test_no_rdp_beats_wrong_and_unknown_beats_wrong(tmp_path):
    case = CaseFiles(tmp_path)
    m1, m2 = mpan(), mpan()
    case.device(dev(1), m1, B_DS, B_KA)
    case.device(dev(2), m2, B_DS, B_KA)
    case.register(m2, "ZZZZ")
    result = case.detect()
    assert category_of(result, dev(1)) == "NO_RDP" and category_of(result, dev(2)) == "UNKNOWN_NO"


def test_gas_device_uses_gas_registration(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), "1234567", no_cert("AAAA", "DS"), no_cert("AAAA", "KA"), device_type="GSME")
    case.device(dev(2), "7654321", no_cert("GASX", "DS"), no_cert("GASX", "KA"), device_type="GSME")
    case.register("1234567", "GASX", fuel="G")
    case.register("7654321", "GASX", fuel="G")
    case.register("7654321", "AAAA", fuel="E")  # an electricity row with the same digits must not count
    result = case.detect()
    assert category_of(result, dev(1)) == "WRONG_NO" and category_of(result, dev(2)) == "OK"


def test_as_of_date_changes_validity_and_registration(tmp_path):
    from datetime import date

    ka = no_cert("AAAA", "KA", generation="previous")  # valid 2020..2030; the current one starts 2025
    case, m = single(tmp_path, no_cert("AAAA", "DS", generation="expired"), ka)
    assert category_of(case.detect(), dev(1)) == "EXPIRED_OR_REVOKED"  # expired 2025-01-01
    assert category_of(case.detect(as_of=date(2024, 12, 30)), dev(1)) == "OK"
    assert category_of(case.detect(as_of=date(2019, 12, 31)), dev(1)) == "NO_RDP"  # registered from 2020


def test_expiry_is_judged_for_the_whole_as_of_day(tmp_path):
    """A certificate whose notAfter is the morning of the as-of date is already expired on it."""
    from datetime import date

    case, _ = single(
        tmp_path, no_cert("AAAA", "DS", generation="expired"), no_cert("AAAA", "KA", generation="previous")
    )
    assert category_of(case.detect(as_of=date(2025, 1, 1)), dev(1)) == "EXPIRED_OR_REVOKED"
    assert category_of(case.detect(as_of=date(2024, 12, 31)), dev(1)) == "OK"


def test_not_yet_valid_certificate_is_reported_with_expired(tmp_path):
    from datetime import date

    case, _ = single(tmp_path, A_DS, no_cert("AAAA", "KA", generation="previous"))  # A_DS valid from 2025-01-01
    result = case.detect(as_of=date(2024, 12, 31))
    assert category_of(result, dev(1)) == "EXPIRED_OR_REVOKED" and result.findings["ds_verdict"].iloc[0] == "EXPIRED"


def test_as_of_default_comes_from_case(tmp_path):
    case, _ = single(tmp_path, A_DS, A_KA)
    assert case.detect().summary.as_of == AS_OF.isoformat()
