"""One exception family for everything a user can cause.

The CLI catches `RemediationError` once and prints `str(error)` as a single line, exiting with
`error.exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_INPUT = 2
EXIT_REFUSED = 3


class RemediationError(Exception):
    exit_code = EXIT_INPUT


class InputError(RemediationError):
    """A file, row or option the user supplied is unusable (exit 2)."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.file, self.row, self.field = file, row, field
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ConfigError(InputError):
    """The case configuration, a dialect, the registry or the policy is unusable (exit 2)."""


class SafetyRefusal(RemediationError):
    """The tool refuses to proceed because doing so could harm a device or the evidence (exit 3)."""

    exit_code = EXIT_REFUSED
