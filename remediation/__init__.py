"""MP107 Requirement 2 remediation of SMETS1 Network Operator anchor slots."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("remediation")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
