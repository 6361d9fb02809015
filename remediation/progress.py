"""What long stages tell whoever is watching: the stage's name, how much of it is done and, when known, its total.

The stages call these hooks; rendering (rich, on stderr, only on a terminal) belongs to the CLI. A hook is cheap:
it is called per batch or per device, never per row.
"""

from __future__ import annotations

from typing import Protocol


class StageProgress(Protocol):
    def stage(self, name: str, total: float | None = None, unit: str = "") -> None:
        """A new stage begins (the previous one ends). `total` in `unit`s when known: bytes, devices, steps."""

    def advance(self, amount: float = 0, detail: str | None = None) -> None:
        """`amount` more of the current stage is done; `detail` says what (e.g. the file being read)."""


class NoProgress:
    """The hooks, doing nothing: for callers that watch nothing (tests, library use)."""

    def stage(self, name: str, total: float | None = None, unit: str = "") -> None:
        pass

    def advance(self, amount: float = 0, detail: str | None = None) -> None:
        pass


NO_PROGRESS = NoProgress()
