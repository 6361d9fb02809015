"""Build SMKI-profile certificates with `cryptography`: for the sample case, the tests and the benchmarks.

The profile follows the real ZAZ1 test certificates (see DOMAIN.md): ECDSA P-256 / SHA-256, 16-byte serials,
subject OU = remote party role in two hex digits, x500UniqueIdentifier = EUI-64 as a BIT STRING, a critical
key usage with exactly one of digitalSignature / keyAgreement, critical certificatePolicies. Keys are derived
from a seed and signatures are deterministic (RFC 6979), so the same seed gives byte-identical certificates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

SMKI_POLICY_OID = x509.ObjectIdentifier("1.2.826.0.1.8641679.1.2.1.4")  # as on the ZAZ1 test certificates
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def derive_key(seed: str) -> ec.EllipticCurvePrivateKey:
    value = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(value, ec.SECP256R1())


def _serial(seed: str) -> int:
    # 16 bytes with the top bit clear, so the DER INTEGER is exactly 16 octets like the real ones.
    return int.from_bytes(hashlib.sha256(b"serial:" + seed.encode()).digest()[:16], "big") >> 1 | (1 << 126)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def make_org_ca(seed: str = "org-ca", name: str = "Z1", not_before="2020-01-01", not_after="2040-01-01") -> Authority:
    key = derive_key(seed)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "07")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial(seed))
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, False, False, False), critical=True)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return Authority(cert, key)


def make_org_certificate(
    issuer: Authority,
    entity_id: str,
    role: int,
    usage: str,
    *,
    seed: str | None = None,
    name: str | None = None,
    not_before: str = "2024-01-01",
    not_after: str = "2034-01-01",
    critical_key_usage: bool = True,
    policy_oid: str | None = SMKI_POLICY_OID.dotted_string,
    critical_policies: bool = True,
) -> x509.Certificate:
    """An organisation certificate; `usage` is "DS" (digitalSignature) or "KA" (keyAgreement)."""
    seed = seed or f"{entity_id}/{role}/{usage}/{not_before}"
    eui = bytes.fromhex(entity_id.replace("-", ""))
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else []
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{role:02X}"),
        x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00" + eui, _type=_ASN1Type.BitString),
    ]
    ds, ka = usage in ("DS", "BOTH"), usage in ("KA", "BOTH")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(issuer.certificate.subject)
        .public_key(derive_key(seed).public_key())
        .serial_number(_serial(seed))
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(
            x509.KeyUsage(ds, False, False, False, ka, False, False, False, False), critical=critical_key_usage
        )
    )
    if policy_oid is not None:
        policies = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy_oid), None)])
        builder = builder.add_extension(policies, critical=critical_policies)
    return builder.sign(issuer.key, hashes.SHA256(), ecdsa_deterministic=True)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
