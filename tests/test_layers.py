"""The package's layers, held by reading every module's imports with `ast` (no code is run).

Imports only point downwards: cli → commands (pipeline) → report / outcomes → apply / verify → artefacts /
authority → plan / detect → ingest / certificates / config → vocabulary (identifiers, model,
errors, evidence helpers). The simulator stands beside apply and shares nothing with it but the data shapes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "remediation"

# Higher number = higher layer. A module is placed by its longest matching dotted prefix.
LAYERS = {
    "remediation": 0,  # __version__
    "remediation.errors": 0,
    "remediation.interrupts": 0,
    "remediation.model": 0,
    "remediation.identifiers": 0,
    "remediation.memory": 0,
    "remediation.tokenbucket": 0,
    "remediation.outputs": 0,
    "remediation.evidence": 0,  # hashing and the journal format
    "remediation.config": 1,
    "remediation.certificates": 1,
    "remediation.ingest": 1,
    "remediation.registrations": 1,  # the RDP index: built as the case is read, used by detect
    "remediation.detect": 2,
    "remediation.detection": 3,  # builds the detect result's summary (artefacts/detect_result.py owns its shape)
    "remediation.plan": 2,
    "remediation.authority": 3,
    "remediation.artefacts": 3,
    "remediation.apply": 4,
    "remediation.verify": 4,
    "remediation.simulator": 4,
    "remediation.outcomes": 5,
    "remediation.report": 5,
    "remediation.pipeline": 6,
    "remediation.commands": 6,
    "remediation.cli": 7,
    "remediation.__main__": 8,
}

# Same-or-lower is not enough for these: they must not know each other at all.
FORBIDDEN = [
    ("remediation.evidence", "remediation.apply"),
    ("remediation.artefacts", "remediation.apply"),
    ("remediation.report", "remediation.plan"),
    ("remediation.report", "remediation.apply"),
    ("remediation.report.html", "remediation.report.terminal"),
    ("remediation.report.markdown", "remediation.report.terminal"),
    ("remediation.apply", "remediation.simulator"),
    ("remediation.simulator", "remediation.apply"),
]

# The CLI parses, calls one command function and renders: it reaches nothing else.
CLI_MAY_IMPORT = (
    "remediation",
    "remediation.pipeline",
    "remediation.commands",
    "remediation.errors",
    "remediation.report",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _under(alias.name, "remediation")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if _under(target, "remediation"):
                # `from remediation import pipeline` imports the module remediation.pipeline
                names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in LAYERS] or [target]
                found += [(node.lineno, name) for name in names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))

# Imports that break the layering. Empty since issue 13 moved the code to its owners (the run directory's reading
# to artefacts/run_dir.py, the CLI's simulator, key and apply-option wiring to command functions). It may only shrink:
# a new break fails the test, and so does an entry here that no longer occurs.
KNOWN_DEBT: set[tuple[str, str]] = set()


def test_every_module_has_a_layer():
    for path in MODULES:
        _layer(_module_name(path))  # raises ValueError (max of nothing) for an unplaced module


def _problems(path: Path) -> list[tuple[str, str, str]]:
    """(module, imported module, what is wrong) for every import of `path` that breaks the layering."""
    module = _module_name(path)
    problems = []
    for line, target in _imports(path):
        if _layer(target) > _layer(module):
            problems.append(
                (
                    module,
                    target,
                    f"{path.name}:{line} {module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})",
                )
            )
        for low, high in FORBIDDEN:
            if _under(module, low) and _under(target, high):
                problems.append((module, target, f"{path.name}:{line} {module} must not import {target}"))
        if module == "remediation.cli" and not any(
            target == allowed or _under(target, allowed) and allowed != "remediation" for allowed in CLI_MAY_IMPORT
        ):
            problems.append((module, target, f"{path.name}:{line} the CLI reaches around the commands into {target}"))
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    new = [text for module, target, text in _problems(path) if (module, target) not in KNOWN_DEBT]
    assert not new, "\n".join(new)


def test_the_known_layering_debt_only_shrinks():
    found = {(module, target) for path in MODULES for module, target, _ in _problems(path)}
    assert not KNOWN_DEBT - found, f"fixed, so delete from KNOWN_DEBT: {sorted(KNOWN_DEBT - found)}"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: an import of apply from the evidence layer is caught."""
    # The probe module goes into a copy of the package's layout under tmp_path, never into the package's source.
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "remediation")
    bad = PACKAGE / "evidence" / "_layer_probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from remediation.apply.runner import read_run\n")
    try:
        found = _imports(bad)
        module = _module_name(bad)
        assert found == [(1, "remediation.apply.runner")]
        assert _layer(found[0][1]) > _layer(module) or any(
            _under(module, a) and _under(found[0][1], b) for a, b in FORBIDDEN
        )
    finally:
        bad.unlink()


def test_the_product_imports_no_test_helpers():
    """The SMKI certificate builder (it uses a private `cryptography` name) lives in `testing/`, outside the package
    that is shipped: no product module may import it, and the package holds no copy of it."""
    offenders = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [
                f"{path.relative_to(PACKAGE)}:{node.lineno} imports {n}" for n in names if _under(n, "testing")
            ]
    assert not offenders, offenders
    assert not (PACKAGE / "testpki.py").exists()
