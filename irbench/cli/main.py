"""`bench` (alias `irbench-harness`, or `python -m irbench`): the command-line interface. Each command group is one module."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

import click

import irbench
from irbench.cli.compare import compare_cmd
from irbench.cli.data import data_cmd
from irbench.cli.leaderboard import leaderboard_cmd
from irbench.cli.paper import paper_cmd
from irbench.cli.registry_cmds import datasets_cmd, methods_cmd
from irbench.cli.report import report_cmd
from irbench.cli.run import run_cmd
from irbench.cli.show import show_cmd
from irbench.errors import IrbenchError


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks run (temporary files
    removed, worker processes stopped) before the process exits with code 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise _Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `_Terminated` (when it has no other handler)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _fail(message: str, prefix: str = "error: ") -> None:
    from rich.text import Text

    from irbench.cli.ui import err_console

    err_console.print(Text.assemble((prefix, "bold red"), message), soft_wrap=True)


class _Group(click.Group):
    """Turns expected failures (IrbenchError) into one clear message and exit code 2;
    Ctrl-C into "interrupted" and exit code 130; SIGTERM into exit code 143."""

    def invoke(self, ctx: click.Context):
        try:
            with _sigterm_raises():
                return super().invoke(ctx)
        except IrbenchError as exc:
            _fail(str(exc))
            sys.exit(2)
        except KeyboardInterrupt:
            _fail("interrupted", prefix="")
            sys.exit(130)
        except _Terminated:
            _fail("terminated", prefix="")
            sys.exit(143)
        except EOFError as exc:  # click would report it as "Aborted!": it is a bug, show it
            raise RuntimeError(f"unexpected EOFError: {exc}") from exc


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
cli.add_command(compare_cmd)
cli.add_command(show_cmd)
cli.add_command(data_cmd)
cli.add_command(report_cmd)
cli.add_command(paper_cmd)


def main() -> None:
    cli(prog_name="bench")


if __name__ == "__main__":
    main()
