"""The `remediation` command: parse arguments, call one pipeline function, render. Nothing else lives here."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import click
from rich.console import Console

from remediation import __version__, pipeline
from remediation.errors import EXIT_ATTENTION, RemediationError
from remediation.report import cli_json, terminal
from remediation.report.progress_bars import DeviceBars, StageBar

REDACTION_KEY_ENV = "REMEDIATION_REDACTION_KEY"


# `remediation --help` lists commands in the order an operator uses them, not A-Z.
WORKFLOW = ("keygen", "detect", "plan", "approve", "apply", "resume", "status", "verify", "report", "notify",
            "worklist", "audit", "rollback", "simulator")  # fmt: skip


@dataclass
class Output:
    """How much this invocation prints, from -q/-v (before or after the command name) and --json."""

    quiet: bool = False
    verbose: bool = False
    json: bool = False
    command: str = ""
    json_error_written: bool = False
    _err: Console | None = None

    @property
    def err(self) -> Console:
        """The stderr console: progress, --verbose detail and log records share it, so they do not garble."""
        if self._err is None:
            self._err = Console(stderr=True)
        return self._err

    @property
    def progress_shown(self) -> bool:
        return not (self.quiet or self.json) and self.err.is_terminal

    def stages(self) -> StageBar:
        return StageBar(self.err, show=self.progress_shown, verbose=self.verbose)

    def devices(self, label: str) -> DeviceBars:
        return DeviceBars(self.err, label, show=self.progress_shown, verbose=self.verbose)

    def detail(self, text: str) -> None:
        """A --verbose line on stderr."""
        if self.verbose:
            self.err.print(text, highlight=False, soft_wrap=True)

    def written(self, directory: Path) -> None:
        """--verbose: every file a command wrote, with its full path and size."""
        if self.verbose and Path(directory).is_dir():
            for path in sorted(p for p in Path(directory).resolve().rglob("*") if p.is_file()):
                self.detail(f"[dim]wrote[/] {path} ({path.stat().st_size:,} bytes)")


def _output(ctx: click.Context | None = None) -> Output:
    ctx = ctx or click.get_current_context()
    return ctx.meta.setdefault("remediation.output", Output())


def _command_name(ctx: click.Context) -> str:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names))


class _LogToConsole(logging.Handler):
    """--verbose: the package's INFO records (e.g. each S1SP retry) on the stderr console, above any progress bar."""

    def __init__(self, output: Output):
        super().__init__(logging.INFO)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.detail(f"[dim]{record.name}[/] {record.getMessage()}")


def _set_quiet(ctx: click.Context, param, value: bool) -> None:
    if value:
        out = _output(ctx)
        if out.verbose:
            raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
        out.quiet = True


def _set_verbose(ctx: click.Context, param, value: bool) -> None:
    if not value:
        return
    out = _output(ctx)
    if out.quiet:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    if not out.verbose:
        out.verbose = True
        logger, handler = logging.getLogger("remediation"), _LogToConsole(out)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        def remove() -> None:
            logger.removeHandler(handler)
            logger.setLevel(level)

        ctx.find_root().call_on_close(remove)


QUIET_HELP = "Print only errors and the final one-line result (no tables, no progress)."
VERBOSE_HELP = "Also print per-stage detail on stderr: stage timings, every file written with its path, S1SP retries."


def _verbosity_options() -> list[click.Option]:
    return [
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_quiet, help=QUIET_HELP),
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_verbose, help=VERBOSE_HELP),
    ]


class RemediationCommand(click.Command):
    """Every command takes -q/-v after its name too (`remediation detect ... -q` as well as `remediation -q detect`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(_verbosity_options())


def _json_error(ctx: click.Context, exc: BaseException, exit_code: int) -> None:
    out = _output(ctx)
    if out.json and not out.json_error_written:
        out.json_error_written = True
        click.echo(cli_json.dumps(cli_json.envelope(out.command, exit_code, error=cli_json.error(exc, exit_code))))


class RemediationGroup(click.Group):
    """Catches the user-error family once: one line on stderr, the contract's exit code, no traceback. With --json,
    stdout also gets the error as the command's one JSON object."""

    command_class = RemediationCommand
    group_class = type  # sub-groups (audit, simulator) are RemediationGroups, their commands RemediationCommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return [n for n in WORKFLOW if n in names] + [n for n in names if n not in WORKFLOW]

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RemediationError as exc:
            _json_error(ctx, exc, exc.exit_code)
            click.echo(f"remediation: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:  # usage errors: click prints them on stderr (exit 2)
            _json_error(ctx, exc, exc.exit_code)
            raise


def _set_json(ctx: click.Context, param, value: bool) -> None:
    if value:
        out = _output(ctx)
        out.json, out.command = True, _command_name(ctx)


def json_option(keys: str):
    """--json, eager so that a usage error in any other option is reported as JSON too."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        expose_value=False,
        callback=_set_json,
        help=f"Print one JSON object on stdout and nothing else (no tables, no progress): schema "
        f"{cli_json.SCHEMA}, command, tool_version, exit_code, error, and result with {keys}. Same exit code; "
        "an error is also the object's `error` (stderr keeps its one line).",
    )


def _finish(command_result: dict, exit_code: int, line: str, render) -> None:
    """Print the command's result as --json, --quiet or in full; then exit with the command's code."""
    out = _output()
    if out.json:
        click.echo(cli_json.dumps(cli_json.envelope(out.command, exit_code, command_result)))
    elif out.quiet:
        click.echo(line)
    else:
        render(Console())
    if exit_code:
        sys.exit(exit_code)


def _as_of(ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected a date as YYYY-MM-DD") from None


config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Case file (TOML) naming the extracts, RDP, registry, PKI and policy.",
)
key_option = click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="REMEDIATION_KEY",
    help="Your Ed25519 private key (from `remediation keygen`, or an OpenSSH ed25519 key); default $REMEDIATION_KEY. "
    "Encrypted keys read their passphrase from $REMEDIATION_KEY_PASSPHRASE.",
)
trust_policy_option = click.option(
    "--trust-policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="REMEDIATION_TRUST_POLICY",
    help="The reviewed trust policy to check against (default $REMEDIATION_TRUST_POLICY, else the one the plan names); "
    "its SHA-256 must be the one sealed in the plan.",
)
change_ref_option = click.option(
    "--change-ref",
    default=None,
    metavar="CHG-…",
    help="Governance reference (change record id), signed with the plan or approval.",
)


def out_dir_option(help_text: str):
    """`--out DIR` (required), the directory a command writes its results to."""
    return click.option(
        "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help=help_text
    )


as_of_option = click.option(
    "--as-of",
    callback=_as_of,
    metavar="YYYY-MM-DD",
    help="Judge registrations and certificate validity on this date (default: the case's, else today).",
)


@click.group(cls=RemediationGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remediation")
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet, help=QUIET_HELP)
@click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbose, help=VERBOSE_HELP)
def main() -> None:
    """MP107 Requirement 2: find and correct SMETS1 devices whose NO anchor slots hold another organisation's certificate."""


@main.command()
@config_option
@out_dir_option("Directory for the findings.")
@as_of_option
@json_option(
    "out_dir, devices, rows_read, devices_by_category, no_locked_out_devices, files and summary (= summary.json)"
)
def detect(config_path: Path, out_dir: Path, as_of: date | None) -> None:
    """Classify every device in the extracts into exactly one finding category."""
    out = _output()
    with out.stages() as progress:
        result = pipeline.run_detect(config_path, out_dir, as_of, progress)
    out.written(out_dir)
    _finish(
        cli_json.detect(result.summary, out_dir),
        0,
        terminal.detect_line(result.summary, out_dir),
        lambda console: terminal.print_detect(result.summary, out_dir, console),
    )


def _default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@main.command()
@config_option
@out_dir_option("New directory for the plan.")
@as_of_option
@click.option("--s1sp", "s1sps", multiple=True, metavar="CODE", help="Plan only this S1SP (repeatable).")
@click.option(
    "--by",
    "planner",
    default=_default_user,
    show_default="the login name",
    help="A label for an unsigned plan (a signed plan names the key's holder).",
)
@click.option(
    "--from",
    "from_detect",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    metavar="DETECT_DIR",
    help="Reuse this detect result instead of detecting again (refused unless its inputs and config still match).",
)
@click.option(
    "--allow-unknown-no",
    is_flag=True,
    help="Plan even though RDP names network operators the registry lacks (their devices stay UNKNOWN_NO); recorded in plan.json.",
)
@key_option
@change_ref_option
@click.option(
    "--trust-policy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Seal the plan under this trust policy instead of the case's [case] trust_policy.",
)
@json_option("plan_dir, plan_hash, devices, signed, key_id, next_command, files and plan (= plan.json)")
def plan(
    config_path: Path,
    out_dir: Path,
    as_of: date | None,
    s1sps: tuple[str, ...],
    planner: str,
    from_detect: Path | None,
    allow_unknown_no: bool,
    key: Path | None,
    change_ref: str | None,
    trust_policy: Path | None,
) -> None:
    """Detect (or reuse a detect result), then write a correction plan for the WRONG_NO devices, sealed with a plan hash
    and signed with a planner's key."""
    out = _output()
    with out.stages() as progress:
        result = pipeline.run_plan(
            config_path,
            out_dir,
            planner=planner,
            as_of=as_of,
            s1sps=s1sps,
            progress=progress,
            from_detect=from_detect,
            allow_unknown_no=allow_unknown_no,
            key=key,
            change_ref=change_ref,
            trust_policy=trust_policy,
        )
    out.written(result.directory)
    _finish(
        cli_json.plan(result.document, result.directory),
        0,
        terminal.plan_line(result.document, result.directory),
        lambda console: terminal.print_plan(result.document, result.directory, console),
    )


@main.command()
@click.argument("plan_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@key_option
@click.option("--note", default="", help="Free text kept with the approval (review notes).")
@change_ref_option
@trust_policy_option
def approve(plan_dir: Path, key: Path | None, note: str, change_ref: str | None, trust_policy: Path | None) -> None:
    """Approve a plan: sign its plan hash with an approver's key (not the planner's) after checking the plan, its
    signature and its inputs are unchanged."""
    approval = pipeline.run_approve(plan_dir, key, note, change_ref, trust_policy)
    Console().print(
        f"approved plan {approval['plan_hash'][:16]}… ({approval['devices']} devices) by {approval['approver']} "
        f"(key {approval['key_id']}) at {approval['approved_at']}, change {approval['change_ref'] or '-'}, "
        f"trust policy {approval['trust_policy_sha256'][:16]}…"
    )


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md", "json"]),
    default="html",
    show_default=True,
    help="Report format: self-contained HTML, Markdown or JSON with stable keys.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report file (default: DIRECTORY/report.<format>).",
)
@click.option(
    "--redact-mpxn",
    is_flag=True,
    help="Replace MPxNs by a keyed hash; the key is read from $REMEDIATION_REDACTION_KEY.",
)
def report(directory: Path, fmt: str, out_path: Path | None, redact_mpxn: bool) -> None:
    """Write a report of a detect, plan or run directory (HTML is self-contained: charts inline, no network)."""
    key = None
    if redact_mpxn:
        value = os.environ.get(REDACTION_KEY_ENV, "")
        if len(value) < 16:
            raise click.UsageError(f"--redact-mpxn needs a key of at least 16 characters in ${REDACTION_KEY_ENV}")
        key = value.encode()
    path, content = pipeline.run_report(directory, fmt, out_path, key)
    if not _output().quiet:
        terminal.print_report_brief(content, Console())
    click.echo(f"wrote {path}")


def _endpoints(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        code, sep, url = value.partition("=")
        if not sep or not url:
            raise click.BadParameter(f"{value!r}: expected S1SP=URL", param_hint="--endpoint")
        out[code.strip().upper()] = url.strip()
    return out


def apply_options(f):
    """Options shared by apply and resume."""
    options = [
        click.option(
            "--by", "who", default=_default_user, show_default="the login name", help="Who runs it (journaled)."
        ),
        click.option("--s1sp", "s1sps", multiple=True, metavar="CODE", help="Only this S1SP (repeatable)."),
        click.option(
            "--endpoint",
            "endpoints",
            multiple=True,
            metavar="S1SP=URL",
            help="Override an S1SP base URL from the case.",
        ),
        click.option(
            "--canary", type=click.IntRange(1), default=5, show_default=True, help="Devices in each S1SP's first wave."
        ),
        click.option(
            "--max-wave",
            type=click.IntRange(1),
            default=2000,
            show_default=True,
            help="Most devices in any later wave.",
        ),
        click.option(
            "--pause-failure-rate",
            type=click.FloatRange(0, 1),
            default=0.2,
            show_default=True,
            help="Pause an S1SP when a wave's failure share exceeds this.",
        ),
        click.option(
            "--pause-min-sample",
            type=click.IntRange(1),
            default=20,
            show_default=True,
            help="Devices a wave must have before its failure rate can pause the S1SP.",
        ),
        click.option("--retry-failed", is_flag=True, help="Re-open devices that failed in an earlier invocation."),
        click.option(
            "--timeout", type=click.FloatRange(0.1), default=5.0, show_default=True, help="Seconds per S1SP request."
        ),
        click.option(
            "--client-cert",
            type=(click.Path(exists=True), click.Path(exists=True)),
            default=None,
            metavar="CERT KEY",
            help="Client certificate for mutual TLS.",
        ),
        click.option(
            "--ca-bundle", type=click.Path(exists=True), default=None, help="CA bundle to trust for the S1SP's TLS."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _options(
    who,
    s1sps,
    endpoints,
    canary,
    max_wave,
    pause_failure_rate,
    pause_min_sample,
    retry_failed,
    timeout,
    client_cert,
    ca_bundle,
):
    return pipeline.apply_options(
        who=who,
        s1sps=tuple(s.upper() for s in s1sps),
        endpoints=_endpoints(endpoints),
        canary=canary,
        max_wave=max_wave,
        pause_failure_rate=pause_failure_rate,
        pause_min_sample=pause_min_sample,
        retry_failed=retry_failed,
        timeout=timeout,
        client_cert=tuple(client_cert) if client_cert else None,
        ca_bundle=ca_bundle,
    )


def _require_pinned_policy(trust_policy: Path | None) -> None:
    """Whoever can write a plan directory can name a policy of their own making in it: the operator names the
    reviewed one (the plan's sealed hash must match it)."""
    if trust_policy is None:
        raise click.UsageError("name the reviewed trust policy: --trust-policy PATH or $REMEDIATION_TRUST_POLICY")


def _finish_apply(result) -> None:
    def render(console: Console) -> None:
        terminal.print_run(result.counts, result.status, result.paused, result.run_dir, console=console)
        terminal.print_failures(result.failures, console)
        if result.status == "interrupted":
            terminal.print_interrupted(result.run_dir, console)

    _output().written(result.run_dir)
    exit_code = EXIT_ATTENTION if result.status != "completed" else 0
    _finish({}, exit_code, terminal.run_line(result.counts, result.status, result.run_dir), render)


@main.command()
@click.argument("plan_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (created, or resumed if it exists).",
)
@click.option(
    "--dry-run",
    "dry_run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="OUT_DIR",
    help="Read live slots and report what would be written, drifted or skipped into OUT_DIR; writes nothing to any S1SP.",
)
@click.option(
    "--supersede",
    is_flag=True,
    help="Take the plan over from another run directory that is incomplete (journaled in both).",
)
@apply_options
@key_option
@trust_policy_option
def apply(
    plan_dir: Path,
    run_dir: Path | None,
    dry_run_dir: Path | None,
    supersede: bool,
    key: Path | None,
    trust_policy: Path | None,
    **kw,
) -> None:
    """Apply an approved, fresh plan to the S1SPs (canary, waves, checkpoints); resumes an existing run directory."""
    options = _options(**kw)
    options.supersede = supersede
    if dry_run_dir is not None and run_dir is not None:
        raise click.UsageError(
            "--run and --dry-run exclude each other: a dry run writes nothing, an apply writes (choose one)"
        )
    out = _output()
    if dry_run_dir is not None:
        with out.devices("dry run") as progress:
            frame = pipeline.run_dry_run(plan_dir, dry_run_dir, options, progress)
        out.written(dry_run_dir)
        unread = int((frame["state"] == "failed").sum())

        def render(console: Console) -> None:
            terminal.print_dry_run(frame, dry_run_dir, console)
            terminal.print_unread(frame, console)

        _finish({}, EXIT_ATTENTION if unread else 0, terminal.dry_run_line(frame, dry_run_dir), render)
        return
    if run_dir is None:
        raise click.UsageError("--run RUN_DIR is required (or --dry-run OUT_DIR)")
    _require_pinned_policy(trust_policy)
    with out.devices("apply") as progress:
        result = pipeline.run_apply(plan_dir, run_dir, options, progress, key=key, trust_policy=trust_policy)
    _finish_apply(result)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@apply_options
@key_option
@trust_policy_option
def resume(run_dir: Path, key: Path | None, trust_policy: Path | None, **kw) -> None:
    """Resume a paused or interrupted run (same checks as apply: signed, approved, fresh, unlocked)."""
    _require_pinned_policy(trust_policy)
    with _output().devices("apply") as progress:
        result = pipeline.run_resume(run_dir, _options(**kw), progress, key=key, trust_policy=trust_policy)
    _finish_apply(result)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@json_option(
    "run_dir, state, cause, next_command, counts (S1SP -> state -> devices), totals, failed, drifted, open, paused, "
    "lock (with live), index (verdict, reason) and journal_head"
)
def status(run_dir: Path) -> None:
    """A run's state from its verified journal: running, paused (cause and the command to continue), interrupted or
    completed; counts per state per S1SP and the lock holder. Exit 0 only for completed with no failed or drifted device."""
    state = pipeline.run_status(run_dir)
    _finish(
        cli_json.status(state),
        state.exit_code,
        terminal.status_line(state),
        lambda console: terminal.print_run_state(state, console),
    )


@main.command()
@config_option
@click.option(
    "--fresh",
    "fresh_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory with a fresh extract per S1SP: <s1sp>.csv in the canonical dialect (as `simulator export` writes).",
)
@out_dir_option("New directory for the verify result (residual devices, verify.json).")
@click.option(
    "--plan",
    "plan_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also check every planned device is at target.",
)
@as_of_option
@json_option("out_dir, residual_wrong, devices, planned, planned_at_target, files and verify (= verify.json)")
def verify(config_path: Path, fresh_dir: Path, out_dir: Path, plan_dir: Path | None, as_of: date | None) -> None:
    """Detect again on fresh extracts: list residual WRONG_NO devices (exit 1 if there are any)."""
    out = _output()
    with out.stages() as progress:
        verdict = pipeline.run_verify(config_path, fresh_dir, out_dir, plan_dir, as_of, progress)
    out.written(out_dir)
    attention = verdict["residual_wrong"] or verdict.get("planned_at_target", 0) != verdict.get("planned", 0)
    _finish(
        cli_json.verify(verdict, out_dir),
        EXIT_ATTENTION if attention else 0,
        terminal.verify_line(verdict, out_dir),
        lambda console: terminal.print_verify(verdict, out_dir, console),
    )


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@out_dir_option("New directory for the packs.")
def notify(run_dir: Path, out_dir: Path) -> None:
    """NO notification packs of a run: per registered NO the devices now at its certificates, per previous holder the devices it no longer controls."""
    summary = pipeline.run_notify(run_dir, out_dir)
    _output().written(out_dir)
    _finish(
        {},
        0,
        terminal.notify_line(summary, out_dir),
        lambda console: terminal.print_notify(summary, out_dir, console),
    )


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="PLAN_OR_RUN_DIR")
@out_dir_option("New directory for the worklist.")
def worklist(directory: Path, out_dir: Path) -> None:
    """SRV 6.15.1 worklist: the locked-out devices the fix leaves, one CSV and JSON per current slot holder, registered NO copied."""
    index = pipeline.run_worklist(directory, out_dir)
    _output().written(out_dir)
    _finish(
        {},
        0,
        terminal.worklist_line(index, out_dir),
        lambda console: terminal.print_worklist(index, out_dir, console),
    )


@main.group()
def simulator() -> None:
    """The bundled S1SP simulator (a real HTTP server on 127.0.0.1, state in SQLite)."""


@simulator.command("serve")
@config_option
@click.option(
    "--s1sp", required=True, metavar="CODE", help="Which S1SP's extract to hold (one of the case's [s1sp.CODE] tables)."
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="SQLite file (loaded from the extract if new).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on (0: any free port; see --ready-file).",
)
@click.option(
    "--faults", default="", help="e.g. latency=20ms,error=0.05,throttle=0.02,timeout=0.01,drop=0.02,rate=200,seed=7"
)
@click.option(
    "--drift-count", type=click.IntRange(0), default=0, help="Change this many random devices underneath at start."
)
@click.option(
    "--drift-device", "drift_devices", multiple=True, help="Change this device underneath at start (repeatable)."
)
@click.option("--token-env", default=None, help="Require a bearer token, read from this environment variable.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Server certificate (PEM): serve HTTPS instead of plain HTTP.",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, path_type=Path), default=None, help="Private key of --tls-cert (PEM)."
)
@click.option(
    "--client-ca",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Require client certificates from this CA (mutual TLS).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bound port here once listening.",
)
def simulator_serve(
    config_path, s1sp, db, port, faults, drift_count, drift_devices, token_env, tls_cert, tls_key, client_ca, ready_file
) -> None:
    """Serve one S1SP's anchor slots until stopped (SIGTERM or Ctrl-C)."""
    from remediation.commands import simulator as simulator_commands

    # Fail closed: a simulator asked for authentication or mutual TLS that cannot provide it must not serve at all.
    if token_env and not os.environ.get(token_env):
        raise click.UsageError(
            f"--token-env {token_env}: ${token_env} is not set; refusing to serve without the bearer token it should require"
        )
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert: without a certificate the simulator would serve plain HTTP")
    if client_ca and not tls_cert:
        raise click.UsageError(
            "--client-ca needs --tls-cert (and --tls-key): mutual TLS cannot be required over plain HTTP"
        )

    def ready(bound: int) -> None:
        click.echo(f"{s1sp} simulator listening on 127.0.0.1:{bound}", err=True)
        if ready_file:
            ready_file.write_text(str(bound))

    simulator_commands.serve(
        config_path,
        s1sp,
        db,
        port,
        faults,
        drift_count=drift_count,
        drift_devices=drift_devices,
        token=os.environ.get(token_env) if token_env else None,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        on_ready=ready,
        echo=lambda text: click.echo(text, err=True),
    )


@simulator.command("export")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The simulator's SQLite file.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="CSV to write: the simulator's current slots as an extract in the canonical dialect.",
)
def simulator_export(db: Path, out_path: Path) -> None:
    """Write the simulator's current slots as an extract in the canonical dialect (input for verify)."""
    from remediation.commands import simulator as simulator_commands

    n = simulator_commands.export(db, out_path)
    click.echo(f"exported {n} devices to {out_path}")


@main.command()
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file NAME; the public key goes to NAME.pub.",
)
@click.option("--comment", default=None, help="Comment on the public key line (default: NAME).")
@click.option(
    "--passphrase-env",
    default=None,
    metavar="VAR",
    help="Encrypt the private key with the passphrase in this environment variable.",
)
def keygen(out_path: Path, comment: str | None, passphrase_env: str | None) -> None:
    """Make your Ed25519 key pair: NAME (private, mode 0600) and NAME.pub (the line that goes into the trust policy)."""
    from remediation.commands import keys

    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env, "").encode()
        if not passphrase:
            raise click.UsageError(f"--passphrase-env: ${passphrase_env} is not set or empty")
    public_path, line, kid = keys.keygen(out_path, comment or out_path.name, passphrase)
    quiet = _output().quiet  # then only the public key line: the result, to paste into the trust policy
    if not quiet:
        click.echo(f"wrote {out_path} (private, mode 0600{', encrypted' if passphrase else ''}) and {public_path}")
    click.echo(line)
    if not quiet:
        click.echo(f"key id {kid}")


@main.group()
def audit() -> None:
    """Signed audit exports of a run, and their verification."""


@audit.command("keygen")
@click.option(
    "--private",
    "private_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (PEM, mode 0600).",
)
@click.option(
    "--public",
    "public_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its public key (PEM), for audit verify.",
)
def audit_keygen(private_path: Path, public_path: Path) -> None:
    """Old form of `remediation keygen` (PEM public key; list it in the trust policy to sign exports with it)."""
    from remediation.commands import keys

    if private_path.exists():
        raise click.UsageError(f"{private_path} exists; keys are never overwritten")
    keys.audit_keygen(private_path, public_path)
    click.echo(f"wrote {private_path} and {public_path}")


@audit.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@out_dir_option("New, empty directory for the export.")
@key_option
@click.option(
    "--sign-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="Old name of --key."
)
@click.option(
    "--by",
    "who",
    default=_default_user,
    show_default="the login name",
    help="Who exports it (a label; the signing key identifies the exporter).",
)
def audit_export(run_dir: Path, out_dir: Path, key: Path | None, sign_key: Path | None, who: str) -> None:
    """Export findings, plan, its signature, approvals, trust policy, journal and per-device outcomes, with a manifest
    signed by an auditor's or operator's key from the trust policy."""
    result = pipeline.run_audit_export(run_dir, out_dir, sign_key, who, key=key)
    signer = (
        f"{result.manifest['signed_by']}, key {result.manifest['key_id']}"
        if result.manifest.get("signed_by")
        else f"key {result.manifest['public_key_sha256'][:16]}…"
    )
    Console().print(
        f"exported {len(result.manifest['files'])} files to {result.directory}, manifest signed ({result.manifest['algorithm']}, {signer})"
    )


@audit.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--expect-policy-sha256",
    default=None,
    metavar="HEX",
    help="SHA-256 of the reviewed trust policy (sha256sum people.toml); required when the export carries one.",
)
@click.option(
    "--pubkey",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Pin the exporter's public key (default: the exporter's key in the exported, pinned trust policy).",
)
@json_option(
    "directory, verified, plan_hash, files_verified, trust_policy_sha256, signed_by, key_id and manifest "
    "(= manifest.json)"
)
def audit_verify(directory: Path, expect_policy_sha256: str | None, pubkey: Path | None) -> None:
    """Check the trust policy against the expected hash, the manifest signature, every file's hash, the journal chain, the
    plan signature, the approvals and quorum, the signed run records and the summary's counts (exit 3 naming the first fault)."""
    manifest = pipeline.run_audit_verify(directory, pubkey, expect_policy_sha256)
    policy = (
        f", trust policy {manifest['trust_policy_sha256'][:16]}… as expected; plan signature, approvals and run records"
        if manifest.get("trust_policy_sha256")
        else ""
    )
    line = f"verified: signature, {len(manifest['files'])} file hashes, journal chain{policy} and counts (plan {manifest['plan_hash'][:16]}…)"
    _finish(
        cli_json.audit_verify(manifest, directory),
        0,
        line,
        lambda console: console.print(line.replace("verified:", "[green]verified[/]:", 1)),
    )


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@out_dir_option("New directory for the rollback plan.")
@click.option(
    "--device",
    "devices",
    multiple=True,
    help="Roll back only this device (repeatable; default: every device the run wrote).",
)
@click.option(
    "--by",
    "planner",
    default=_default_user,
    show_default="the login name",
    help="Who makes the rollback plan (a label; the signing key identifies the planner).",
)
@key_option
def rollback(run_dir: Path, out_dir: Path, devices: tuple[str, ...], planner: str, key: Path | None) -> None:
    """Plan the restoration of the prior certificates recorded by a run, signed with a planner's key (then approve and apply it like any plan)."""
    result = pipeline.run_rollback(run_dir, out_dir, planner=planner, devices=list(devices) or None, key=key)
    rollback_of = result.document["rollback_of"]
    possibly, ended = rollback_of.get("possibly_written", 0), rollback_of.get("run_ended", True)

    def render(console: Console) -> None:
        terminal.print_plan(result.document, result.directory, console)
        if not ended:
            console.print(
                "[yellow]the run ended without a finish or interruption record[/] (killed, or a power cut): a device "
                "whose journal lines were lost is not in this rollback; `remediation resume` the run first to find "
                "such devices (at_target_on_resume), then make the rollback again",
                soft_wrap=True,
            )
        if possibly:
            console.print(
                f"[yellow]{possibly} of these device(s) were possibly written[/] (a PUT sent but not confirmed, or "
                "found at target on resume): category ROLLBACK_POSSIBLY_WRITTEN in plan.csv; one that was not "
                "written is recorded noop when the rollback runs",
                soft_wrap=True,
            )

    _output().written(result.directory)
    _finish(
        {"possibly_written": possibly, "run_ended": ended},
        0,
        terminal.plan_line(result.document, result.directory),
        render,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
