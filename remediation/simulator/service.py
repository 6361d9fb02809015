"""Simulator life cycle: load an S1SP's extract into SQLite, make devices drift, serve until stopped, export."""

from __future__ import annotations

import csv
import random
import signal
import ssl
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from remediation.certificates import CertificateCatalog
from remediation.config import EXTRACT_FIELDS_WIDE, CaseConfig
from remediation.errors import InputError
from remediation.identifiers import eui64_text, mpxn_text
from remediation.ingest.extracts import DeviceRules, read_extract
from remediation.ingest.pki import load_org_cas
from remediation.model import EMPTY_SLOT
from remediation.simulator.faults import FaultSpec
from remediation.simulator.server import serve
from remediation.simulator.store import SlotStore


def load_from_case(store: SlotStore, config: CaseConfig, s1sp: str) -> int:
    sources = [e for e in config.extracts if e.s1sp == s1sp]
    if not sources:
        raise InputError(f"the case has no extract for S1SP {s1sp}", field="--s1sp")
    catalog = CertificateCatalog(load_org_cas(config.org_ca_paths))
    rules = DeviceRules.of(config)
    rows = []
    for source in sources:
        records = read_extract(source, catalog, rules=rules).records
        b64 = [f.b64() if f.der is not None else None for f in catalog.facts]
        good = records[records["key_ok"].to_numpy(dtype=bool)]
        device_ids = eui64_text(good["key"].to_numpy(dtype=np.uint64)).to_pylist()
        mpxns = mpxn_text(good["mpxn_key"].to_numpy(dtype=np.int64)).to_pylist()
        types = [rules.names[t] if t >= 0 else None for t in good["device_type"].to_numpy()]
        for device_id, device_type, mpxn, ds, ka in zip(
            device_ids, types, mpxns, good["ds"].to_numpy(), good["ka"].to_numpy()
        ):
            rows.append(
                (
                    device_id,
                    s1sp,
                    device_type,
                    mpxn,
                    b64[ds] if ds != EMPTY_SLOT else None,
                    b64[ka] if ka != EMPTY_SLOT else None,
                )
            )
    return store.load(rows)


def make_drift(store: SlotStore, device_ids: list[str], count: int, seed: int) -> list[str]:
    """Change devices underneath (as another party would between plan and apply): swap their two slots."""
    chosen = list(device_ids)
    if count:
        candidates = [d[1] for d in store.devices() if d[4] and d[5] and d[4] != d[5] and d[1] not in chosen]
        chosen += random.Random(seed).sample(candidates, min(count, len(candidates)))
    for device_id in chosen:
        current = store.get(device_id)
        if current is None:
            raise InputError(f"unknown device {device_id}", field="--drift-device")
        store.tamper(device_id, current.ka, current.ds)
    return chosen


def export_extract(store: SlotStore, out: Path) -> int:
    """The store as an extract in the canonical dialect, for `verify`."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = store.devices()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(EXTRACT_FIELDS_WIDE)
        for s1sp, device_id, device_type, mpxn, ds, ka, _version in rows:
            w.writerow([s1sp, device_id, device_type, mpxn, ds or "", ka or "", now])
    return len(rows)


def serve_forever(
    store: SlotStore,
    port: int,
    faults: FaultSpec,
    *,
    token: str | None = None,
    tls_cert=None,
    tls_key=None,
    client_ca=None,
    on_ready=None,
) -> None:
    try:
        server = serve(store, port, faults, token=token, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
    except ssl.SSLError as exc:  # not a certificate and key (PEM) that belong together, or a bad CA file
        store.close()
        raise InputError(
            f"cannot load the TLS certificate, key or client CA: {exc.reason or exc}", file=str(tls_cert)
        ) from None
    except OSError as exc:  # the port is taken, or a TLS file cannot be read
        store.close()
        raise InputError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}", field="--port") from None

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if on_ready:
        on_ready(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
