"""`remediation keygen` and the old `remediation audit keygen`: a person's key pair."""

from __future__ import annotations

from pathlib import Path

from remediation.artefacts.audit_export import generate_key
from remediation.authority import write_key_pair


def keygen(out_path: Path, comment: str, passphrase: bytes | None) -> tuple[Path, str, str]:
    """NAME (private, mode 0600) and NAME.pub; returns (public key path, public key line, key id)."""
    return write_key_pair(out_path, comment, passphrase)


def audit_keygen(private_path: Path, public_path: Path) -> None:
    """The old PEM pair for signing exports (list the public key in the trust policy to use it)."""
    generate_key(private_path, public_path)
