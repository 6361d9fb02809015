"""SHA-256 of files and of canonical JSON: the hashes plans, journals and audit manifests are built on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """One byte form per value: sorted keys, no spaces, UTF-8. What every hash over JSON is taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


class BackgroundHashes:
    """SHA-256 of input files computed on a thread while the files are being read (hashlib releases the GIL), so
    hashing 12 GB of national extracts costs no extra wall time on a multi-core machine."""

    def __init__(self, paths, workers: int = 1):
        from concurrent.futures import ThreadPoolExecutor

        # One worker beside a reader that keeps the other core busy; more when hashing is all there is to do.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sha256")
        self._futures = {str(p): self._pool.submit(sha256_file, p) for p in dict.fromkeys(paths)}
        self._pool.shutdown(wait=False)

    def get(self, path) -> str:
        future = self._futures.get(str(path))
        return future.result() if future is not None else sha256_file(path)
