"""Certificate and Network Operator reference tables a plan directory carries, so outcomes can name certificates by
their SMETS1 Certificate ID (serial + issuer) and organisations by their registry id without re-reading extracts.

`plan` writes `certificates.parquet` (one row per distinct certificate the case saw, a few thousand nationally)
and `operators.parquet` (the registry: id, name, fuel, entity id, current DS/KA fingerprints)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from remediation.errors import SafetyRefusal

CERTIFICATES_FILE = "certificates.parquet"
OPERATORS_FILE = "operators.parquet"
CERTIFICATE_COLUMNS = [
    "fingerprint",
    "serial",
    "issuer",
    "issuer_cn",
    "entity_id",
    "role",
    "key_usage",
    "chains_to_org_ca",
    "not_after",
    "der_b64",
]
OPERATOR_COLUMNS = [
    "network_operator_id",
    "name",
    "fuel",
    "entity_id",
    "target_ds_fingerprint",
    "target_ka_fingerprint",
]


def _issuer_cn(issuer: str | None) -> str | None:
    """CN of an RFC 4514 issuer string (the SMETS1 Certificate ID uses the issuer's common name)."""
    if not issuer:
        return None
    for part in issuer.split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN":
            return value.strip()
    return issuer


def certificate_table(catalog) -> pd.DataFrame:
    """The catalog's certificates (the ones that decoded) as a small table keyed by fingerprint."""
    rows = [
        {
            "fingerprint": f.fingerprint,
            "serial": f.serial,
            "issuer": f.issuer,
            "issuer_cn": _issuer_cn(f.issuer),
            "entity_id": f.entity_id,
            "role": -1 if f.role is None else int(f.role),
            "key_usage": f.key_usage,
            "chains_to_org_ca": bool(f.chains_to_org_ca),
            "not_after": f.not_after.isoformat() if f.not_after else None,
            "der_b64": f.b64(),
        }
        for f in catalog.facts
        if f.error is None
    ]
    frame = pd.DataFrame(rows, columns=CERTIFICATE_COLUMNS)
    return frame.sort_values("fingerprint", ignore_index=True)


def intern_saved_certificates(catalog, directory: Path) -> int:
    """Add the certificates a detect result saved to `catalog`, parsed again from their DER (so every fact, the
    fingerprint included, is recomputed here rather than trusted from the file). Returns how many were read."""
    import base64

    path = Path(directory) / CERTIFICATES_FILE
    if not path.exists():
        return 0  # a detect result from before certificates were saved: slot certificates are then named by fingerprint
    try:
        texts = pd.read_parquet(path, columns=["der_b64"])["der_b64"].dropna()
        for text in texts:
            catalog.intern_der(base64.b64decode(text, validate=True))
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:  # binascii.Error is a ValueError
        raise SafetyRefusal(f"{path}: unreadable ({str(exc).splitlines()[0][:160]}); re-run detect") from None
    return len(texts)


def operator_table(registry, catalog) -> pd.DataFrame:
    rows = [
        {
            "network_operator_id": o.id,
            "name": o.name,
            "fuel": o.fuel,
            "entity_id": o.entity_id,
            "target_ds_fingerprint": catalog.facts[o.ds_cert_id].fingerprint,
            "target_ka_fingerprint": catalog.facts[o.ka_cert_id].fingerprint,
        }
        for o in registry.operators
    ]
    return pd.DataFrame(rows, columns=OPERATOR_COLUMNS)


class References:
    """Lookups over the two tables: certificate ids by fingerprint, organisation labels by entity id."""

    def __init__(self, certificates: pd.DataFrame, operators: pd.DataFrame):
        self.certificates = certificates.drop_duplicates("fingerprint").set_index("fingerprint")
        self.operators = operators
        labels: dict[str, list[str]] = {}
        for no, entity in zip(operators["network_operator_id"], operators["entity_id"]):
            labels.setdefault(entity, []).append(no)
        self._entity_label = {e: "/".join(ids) for e, ids in labels.items()}
        self.names = dict(zip(operators["network_operator_id"], operators["name"]))

    @classmethod
    def read(cls, plan_dir: Path) -> References:
        plan_dir = Path(plan_dir)
        certs = (
            pd.read_parquet(plan_dir / CERTIFICATES_FILE)
            if (plan_dir / CERTIFICATES_FILE).exists()
            else pd.DataFrame(columns=CERTIFICATE_COLUMNS)
        )
        ops = (
            pd.read_parquet(plan_dir / OPERATORS_FILE)
            if (plan_dir / OPERATORS_FILE).exists()
            else pd.DataFrame(columns=OPERATOR_COLUMNS)
        )
        return cls(certs, ops)

    def certificate_ids(self, fingerprints: pd.Series) -> pd.Series:
        """fingerprint -> "SERIAL (ISSUER CN)"; "" for an empty slot, "unknown certificate <fp prefix>" if never seen."""
        fps = fingerprints.astype(object).where(fingerprints.notna(), "").astype(str)
        uniques = pd.unique(fps)
        table = self.certificates.reindex([u for u in uniques if u])
        text = {}
        for fp, serial, cn in zip(table.index, table["serial"], table["issuer_cn"]):
            text[fp] = f"{serial} ({cn})" if isinstance(serial, str) else f"unknown certificate {fp[:16]}"
        text[""] = ""
        return fps.map(text)

    def certificate_parts(self, fingerprint: str | None) -> dict | None:
        """A certificate id as structured JSON: serial and issuer (and the fingerprint)."""
        if not fingerprint:
            return None
        if fingerprint in self.certificates.index:
            row = self.certificates.loc[fingerprint]
            return {
                "serial": row["serial"],
                "issuer": row["issuer_cn"],
                "issuer_dn": row["issuer"],
                "fingerprint": fingerprint,
            }
        return {"serial": None, "issuer": None, "issuer_dn": None, "fingerprint": fingerprint}

    def owner_of(self, fingerprints: pd.Series) -> pd.Series:
        """fingerprint -> entity id of the certificate's subject ("" when empty or unknown)."""
        fps = fingerprints.astype(object).where(fingerprints.notna(), "").astype(str)
        return fps.map(self.certificates["entity_id"].dropna().to_dict()).fillna("")

    def trusted(self, fingerprints: pd.Series) -> pd.Series:
        fps = fingerprints.astype(object).where(fingerprints.notna(), "").astype(str)
        return fps.map(self.certificates["chains_to_org_ca"].to_dict()).fillna(False).astype(bool)

    def label(self, entities: pd.Series) -> pd.Series:
        """entity id -> registry id(s) of the organisation, else the entity id itself."""
        values = entities.astype(object).where(entities.notna(), "").astype(str)
        return values.map({e: self._entity_label.get(e, e) for e in pd.unique(values)})

    def describe(self, label: str) -> str | None:
        """A display name: the registry's name, else what the organisation's certificates say it is."""
        if label in self.names:
            return self.names[label]
        roles = self.certificates.loc[self.certificates["entity_id"] == label, "role"]
        if roles.empty:
            return None
        from remediation.model import ROLE_NAMES, ROLE_NETWORK_OPERATOR

        role = int(roles.iloc[0])
        if role == ROLE_NETWORK_OPERATOR:
            return "Network Operator not in the NO registry"
        return f"not a Network Operator ({ROLE_NAMES.get(role, f'role {role:02X}')} certificate)"

    def entity_of_no(self, no_ids: pd.Series) -> pd.Series:
        return (
            no_ids.astype(str)
            .map(dict(zip(self.operators["network_operator_id"], self.operators["entity_id"])))
            .fillna("")
        )

    def targets_of(self, no_ids: pd.Series) -> tuple[pd.Series, pd.Series]:
        """registered NO id -> its current DS and KA fingerprints (the replacement targets)."""
        ids = no_ids.astype(str)
        ds = ids.map(dict(zip(self.operators["network_operator_id"], self.operators["target_ds_fingerprint"]))).fillna(
            ""
        )
        ka = ids.map(dict(zip(self.operators["network_operator_id"], self.operators["target_ka_fingerprint"]))).fillna(
            ""
        )
        return ds, ka
