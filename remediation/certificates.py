"""SMKI organisation certificate facts, read with `cryptography` and never by byte position.

A slot's certificate arrives as base64 DER or PEM text. `CertificateCatalog` interns each distinct text once
(PEM and base64 of the same DER share one id, keyed by the DER's SHA-256), parses it once, and hands out small
integer ids so that device tables never carry certificate text: at national scale millions of devices share a
few hundred certificates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from remediation.identifiers import canonical_eui64
from remediation.model import EMPTY_SLOT, ROLE_NETWORK_OPERATOR

KEY_USAGE_DS = "DS"
KEY_USAGE_KA = "KA"


class CertificateDecodeError(ValueError):
    """The text is not a certificate `cryptography` can read; the message is the reason for a report."""


@dataclass(frozen=True)
class CertificateFacts:
    fingerprint: str  # SHA-256 of the DER, upper-case hex (of the text itself when it never decoded)
    error: str | None = None  # why the certificate is unusable; all other fields are None when set
    der: bytes | None = None
    entity_id: str | None = None  # canonical EUI-64 of the subject's x500UniqueIdentifier
    role: int | None = None  # subject OU as a GBCS RemotePartyRole
    key_usage: str | None = None  # DS, KA, BOTH or NONE
    serial: str | None = None  # upper-case hex, no leading zeros
    issuer: str | None = None
    subject: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    chains_to_org_ca: bool = False
    profile_issues: tuple[str, ...] = field(default=())
    policy_oids: tuple[str, ...] = field(default=())  # certificatePolicies OIDs, dotted

    @property
    def is_network_operator(self) -> bool:
        return self.role == ROLE_NETWORK_OPERATOR

    def valid_throughout(self, day: date) -> bool:
        """Valid for the whole of `day` (UTC): a certificate that expires that morning is already expired."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1) - timedelta(microseconds=1)
        return self.not_before is not None and self.not_before <= start and end <= self.not_after

    def pem(self) -> str:
        body = base64.encodebytes(self.der).decode().replace("\n", "")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"

    def b64(self) -> str:
        return base64.b64encode(self.der).decode()


def decode_certificate_text(text: str) -> bytes:
    """PEM or base64 DER text -> DER bytes. Raises CertificateDecodeError with the reason."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        # Some exporters escape the PEM's newlines; both forms carry the same DER.
        stripped = stripped.replace("\\n", "\n")
        lines = [ln.strip() for ln in stripped.splitlines()]
        if not lines[-1].startswith("-----END"):
            raise CertificateDecodeError("PEM text has no END line (truncated?)")
        if "CERTIFICATE" not in lines[0]:
            raise CertificateDecodeError(f"PEM block is not a certificate ({lines[0]})")
        body = "".join(ln for ln in lines[1:-1] if ":" not in ln)
    else:
        body = "".join(stripped.split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateDecodeError(f"not valid base64 ({exc})") from None


def _subject_facts(cert: x509.Certificate) -> tuple[str | None, int | None, list[str]]:
    issues: list[str] = []
    entity_id = role = None
    uids = cert.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER)
    if len(uids) != 1:
        issues.append(f"subject has {len(uids)} x500UniqueIdentifier attributes, expected 1")
    else:
        value = uids[0].value
        raw = value if isinstance(value, bytes) else str(value).encode()
        # A BIT STRING value starts with its unused-bits octet; an EUI-64 is 8 whole octets after it.
        if len(raw) == 9 and raw[0] == 0:
            entity_id = canonical_eui64(raw[1:].hex())
        else:
            issues.append(f"subject x500UniqueIdentifier is {len(raw)} octets, not an EUI-64 BIT STRING")
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(ous) != 1:
        issues.append(f"subject has {len(ous)} OU attributes, expected 1 remote party role")
    else:
        try:
            role = int(str(ous[0].value), 16)
        except ValueError:
            issues.append(f"subject OU {ous[0].value!r} is not a hex remote party role")
    return entity_id, role, issues


def _key_usage(cert: x509.Certificate) -> tuple[str, list[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return "NONE", ["no keyUsage extension"]
    ds, ka = ext.value.digital_signature, ext.value.key_agreement
    issues = [] if ext.critical else ["keyUsage is not critical"]
    return ("BOTH" if ds and ka else KEY_USAGE_DS if ds else KEY_USAGE_KA if ka else "NONE"), issues


def _policies(cert: x509.Certificate) -> tuple[tuple[str, ...], list[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        return (), ["no certificatePolicies extension"]
    oids = tuple(p.policy_identifier.dotted_string for p in ext.value)
    return oids, [] if ext.critical else ["certificatePolicies is not critical"]


def _chains_to(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def parse_certificate(der: bytes, org_cas: list[x509.Certificate]) -> CertificateFacts:
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    try:
        cert = x509.load_der_x509_certificate(der)
        # Touch what lazy parsing would otherwise defer, so a malformed field fails here and not later.
        cert.subject, cert.extensions  # noqa: B018
    except ValueError as exc:
        reason = str(exc).split("\n")[0][:160]
        return CertificateFacts(fingerprint=fingerprint, error=f"certificate is not strict DER X.509 ({reason})")
    entity_id, role, issues = _subject_facts(cert)
    key_usage, ku_issues = _key_usage(cert)
    issues += ku_issues
    if key_usage in ("BOTH", "NONE"):
        issues.append(
            "keyUsage has both digitalSignature and keyAgreement"
            if key_usage == "BOTH"
            else "keyUsage has neither digitalSignature nor keyAgreement"
        )
    policy_oids, policy_issues = _policies(cert)
    issues += policy_issues
    key = cert.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
        issues.append("public key is not ECDSA P-256")
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA256):
        issues.append("signature is not SHA-256")
    return CertificateFacts(
        fingerprint=fingerprint,
        der=der,
        entity_id=entity_id,
        role=role,
        key_usage=key_usage,
        serial=format(cert.serial_number, "X"),
        issuer=cert.issuer.rfc4514_string(),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        chains_to_org_ca=_chains_to(cert, org_cas),
        profile_issues=tuple(issues),
        policy_oids=policy_oids,
    )


def facts_from_text(text: str, org_cas: list[x509.Certificate]) -> CertificateFacts:
    try:
        der = decode_certificate_text(text)
    except CertificateDecodeError as exc:
        return CertificateFacts(fingerprint=hashlib.sha256(text.encode()).hexdigest().upper(), error=str(exc))
    return parse_certificate(der, org_cas)


def load_certificate_file(path) -> x509.Certificate:
    """A PEM or DER certificate file, for configuration (CA, registry). Raises ValueError with a reason."""
    data = open(path, "rb").read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


# Why a certificate is held for investigation rather than overwritten (SECURITY_HOLD), first that applies.
HOLD_CAUSES = ("untrusted_issuer", "policy_not_accepted", "profile_violation")


def issuer_names(facts: CertificateFacts) -> set[str]:
    """The forms an ORL may name a certificate's issuer by: the full RFC 4514 name or its common name."""
    if facts.issuer is None:
        return set()
    names = {facts.issuer}
    names.update(part.split("=", 1)[1] for part in facts.issuer.split(",") if part.upper().startswith("CN="))
    return names


class CertificateCatalog:
    """Interns slot certificate text to ids; one parse per distinct certificate across all extracts.

    `revoked` is the ORL as (issuer, serial) pairs: SMETS1 identifies a certificate by serial and issuer, so a serial
    alone never revokes. `accepted_policy_oids` is the environment's SMKI policy set (None: not judged)."""

    def __init__(
        self,
        org_cas: list[x509.Certificate],
        revoked: frozenset[tuple[str, str]] = frozenset(),
        accepted_policy_oids: tuple[str, ...] | None = None,
    ):
        self.org_cas = org_cas
        self.revoked = revoked
        self.accepted_policy_oids = accepted_policy_oids
        self.facts: list[CertificateFacts] = []
        self._by_fingerprint: dict[str, int] = {}
        self._by_text: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.facts)

    def intern_text(self, text: str) -> int:
        cert_id = self._by_text.get(text)
        if cert_id is None:
            facts = facts_from_text(text, self.org_cas)
            cert_id = self._intern_facts(facts)
            self._by_text[text] = cert_id
        return cert_id

    def intern_der(self, der: bytes) -> int:
        return self._intern_facts(parse_certificate(der, self.org_cas))

    def _intern_facts(self, facts: CertificateFacts) -> int:
        cert_id = self._by_fingerprint.get(facts.fingerprint)
        if cert_id is None:
            cert_id = len(self.facts)
            self.facts.append(facts)
            self._by_fingerprint[facts.fingerprint] = cert_id
        return cert_id

    def intern_array(self, texts: pa.Array) -> np.ndarray:
        """Certificate text column -> int32 ids; null or blank text is an empty slot (EMPTY_SLOT)."""
        # Encode first and trim only the few distinct values: millions of 500-byte texts are hashed once, never copied.
        encoded = pc.dictionary_encode(texts.cast(pa.string()))
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        distinct = [t.strip() for t in encoded.dictionary.to_pylist()]
        mapping = np.array([self.intern_text(t) if t else EMPTY_SLOT for t in distinct] + [EMPTY_SLOT], dtype=np.int32)
        indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
        return mapping[indices]

    def is_revoked(self, facts: CertificateFacts) -> bool:
        return facts.serial is not None and any((name, facts.serial) in self.revoked for name in issuer_names(facts))

    def hold(self, facts: CertificateFacts) -> tuple[str, str] | None:
        """(cause, reason) when a decoded certificate must be held for investigation; None when it is trusted."""
        if facts.error is not None:
            return None
        if not facts.chains_to_org_ca:
            return (
                "untrusted_issuer",
                f"not issued by a configured Organisation CA (issuer {facts.issuer}, serial {facts.serial})",
            )
        if self.accepted_policy_oids is not None and not set(facts.policy_oids) & set(self.accepted_policy_oids):
            carried = ", ".join(facts.policy_oids) or "none"
            return "policy_not_accepted", f"no accepted SMKI policy OID (carries {carried}; serial {facts.serial})"
        if facts.profile_issues:
            return (
                "profile_violation",
                f"breaks the SMKI profile: {'; '.join(facts.profile_issues)} (serial {facts.serial})",
            )
        return None

    def frame(self, as_of: date) -> pd.DataFrame:
        """One row per certificate id with the facts detection needs, judged on the as-of instant."""
        rows = []
        for cid, f in enumerate(self.facts):
            hold = self.hold(f)
            rows.append(
                {
                    "cert_id": cid,
                    "fingerprint": f.fingerprint,
                    "error": f.error,
                    "entity_id": f.entity_id,
                    "role": -1 if f.role is None else f.role,
                    "key_usage": f.key_usage,
                    "serial": f.serial,
                    "chains": f.chains_to_org_ca,
                    "in_validity": f.error is None and f.valid_throughout(as_of),
                    "revoked": self.is_revoked(f),
                    "hold": HOLD_CAUSES.index(hold[0]) if hold else -1,
                    "hold_reason": hold[1] if hold else None,
                    "issuer": f.issuer,
                    "subject": f.subject,
                }
            )
        columns = [
            "cert_id",
            "fingerprint",
            "error",
            "entity_id",
            "role",
            "key_usage",
            "serial",
            "chains",
            "in_validity",
            "revoked",
            "hold",
            "hold_reason",
            "issuer",
            "subject",
        ]
        return pd.DataFrame(rows, columns=columns).set_index("cert_id")
