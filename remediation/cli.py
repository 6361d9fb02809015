"""The `remediation` command: parse arguments, call one pipeline function, render. Nothing else lives here."""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from remediation import __version__, pipeline
from remediation.errors import EXIT_ATTENTION, RemediationError
from remediation.report import terminal

REDACTION_KEY_ENV = "REMEDIATION_REDACTION_KEY"


class RemediationGroup(click.Group):
    """Catches the user-error family once: one line on stderr, the contract's exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RemediationError as exc:
            click.echo(f"remediation: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _as_of(ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected a date as YYYY-MM-DD") from None


class _RowProgress:
    """A rich progress line per input file, on stderr, counting rows as batches arrive."""

    def __init__(self, console: Console):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} rows"),
                                 TimeElapsedColumn(), console=console, transient=True)  # fmt: skip
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, path: str, rows: int) -> None:
        if path not in self.tasks:
            self.tasks[path] = self.progress.add_task(f"reading {Path(path).name}", total=None)
        self.progress.advance(self.tasks[path], rows)


config_option = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
                             help="Case file (TOML) naming the extracts, RDP, registry, PKI and policy.")  # fmt: skip
as_of_option = click.option("--as-of", callback=_as_of, metavar="YYYY-MM-DD",
                            help="Judge registrations and certificate validity on this date (default: the case's, else today).")  # fmt: skip


@click.group(cls=RemediationGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remediation")
def main() -> None:
    """MP107 Requirement 2: find and correct SMETS1 devices whose NO anchor slots hold another organisation's certificate."""


@main.command()
@config_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory for the findings.")
@as_of_option
def detect(config_path: Path, out_dir: Path, as_of: date | None) -> None:
    """Classify every device in the extracts into exactly one finding category."""
    err = Console(stderr=True)
    with _RowProgress(err) as progress:
        result = pipeline.run_detect(config_path, out_dir, as_of, progress)
    terminal.print_detect(result.summary, out_dir)


def _default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@main.command()
@config_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="New directory for the plan.")
@as_of_option
@click.option("--s1sp", "s1sps", multiple=True, metavar="CODE", help="Plan only this S1SP (repeatable).")
@click.option("--by", "planner", default=_default_user, show_default="the login name", help="Who makes the plan (may not approve it).")
def plan(config_path: Path, out_dir: Path, as_of: date | None, s1sps: tuple[str, ...], planner: str) -> None:
    """Detect, then write a correction plan for the WRONG_NO devices, sealed with a plan hash."""
    err = Console(stderr=True)
    with _RowProgress(err) as progress:
        result = pipeline.run_plan(config_path, out_dir, planner=planner, as_of=as_of, s1sps=s1sps, progress=progress)
    terminal.print_plan(result.document, result.directory)


@main.command()
@click.argument("plan_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--by", "approver", required=True, help="Who approves (must differ from the planner).")
@click.option("--note", default="", help="Free text kept with the approval (change ticket, review notes).")
def approve(plan_dir: Path, approver: str, note: str) -> None:
    """Approve a plan: binds the approver to the plan hash after checking the plan and its inputs are unchanged."""
    approval = pipeline.run_approve(plan_dir, approver, note)
    Console().print(f"approved plan {approval['plan_hash'][:16]}… ({approval['devices']} devices) by {approval['approved_by']} at {approval['approved_at']}")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), default="html", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Report file (default: DIRECTORY/report.<format>).")
@click.option("--redact-mpxn", is_flag=True, help="Replace MPxNs by a keyed hash; the key is read from $REMEDIATION_REDACTION_KEY.")
def report(directory: Path, fmt: str, out_path: Path | None, redact_mpxn: bool) -> None:
    """Write a report of a detect, plan or run directory (HTML is self-contained: charts inline, no network)."""
    key = None
    if redact_mpxn:
        value = os.environ.get(REDACTION_KEY_ENV, "")
        if len(value) < 16:
            raise click.UsageError(f"--redact-mpxn needs a key of at least 16 characters in ${REDACTION_KEY_ENV}")
        key = value.encode()
    path, content = pipeline.run_report(directory, fmt, out_path, key)
    terminal.print_detect_brief(content, Console())
    Console().print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
