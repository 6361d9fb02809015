"""Where a plan or run directory's packs and worklist were written, so its report can link to them:
`outcome_links.json` beside run.json / plan.json (not part of the plan's sealed outputs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

LINKS_FILE = "outcome_links.json"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_links(directory: Path) -> dict:
    path = Path(directory) / LINKS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def record_link(directory: Path, kind: str, target: Path) -> None:
    from remediation.outputs import write_json

    links = read_links(directory)
    links[kind] = {"path": str(Path(target).resolve()), "written_at": utc_now()}
    write_json(Path(directory) / LINKS_FILE, links)
