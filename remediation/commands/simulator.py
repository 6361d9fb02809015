"""`remediation simulator serve|export`: the bundled S1SP stand-in, loaded from a case's extract."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from remediation.config import load_case
from remediation.errors import InputError
from remediation.simulator.faults import FaultSpec
from remediation.simulator.service import export_extract, load_from_case, make_drift, serve_forever
from remediation.simulator.store import SlotStore


def serve(
    config_path: Path,
    s1sp: str,
    db: Path,
    port: int,
    faults: str,
    *,
    drift_count: int = 0,
    drift_devices: tuple[str, ...] = (),
    token: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_ca: Path | None = None,
    on_ready: Callable[[int], None] | None = None,
    echo: Callable[[str], None] = lambda text: None,
) -> None:
    """Serve one S1SP's anchor slots until stopped; a new `db` is loaded from the case's extract for `s1sp` first."""
    spec = FaultSpec.parse(faults)
    config = load_case(config_path)
    if s1sp not in config.s1sp_codes:
        raise InputError(f"{s1sp!r} is not one of the case's S1SPs ({', '.join(config.s1sp_codes)})", field="--s1sp")
    fresh = not db.exists()
    try:
        store = SlotStore(db)
    except sqlite3.DatabaseError as exc:  # not a simulator database (garbage, another program's file)
        raise InputError(f"not a simulator database: {exc}", file=str(db)) from None
    if fresh:
        n = load_from_case(store, config, s1sp)
        echo(f"loaded {n} {s1sp} devices into {db}")
    if drift_count or drift_devices:
        changed = make_drift(store, list(drift_devices), drift_count, spec.seed)
        echo(f"drifted {len(changed)} device(s)")
    serve_forever(
        store, port, spec, token=token, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca, on_ready=on_ready
    )


def export(db: Path, out_path: Path) -> int:
    """The simulator's current slots as an extract in the canonical dialect (input for verify); returns the devices."""
    store = SlotStore(db)
    try:
        return export_extract(store, out_path)
    finally:
        store.close()
