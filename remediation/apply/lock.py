"""Locks: one apply per run directory (run.lock) and one active run per plan (the plan lease).

The plan lease is held twice: in the plan directory, and in a host-wide registry keyed by the plan's hash (so a copy
of the plan directory is the same plan: applying the copy meets the original's lease). The registry lives in
$REMEDIATION_STATE_DIR, else $XDG_STATE_HOME/remediation, else ~/.local/state/remediation.

All are flocks, so a killed holder's lock is released by the kernel and the next apply takes it over safely; each
file names its holder for the refusal message and for `status`, which tells a live holder from a stale record by
the holder's pid on the same host. The plan lease adds a record in the plan directory (active_run.json) naming the
run that owns the plan: a second run directory is refused while that run is active or incomplete, unless the
operator supersedes it, which both journals record."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from remediation.artefacts.plan_dir import LEASE_LOCK, LEASE_RECORD
from remediation.artefacts.run_dir import RUN_LOCK
from remediation.errors import InputError, SafetyRefusal

STATE_DIR_ENV = "REMEDIATION_STATE_DIR"


def state_dir() -> Path:
    """The host-wide state directory of this tool (the lease registry lives under it)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "remediation"


class RunLocked(SafetyRefusal):
    pass


def lock_free(path: Path | None) -> bool:
    """True when nobody holds the flock on `path` (probed with a shared lock taken and dropped at once): the record
    in it is then stale whatever its pid, which a killed holder's successor on this host may have been given."""
    if path is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False  # held (or cannot be told): trust the pid check
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def holder_alive(record: dict | None, path: Path | None = None) -> bool | None:
    """True/False when the record names a process on this host (checked by pid); None when it cannot be told.
    With the lock file's `path`, a record whose flock nobody holds is stale (False) even if its pid now names a live
    process (pid reuse after a crash or reboot)."""
    if not record or not record.get("pid"):
        return False
    if lock_free(path):
        return False
    if record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, ValueError):
        return None
    return True


def read_holder(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    NAME = RUN_LOCK

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.fd: int | None = None
        self.previous: dict | None = None

    def acquire(self, who: str, **extra) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise InputError(
                f"cannot open the lock file ({exc.strerror}); the directory must be writable by the operator",
                file=str(self.path),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise RunLocked(self.refusal(holder)) from None
        self.previous = self._read(fd) or None  # a dead holder's record: the takeover is journaled
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "who": who,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def refusal(self, holder: dict) -> str:
        return (
            f"run {self.path.parent} is locked by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('who', '?')}) since {holder.get('since', '?')}; wait for it or stop that process"
        )

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            value = json.loads(data) if data else {}
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class PlanLocked(RunLocked):
    pass


class PlanLease(RunLock):
    """The plan-level lease: an flock on PLAN/apply.lock while a process applies the plan, and PLAN/active_run.json
    naming the run directory that owns the plan until that run is complete (or superseded)."""

    NAME = LEASE_LOCK
    RECORD = LEASE_RECORD

    def __init__(self, plan_dir: Path):
        super().__init__(plan_dir)
        self.record_path = Path(plan_dir) / self.RECORD

    def refusal(self, holder: dict) -> str:
        return (
            f"plan {self.path.parent} is being applied by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('who', '?')}) into run {holder.get('run_dir', '?')}; one active run per plan"
        )

    def owner(self) -> dict:
        return read_holder(self.record_path)

    def record(self, run_dir: Path, who: str, status: str, journal_head: dict | None = None) -> None:
        from remediation.outputs import write_json

        write_json(
            self.record_path,
            {
                "run_dir": str(Path(run_dir).resolve()),
                "who": who,
                "status": status,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "journal_head": journal_head,
            },
        )


class HostPlanLease(PlanLease):
    """The same lease in the host-wide registry, keyed by the plan's hash: STATE/leases/<plan hash>.lock and .json.
    A copy of the plan directory has the same hash, so it cannot start a second active run beside the original's."""

    def __init__(self, plan_hash: str, where: Path | None = None):
        leases = (where or state_dir()) / "leases"
        try:
            leases.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(
                f"cannot create the lease registry ({exc.strerror}); set ${STATE_DIR_ENV} to a writable directory",
                file=str(leases),
            ) from None
        self.plan_hash = plan_hash
        self.path = leases / f"{plan_hash}.lock"
        self.fd = None
        self.previous = None
        self.record_path = leases / f"{plan_hash}.json"

    def refusal(self, holder: dict) -> str:
        return (
            f"plan {self.plan_hash[:12]}… (this plan directory or a copy of it) is being applied by pid "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('who', '?')}) into run "
            f"{holder.get('run_dir', '?')}; one active run per plan"
        )
