"""MP107 Requirement 2 remediation of SMETS1 Network Operator anchor slots."""

import os
from importlib.metadata import PackageNotFoundError, version

from remediation.memory import PURGE_DELAY_MS, configure_allocators

# How long Arrow's allocator (mimalloc) keeps freed pages before returning them (see remediation/memory.py). Set
# before pyarrow is first imported; an operator's own setting wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS)
configure_allocators()

try:
    __version__ = version("remediation")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
