"""`bench` (alias `irbench`): the command-line interface. Each command group is one module."""

from __future__ import annotations

import sys

import click

import irbench
from irbench.cli.data import data_cmd
from irbench.cli.leaderboard import leaderboard_cmd
from irbench.cli.registry_cmds import datasets_cmd, methods_cmd
from irbench.cli.report import report_cmd
from irbench.cli.run import run_cmd
from irbench.errors import IrbenchError


class _Group(click.Group):
    """Turns expected failures (IrbenchError) into one clear message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IrbenchError as exc:
            from rich.text import Text

            from irbench.cli.ui import err_console

            err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(irbench.__version__, prog_name="irbench")
def cli() -> None:
    """irbench: run instance-level image retrieval methods under one protocol and one
    evaluator, and compare them in leaderboards.

    \b
    Start with:
      bench run --method bow --dataset demo
      bench leaderboard
    """


cli.add_command(run_cmd)
cli.add_command(methods_cmd)
cli.add_command(datasets_cmd)
cli.add_command(leaderboard_cmd)
cli.add_command(data_cmd)
cli.add_command(report_cmd)


def main() -> None:
    cli(prog_name="bench")


if __name__ == "__main__":
    main()
