"""Session-wide test settings."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` run first, the rest in their usual order. With two workers taking tests in file order, a
    long test collected last (the 1M-device smoke test is in the last file) ran while the other worker sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort: same order on every worker
