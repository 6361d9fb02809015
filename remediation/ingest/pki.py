"""Trust material: the Organisation CA certificates and the Organisation Certificate Revocation List (ORL)."""

from __future__ import annotations

import csv
from pathlib import Path

from cryptography import x509

from remediation.certificates import load_certificate_file
from remediation.errors import ConfigError


def load_org_cas(paths) -> list[x509.Certificate]:
    cas = []
    for path in paths:
        try:
            cas.append(load_certificate_file(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read Organisation CA certificate ({exc})", file=str(path)) from None
    return cas


def load_orl(path: Path | None) -> frozenset[tuple[str, str]]:
    """CSV with `issuer` and `serial` columns -> (issuer, upper-case hex serial without leading zeros) pairs.

    SMETS1 identifies a certificate by serial and issuer (its Certificate ID), so an ORL without issuers is refused:
    a serial alone could revoke another CA's certificate. `issuer` is the issuer's common name (e.g. Z1) or its full
    RFC 4514 name."""
    if path is None:
        return frozenset()
    entries = set()
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("issuer", "serial") if reader.fieldnames is None or c not in reader.fieldnames]
            if missing:
                raise ConfigError(
                    "the ORL needs 'issuer' and 'serial' columns (SMETS1 certificate id = serial + issuer)",
                    file=str(path),
                    field=missing[0],
                )
            for row_no, row in enumerate(reader, start=1):
                issuer = (row.get("issuer") or "").strip()
                if not issuer:
                    raise ConfigError("empty issuer", file=str(path), row=row_no, field="issuer")
                text = (row.get("serial") or "").strip().replace(":", "")
                try:
                    entries.add((issuer, format(int(text, 16), "X")))
                except ValueError:
                    raise ConfigError(
                        f"serial {text!r} is not hexadecimal", file=str(path), row=row_no, field="serial"
                    ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None
    return frozenset(entries)
