"""The CLI explains itself: every option has help text, and `--help` lists commands in workflow order."""

from __future__ import annotations

import click
from click.testing import CliRunner

from remediation.cli import WORKFLOW, main


def _commands(command: click.Command, path: tuple[str, ...] = ("remediation",)):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_command_and_option_has_help_text():
    missing = []
    for path, command in _commands(main):
        if not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, missing


def test_help_lists_commands_in_workflow_order():
    out = CliRunner().invoke(main, ["--help"]).output
    listed = [
        line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.startswith("  ") and line.split()
    ]
    assert listed == [name for name in WORKFLOW if name in main.commands] + sorted(set(main.commands) - set(WORKFLOW))
    assert (
        listed.index("detect")
        < listed.index("plan")
        < listed.index("approve")
        < listed.index("apply")
        < listed.index("verify")
    )
