"""Session-wide test settings."""

import os
import tempfile

# The host-wide plan-lease registry (apply/lock.py) goes to a fresh directory per test process (each xdist worker
# imports this on its own): tests never touch the real ~/.local/state, and parallel workers never share leases.
# Set at import, before any test module builds its subprocess environment from os.environ.
os.environ["REMEDIATION_STATE_DIR"] = tempfile.mkdtemp(prefix="remediation-test-state-")
