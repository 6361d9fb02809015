"""What `--json` prints: one JSON object per command on stdout, with stable keys (documented in the README).

Every object has the same envelope: `schema` (this module's SCHEMA; a new major number means a key was removed or
its meaning changed, new keys may appear at any time), `command`, `tool_version`, `exit_code` (the process's exit
code), `result` (the command's object, null on error) and `error` (null, or the refusal or input error). A
command's result carries the artefact it wrote, unchanged, under the artefact's name (detect: `summary`, equal to
summary.json; plan: `plan`, equal to plan.json; verify: `verify`, equal to verify.json; audit verify: `manifest`,
equal to the export's manifest.json), beside a few headline keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from remediation import __version__
from remediation.artefacts.detect_result import DetectSummary

SCHEMA = "remediation/cli-output/1"


def envelope(command: str, exit_code: int, result: dict | None = None, error: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "command": command,
        "tool_version": __version__,
        "exit_code": exit_code,
        "result": result,
        "error": error,
    }


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str)


def error(exc: BaseException, exit_code: int) -> dict:
    """`message` (the one line printed on stderr too), `type`, `exit_code`; `file`, `row`, `field` where known."""
    return {
        "type": type(exc).__name__,
        "message": str(exc) if not hasattr(exc, "format_message") else exc.format_message(),
        "exit_code": exit_code,
        "file": getattr(exc, "file", None),
        "row": getattr(exc, "row", None),
        "field": getattr(exc, "field", None),
    }


def _files(directory: Path) -> list[str]:
    return sorted(str(p) for p in Path(directory).resolve().rglob("*") if p.is_file())


def detect(summary: DetectSummary, out_dir: Path) -> dict:
    return {
        "out_dir": str(Path(out_dir).resolve()),
        "devices": summary.devices,
        "rows_read": summary.rows_read,
        "devices_by_category": summary.devices_by_category,
        "no_locked_out_devices": summary.locked_out_devices,
        "files": _files(out_dir),
        "summary": summary.to_json(),
    }


def plan(document: dict, directory: Path) -> dict:
    signature = document.get("signature") or {}
    return {
        "plan_dir": str(Path(directory).resolve()),
        "plan_hash": document["plan_hash"],
        "devices": document["counts"]["devices"],
        "signed": bool(signature),
        "key_id": signature.get("key_id"),
        "next_command": f"remediation approve {directory} --key YOUR_KEY" if signature else None,
        "files": _files(directory),
        "plan": document,
    }


def status(state) -> dict:
    """From apply/state.py's RunState (read by attribute: the report layer does not import apply)."""
    totals: dict[str, int] = {}
    for by_state in state.counts.values():
        for name, n in by_state.items():
            totals[name] = totals.get(name, 0) + n
    index = state.index
    return {
        "run_dir": str(Path(state.run_dir).resolve()),
        "state": state.state,
        "cause": state.cause,
        "next_command": state.next_command,
        "counts": state.counts,
        "totals": totals,
        "failed": state.failed,
        "drifted": state.drifted,
        "open": state.open,
        "paused": state.paused,
        "lock": None if not state.lock else {**state.lock, "live": state.lock_live},
        "index": None if index is None else {"verdict": index.verdict, "reason": index.reason},
        "journal_head": state.journal_head,
    }


def verify(verdict: dict, out_dir: Path) -> dict:
    return {
        "out_dir": str(Path(out_dir).resolve()),
        "residual_wrong": verdict["residual_wrong"],
        "devices": verdict["devices"],
        "planned": verdict.get("planned"),
        "planned_at_target": verdict.get("planned_at_target"),
        "files": _files(out_dir),
        "verify": verdict,
    }


def audit_verify(manifest: dict, directory: Path) -> dict:
    return {
        "directory": str(Path(directory).resolve()),
        "verified": True,
        "plan_hash": manifest["plan_hash"],
        "files_verified": len(manifest["files"]),
        "trust_policy_sha256": manifest.get("trust_policy_sha256"),
        "signed_by": manifest.get("signed_by"),
        "key_id": manifest.get("key_id"),
        "manifest": manifest,
    }
