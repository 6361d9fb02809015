"""Test helpers: build small real cases on disk (real certificates, real files) and run the real pipeline on them."""

from __future__ import annotations

import base64
import csv
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

from remediation import pipeline
from remediation.authority import Signer, public_key_line
from remediation.identifiers import mpan_check_digit
from remediation.testpki import Authority, der, make_org_ca, make_org_certificate, pem

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


@lru_cache(maxsize=None)
def org_ca() -> Authority:
    return make_org_ca("tests/org-ca", "Z1")


@lru_cache(maxsize=None)
def impostor_ca() -> Authority:
    return make_org_ca("tests/impostor-ca", "Z1")


@lru_cache(maxsize=None)
def cert(entity: str, usage: str, *, role: int = 3, generation: str = "current", untrusted: bool = False) -> bytes:
    """DER of a real-profile certificate. generation: current | previous | expired | revoked."""
    dates = {"current": ("2025-01-01", "2035-01-01"), "previous": ("2020-01-01", "2030-01-01"),
             "expired": ("2015-01-01", "2025-01-01"), "revoked": ("2024-01-01", "2034-01-01")}[generation]  # fmt: skip
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


@lru_cache(maxsize=None)
def signer(name: str) -> Signer:
    """`name`'s private key; `signer("bob#2")` is bob's second key."""
    return Signer.generate()


@lru_cache(maxsize=None)
def _key_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="remediation-test-keys-"))


@lru_cache(maxsize=None)
def key_file(name: str) -> Path:
    """`name`'s private key as a PEM file (mode 0600), for the CLI and subprocesses."""
    import os

    from cryptography.hazmat.primitives import serialization

    path = _key_dir() / name.replace("#", "-")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer(name).private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
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
    trust_policy: str | None = field(default_factory=policy_toml)  # people.toml text; None: the case names no policy

    def device(self, device_id: str, mpxn: str, ds=None, ka=None, *, device_type: str = "ESME", s1sp: str = "MOC",
               extracted_at: str = "2026-05-31T02:00:00Z") -> dict:  # fmt: skip
        row = {"s1sp": s1sp, "device_id": device_id, "device_type": device_type, "mpxn": mpxn,
               "no_ds_cert": b64(ds), "no_ka_cert": b64(ka), "extracted_at": extracted_at}  # fmt: skip
        self.rows.append(row)
        return row

    def register(self, mpxn: str, no: str, fuel: str = "E", start: str = "2020-01-01", end: str = "") -> None:
        self.rdp.append({"mpxn": mpxn, "fuel": fuel, "network_operator_id": no, "effective_from": start, "effective_to": end})

    def write(self) -> Path:
        root = self.root
        (root / "dialects").mkdir(parents=True, exist_ok=True)
        (root / "dialects" / "canonical.toml").write_text('format = "csv"\n[columns]\n' + "".join(
            f'{c} = "{c}"\n' for c in ("s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at")))  # fmt: skip
        (root / "dialects" / "rdp.toml").write_text('format = "csv"\n[columns]\n' + "".join(
            f'{c} = "{c}"\n' for c in ("mpxn", "fuel", "network_operator_id", "effective_from", "effective_to")))  # fmt: skip
        (root / "pki").mkdir(exist_ok=True)
        (root / "pki" / "ca.pem").write_bytes(org_ca().pem())
        (root / "pki" / "orl.csv").write_text("serial\n" + "".join(f"{s}\n" for s in self.revoked))
        registry = []
        for no, (fuel, entity) in OPERATORS.items():
            for usage in ("DS", "KA"):
                (root / "pki" / f"{no}-{usage}.pem").write_text(pem_of(self.registry_certs.get((no, usage)) or no_cert(no, usage)))
            registry.append(f'[[network_operator]]\nid = "{no}"\nfuel = "{fuel}"\nentity_id = "{entity}"\n'
                            f'ds_certificate = "pki/{no}-DS.pem"\nka_certificate = "pki/{no}-KA.pem"\n')  # fmt: skip
        (root / "registry.toml").write_text("\n".join(registry))
        extracts = []
        for s1sp in sorted({r.get("_file", r["s1sp"]) for r in self.rows} | {"MOC"}):
            path = root / f"{s1sp.lower()}.csv"
            write_csv(path, [{k: v for k, v in r.items() if k != "_file"} for r in self.rows if r.get("_file", r["s1sp"]) == s1sp],
                      ["s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at"])  # fmt: skip
            extracts.append(f'[[inputs.extract]]\ns1sp = "{s1sp}"\npath = "{path.name}"\ndialect = "dialects/canonical.toml"\n')
        write_csv(root / "rdp.csv", self.rdp, ["mpxn", "fuel", "network_operator_id", "effective_from", "effective_to"])
        policy = "".join(f"{k} = {str(v).lower()}\n" for k, v in self.policy.items())
        if self.trust_policy is not None and not (root / "people.toml").exists():  # written once: its hash is sealed in plans
            (root / "people.toml").write_text(self.trust_policy)
        people = 'trust_policy = "people.toml"\n' if self.trust_policy is not None else ""
        case = (f'[case]\nname = "test"\nas_of = {AS_OF.isoformat()}\n{people}[inputs]\nregistry = "registry.toml"\n' + "".join(extracts)
                + '[[inputs.rdp]]\npath = "rdp.csv"\ndialect = "dialects/rdp.toml"\n'
                + '[pki]\norganisation_ca = "pki/ca.pem"\norl = "pki/orl.csv"\n[policy]\n' + policy)  # fmt: skip
        (root / "case.toml").write_text(case)
        return root / "case.toml"

    def detect(self, as_of: date | None = None) -> pipeline.DetectResult:
        return pipeline.run_detect(self.write(), self.root / "out", as_of)

    def plan(self, out: str = "plan", planner: str = "alice", **kw) -> pipeline.PlanResult:
        if self.trust_policy is not None:
            kw.setdefault("key", signer(planner))
        return pipeline.run_plan(self.write(), self.root / out, planner=planner, **kw)


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
