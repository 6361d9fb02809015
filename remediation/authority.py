"""Authority: who may plan, approve, run and export, proven by Ed25519 keys, never by typed names.

A *trust policy* (TOML, named by the case) lists people: a display name, one or more public keys and roles
(planner, approver, operator, auditor), plus the approval quorum. Its SHA-256 is sealed into plan.json, so a plan
made under one policy is refused under any other. Every decision is taken on keys:

- plan.json carries the planner's signature over (plan hash, policy hash);
- each approval is a signed record (plan hash, policy hash, approver key id, time, note, change reference);
- apply re-checks all of it before any S1SP is touched: plan signed by a planner key, a quorum of valid
  approvals by approver keys of *distinct people*, none of whom signed the plan; then it signs the journal's
  run_started / run_resumed / run_finished records with an operator key;
- `audit verify` re-checks every signature against the exported policy and the auditor's expected policy hash.

Names are labels for people reading the evidence. They are normalised (NFKC, invisible characters removed,
casefold) only to spot duplicates in a policy and to display; nothing is granted or refused on a name.

Key ids are OpenSSH's SHA256 fingerprints (`ssh-keygen -lf key.pub` prints the same text), so a reviewer can
check a policy entry against a person's key with standard tools.

Tokens: `token_for_endpoint` is the one place that decides whether a bearer token may go to a URL (TLS or a
loopback address only) and `redact` the one place that scrubs secrets an S1SP echoes back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import stat
import tomllib
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remediation.errors import ConfigError, InputError, SafetyRefusal
from remediation.evidence.hashing import canonical_json, sha256_file
from remediation.plan import LoadedPlan, NotApproved

ROLES = ("planner", "approver", "operator", "auditor")
KEY_ENV = "REMEDIATION_KEY"  # path of the private key when --key is not given
PASSPHRASE_ENV = "REMEDIATION_KEY_PASSPHRASE"  # passphrase of an encrypted private key
TRUST_POLICY_ENV = "REMEDIATION_TRUST_POLICY"  # the reviewed policy an operator pins apply to
PLAN_SIGNATURE_SCHEMA = "remediation/plan-signature/1"
APPROVAL_SCHEMA = "remediation/approval/2"
SIGNED_JOURNAL_EVENTS = ("run_started", "run_resumed", "run_finished")
ALGORITHM = "Ed25519"


class AuthorityRefusal(SafetyRefusal):
    """A signature, key, role, quorum or trust policy does not hold (exit 3)."""


class QuorumNotMet(AuthorityRefusal, NotApproved):
    """Too few valid approvals by distinct people (exit 3)."""


# ------------------------------------------------------------------------------------------------ names


def name_label(name: str) -> str:
    """The comparable form of a display name: NFKC, invisible (format) characters dropped, casefolded, spaces
    collapsed. For display and duplicate checks only; names never decide anything."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.casefold().split())


# ------------------------------------------------------------------------------------------------ keys


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """OpenSSH's fingerprint: SHA256 over the key's wire blob, unpadded base64 (as `ssh-keygen -l` prints)."""
    blob = base64.b64decode(
        public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def public_key_line(public_key: ed25519.Ed25519PublicKey, comment: str = "") -> str:
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def parse_public_key(text: str) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from an OpenSSH line (`ssh-ed25519 AAAA… comment`), a PEM block, or the raw 32 bytes
    as base64 or hex. Raises ValueError saying what is wrong."""
    text = text.strip()
    if text.startswith("ssh-"):
        parts = text.split()
        if parts[0] != "ssh-ed25519" or len(parts) < 2:
            raise ValueError(f"only ssh-ed25519 keys are accepted, not {parts[0]}")
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    elif text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        raw = bytes.fromhex(text) if re.fullmatch(r"[0-9a-fA-F]{64}", text) else base64.b64decode(text, validate=True)
        if len(raw) != 32:
            raise ValueError("a raw Ed25519 public key is 32 bytes")
        key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    if _small_order(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)):
        # Such a "key" verifies trivial signatures over any message: whoever wrote it into the policy could sign
        # as its holder without any private key.
        raise ValueError("a small-order (weak) Ed25519 point, not a real public key")
    return key


# The Ed25519 points of small order, as libsodium's has_small_order lists them (the sign bit is ignored): the
# identity, the point of order 2, the two of order 4 and the two of order 8, and the non-canonical encodings p and p+1.
_P = 2**255 - 19
_SMALL_ORDER = tuple(
    n.to_bytes(32, "little")
    for n in (
        0,
        1,
        _P - 1,
        _P,
        _P + 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    )
)


def _small_order(raw: bytes) -> bool:
    cleared = raw[:31] + bytes([raw[31] & 0x7F])
    return any(cleared == bad for bad in _SMALL_ORDER)


@dataclass(frozen=True)
class Signer:
    """A private key in memory. It signs canonical JSON; its bytes never leave this object."""

    private_key: ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, payload: dict) -> dict:
        value = self.private_key.sign(canonical_json(payload))
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "value": base64.b64encode(value).decode()}

    @classmethod
    def generate(cls) -> Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())


def signature_holds(public_key: ed25519.Ed25519PublicKey, signature: dict, payload: dict) -> bool:
    try:
        if signature.get("algorithm") != ALGORITHM:
            return False
        public_key.verify(base64.b64decode(signature.get("value", ""), validate=True), canonical_json(payload))
        return True
    except (InvalidSignature, binascii.Error, ValueError, TypeError, AttributeError):
        return False


def write_key_pair(out: Path, comment: str = "", passphrase: bytes | None = None) -> tuple[Path, str, str]:
    """NAME (PKCS#8 PEM, mode 0600, encrypted when a passphrase is given) and NAME.pub (one OpenSSH line).
    Returns (public key path, public key line, key id). Never overwrites."""
    out = Path(out)
    public_path = out.with_name(out.name + ".pub")
    for path in (out, public_path):
        if path.exists():
            raise InputError("exists; keys are never overwritten", file=str(path))
        if path.is_symlink():
            raise InputError("is a symbolic link; keys are written only to a new regular file", file=str(path))
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    line = public_key_line(key.public_key(), comment or out.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
        public_fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(public_fd, "w") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the key ({exc.strerror})", file=str(exc.filename or out)) from None
    return public_path, line, key_id(key.public_key())


def load_signer(path: str | Path | None) -> Signer:
    """The Ed25519 private key at PATH (or $REMEDIATION_KEY): PKCS#8 PEM or an OpenSSH private key; encrypted ones
    take their passphrase from $REMEDIATION_KEY_PASSPHRASE. Exit 2 naming the file when it cannot be used."""
    if path is None or str(path) == "":
        path = os.environ.get(KEY_ENV) or None
    if path is None:
        raise InputError(f"a private key is required: --key PATH or ${KEY_ENV}", field="--key")
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read the private key ({exc.strerror})", file=str(path)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"private key is accessible to other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it", file=str(path)
        )
    passphrase = os.environ.get(PASSPHRASE_ENV, "").encode() or None

    def read(password: bytes | None):
        if b"OPENSSH PRIVATE KEY" in data:
            return serialization.load_ssh_private_key(data, password=password)
        return serialization.load_pem_private_key(data, password=password)

    try:
        try:
            key = read(passphrase)
        except TypeError:
            if passphrase is None:
                raise
            key = read(None)  # this key is not encrypted: the passphrase variable is meant for another
    except TypeError:
        raise InputError(f"private key is passphrase-protected: set ${PASSPHRASE_ENV}", file=str(path)) from None
    except ValueError:
        raise InputError("not a readable private key (or wrong passphrase)", file=str(path)) from None
    except UnsupportedAlgorithm as exc:  # e.g. a passphrase-protected OpenSSH key: its KDF needs the bcrypt package
        raise InputError(
            f"cannot read this private key ({exc}); use an unencrypted OpenSSH key or one from `remediation keygen`",
            file=str(path),
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError("not an Ed25519 private key", file=str(path))
    return Signer(key)


def as_signer(key: Signer | str | Path | None) -> Signer:
    return key if isinstance(key, Signer) else load_signer(key)


# ------------------------------------------------------------------------------------------------ trust policy


class _PersonModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1)
    roles: list[Literal["planner", "approver", "operator", "auditor"]] = Field(min_length=1)
    keys: list[str] = Field(min_length=1)


class _ApprovalModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quorum: int = Field(1, ge=1, strict=True)


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approval: _ApprovalModel = Field(default_factory=_ApprovalModel)
    person: list[_PersonModel] = Field(min_length=1)


@dataclass(frozen=True)
class Person:
    index: int
    name: str
    roles: frozenset[str]
    key_ids: tuple[str, ...]

    def describe(self) -> str:
        return f"person[{self.index}] {self.name!r}"


@dataclass(frozen=True)
class TrustPolicy:
    path: Path
    sha256: str
    quorum: int
    people: tuple[Person, ...]
    keys: dict[str, tuple[Person, ed25519.Ed25519PublicKey]]  # key id -> (owner, public key)

    def holder(self, kid: str, role: str, what: str) -> tuple[Person, ed25519.Ed25519PublicKey]:
        """The person holding key `kid` with `role`, or a refusal naming `what` and why."""
        if kid not in self.keys:
            raise AuthorityRefusal(f"{what}: key {kid} is not in the trust policy {self.path}")
        person, public = self.keys[kid]
        if role not in person.roles:
            raise AuthorityRefusal(
                f"{what}: key {kid} belongs to {person.describe()}, who does not have the {role} role in {self.path}"
            )
        return person, public

    def summary(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "quorum": self.quorum}


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_trust_policy(data: bytes, path: Path) -> TrustPolicy:
    """Validate a policy's bytes; ConfigError (exit 2) naming the file and the first bad field."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not valid TOML ({exc})", file=str(path)) from None
    except RecursionError:
        raise ConfigError("not valid TOML (nested too deeply)", file=str(path)) from None
    try:
        model = _PolicyModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(first["msg"], file=str(path), field=_field_path(first["loc"]) or "(top level)") from None
    people, keys, labels, owner = [], {}, {}, {}  # owner: key id -> index of the person it was first listed for
    for i, entry in enumerate(model.person):
        label = name_label(entry.name)
        if not label:
            raise ConfigError("a name of invisible characters only", file=str(path), field=f"person[{i}].name")
        if label in labels:
            raise ConfigError(
                f"{entry.name!r} reads the same as person[{labels[label]}]'s name; give each person a distinct name",
                file=str(path),
                field=f"person[{i}].name",
            )
        labels[label] = i
        publics = {}
        for j, text in enumerate(entry.keys):
            try:
                public = parse_public_key(text)
            except (ValueError, binascii.Error, TypeError) as exc:
                raise ConfigError(
                    f"not an Ed25519 public key ({exc})", file=str(path), field=f"person[{i}].keys[{j}]"
                ) from None
            kid = key_id(public)
            if kid in owner:
                raise ConfigError(
                    f"key {kid} is already listed for person[{owner[kid]}]; a key identifies one person",
                    file=str(path),
                    field=f"person[{i}].keys[{j}]",
                )
            owner[kid], publics[kid] = i, public
        person = Person(i, unicodedata.normalize("NFKC", entry.name), frozenset(entry.roles), tuple(publics))
        people.append(person)
        keys.update({kid: (person, public) for kid, public in publics.items()})
    approvers = sum("approver" in p.roles for p in people)
    if model.approval.quorum > approvers:
        raise ConfigError(
            f"quorum {model.approval.quorum} needs at least that many people with the approver role; the policy has {approvers}",
            file=str(path),
            field="approval.quorum",
        )
    return TrustPolicy(path, hashlib.sha256(data).hexdigest(), model.approval.quorum, tuple(people), keys)


POLICY_MAX_BYTES = 1 << 20  # a policy lists people and keys: a megabyte is far more than any real one


def read_policy_bytes(path: str | Path) -> tuple[Path, bytes]:
    """The policy file's bytes, read once (what is hashed is what is parsed), from a regular file of bounded size:
    a FIFO, a device such as /dev/zero or a huge file is refused, never waited on or read without end."""
    path = Path(path).resolve()
    try:
        if not path.is_file():
            raise ConfigError("not a regular file (a trust policy is a TOML file)", file=str(path))
        with open(path, "rb") as fh:
            data = fh.read(POLICY_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the trust policy ({exc.strerror})", file=str(path)) from None
    if len(data) > POLICY_MAX_BYTES:
        raise ConfigError(f"larger than {POLICY_MAX_BYTES} bytes; not a trust policy", file=str(path))
    return path, data


def load_trust_policy(path: str | Path) -> TrustPolicy:
    return parse_trust_policy(*reversed(read_policy_bytes(path)))


def sealed_policy(plan: LoadedPlan) -> dict:
    sealed = plan.document.get("trust_policy")
    if (
        not isinstance(sealed, dict)
        or not isinstance(sealed.get("sha256"), str)
        or not isinstance(sealed.get("path"), str)
    ):
        raise AuthorityRefusal(
            f"refusing: plan {plan.directory} was made without a trust policy and is unsigned; "
            "name one in the case ([case] trust_policy) and re-plan with --key"
        )
    return sealed


def policy_for_plan(plan: LoadedPlan, override: str | Path | None = None) -> TrustPolicy:
    """The trust policy a plan was sealed under: the operator's pinned file (--trust-policy or
    $REMEDIATION_TRUST_POLICY) or else the path plan.json names. Either way its SHA-256 must be the sealed one,
    and a policy inside the plan directory is no anchor (whoever writes the plan could write it)."""
    sealed = sealed_policy(plan)
    source = override or os.environ.get(TRUST_POLICY_ENV) or sealed["path"]
    path = Path(source).resolve()
    if path.is_relative_to(plan.directory.resolve()):
        raise AuthorityRefusal(
            f"refusing: trust policy {path} lies inside the plan directory; a policy must come from the reviewed configuration"
        )
    if not path.exists():
        raise AuthorityRefusal(
            f"refusing: trust policy {path} that plan {plan.directory} was sealed under no longer exists"
        )
    path, data = read_policy_bytes(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sealed["sha256"]:
        raise AuthorityRefusal(
            f"refusing: trust policy {path} (SHA-256 {actual[:16]}…) is not the policy plan {plan.directory} was sealed under "
            f"({sealed['sha256'][:16]}…): it changed since planning or is another policy; re-plan and re-approve"
        )
    return parse_trust_policy(data, path)


# ------------------------------------------------------------------------------------------------ plan signature


def plan_signature_payload(plan_hash: str, policy_sha256: str, signature: dict) -> dict:
    return {
        "schema": PLAN_SIGNATURE_SCHEMA,
        "plan_hash": plan_hash,
        "trust_policy_sha256": policy_sha256,
        "key_id": signature.get("key_id"),
    }


def check_planner(policy: TrustPolicy, signer: Signer) -> Person:
    """Before any work: the key must be a planner's in the policy the plan will be sealed under."""
    return policy.holder(signer.key_id, "planner", "refusing to plan")[0]


def sign_plan(document: dict, policy: TrustPolicy, signer: Signer) -> dict:
    """plan.json's signature block over (plan hash, policy hash); the document must already be sealed."""
    person = check_planner(policy, signer)
    # No signing time: Ed25519 is deterministic, so the same inputs and key still give a byte-identical plan.json.
    block = {"key_id": signer.key_id, "signer": person.name}
    block.update(signer.sign(plan_signature_payload(document["plan_hash"], policy.sha256, block)))
    return block


@dataclass(frozen=True)
class PlanSigning:
    policy: TrustPolicy
    signer: Signer = field(repr=False)
    planner: Person


def plan_signing(trust_policy_path: Path | None, key: Signer | str | Path | None) -> PlanSigning | None:
    """The policy and planner key a new plan is sealed and signed with; None for a case that names no trust policy
    (its plans are unsigned: fine for looking and dry runs, refused by approve and apply)."""
    if trust_policy_path is None:
        if key is not None:
            raise InputError(
                "the case names no trust policy ([case] trust_policy), so a plan cannot be signed", field="--key"
            )
        return None
    return _planning(load_trust_policy(trust_policy_path), key)


def rollback_signing(original: LoadedPlan, key: Signer | str | Path | None) -> PlanSigning | None:
    """A rollback plan is sealed under its original plan's trust policy (refused if that policy changed since)."""
    if not original.document.get("trust_policy"):
        return plan_signing(None, key)
    return _planning(policy_for_plan(original), key)


def _planning(policy: TrustPolicy, key: Signer | str | Path | None) -> PlanSigning:
    signer = as_signer(key)
    return PlanSigning(policy, signer, check_planner(policy, signer))


def plan_fields(signing: PlanSigning | None, planner_label: str, change_record: str | None) -> dict:
    """plan.json fields sealed into the plan hash: the policy's path and SHA-256, the governance reference, and
    who planned (the policy's name for the key; a typed label only on an unsigned plan)."""
    return {
        "planned_by": signing.planner.name if signing else planner_label,
        "trust_policy": {"path": str(signing.policy.path), "sha256": signing.policy.sha256} if signing else None,
        "governance": {"change_record": change_record},
    }


def sign_sealed_plan(document: dict, signing: PlanSigning | None) -> dict:
    return {**document, "signature": sign_plan(document, signing.policy, signing.signer) if signing else None}


def verify_plan_signature(document: dict, policy: TrustPolicy, where: str) -> Person:
    """The planner who signed plan.json under this policy, or a refusal naming `where`."""
    signature = document.get("signature")
    if not isinstance(signature, dict):
        raise AuthorityRefusal(f"{where}: plan is unsigned")
    sealed = document.get("trust_policy")
    if not isinstance(sealed, dict) or sealed.get("sha256") != policy.sha256:
        raise AuthorityRefusal(f"{where}: plan was sealed under another trust policy")
    person, public = policy.holder(str(signature.get("key_id", "?")), "planner", f"{where}: plan signature")
    if not signature_holds(public, signature, plan_signature_payload(document["plan_hash"], policy.sha256, signature)):
        raise AuthorityRefusal(
            f"{where}: plan signature by key {signature.get('key_id')} does not verify (plan.json altered or re-sealed after signing)"
        )
    return person


# ------------------------------------------------------------------------------------------------ approvals


def make_approval(
    plan: LoadedPlan,
    policy: TrustPolicy,
    signer: Signer,
    note: str = "",
    change_ref: str | None = None,
    existing: list[dict] = (),
    now: datetime | None = None,
) -> dict:
    """A signed approval of this plan under this policy, after the same checks apply makes."""
    planner = verify_plan_signature(plan.document, policy, f"refusing approval of {plan.directory}")
    person, _ = policy.holder(signer.key_id, "approver", "refusing approval")
    if person.index == planner.index:
        raise AuthorityRefusal(
            f"refusing approval: key {signer.key_id} belongs to {person.describe()}, who signed this plan; the approver must be someone else"
        )
    plan_ref = (plan.document.get("governance") or {}).get("change_record")
    if change_ref and plan_ref and change_ref != plan_ref:
        raise InputError(f"change reference {change_ref!r} differs from the plan's {plan_ref!r}", field="--change-ref")
    for i, record in enumerate(existing):
        if (
            record.get("plan_hash") == plan.plan_hash
            and policy.keys.get(str(record.get("key_id")), (None,))[0] == person
        ):
            raise InputError(f"{person.describe()} has already approved this plan (approval {i + 1})", field="--key")
    body = {
        "schema": APPROVAL_SCHEMA,
        "plan_hash": plan.plan_hash,
        "trust_policy_sha256": policy.sha256,
        "key_id": signer.key_id,
        "approver": person.name,
        "approved_at": _now(now),
        "note": note,
        "change_ref": change_ref or plan_ref,
        "devices": plan.document["counts"]["devices"],
    }
    return {**body, "signature": signer.sign(body)}


@dataclass(frozen=True)
class ApprovalCheck:
    counted: list[dict]  # one approval per distinct approver, in file order
    ignored: list[str]  # why the others do not count (another plan hash or policy, or the same person again)


def check_approvals(
    plan_hash: str, approvals: list[dict], policy: TrustPolicy, planner: Person, where: str
) -> ApprovalCheck:
    """Every approval of this plan under this policy must verify; the distinct approvers must reach the quorum.

    An approval bound to another plan hash or policy is ignored (it approves something else). One that claims this
    plan and policy but fails — unknown key, no approver role, the planner's own key, a bad signature — is
    evidence of tampering: refused, naming it."""
    counted, ignored, people = [], [], set()
    for n, record in enumerate(approvals, start=1):
        if not isinstance(record, dict):
            raise AuthorityRefusal(f"{where}: approval {n} is not a record")
        name = f"approval {n} (key {record.get('key_id', '?')}, labelled {record.get('approver', '?')!r})"
        if record.get("plan_hash") != plan_hash:
            ignored.append(f"{name}: for another plan hash")
            continue
        if record.get("trust_policy_sha256") != policy.sha256:
            ignored.append(f"{name}: made under another trust policy")
            continue
        person, public = policy.holder(str(record.get("key_id")), "approver", f"{where}: {name}")
        body = {k: v for k, v in record.items() if k != "signature"}
        if not signature_holds(public, record.get("signature") or {}, body):
            raise AuthorityRefusal(f"{where}: {name}: signature does not verify (approval altered or forged)")
        if person.index == planner.index:
            raise AuthorityRefusal(
                f"{where}: {name}: made by {person.describe()}, who signed the plan; a planner cannot approve their own plan"
            )
        if person.index in people:
            ignored.append(f"{name}: {person.describe()} already counted")
            continue
        people.add(person.index)
        counted.append(record)
    if len(counted) < policy.quorum:
        raise QuorumNotMet(
            f"{where}: quorum not met: {len(counted)} of {policy.quorum} distinct approver(s) "
            f"under trust policy {policy.sha256[:16]}…" + (f" ({'; '.join(ignored)})" if ignored else "")
        )
    return ApprovalCheck(counted, ignored)


# ------------------------------------------------------------------------------------------------ apply


@dataclass
class RunAuthority:
    """What apply proved before touching any S1SP, and the operator key that signs the run's journal records."""

    policy: TrustPolicy
    planner: Person
    approvals: ApprovalCheck
    operator: Person
    signer: Signer = field(repr=False)
    endpoint_overrides: list[dict] = field(default_factory=list)

    def sign_entry(self, entry: dict) -> dict:
        return self.signer.sign(entry)

    def journal_fields(self) -> dict:
        """Added to run_started / run_resumed / run_finished: who ran it (by key), under which policy, and the
        `signer` the journal uses to sign the whole record (sequence, time and chain link included)."""
        return {
            "authority": {
                "trust_policy": self.policy.summary(),
                "operator": {"key_id": self.signer.key_id, "name": self.operator.name},
                "plan_signed_by": self.planner.name,
                "approvals": [a["key_id"] for a in self.approvals.counted],
                "endpoint_overrides": self.endpoint_overrides,
            },
            "signer": self.sign_entry,
        }


def authorise_run(
    plan: LoadedPlan, approvals: list[dict], key: Signer | str | Path | None, trust_policy: str | Path | None = None
) -> RunAuthority:
    """Everything apply checks before any S1SP is touched (exit 3 naming what failed)."""
    where = f"refusing to apply plan {plan.directory}"
    signer = as_signer(key)
    policy = policy_for_plan(plan, trust_policy)
    planner = verify_plan_signature(plan.document, policy, where)
    check = check_approvals(plan.plan_hash, approvals, policy, planner, where)
    operator, _ = policy.holder(signer.key_id, "operator", f"{where}: the --key given")
    return RunAuthority(policy, planner, check, operator, signer)


def verify_journal_signatures(entries: list[dict], policy: TrustPolicy, where: str) -> int:
    """Each run_started / run_resumed / run_finished record must be signed by an operator key in the policy over
    the record itself. Returns how many were checked."""
    checked = 0
    for entry in entries:
        if entry.get("event") not in SIGNED_JOURNAL_EVENTS:
            continue
        name = f"{where} seq {entry.get('seq')} ({entry.get('event')})"
        signature = entry.get("signature")
        if not isinstance(signature, dict):
            raise AuthorityRefusal(f"{name}: unsigned")
        _, public = policy.holder(str(signature.get("key_id")), "operator", name)
        if not signature_holds(public, signature, {k: v for k, v in entry.items() if k != "signature"}):
            raise AuthorityRefusal(f"{name}: signature does not verify (record altered)")
        checked += 1
    return checked


# ------------------------------------------------------------------------------------------------ tokens


def is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for_endpoint(s1sp: str, base_url: str, token_env: str | None, *, environ=os.environ) -> str | None:
    """The bearer token to send to this S1SP URL, or None when none is configured.

    Refused (exit 3) when a token is configured and the URL is plain HTTP to anything but a loopback address: the
    token would cross the network in clear. A missing variable is exit 2. The URL is parsed by httpx, the library
    that sends the request, so `http://127.0.0.1@evil.example/` is judged by its real host."""
    import httpx

    if not token_env:
        return None
    token = environ.get(token_env)
    if not token:
        raise InputError(f"bearer token variable ${token_env} for S1SP {s1sp} is not set", field="token_env")
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"S1SP {s1sp} URL {base_url!r} is not a URL ({exc})", field="base_url") from None
    if url.scheme == "https" or (url.scheme == "http" and is_loopback(url.host)):
        return token
    raise SafetyRefusal(
        f"refusing to send S1SP {s1sp}'s bearer token (${token_env}) to {url.scheme}://{url.host}: "
        "tokens go only over TLS (https) or to a loopback address"
    )


def endpoint_overrides(
    plan_endpoints: dict, overrides: dict[str, str], who: str, operator_key: str | None
) -> list[dict]:
    """The journal's record of each --endpoint override: which S1SP, the case's URL, the URL used, who, and
    whether a token goes there. The time is the journal entry's."""
    out = []
    for s1sp, url in sorted(overrides.items()):
        case_ep = plan_endpoints.get(s1sp) or {}
        out.append(
            {
                "s1sp": s1sp,
                "case_url": case_ep.get("base_url"),
                "url": url,
                "by": who,
                "by_key": operator_key,
                "token_sent": bool(case_ep.get("token_env")),
            }
        )
    return out


_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
REDACTED = "[REDACTED]"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """An S1SP's reply text with every secret we hold (in plain, URL-quoted or base64 form), any `Bearer …`
    credential and any private key block replaced. Applied before the text is truncated, so no prefix leaks."""
    for secret in secrets:
        if not secret:
            continue
        for form in {
            secret,
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret),
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(secret.encode()).decode().rstrip("="),
        }:
            if len(form) >= 4:
                text = text.replace(form, REDACTED)
    text = _PEM_PRIVATE.sub(REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def _now(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ audit export


EXPORTED_POLICY = "trust_policy.toml"
EXPORT_ROLES = ("auditor", "operator")


def export_authority(plan_dir: Path, signer: Signer | None) -> tuple[TrustPolicy | None, Person | None]:
    """The policy a run's plan was sealed under (refused if it changed since) and the exporter it names: an export
    of a run under a policy is signed by an auditor's or operator's key from that policy."""
    plan = _plan_document(plan_dir)
    if not plan.document.get("trust_policy"):
        return None, None
    policy = policy_for_plan(plan)
    if signer is None:
        raise AuthorityRefusal(
            f"refusing to export: the run's plan is under trust policy {policy.path}; sign with an auditor's or operator's key (--key)"
        )
    return policy, _export_holder(policy, signer.key_id, "refusing to export")[0]


def _plan_document(plan_dir: Path) -> LoadedPlan:
    from remediation.artefacts.plan_dir import load_plan

    return load_plan(plan_dir)


def _export_holder(policy: TrustPolicy, kid: str, what: str) -> tuple[Person, ed25519.Ed25519PublicKey]:
    if kid not in policy.keys:
        raise AuthorityRefusal(f"{what}: key {kid} is not in the trust policy")
    person, public = policy.keys[kid]
    if not person.roles & set(EXPORT_ROLES):
        raise AuthorityRefusal(
            f"{what}: key {kid} belongs to {person.describe()}, who is neither auditor nor operator in the trust policy"
        )
    return person, public


def manifest_fields(policy: TrustPolicy | None, exporter: Person | None, signer: Signer | None) -> dict:
    return {
        "key_id": signer.key_id if signer else None,
        "signed_by": exporter.name if exporter else None,
        "trust_policy_sha256": policy.sha256 if policy else None,
    }


def exported_policy(directory: Path, expect_sha256: str | None) -> TrustPolicy | None:
    """The export's trust policy, held to the auditor's expected SHA-256 (required when a policy is there)."""
    path = Path(directory) / EXPORTED_POLICY
    if not path.exists():
        if expect_sha256:
            raise AuthorityRefusal(
                f"{directory}: --expect-policy-sha256 given but the export carries no {EXPORTED_POLICY}"
            )
        return None
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not expect_sha256:
        raise InputError(
            f"this export carries a trust policy (SHA-256 {actual}); pass the reviewed policy's SHA-256 to check it against",
            field="--expect-policy-sha256",
        )
    if actual != expect_sha256.strip().lower():
        raise AuthorityRefusal(
            f"{path}: SHA-256 {actual} is not the expected {expect_sha256.strip()}: not the reviewed trust policy"
        )
    try:
        return parse_trust_policy(data, path)
    except ConfigError as exc:
        raise AuthorityRefusal(f"exported trust policy does not validate: {exc}") from None


def manifest_key(
    policy: TrustPolicy, manifest_bytes: bytes, manifest_path: Path
) -> tuple[str, ed25519.Ed25519PublicKey]:
    """(how to name it, public key) of the manifest's signer, who must be an auditor or operator in the policy."""
    import json

    try:
        kid = str(json.loads(manifest_bytes).get("key_id"))
    except (ValueError, AttributeError):
        raise AuthorityRefusal(f"{manifest_path}: not valid JSON") from None
    person, public = _export_holder(policy, kid, f"{manifest_path}: signer")
    return f"key {kid} of {person.describe()}", public


def _json_object(path: Path) -> dict:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuthorityRefusal(f"{path}: unreadable ({exc})") from None
    if not isinstance(value, dict):
        raise AuthorityRefusal(f"{path}: not a JSON object")
    return value


def verify_exported_authority(
    policy: TrustPolicy, plan_json: Path, plan_parquet: Path, approvals_json: Path, journal: Path
) -> None:
    """Plan signature, approvals and quorum, and every signed run record of an export, against its policy. The
    export's owner (artefacts/audit_export.py) names the files."""
    from remediation.evidence.journal import read_journal
    from remediation.plan import seal

    document = _json_object(plan_json)
    if seal(document).get("plan_hash") != document.get("plan_hash"):
        raise AuthorityRefusal(f"{plan_json}: content does not match its plan_hash")
    if sha256_file(plan_parquet) != (document.get("outputs") or {}).get(plan_parquet.name):
        raise AuthorityRefusal(f"{plan_parquet}: SHA-256 differs from {plan_json.name}")
    planner = verify_plan_signature(document, policy, str(plan_json))
    approvals = _json_object(approvals_json).get("approvals")
    if not isinstance(approvals, list):
        raise AuthorityRefusal(f"{approvals_json}: no list of approvals")
    check_approvals(document["plan_hash"], approvals, policy, planner, str(approvals_json))
    entries = read_journal(journal)
    for entry in entries:
        if entry.get("event") == "run_started" and entry.get("plan_hash") != document["plan_hash"]:
            raise AuthorityRefusal(
                f"{journal} seq {entry.get('seq')} (run_started): for plan {str(entry.get('plan_hash'))[:16]}…, not this plan"
            )
    if not any(e.get("event") == "run_started" for e in entries):
        raise AuthorityRefusal(f"{journal}: no run_started record")
    verify_journal_signatures(entries, policy, str(journal))
    for entry in entries:  # the approvals apply counted when it started: a quorum then, not only in approvals.json now
        if entry.get("event") == "run_started":
            check_approvals(
                document["plan_hash"],
                entry.get("approvals") or [],
                policy,
                planner,
                f"{journal} seq {entry.get('seq')} (run_started) approvals",
            )
