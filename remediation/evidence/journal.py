"""The run journal: append-only JSON lines, each entry carrying the SHA-256 of the previous entry.

Entry = {"seq", "at", "event", ...fields, "prev": sha256(canonical JSON of the previous entry)}; the first entry's
prev is 64 zeros. Altering, removing, inserting or reordering any entry breaks the chain at that point, and
`verify_journal` names the first entry where it breaks.

Each line goes to the file in one write() on an O_APPEND descriptor, so a killed process leaves whole lines; a
partial last line (power loss) is cut off on the next open and the cut is itself journaled.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remediation.errors import SafetyRefusal
from remediation.evidence.hashing import canonical_json

GENESIS = "0" * 64


class JournalBroken(SafetyRefusal):
    """The journal does not verify (altered, reordered, re-chained or truncated): nothing built on it is trusted (exit 3)."""


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical_json(entry)).hexdigest()


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.prev, self.seq, cut = GENESIS, 0, None
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                cut = len(data) - keep
                with open(self.path, "r+b") as fh:
                    fh.truncate(keep)
                data = data[:keep]
            lines = data.splitlines()
            if lines:
                try:
                    last = json.loads(lines[-1])
                    self.prev, self.seq = entry_hash(last), int(last["seq"])
                except (ValueError, TypeError, KeyError):
                    raise JournalBroken(
                        f"{self.path}: last line is not a journal entry; refusing to append to it"
                    ) from None
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.size = os.fstat(self.fd).st_size  # what the file must measure while only this journal writes it
        if cut:
            self.append("journal_repaired", truncated_bytes=cut)

    def append(self, event: str, *, signer: Callable[[dict], dict] | None = None, **fields: Any) -> dict:
        """`signer`, when given, signs the whole entry (sequence, time and chain link included) and its block is
        added as `signature`: an authority record cannot be moved to another run or position without breaking it."""
        with self.lock:
            entry = {
                "seq": self.seq + 1,
                "at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "event": event,
                **fields,
                "prev": self.prev,
            }
            if signer is not None:
                entry["signature"] = signer(entry)
            line = canonical_json(entry) + b"\n"
            os.write(self.fd, line)
            self.size += len(line)
            self.seq, self.prev = entry["seq"], hashlib.sha256(line[:-1]).hexdigest()
            return entry

    @property
    def head(self) -> dict:
        """The last entry's (seq, hash): recorded with every checkpoint commit and in run.json."""
        return {"seq": self.seq, "hash": self.prev}

    def check_intact(self) -> None:
        """JournalBroken when the file was cut, replaced or written by someone else while this journal held it."""
        with self.lock:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
            except FileNotFoundError:
                same = False
            found = os.fstat(self.fd).st_size
        if not same or found != self.size:
            raise JournalBroken(
                f"{self.path}: the journal was changed underneath this run ({self.size} bytes written, "
                f"{found if same else 'file replaced or removed'} found); its evidence cannot be trusted — escalate"
            )

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


def read_journal(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def verify_journal(path: str | Path) -> tuple[bool, str]:
    """(True, summary) when the chain holds; else (False, the first bad entry and why)."""
    try:
        check_journal(path)
    except JournalBroken as exc:
        return False, str(exc).removeprefix(f"{path}: ")
    return True, f"{len(read_journal(path))} entries, chain intact"


def check_journal(path: str | Path) -> tuple[list[dict], dict]:
    """Every entry of a journal whose chain holds, and its head (seq, hash); JournalBroken naming the first bad entry."""
    prev, expected_seq, entries = GENESIS, 1, []
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JournalBroken(f"{path}: the run's journal is missing") from None
    # A line being appended right now (a live run) is not an entry yet; a cut that removed whole entries is caught
    # by the heads recorded in run.json and the checkpoint index.
    data = data[: data.rfind(b"\n") + 1]
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise JournalBroken(f"{path}: journal line {number}: not valid JSON") from None
        if not isinstance(entry, dict):
            raise JournalBroken(f"{path}: journal line {number}: not a journal entry")
        if canonical_json(entry) != line:
            raise JournalBroken(
                f"{path}: journal line {number} (seq {entry.get('seq')}): not in canonical form (edited?)"
            )
        if entry.get("prev") != prev:
            raise JournalBroken(
                f"{path}: journal line {number} (seq {entry.get('seq')}): previous-entry hash does not match (an entry before it was altered, removed or reordered)"
            )
        if entry.get("seq") != expected_seq:
            raise JournalBroken(
                f"{path}: journal line {number}: sequence {entry.get('seq')} where {expected_seq} was expected (entries removed or reordered)"
            )
        entries.append(entry)
        prev, expected_seq = entry_hash(entry), expected_seq + 1
    return entries, {"seq": expected_seq - 1, "hash": prev}
