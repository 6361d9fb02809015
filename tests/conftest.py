"""Session-wide test settings."""

import os
import tempfile

import pytest

# The host-wide plan-lease registry (apply/lock.py) goes to a fresh directory per test process (each xdist worker
# imports this on its own): tests never touch the real ~/.local/state, and parallel workers never share leases.
# Set at import, before any test module builds its subprocess environment from os.environ.
os.environ["REMEDIATION_STATE_DIR"] = tempfile.mkdtemp(prefix="remediation-test-state-")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` run first, the rest in their usual order. With two workers taking tests in file order, a
    long test collected last (the 1M-device smoke test is in the last file) ran while the other worker sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort: same order on every worker
