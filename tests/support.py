"""Test helpers: build small real cases on disk (real certificates, real files) and run the real pipeline on them."""

from __future__ import annotations

import base64
import csv
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

from remediation import pipeline
from remediation.authority import Signer, public_key_line
from remediation.identifiers import mpan_check_digit
from testing.testpki import SMKI_POLICY_OID, Authority, der, make_org_ca, make_org_certificate, pem

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CASE = REPO / "configs" / "sample.toml"
REFERENCE = REPO.parent / "shared" / "reference" / "dccboxed-zaz1"
AS_OF = date(2026, 6, 1)

# Registry of the small test world: two electricity distributors, one gas transporter.
OPERATORS = {
    "AAAA": ("E", "90-B3-D5-1F-30-00-00-0A"),
    "BBBB": ("E", "90-B3-D5-1F-30-00-00-0B"),
    "GASX": ("G", "90-B3-D5-1F-40-00-00-01"),
}
STRANGER = "90-B3-D5-1F-60-00-00-01"  # an NO the registry does not list
SUPPLIER = "90-B3-D5-1F-50-00-00-01"


@cache
def org_ca() -> Authority:
    return make_org_ca("tests/org-ca", "Z1")


@cache
def impostor_ca() -> Authority:
    return make_org_ca("tests/impostor-ca", "Z1")


@cache
def cert(entity: str, usage: str, *, role: int = 3, generation: str = "current", untrusted: bool = False) -> bytes:
    """DER of a real-profile certificate. generation: current | previous | expired | revoked."""
    dates = {
        "current": ("2025-01-01", "2035-01-01"),
        "previous": ("2020-01-01", "2030-01-01"),
        "expired": ("2015-01-01", "2025-01-01"),
        "revoked": ("2024-01-01", "2034-01-01"),
    }[generation]
    issuer = impostor_ca() if untrusted else org_ca()
    seed = f"tests/{entity}/{usage}/{role}/{generation}/{untrusted}"
    return der(make_org_certificate(issuer, entity, role, usage, seed=seed, not_before=dates[0], not_after=dates[1]))


def no_cert(no: str, usage: str, **kw) -> bytes:
    return cert(OPERATORS[no][1], usage, **kw)


def revoked_serial(no: str, usage: str = "DS") -> str:
    from cryptography import x509

    return format(x509.load_der_x509_certificate(no_cert(no, usage, generation="revoked")).serial_number, "X")


def b64(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else base64.b64encode(value).decode()


# The people of the test world and their roles. Each gets one real Ed25519 key per test session (generated once).
PEOPLE = {
    "alice": ("planner",),
    "bob": ("approver",),
    "dave": ("approver",),
    "carol": ("operator",),
    "erin": ("auditor",),
}


@cache
def signer(name: str) -> Signer:
    """`name`'s private key; `signer("bob#2")` is bob's second key."""
    return Signer.generate()


@cache
def _key_dir() -> Path:
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="remediation-test-keys-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # private keys: not left behind in /tmp after the run
    return path


@cache
def key_file(name: str) -> Path:
    """`name`'s private key as a PEM file (mode 0600), for the CLI and subprocesses."""
    import os

    from cryptography.hazmat.primitives import serialization

    path = _key_dir() / name.replace("#", "-")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            signer(name).private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


def key_env(name: str = "carol") -> dict:
    return {"REMEDIATION_KEY": str(key_file(name))}


def policy_toml(people: dict | None = None, quorum: int = 1) -> str:
    """A trust policy: {display name: (roles, [key names])}; default each of PEOPLE with their own key."""
    people = people if people is not None else {n: (roles, [n]) for n, roles in PEOPLE.items()}
    out = f"[approval]\nquorum = {quorum}\n"
    for name, (roles, keys) in people.items():
        lines = ", ".join(f'"{public_key_line(signer(k).public_key, k)}"' for k in keys)
        out += f'\n[[person]]\nname = "{name}"\nroles = [{", ".join(repr(r).replace(chr(39), chr(34)) for r in roles)}]\nkeys = [{lines}]\n'
    return out


_counter = [0]


def mpan(prefix: int = 10, n: int | None = None) -> str:
    if n is None:
        _counter[0] += 1
        n = _counter[0]
    body = f"{prefix:02d}{n:010d}"
    return body + str(mpan_check_digit(body))


@dataclass
class CaseFiles:
    """A case on disk in the canonical dialect: one CSV extract per S1SP, one RDP CSV, registry, PKI, case file."""

    root: Path
    rows: list = field(default_factory=list)  # extract rows as dicts of canonical columns
    rdp: list = field(default_factory=list)
    revoked: list = field(default_factory=list)
    policy: dict = field(default_factory=dict)
    registry_certs: dict = field(default_factory=dict)  # (NO id, "DS"|"KA") -> DER replacing its current certificate
    policy_oids: tuple = (SMKI_POLICY_OID.dotted_string,)  # [pki] accepted_policy_oids
    s1sp_settings: dict = field(default_factory=dict)  # S1SP code -> extra keys of its [s1sp.CODE] table
    extra_toml: str = ""  # appended to the case file (e.g. [device_types.X] tables)
    operators: dict = field(default_factory=lambda: dict(OPERATORS))  # the registry's NOs
    ca_pem: bytes | None = None  # the Organisation CA certificate (default: the test world's)
    trust_policy: str | None = field(default_factory=policy_toml)  # people.toml text; None: the case names no policy

    def device(
        self,
        device_id: str,
        mpxn: str,
        ds=None,
        ka=None,
        *,
        device_type: str = "ESME",
        s1sp: str = "MOC",
        extracted_at: str = "2026-05-31T02:00:00Z",
    ) -> dict:
        row = {
            "s1sp": s1sp,
            "device_id": device_id,
            "device_type": device_type,
            "mpxn": mpxn,
            "no_ds_cert": b64(ds),
            "no_ka_cert": b64(ka),
            "extracted_at": extracted_at,
        }
        self.rows.append(row)
        return row

    def register(self, mpxn: str, no: str, fuel: str = "E", start: str = "2020-01-01", end: str = "") -> None:
        self.rdp.append(
            {"mpxn": mpxn, "fuel": fuel, "network_operator_id": no, "effective_from": start, "effective_to": end}
        )

    def write(self) -> Path:
        root = self.root
        (root / "dialects").mkdir(parents=True, exist_ok=True)
        (root / "dialects" / "canonical.toml").write_text(
            'format = "csv"\n[columns]\n'
            + "".join(
                f'{c} = "{c}"\n'
                for c in ("s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at")
            )
        )
        (root / "dialects" / "rdp.toml").write_text(
            'format = "csv"\n[columns]\n'
            + "".join(
                f'{c} = "{c}"\n' for c in ("mpxn", "fuel", "network_operator_id", "effective_from", "effective_to")
            )
        )
        (root / "pki").mkdir(exist_ok=True)
        (root / "pki" / "ca.pem").write_bytes(self.ca_pem or org_ca().pem())
        # ORL entries: a serial (issued by the test Organisation CA, Z1) or an (issuer, serial) pair.
        orl = [(r if isinstance(r, tuple) else ("Z1", r)) for r in self.revoked]
        (root / "pki" / "orl.csv").write_text("issuer,serial\n" + "".join(f"{i},{s}\n" for i, s in orl))
        registry = []
        for no, (fuel, entity) in self.operators.items():
            for usage in ("DS", "KA"):
                current = self.registry_certs.get((no, usage)) or cert(entity, usage)
                (root / "pki" / f"{no}-{usage}.pem").write_text(pem_of(current))
            registry.append(
                f'[[network_operator]]\nid = "{no}"\nfuel = "{fuel}"\nentity_id = "{entity}"\n'
                f'ds_certificate = "pki/{no}-DS.pem"\nka_certificate = "pki/{no}-KA.pem"\n'
            )
        (root / "registry.toml").write_text("\n".join(registry))
        extracts = []
        s1sps = sorted({r.get("_file", r["s1sp"]) for r in self.rows} | {"MOC"} | set(self.s1sp_settings))
        for s1sp in s1sps:
            path = root / f"{s1sp.lower()}.csv"
            write_csv(
                path,
                [{k: v for k, v in r.items() if k != "_file"} for r in self.rows if r.get("_file", r["s1sp"]) == s1sp],
                ["s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at"],
            )
            extracts.append(
                f'[[inputs.extract]]\ns1sp = "{s1sp}"\npath = "{path.name}"\ndialect = "dialects/canonical.toml"\n'
            )
        write_csv(root / "rdp.csv", self.rdp, ["mpxn", "fuel", "network_operator_id", "effective_from", "effective_to"])
        policy = "".join(f"{k} = {toml_value(v)}\n" for k, v in self.policy.items())
        oids = ", ".join(f'"{o}"' for o in self.policy_oids)
        s1sp_tables = "".join(
            f"[s1sp.{code}]\n"
            + "".join(f"{k} = {toml_value(v)}\n" for k, v in self.s1sp_settings.get(code, {}).items())
            for code in s1sps
        )
        if (
            self.trust_policy is not None and not (root / "people.toml").exists()
        ):  # written once: its hash is sealed in plans
            (root / "people.toml").write_text(self.trust_policy)
        people = 'trust_policy = "people.toml"\n' if self.trust_policy is not None else ""
        case = (
            f'[case]\nname = "test"\nas_of = {AS_OF.isoformat()}\n{people}[inputs]\nregistry = "registry.toml"\n'
            + "".join(extracts)
            + '[[inputs.rdp]]\npath = "rdp.csv"\ndialect = "dialects/rdp.toml"\n'
            + f'[pki]\norganisation_ca = "pki/ca.pem"\norl = "pki/orl.csv"\naccepted_policy_oids = [{oids}]\n[policy]\n'
            + policy
            + s1sp_tables
            + self.extra_toml
        )
        (root / "case.toml").write_text(case)
        return root / "case.toml"

    def detect(self, as_of: date | None = None) -> pipeline.DetectResult:
        return pipeline.run_detect(self.write(), self.root / "out", as_of)

    def plan(self, out: str = "plan", planner: str = "alice", **kw) -> pipeline.PlanResult:
        if self.trust_policy is not None:
            kw.setdefault("key", signer(planner))
        return pipeline.run_plan(self.write(), self.root / out, planner=planner, **kw)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def pem_of(der_bytes: bytes) -> str:
    from cryptography import x509

    return pem(x509.load_der_x509_certificate(der_bytes))


def category_of(result: pipeline.DetectResult, device_id: str) -> str:
    f = result.findings
    hit = f[f["device_id"] == device_id]
    assert len(hit) == 1, f"{device_id}: {len(hit)} findings"
    return hit["category"].iloc[0]


# ------------------------------------------------------------------------------------------------ ZAZ1 trust anchor


def zaz1_anchor_pem() -> bytes | None:
    """A trust anchor for the real ZAZ1 certificates: the Z1 Organisation CA's name and public key.

    The Z1 CA certificate itself is not among the reference files, but its public key is public data: an ECDSA
    signature and its message determine the signer's key up to two candidates, and two certificates signed by the same
    key leave one. The anchor carries that key under the issuer's exact name; it is signed by a throwaway key, which
    is fine because a trust anchor's own signature is never checked (only the certificates it issued are)."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    files = sorted(REFERENCE.glob("Z1*-networkOperator-*.pem"))
    if len(files) < 2:
        return None
    p = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
    a, b = p - 3, 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    g = (
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    )

    def add(u, v):
        if u is None or v is None:
            return u or v
        if u[0] == v[0] and (u[1] + v[1]) % p == 0:
            return None
        slope = (3 * u[0] * u[0] + a) * pow(2 * u[1], -1, p) if u == v else (v[1] - u[1]) * pow(v[0] - u[0], -1, p)
        x = (slope * slope - u[0] - v[0]) % p
        return x, (slope * (u[0] - x) - u[1]) % p

    def mul(k, point):
        out = None
        while k:
            out, point, k = (add(out, point) if k & 1 else out), add(point, point), k >> 1
        return out

    def signer_keys(c: x509.Certificate) -> set:
        r, s = decode_dss_signature(c.signature)
        z = int.from_bytes(hashlib.sha256(c.tbs_certificate_bytes).digest(), "big")
        y = pow((pow(r, 3, p) + a * r + b) % p, (p + 1) // 4, p)
        return {mul(pow(r, -1, n), add(mul(s, (r, yy)), mul((n - z) % n, g))) for yy in (y, p - y)}

    certs = [x509.load_pem_x509_certificate(f.read_bytes()) for f in files]
    (q,) = set.intersection(*(signer_keys(c) for c in certs))
    key = ec.EllipticCurvePublicNumbers(q[0], q[1], ec.SECP256R1()).public_key()
    throwaway = ec.derive_private_key(7, ec.SECP256R1())
    anchor = (
        x509.CertificateBuilder()
        .subject_name(certs[0].issuer)
        .issuer_name(certs[0].issuer)
        .public_key(key)
        .serial_number(1)
        .not_valid_before(certs[0].not_valid_before_utc)
        .not_valid_after(certs[0].not_valid_after_utc.replace(year=2040))
        .sign(throwaway, hashes.SHA256())
    )
    return anchor.public_bytes(serialization.Encoding.PEM)
