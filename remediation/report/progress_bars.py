"""Progress on stderr with rich: detect's named stages, apply's and dry run's devices per S1SP.

Both take a rich Console (stderr in the CLI) and show nothing unless `show` is true: the CLI passes false when
stderr is not a terminal or when --quiet or --json is given. With `verbose`, each finished stage or S1SP leaves
one line with its time and amount, shown or not.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from remediation.report.text import format_duration


class AmountColumn(ProgressColumn):
    """ "3.2/5.1 MB" for bytes, "12/40 steps" otherwise; blank while the total is unknown."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text("")
        if unit == "bytes":
            return Text(f"{decimal(int(task.completed))}/{decimal(int(task.total))}", style="progress.download")
        return Text(f"{int(task.completed):,}/{int(task.total):,} {unit}".rstrip(), style="progress.download")


class EtaColumn(ProgressColumn):
    """ "ETA 0:01:12" once rich can estimate it (a known total and some speed); blank otherwise."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        remaining = task.time_remaining
        if task.total is None or remaining is None or task.finished:
            return Text("")
        return Text(f"ETA {format_duration(remaining)}", style="progress.remaining")


class RateColumn(ProgressColumn):
    """Devices per second over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} devices/s" if speed else "", style="progress.data.speed")


def _amount(completed: float, total: float | None, unit: str) -> str:
    if total is None:
        return ""
    return f", {decimal(int(completed))}" if unit == "bytes" else f", {int(completed):,} {unit}".rstrip()


class StageBar:
    """The StageProgress hooks (remediation/progress.py) drawn as one line per stage: its name, a bar and ETA when
    the total is known, a spinner when not, and what is being read."""

    def __init__(self, console: Console, *, show: bool = True, verbose: bool = False):
        self.console, self.verbose = console, verbose
        self.progress = (
            Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=24),
                AmountColumn(),
                EtaColumn(),
                TextColumn(
                    "{task.fields[detail]}", style="dim", table_column=Column(no_wrap=True, overflow="ellipsis")
                ),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if show
            else None
        )
        self.stages: list[dict] = []  # name, total, unit, completed, seconds: what was shown, for --verbose and tests
        self._task = None
        self._started = 0.0

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._finish()
        if self.progress is not None:
            return self.progress.__exit__(*exc)
        return None

    def stage(self, name: str, total: float | None = None, unit: str = "") -> None:
        self._finish()
        self.stages.append({"name": name, "total": total, "unit": unit, "completed": 0, "seconds": None})
        self._started = time.monotonic()
        if self.progress is not None:
            self._task = self.progress.add_task(name, total=total, unit=unit, detail="")

    def advance(self, amount: float = 0, detail: str | None = None) -> None:
        if not self.stages:
            return
        self.stages[-1]["completed"] += amount
        if self._task is not None:
            fields = {"detail": detail} if detail is not None else {}
            self.progress.update(self._task, advance=amount, **fields)

    def _finish(self) -> None:
        if not self.stages or self.stages[-1]["seconds"] is not None:
            return
        last = self.stages[-1]
        last["seconds"] = time.monotonic() - self._started
        if self._task is not None:
            self.progress.update(self._task, visible=False)
            self._task = None
        if self.verbose:
            self.console.print(
                f"[dim]stage[/] {last['name']}: {last['seconds']:.2f} s"
                + _amount(last["completed"], last["total"], last["unit"]),
                highlight=False,
                soft_wrap=True,
            )


class DeviceBars:
    """One bar per S1SP, moved per device as each reaches its state: done of total, devices per second, ETA.
    Called as `bars(s1sp, done, total)` (the runner's and dry run's progress hook)."""

    def __init__(self, console: Console, label: str = "apply", *, show: bool = True, verbose: bool = False):
        self.console, self.label, self.verbose = console, label, verbose
        self.progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                EtaColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            if show
            else None
        )
        self.counts: dict[str, list[int]] = {}  # s1sp -> [done, total]
        self._tasks: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.verbose:
            for s1sp, (done, total) in sorted(self.counts.items()):
                seconds = time.monotonic() - self._started[s1sp]
                rate = f", {done / seconds:,.1f} devices/s" if seconds > 0 and done else ""
                self.console.print(
                    f"[dim]{self.label}[/] {s1sp}: {done} of {total} devices in {seconds:.2f} s{rate}",
                    highlight=False,
                    soft_wrap=True,
                )
        if self.progress is not None:
            return self.progress.__exit__(*exc)
        return None

    def __call__(self, s1sp: str, done: int, total: int) -> None:
        if s1sp not in self.counts:
            self._started[s1sp] = time.monotonic()
            if self.progress is not None:
                self._tasks[s1sp] = self.progress.add_task(f"{self.label} {s1sp}", total=total)
        self.counts[s1sp] = [done, total]
        if self.progress is not None:
            self.progress.update(self._tasks[s1sp], completed=done, total=total)
