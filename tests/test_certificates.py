"""SMKI certificate facts, on the real ZAZ1 test certificates (when present) and on generated ones."""

from __future__ import annotations

import base64
import re
from datetime import date

import pyarrow as pa
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation.certificates import (
    CertificateCatalog,
    CertificateDecodeError,
    decode_certificate_text,
    facts_from_text,
    parse_certificate,
)
from remediation.model import EMPTY_SLOT
from testing.testpki import der, make_org_ca, make_org_certificate, pem
from tests.support import REFERENCE

ROLE_BY_USAGE = {"digitalSignature": "DS", "keyAgreement": "KA"}


def reference_rows():
    index = REFERENCE / "INDEX.md"
    if not index.exists():
        return []
    rows = []
    for line in index.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].endswith(".pem"):
            rows.append(cells)
    return rows


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference certificates are not on this machine")
@pytest.mark.parametrize("row", reference_rows(), ids=lambda r: r[0])
def test_reference_certificate_facts(row):
    name, entity, role, usage, serial, not_before, not_after, issuer, note = row[:9]
    facts = facts_from_text((REFERENCE / name).read_text(), org_cas=[])
    if "not strict DER" in note:
        assert facts.error and "not strict DER" in facts.error and facts.entity_id is None
        return
    assert facts.error is None
    assert facts.entity_id.replace("-", "").lower() == entity
    assert facts.role == int(role)
    assert facts.key_usage == ROLE_BY_USAGE[usage]
    assert facts.serial == serial.lstrip("0")
    assert facts.not_before.date().isoformat() == not_before and facts.not_after.date().isoformat() == not_after
    assert facts.chains_to_org_ca is False  # no Z1 CA certificate configured
    assert facts.profile_issues == ()


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference certificates are not on this machine")
def test_reference_validity_is_judged_on_the_as_of_date():
    facts = facts_from_text((REFERENCE / "Z1b-networkOperator-ds.pem").read_text(), org_cas=[])
    assert facts.valid_throughout(date(2025, 6, 1)) and not facts.valid_throughout(date(2026, 1, 9))


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference certificates are not on this machine")
def test_reference_catalog_survives_the_undecodable_pair():
    catalog = CertificateCatalog([])
    texts = [p.read_text() for p in sorted(REFERENCE.glob("*.pem"))]
    ids = catalog.intern_array(pa.array(texts + ["", None]))
    assert ids[-1] == ids[-2] == EMPTY_SLOT
    frame = catalog.frame(date(2025, 1, 1))
    assert frame["error"].notna().sum() == 2 and len(frame) == len(texts)


CA = make_org_ca("tests/cert-ca", "Z1")
OTHER_CA = make_org_ca("tests/cert-other-ca", "Z1")  # same subject name, different key
ENTITY = "90-B3-D5-1F-30-02-00-00"


def test_generated_certificate_profile():
    cert = make_org_certificate(CA, ENTITY, 3, "KA", name="NO")
    facts = parse_certificate(der(cert), [CA.certificate])
    assert (facts.entity_id, facts.role, facts.key_usage, facts.chains_to_org_ca) == (ENTITY, 3, "KA", True)
    assert facts.is_network_operator and facts.profile_issues == ()
    assert len(cert.serial_number.to_bytes(16, "big")) == 16
    assert "OU=03" in facts.subject and facts.issuer == CA.certificate.subject.rfc4514_string()


def test_chain_is_checked_by_signature_not_by_name():
    cert = make_org_certificate(OTHER_CA, ENTITY, 3, "DS")
    assert cert.issuer == CA.certificate.subject
    assert parse_certificate(der(cert), [CA.certificate]).chains_to_org_ca is False
    assert parse_certificate(der(cert), [OTHER_CA.certificate, CA.certificate]).chains_to_org_ca is True


def test_profile_issues_are_reported():
    cert = make_org_certificate(CA, ENTITY, 3, "BOTH", critical_key_usage=False)
    facts = parse_certificate(der(cert), [CA.certificate])
    assert facts.key_usage == "BOTH" and "keyUsage is not critical" in facts.profile_issues


def test_pem_base64_and_escaped_pem_are_one_certificate():
    cert = make_org_certificate(CA, ENTITY, 3, "DS")
    text_pem = pem(cert)
    forms = [
        text_pem,
        base64.b64encode(der(cert)).decode(),
        text_pem.replace("\n", "\\n"),
        "  " + text_pem.replace("\n", "\r\n"),
    ]
    catalog = CertificateCatalog([CA.certificate])
    ids = catalog.intern_array(pa.array(forms))
    assert len(set(ids.tolist())) == 1 and len(catalog) == 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("not base64 at all!", "not valid base64"),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n", "no END line"),
        ("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "not a certificate"),
        (base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "not strict DER"),
    ],
)
def test_undecodable_text_gives_a_reason(text, reason):
    facts = facts_from_text(text, [CA.certificate])
    assert facts.error and reason in facts.error


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())))
def test_decoding_arbitrary_text_never_crashes(text):
    facts = facts_from_text(text, [CA.certificate])
    assert facts.error is not None or facts.entity_id is not None or facts.profile_issues


@given(st.binary(max_size=64))
def test_decode_certificate_text_raises_only_its_own_error(data):
    try:
        decode_certificate_text(base64.b64encode(data).decode() + "=")
    except CertificateDecodeError:
        pass


def test_orl_lookup_by_issuer_and_serial(tmp_path):
    from remediation.ingest.pki import load_orl

    cert = make_org_certificate(CA, ENTITY, 3, "DS", seed="orl-test")
    serial = format(cert.serial_number, "X")
    spaced = ":".join(re.findall("..", "00" + serial))
    (tmp_path / "orl.csv").write_text(f"\ufeffissuer,serial,reason\nZ1,{spaced},keyCompromise\n")
    catalog = CertificateCatalog([CA.certificate], load_orl(tmp_path / "orl.csv"))
    cid = catalog.intern_der(der(cert))
    assert catalog.frame(date(2026, 1, 1)).loc[cid, "revoked"]
    assert x509.load_der_x509_certificate(catalog.facts[cid].der).serial_number == cert.serial_number


def test_orl_serial_of_another_issuer_does_not_revoke(tmp_path):
    """SMETS1's certificate id is serial + issuer: the same serial from another CA (Z99) is another certificate."""
    from remediation.ingest.pki import load_orl

    cert = make_org_certificate(CA, ENTITY, 3, "DS", seed="orl-test")
    serial = format(cert.serial_number, "X")
    (tmp_path / "orl.csv").write_text(f'issuer,serial\nZ99,{serial}\n"OU=07,CN=Z99",{serial}\n')
    catalog = CertificateCatalog([CA.certificate], load_orl(tmp_path / "orl.csv"))
    cid = catalog.intern_der(der(cert))
    assert not catalog.frame(date(2026, 1, 1)).loc[cid, "revoked"]
    (tmp_path / "orl.csv").write_text(
        f'issuer,serial\n"OU=07,CN=Z1",{serial}\n'
    )  # the full RFC 4514 name also names it
    catalog = CertificateCatalog([CA.certificate], load_orl(tmp_path / "orl.csv"))
    cid = catalog.intern_der(der(cert))
    assert catalog.frame(date(2026, 1, 1)).loc[cid, "revoked"]


def test_orl_without_issuers_is_refused(tmp_path):
    from remediation.errors import ConfigError
    from remediation.ingest.pki import load_orl

    (tmp_path / "orl.csv").write_text("serial,reason\n0A,keyCompromise\n")
    with pytest.raises(ConfigError, match="field 'issuer'"):
        load_orl(tmp_path / "orl.csv")
