"""The apply soak at a larger size than the test suite's: SOAK_INTERRUPTIONS (default 100) interruptions, alternating
SIGINT and SIGKILL at random instants, over SOAK_DEVICES (default 1500) devices with 10% injected faults.

    .venv/bin/python benchmarks/apply_soak.py

Prints the interruptions and the checks of tests/test_apply_soak.py (one effective commit per device, journal and
signed export verify); exits 1 if any fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.test_apply_soak as soak_test  # noqa: E402


def main() -> int:
    interruptions = int(os.environ.get("SOAK_INTERRUPTIONS", 100))
    devices = int(os.environ.get("SOAK_DEVICES", 1500))
    original = soak_test.soak
    soak_test.soak = lambda root: original(root, interruptions=interruptions, devices=devices)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            soak_test.test_soak_sigint_and_sigkill_alternating_with_faults(Path(tmp))
        except AssertionError as exc:
            print(f"soak FAILED: {exc}")
            return 1
    print(f"soak passed: {interruptions} interruptions over {devices} devices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
