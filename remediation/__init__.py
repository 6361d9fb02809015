"""MP107 Requirement 2 remediation of SMETS1 Network Operator anchor slots."""

import os
from importlib.metadata import PackageNotFoundError, version

# Arrow's allocator (mimalloc) otherwise keeps freed pages for a while; the readers free hundreds of MB of transient
# buffers per file, and returning them at once is what keeps a national detect inside its memory budget. Set before
# pyarrow is first imported; an operator's own setting wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")

try:
    __version__ = version("remediation")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
