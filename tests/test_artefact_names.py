"""Every artefact file has one owner: its name is spelt once in the package, in the module that owns its directory
(remediation/artefacts/), and everything else asks that module. Read with `ast` (no code is run): a string
constant equal to an artefact's file name counts, a mention inside a longer message does not."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "remediation"

ARTEFACT_FILES = [
    # detect result
    "findings.parquet",
    "findings.csv",
    "input_rows.parquet",
    "quarantine.csv",
    "summary.json",
    "detect.json",
    # plan directory
    "plan.json",
    "plan.parquet",
    "plan.csv",
    "approvals.json",
    "apply.lock",
    "active_run.json",
    # run and dry-run directories
    "run.json",
    "journal.jsonl",
    "checkpoints.sqlite",
    "run.lock",
    "outcomes.parquet",
    "outcomes.csv",
    "dry_run.json",
    "dry_run.csv",
    # verify result
    "verify.json",
    "residual_wrong.csv",
    "planned_not_at_target.csv",
    "manual_not_at_target.csv",
    # audit export
    "manifest.json",
    "manifest.sig",
]


def _spellings(root: Path) -> tuple[Counter, dict[str, list[str]]]:
    counts: Counter = Counter()
    where: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ARTEFACT_FILES:
                counts[node.value] += 1
                where.setdefault(node.value, []).append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return counts, where


COUNTS, WHERE = _spellings(PACKAGE)


@pytest.mark.parametrize("name", ARTEFACT_FILES)
def test_each_artefact_file_name_is_spelt_once(name):
    assert COUNTS[name] == 1, f"{name!r} spelt {COUNTS[name]} times: {WHERE.get(name)}; ask its owner instead"


@pytest.mark.parametrize("name", ARTEFACT_FILES)
def test_the_spelling_is_in_an_artefact_owner(name):
    assert all(w.startswith("remediation/artefacts/") for w in WHERE.get(name, [])), WHERE.get(name)


def test_the_count_sees_a_second_spelling(tmp_path):
    """The check itself can fail: a module that builds its own path to plan.json is counted."""
    package = tmp_path / "remediation"
    package.mkdir()
    (package / "owner.py").write_text('PLAN_JSON = "plan.json"\n')
    (package / "rogue.py").write_text('def f(d):\n    return d / "plan.json"\n')
    counts, where = _spellings(package)
    assert counts["plan.json"] == 2 and where["plan.json"] == ["remediation/owner.py:1", "remediation/rogue.py:2"]
