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


def load_orl(path: Path | None) -> frozenset[str]:
    """CSV with a `serial` column (hex); returns upper-case serials without leading zeros."""
    if path is None:
        return frozenset()
    serials = set()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "serial" not in reader.fieldnames:
            raise ConfigError("ORL needs a 'serial' column", file=str(path), field="serial")
        for row_no, row in enumerate(reader, start=1):
            text = (row.get("serial") or "").strip().replace(":", "")
            try:
                serials.add(format(int(text, 16), "X"))
            except ValueError:
                raise ConfigError(f"serial {text!r} is not hexadecimal", file=str(path), row=row_no, field="serial") from None
    return frozenset(serials)
