"""The batch reader's read-ahead thread: order, errors and early stops behave as a plain loop would."""

from __future__ import annotations

import threading

import pytest

from remediation.errors import InputError
from remediation.ingest.tables import prefetched


def test_items_arrive_in_order_then_the_producer_error_in_its_place():
    def produce():
        yield from range(50)
        raise InputError("line 51 has 3 of 7 columns", file="x.csv")

    seen = []
    with pytest.raises(InputError, match="line 51"):
        for item in prefetched(produce(), depth=2):
            seen.append(item)
    assert seen == list(range(50))


def test_a_consumer_that_stops_early_closes_the_producer_and_its_thread():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    before = {t.ident for t in threading.enumerate()}
    items = prefetched(produce(), depth=2)
    with pytest.raises(RuntimeError):
        for item in items:
            if item == 3:
                raise RuntimeError("consumer failed")
    items.close()
    assert closed.wait(5), "the producing generator was not closed"
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name == "batch-reader"]
