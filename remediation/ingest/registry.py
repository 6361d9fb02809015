"""The Network Operator registry: RDP network_operator_id -> SMKI entity id and current DS/KA certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from remediation.certificates import CertificateCatalog, CertificateDecodeError, decode_certificate_text
from remediation.config import load_registry_file
from remediation.errors import ConfigError
from remediation.identifiers import canonical_eui64


@dataclass(frozen=True)
class NetworkOperator:
    id: str
    name: str
    fuel: str
    entity_id: str  # canonical EUI-64
    ds_path: Path
    ka_path: Path
    ds_cert_id: int
    ka_cert_id: int


@dataclass(frozen=True)
class Registry:
    operators: tuple[NetworkOperator, ...]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "network_operator_id": o.id,
                    "no_name": o.name,
                    "no_fuel": o.fuel,
                    "expected_entity": o.entity_id,
                    "target_ds": o.ds_cert_id,
                    "target_ka": o.ka_cert_id,
                }
                for o in self.operators
            ],
            columns=["network_operator_id", "no_name", "no_fuel", "expected_entity", "target_ds", "target_ka"],
        )

    def label_for_entity(self) -> dict[str, str]:
        """entity id -> a readable owner label (the registry ids that organisation holds)."""
        labels: dict[str, list[str]] = {}
        for o in self.operators:
            labels.setdefault(o.entity_id, []).append(o.id)
        return {e: "/".join(ids) for e, ids in labels.items()}

    def by_id(self) -> dict[str, NetworkOperator]:
        return {o.id: o for o in self.operators}


def _load_cert(path: Path, catalog: CertificateCatalog, file: Path, field: str) -> int:
    try:
        der = (
            decode_certificate_text(path.read_text(encoding="ascii"))
            if path.suffix.lower() == ".pem"
            else path.read_bytes()
        )
    except (OSError, UnicodeDecodeError, CertificateDecodeError) as exc:
        raise ConfigError(f"cannot read certificate {path} ({exc})", file=str(file), field=field) from None
    cert_id = catalog.intern_der(der)
    if catalog.facts[cert_id].error:
        raise ConfigError(f"{path}: {catalog.facts[cert_id].error}", file=str(file), field=field)
    return cert_id


def load_registry(path: Path, catalog: CertificateCatalog) -> Registry:
    operators, seen = [], set()
    for i, item in enumerate(load_registry_file(Path(path))):
        where = f"network_operator[{i}]"
        no_id = item["id"]
        if no_id in seen:
            raise ConfigError(f"network operator id {no_id!r} appears twice", file=str(path), field=f"{where}.id")
        seen.add(no_id)
        entity = canonical_eui64(item["entity_id"])
        if entity is None:
            raise ConfigError(f"{item['entity_id']!r} is not an EUI-64", file=str(path), field=f"{where}.entity_id")
        ds_path, ka_path = item["ds_certificate"], item["ka_certificate"]
        operators.append(
            NetworkOperator(
                id=no_id,
                name=item["name"] or no_id,
                fuel=item["fuel"],
                entity_id=entity,
                ds_path=ds_path,
                ka_path=ka_path,
                ds_cert_id=_load_cert(ds_path, catalog, path, f"{where}.ds_certificate"),
                ka_cert_id=_load_cert(ka_path, catalog, path, f"{where}.ka_certificate"),
            )
        )
    return Registry(tuple(operators))
