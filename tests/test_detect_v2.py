"""Contract version 2 (issue 11): pending changes of NO, held certificates, device types, ORL by (issuer, serial),
causes, lock-outs, S1SP codes from configuration, registry coverage, planned categories and replacement validity.
Each test runs the real pipeline on real files with real certificates, and fails on the version 1 code."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from click.testing import CliRunner

from remediation import pipeline
from remediation.cli import main
from remediation.errors import ConfigError, SafetyRefusal
from tests.support import (
    AS_OF,
    OPERATORS,
    REFERENCE,
    STRANGER,
    SUPPLIER,
    CaseFiles,
    cert,
    der,
    impostor_ca,
    key_env,
    make_org_certificate,
    mpan,
    no_cert,
    org_ca,
    revoked_serial,
    signer,
    zaz1_anchor_pem,
)

A_DS, A_KA = no_cert("AAAA", "DS"), no_cert("AAAA", "KA")
B_DS, B_KA = no_cert("BBBB", "DS"), no_cert("BBBB", "KA")


def dev(n: int) -> str:
    return f"00-1D-00-00-00-00-{n // 256:02X}-{n % 256:02X}"


def finding(result, device_id: str) -> dict:
    f = result.findings
    rows = f[f["device_id"] == device_id]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def day(offset: int) -> str:
    return (AS_OF + timedelta(days=offset)).isoformat()


# ------------------------------------------------------------------------------------------------ pending change of NO


def pending_case(tmp_path, start_offset: int, ds=B_DS, ka=B_KA) -> CaseFiles:
    """AAAA registered until today + start_offset - 1, BBBB from today + start_offset; the slots as given."""
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, ds, ka)
    case.register(m, "AAAA", start="2020-01-01", end=day(start_offset - 1))
    case.register(m, "BBBB", start=day(start_offset))
    return case


def test_pending_change_is_held_not_overwritten_with_the_outgoing_no(tmp_path):
    """The issue's example: AAAA until today+4, BBBB from today+5, slots already BBBB's: v1 planned it WRONG_NO."""
    case = pending_case(tmp_path, 5)
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"]) == ("PENDING_NO_CHANGE", "slots_hold_incoming_no")
    assert f"from AAAA to BBBB on {day(5)}" in f["detail"]
    plan = case.plan()
    assert plan.rows.empty and plan.document["counts"]["devices"] == 0


def test_pending_change_outgoing_slots_and_the_horizon(tmp_path):
    case = pending_case(tmp_path / "a", 20, ds=A_DS, ka=A_KA)
    assert finding(case.detect(), dev(1))["cause"] == "change_of_no_pending"
    beyond = pending_case(tmp_path / "b", 40)  # outside the default 28 days: judged on today's registration
    assert finding(beyond.detect(), dev(1))["category"] == "WRONG_NO"
    beyond.policy["pending_change_horizon_days"] = 60
    assert finding(beyond.detect(), dev(1))["category"] == "PENDING_NO_CHANGE"


def test_a_renewal_of_the_same_no_is_not_a_pending_change(tmp_path):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, A_DS, A_KA)
    case.register(m, "AAAA", start="2020-01-01", end=day(3))
    case.register(m, "AAAA", start=day(4))
    assert finding(case.detect(), dev(1))["category"] == "OK"


# ------------------------------------------------------------------------------------------------ security hold


def held(**kw) -> bytes:
    return der(
        make_org_certificate(
            org_ca(), OPERATORS["BBBB"][1], 3, kw.pop("usage", "DS"), seed=f"hold/{sorted(kw.items())}", **kw
        )
    )


HOLD_CASES = {
    "untrusted_issuer": (
        der(make_org_certificate(impostor_ca(), OPERATORS["BBBB"][1], 3, "DS", seed="hold/impostor")),
        "untrusted_issuer",
        "not issued by a configured Organisation CA",
    ),
    "no_accepted_policy": (
        held(policy_oid="1.2.826.0.1.8641679.1.2.1.1"),
        "policy_not_accepted",
        "no accepted SMKI policy OID",
    ),
    "no_policy_at_all": (held(policy_oid=None), "policy_not_accepted", "carries none"),
    "policies_not_critical": (
        held(critical_policies=False),
        "profile_violation",
        "certificatePolicies is not critical",
    ),
    "key_usage_not_critical": (held(critical_key_usage=False), "profile_violation", "keyUsage is not critical"),
    "both_key_usages": (held(usage="BOTH"), "profile_violation", "both digitalSignature and keyAgreement"),
}


@pytest.mark.parametrize("name", HOLD_CASES)
def test_untrusted_or_off_profile_certificate_is_held_and_listed(tmp_path, name):
    """v1 filed these as WRONG_NO and planned them: the overwrite would destroy the evidence of a possible incident."""
    body, cause, reason = HOLD_CASES[name]
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, body, A_KA)
    case.register(m, "AAAA")
    result = case.detect()
    f = finding(result, dev(1))
    assert (f["category"], f["cause"], f["no_locked_out"]) == ("SECURITY_HOLD", cause, False)
    assert f["detail"].startswith("NO_DS: ") and reason in f["detail"]
    from cryptography import x509

    parsed = x509.load_der_x509_certificate(body)
    (listed,) = result.summary.security_hold
    assert listed["serial"] == format(parsed.serial_number, "X") and listed["issuer"] == parsed.issuer.rfc4514_string()
    assert listed["subject"] == parsed.subject.rfc4514_string() and listed["fingerprint"] == f["ds_fingerprint"]
    assert (listed["cause"], listed["devices"]) == (cause, 1)
    assert case.plan().rows.empty


def test_hold_beats_registration_and_duplicate_rules_below_it(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), mpan(), HOLD_CASES["untrusted_issuer"][0], A_KA)  # no RDP at all: still held
    assert finding(case.detect(), dev(1))["category"] == "SECURITY_HOLD"


# ------------------------------------------------------------------------------------------------ device types


def test_gpf_carries_the_gas_transporters_certificates(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), "1234567", no_cert("GASX", "DS"), no_cert("GASX", "KA"), device_type="GPF")
    case.device(dev(2), "7654321", A_DS, A_KA, device_type="GPF")
    case.register("1234567", "GASX", fuel="G")
    case.register("7654321", "GASX", fuel="G")
    result = case.detect()
    assert finding(result, dev(1))["category"] == "OK"
    assert (finding(result, dev(2))["category"], finding(result, dev(2))["cause"]) == ("WRONG_NO", "other_fuel_no")


@pytest.mark.parametrize("device_type", ["CHF", "PPMID", "IHD", "HCALCS"])
def test_types_without_no_slots_are_out_of_scope_not_invalid(tmp_path, device_type):
    case = CaseFiles(tmp_path)
    case.device(dev(1), mpan(), None, None, device_type=device_type)
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"], f["no_locked_out"]) == ("OUT_OF_SCOPE", "device_type_without_no_slots", False)
    assert device_type in f["detail"]


def test_device_types_are_configuration(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), mpan(), A_DS, A_KA, device_type="ESME2")
    case.device(dev(2), mpan(), None, None, device_type="SMARTPLUG")
    case.register(case.rows[0]["mpxn"], "AAAA")
    result = case.detect()
    assert (
        finding(result, dev(1))["category"] == "INVALID_INPUT"
        and finding(result, dev(1))["cause"] == "unconfigured_device_type"
    )
    case.extra_toml = '[device_types.ESME2]\nfuel = "E"\nno_slots = true\n[device_types.SMARTPLUG]\nno_slots = false\n'
    result = case.detect()
    assert finding(result, dev(1))["category"] == "OK" and finding(result, dev(2))["category"] == "OUT_OF_SCOPE"


def test_mprn_length_rule_is_policy(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), "12345", no_cert("GASX", "DS"), no_cert("GASX", "KA"), device_type="GSME")
    case.register("12345", "GASX", fuel="G")
    assert (finding(case.detect(), dev(1))["category"], finding(case.detect(), dev(1))["cause"]) == (
        "INVALID_INPUT",
        "invalid_mpxn",
    )
    case.policy["mprn_min_length"] = 5
    assert finding(case.detect(), dev(1))["category"] == "OK"


# ------------------------------------------------------------------------------------------------ revocation


def test_orl_revokes_by_issuer_and_serial_only(tmp_path):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, no_cert("AAAA", "DS", generation="revoked"), A_KA)
    case.register(m, "AAAA")
    case.revoked.append(("Z99", revoked_serial("AAAA")))  # the same serial from another issuer: another certificate
    assert finding(case.detect(), dev(1))["category"] == "OK"
    case.revoked.append(("Z1", revoked_serial("AAAA")))
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"], f["no_locked_out"]) == ("EXPIRED_OR_REVOKED", "revoked", True)


# ------------------------------------------------------------------------------------------------ causes and lock-outs


WRONG_CAUSES = {
    "other_no_same_fuel": (B_DS, B_KA),
    "other_fuel_no": (no_cert("GASX", "DS"), A_KA),
    "non_no_role": (cert(SUPPLIER, "DS", role=2), A_KA),
    "non_no_role_own_entity": (cert(OPERATORS["AAAA"][1], "DS", role=2), A_KA),
    "unregistered_entity": (cert(STRANGER, "DS"), A_KA),
}


@pytest.mark.parametrize("name", WRONG_CAUSES)
def test_wrong_no_causes(tmp_path, name):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, *WRONG_CAUSES[name])
    case.register(m, "AAAA")
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"], f["no_locked_out"]) == ("WRONG_NO", name.removesuffix("_own_entity"), True)


def test_wrong_no_cause_previous_no_of_the_supply_point(tmp_path):
    """BBBB was this MPAN's NO until last year; the S1SP never followed the change of NO."""
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, B_DS, B_KA)
    case.register(m, "BBBB", start="2015-01-01", end="2025-03-31")
    case.register(m, "AAAA", start="2025-04-01")
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"]) == ("WRONG_NO", "previous_no_of_mpxn")


@pytest.mark.parametrize(
    "ds, ka, category, cause, locked",
    [
        (None, A_KA, "SLOT_EMPTY", "ds_empty", True),
        (A_DS, None, "SLOT_EMPTY", "ka_empty", True),
        (None, None, "SLOT_EMPTY", "both_empty", True),
        (A_KA, A_DS, "KEY_USAGE_MISMATCH", "swapped", True),
        (A_DS, A_KA, "OK", "", False),
    ],
)
def test_causes_and_lock_out_of_the_slot_categories(tmp_path, ds, ka, category, cause, locked):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, ds, ka)
    case.register(m, "AAAA")
    f = finding(case.detect(), dev(1))
    assert (f["category"], f["cause"], bool(f["no_locked_out"])) == (category, cause, locked)


def test_expired_locks_the_no_out_only_where_the_s1sp_enforces_validity(tmp_path):
    case = CaseFiles(tmp_path)
    expired = no_cert("AAAA", "DS", generation="expired")
    for i, s1sp in enumerate(("MOC", "FOC"), start=1):
        m = mpan()
        case.device(dev(i), m, expired, A_KA, s1sp=s1sp)
        case.register(m, "AAAA")
    case.s1sp_settings = {"MOC": {"enforces_validity": True}, "FOC": {"enforces_validity": False}}
    result = case.detect()
    assert [finding(result, dev(i))["cause"] for i in (1, 2)] == ["expired", "expired"]
    assert [bool(finding(result, dev(i))["no_locked_out"]) for i in (1, 2)] == [True, False]
    assert result.summary.no_locked_out["by_s1sp"] == {"MOC": 1}


def test_headline_devices_no_no_can_manage_by_s1sp_and_no(tmp_path):
    case = CaseFiles(tmp_path)
    for i, (ds, ka, no, s1sp) in enumerate(
        [
            (B_DS, B_KA, "AAAA", "MOC"),
            (None, A_KA, "AAAA", "FOC"),
            (A_DS, A_KA, "AAAA", "MOC"),
            (A_DS, A_KA, "BBBB", "FOC"),
        ],
        start=1,
    ):
        m = mpan()
        case.device(dev(i), m, ds, ka, s1sp=s1sp)
        case.register(m, no)
    summary = case.detect().summary.to_json()
    locked = summary["no_locked_out"]
    assert locked["devices"] == 3
    assert locked["by_s1sp"] == {"FOC": 2, "MOC": 1} or locked["by_s1sp"] == {"MOC": 1, "FOC": 2}
    assert locked["by_registered_no"] == {"AAAA": 2, "BBBB": 1}
    assert locked["by_s1sp_and_no"] == {"MOC": {"AAAA": 1}, "FOC": {"AAAA": 1, "BBBB": 1}}
    assert summary["devices_by_cause"]["WRONG_NO"] == {"other_no_same_fuel": 2}
    assert summary["devices_by_cause"]["SLOT_EMPTY"] == {"ds_empty": 1}


def test_no_rdp_and_unknown_no_causes(tmp_path):
    case = CaseFiles(tmp_path)
    ms = [mpan() for _ in range(5)]
    for i, m in enumerate(ms, start=1):
        case.device(dev(i), m, B_DS, B_KA)
    case.register(ms[1], "AAAA", start="2015-01-01", end="2020-01-01")
    case.register(ms[2], "AAAA", start=day(100))
    case.register(ms[3], "ZZZZ")
    case.register(ms[4], "GASX")
    result = case.detect()
    causes = [finding(result, dev(i))["cause"] for i in range(1, 6)]
    assert causes == [
        "no_registration",
        "registration_ended",
        "registration_not_yet_effective",
        "not_in_registry",
        "other_fuel_operator",
    ]


# ------------------------------------------------------------------------------------------------ S1SP codes


def test_s1sp_codes_come_from_the_case(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), mpan(), A_DS, A_KA, s1sp="MOCSEC")  # a cohort such as "MOC (Secure)" is an S1SP of its own
    case.register(case.rows[0]["mpxn"], "AAAA")
    summary = case.detect().summary.to_json()
    assert summary["devices_by_s1sp"]["MOCSEC"]["OK"] == 1
    text = (tmp_path / "case.toml").read_text().replace("[s1sp.MOCSEC]\n", "")
    (tmp_path / "case.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"field 'inputs.extract\[\d\].s1sp'.*MOCSEC"):
        pipeline.run_detect(tmp_path / "case.toml", tmp_path / "out2")


# ------------------------------------------------------------------------------------------------ registry coverage


def test_registry_gap_is_listed_and_refuses_plan_unless_allowed(tmp_path):
    case = CaseFiles(tmp_path)
    for i in range(1, 4):
        m = mpan(33)  # an IDNO (GGEN, distributor id 33) the registry lacks
        case.device(dev(i), m, B_DS, B_KA)
        case.register(m, "GGEN")
    m = mpan()
    case.device(dev(9), m, B_DS, B_KA)
    case.register(m, "AAAA")
    result = case.detect()
    assert result.summary.registry_gaps == [{"network_operator_id": "GGEN", "devices": 3}]
    config = case.write()
    runner = CliRunner(env=key_env("alice"))  # the planner's key: the test case names a trust policy
    out = runner.invoke(main, ["detect", "--config", str(config), "--out", str(tmp_path / "d")], terminal_width=200)
    assert "registry gap" in out.stdout and "GGEN" in out.stdout
    refused = runner.invoke(main, ["plan", "--config", str(config), "--out", str(tmp_path / "p"), "--by", "alice"])
    assert refused.exit_code == 3 and "GGEN (3 devices)" in refused.stderr and "Traceback" not in refused.output
    allowed = runner.invoke(
        main, ["plan", "--config", str(config), "--out", str(tmp_path / "p2"), "--by", "alice", "--allow-unknown-no"]
    )
    assert allowed.exit_code == 0, allowed.stderr
    assert "--allow-unknown-no: planned despite registry gaps (GGEN 3)" in allowed.stdout.replace("\n", " ")
    document = json.loads((tmp_path / "p2" / "plan.json").read_text())
    assert document["allow_unknown_no"] is True and document["registry_gaps"] == [
        {"network_operator_id": "GGEN", "devices": 3}
    ]
    assert document["counts"]["devices"] == 1
    reused = [
        "plan",
        "--config",
        str(config),
        "--by",
        "alice",
        "--from",
        str(tmp_path / "d"),
    ]  # a sealed detect result: same pre-flight
    assert runner.invoke(main, [*reused, "--out", str(tmp_path / "p3")]).exit_code == 3
    assert runner.invoke(main, [*reused, "--out", str(tmp_path / "p4"), "--allow-unknown-no"]).exit_code == 0


# ------------------------------------------------------------------------------------------------ planned categories


def test_planned_categories_are_policy(tmp_path):
    case = CaseFiles(tmp_path)
    rows = [
        (B_DS, B_KA),
        (None, A_KA),
        (A_KA, A_DS),
        (no_cert("AAAA", "DS", generation="revoked"), A_KA),
        (no_cert("AAAA", "DS", generation="expired"), A_KA),
    ]
    for i, (ds, ka) in enumerate(rows, start=1):
        m = mpan()
        case.device(dev(i), m, ds, ka)
        case.register(m, "AAAA")
    case.revoked.append(revoked_serial("AAAA"))
    assert case.plan("p1").rows["device_id"].tolist() == [dev(1)]
    case.policy.update(correct_slot_empty=True, correct_key_usage_mismatch=True, correct_revoked=True)
    plan = case.plan("p2")
    assert plan.rows["device_id"].tolist() == [dev(i) for i in (1, 2, 3, 4)]  # never the expired one
    assert set(plan.rows["target_ds_fingerprint"]) == {_fp(A_DS)} and set(plan.rows["target_ka_fingerprint"]) == {
        _fp(A_KA)
    }
    assert plan.document["policy"]["correct_revoked"] is True
    detected = CliRunner().invoke(main, ["detect", "--config", str(case.write()), "--out", str(tmp_path / "d")])
    assert detected.exit_code == 0
    reused = pipeline.run_plan(case.write(), tmp_path / "p3", key=signer("alice"), from_detect=tmp_path / "d")
    assert reused.rows["device_id"].tolist() == plan.rows["device_id"].tolist()  # plan --from selects the same devices


def _fp(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest().upper()


def test_plan_refuses_a_replacement_expiring_within_the_minimum_validity(tmp_path):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, B_DS, B_KA)
    case.register(m, "AAAA")
    soon = (AS_OF + timedelta(days=90)).isoformat()
    case.registry_certs[("AAAA", "DS")] = der(
        make_org_certificate(
            org_ca(), OPERATORS["AAAA"][1], 3, "DS", seed="short", not_before="2025-01-01", not_after=soon
        )
    )
    with pytest.raises(SafetyRefusal, match="less than the policy's minimum of 180 days"):
        case.plan("p1")
    case.policy["min_replacement_validity_days"] = 60
    assert len(case.plan("p2").rows) == 1


# ------------------------------------------------------------------------------------------------ the real ZAZ1 certificates


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference certificates are not on this machine")
def test_real_zaz1_certificates_under_test_and_other_environment_policies(tmp_path):
    """The public ZAZ1 certificates carry 1.2.826.0.1.8641679.1.2.1.4: accepted by a test-environment case, they
    classify like any NO certificate; a case that accepts only another OID holds them for investigation."""
    zaz1_entity = "90-B3-D5-1F-30-02-00-00"
    case = CaseFiles(tmp_path, ca_pem=zaz1_anchor_pem())
    case.operators["ZNO1"] = ("E", zaz1_entity)
    text = {
        name: (REFERENCE / f"{name}.pem").read_text()
        for name in (
            "Z1-networkOperator-ds",
            "Z1-networkOperator-ka",
            "Z1-supplier-ds",
            "Z1b-networkOperator-ds",
            "Z1b-networkOperator-ka",
        )
    }
    layouts = [
        ("Z1-networkOperator-ds", "Z1-networkOperator-ka"),
        ("Z1-supplier-ds", "Z1-networkOperator-ka"),
        ("Z1b-networkOperator-ka", "Z1b-networkOperator-ds"),
        ("Z1b-networkOperator-ds", "Z1-networkOperator-ka"),
    ]
    for i, (ds, ka) in enumerate(layouts, start=1):
        m = mpan()
        case.device(dev(i), m, text[ds], text[ka])
        case.register(m, "ZNO1")
    on = date(2025, 6, 1)  # inside both generations' validity
    result = case.detect(as_of=on)
    got = [(finding(result, dev(i))["category"], finding(result, dev(i))["cause"]) for i in range(1, 5)]
    assert got == [("OK", ""), ("WRONG_NO", "non_no_role"), ("KEY_USAGE_MISMATCH", "swapped"), ("OK", "")]
    case.policy_oids = ("1.2.826.0.1.8641679.1.2.1.1",)  # another environment's OID
    result = case.detect(as_of=on)
    assert {(finding(result, dev(i))["category"], finding(result, dev(i))["cause"]) for i in range(1, 5)} == {
        ("SECURITY_HOLD", "policy_not_accepted")
    }
    assert {h["serial"] for h in result.summary.security_hold} >= {
        "4FC0252E553ECD05D4F72DCFAD55C8E7",
        "4BF733EEB936F53B7F91DC9B7F63DCFD",
    }
    assert all(set(h["issuer"].split(",")) == {"OU=07", "CN=Z1"} for h in result.summary.security_hold)


def test_a_manual_s1sp_gets_change_requests_never_plan_rows(tmp_path):
    """mode = "manual": nothing is written through its API, so its devices stay out of plan.parquet (apply's input)."""
    import pandas as pd

    case = CaseFiles(tmp_path)
    for i, s1sp in enumerate(("MOC", "FOC"), start=1):
        m = mpan()
        case.device(dev(i), m, B_DS, B_KA, s1sp=s1sp)
        case.register(m, "AAAA")
    case.s1sp_settings = {"FOC": {"mode": "manual"}}
    plan = case.plan()
    assert plan.rows["s1sp"].tolist() == ["MOC"]
    assert plan.document["manual"] == {"s1sps": ["FOC"], "devices": 1, "by_s1sp": {"FOC": 1}}
    listing = pd.read_csv(tmp_path / "plan" / "change_requests" / "foc.csv")
    assert listing["device_id"].tolist() == [dev(2)] and "target_ds_fingerprint" in listing
    assert not (tmp_path / "plan" / "manual_change_requests.csv").exists()  # one writer: the change-request export
    assert plan.document["endpoints"]["FOC"]["mode"] == "manual"


def test_pending_horizon_boundary_is_inclusive(tmp_path):
    """A change on the horizon's last day is pending; one day later it is not (yet)."""
    case = pending_case(tmp_path / "a", 28)
    assert finding(case.detect(), dev(1))["category"] == "PENDING_NO_CHANGE"
    case = pending_case(tmp_path / "b", 29)
    assert finding(case.detect(), dev(1))["category"] == "WRONG_NO"


def test_plan_refuses_a_replacement_without_an_accepted_policy_oid(tmp_path):
    case = CaseFiles(tmp_path)
    m = mpan()
    case.device(dev(1), m, B_DS, B_KA)
    case.register(m, "AAAA")
    case.registry_certs[("AAAA", "KA")] = der(
        make_org_certificate(
            org_ca(), OPERATORS["AAAA"][1], 3, "KA", seed="target/policy", policy_oid="1.2.826.0.1.8641679.1.2.1.1"
        )
    )
    with pytest.raises(SafetyRefusal, match="KA certificate of network operator AAAA.*no accepted SMKI policy OID"):
        case.plan()


def test_unknown_s1sp_filter_and_simulator_code_are_usage_errors(tmp_path):
    case = CaseFiles(tmp_path)
    case.device(dev(1), mpan(), A_DS, A_KA)
    config = case.write()
    runner = CliRunner(env=key_env("alice"))
    plan = runner.invoke(
        main, ["plan", "--config", str(config), "--out", str(tmp_path / "p"), "--by", "alice", "--s1sp", "XOC"]
    )
    assert plan.exit_code == 2 and "XOC" in plan.stderr and "MOC" in plan.stderr
    sim = runner.invoke(
        main, ["simulator", "serve", "--config", str(config), "--s1sp", "XOC", "--db", str(tmp_path / "s.sqlite")]
    )
    assert sim.exit_code == 2 and "XOC" in sim.output and not (tmp_path / "s.sqlite").exists()


def test_reports_carry_the_headline_gaps_causes_and_held_certificates(tmp_path):
    case = CaseFiles(tmp_path)
    specs = [(B_DS, B_KA, "AAAA"), (HOLD_CASES["untrusted_issuer"][0], A_KA, "AAAA"), (B_DS, B_KA, "GGEN")]
    for i, (ds, ka, no) in enumerate(specs, start=1):
        m = mpan(33 if no == "GGEN" else 10)
        case.device(dev(i), m, ds, ka)
        case.register(m, no)
    case.detect()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    html = pipeline.run_report(tmp_path / "out", "html")[0].read_text()
    assert f'data-locked-out="{summary["no_locked_out"]["devices"]}"' in html and 'data-locked-no="AAAA">1<' in html
    assert 'data-gap="GGEN">1<' in html and 'data-cause="WRONG_NO/other_no_same_fuel">1<' in html
    assert (
        f'data-hold="{summary["security_hold"][0]["fingerprint"]}">1<' in html
        and summary["security_hold"][0]["serial"] in html
    )
    md = pipeline.run_report(tmp_path / "out", "md")[0].read_text()
    assert (
        "## Devices no NO can manage: 1" in md
        and "| GGEN | 1 |" in md
        and summary["security_hold"][0]["fingerprint"] in md
    )
    report = json.loads(pipeline.run_report(tmp_path / "out", "json")[0].read_text())
    assert (
        report["registry_gaps"] == [{"network_operator_id": "GGEN", "devices": 1}]
        and report["no_locked_out"] == summary["no_locked_out"]
    )


def test_empty_swapped_and_revoked_slots_are_corrected_end_to_end(tmp_path):
    """With the policy's corrections on, an empty slot, swapped key usages and a revoked certificate are written to the
    registered NO's current pair through the simulator's API, and a fresh detect finds them OK."""
    from remediation.apply.runner import ApplyOptions
    from tests.simulation import run_apply, start_sim
    from tests.support import signer

    case = CaseFiles(tmp_path)
    for i, (ds, ka) in enumerate(
        [(None, A_KA), (A_KA, A_DS), (no_cert("AAAA", "DS", generation="revoked"), A_KA), (None, None)], start=1
    ):
        m = mpan()
        case.device(dev(i), m, ds, ka)
        case.register(m, "AAAA")
    case.revoked.append(revoked_serial("AAAA"))
    case.policy.update(correct_slot_empty=True, correct_key_usage_mismatch=True, correct_revoked=True)
    config = case.write()
    plan = pipeline.run_plan(config, tmp_path / "plan", key=signer("alice"))
    assert plan.rows["category"].tolist() == ["SLOT_EMPTY", "KEY_USAGE_MISMATCH", "EXPIRED_OR_REVOKED", "SLOT_EMPTY"]
    pipeline.run_approve(tmp_path / "plan", signer("bob"))
    sim = start_sim(tmp_path / "moc.sqlite", config)
    try:
        result = run_apply(tmp_path / "plan", tmp_path / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
        assert result.status == "completed" and len(sim.writes()) == 4
    finally:
        sim.stop()
    from remediation.simulator.service import export_extract

    (tmp_path / "fresh").mkdir()
    export_extract(sim.store, tmp_path / "fresh" / "moc.csv")
    verdict = pipeline.run_verify(config, tmp_path / "fresh", tmp_path / "verify", tmp_path / "plan")
    assert verdict["planned_at_target"] == verdict["planned"] == 4 and verdict["devices_by_category"]["OK"] == 4
