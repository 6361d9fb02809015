"""The run lock: one apply per run directory. Held as an flock on run.lock, so a killed holder's lock is released by
the kernel and the next apply takes it over safely; the file names the holder for the refusal message."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from remediation.errors import SafetyRefusal


class RunLocked(SafetyRefusal):
    pass


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "run.lock"
        self.fd: int | None = None
        self.previous: dict | None = None

    def acquire(self, who: str) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise RunLocked(
                f"run {self.path.parent} is locked by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"({holder.get('who', '?')}) since {holder.get('since', '?')}; wait for it or stop that process"
            ) from None
        self.previous = self._read(fd) or None  # a dead holder's record: the takeover is journaled
        record = {"pid": os.getpid(), "host": socket.gethostname(), "who": who, "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            return json.loads(data) if data else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
