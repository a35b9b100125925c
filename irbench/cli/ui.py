"""Terminal plumbing shared by the commands: rich console, progress bars, logging, errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from irbench.core.progress import NULL_PROGRESS, Advance

console = Console(emoji=False, markup=False)  # labels hold "[...]" and ":x:"
err_console = Console(stderr=True, emoji=False, markup=False)


class RichProgress:
    """`irbench.core.progress.Progress` drawn with rich bars on stderr."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=err_console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, status="")

            def advance(n: int = 1, status: str | None = None) -> None:
                if status is None:
                    bar.advance(task_id, n)
                else:
                    bar.update(task_id, advance=n, status=status)

            yield advance


def make_progress(quiet: bool):
    return NULL_PROGRESS if quiet else RichProgress()


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("irbench")
    root.handlers[:] = [RichHandler(console=err_console, show_path=False, show_time=False,
                                    markup=False)]
    root.setLevel(level)
    root.propagate = False


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """`("k=v", ...)` -> {"k": "v"}; a pair without `=` is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        out[key.strip()] = value.strip()
    return out


def results_dir_option(what: str):
    """The `--results-dir` option of the commands that write or read run records."""
    return click.option("--results-dir", type=click.Path(path_type=Path), default=None,
                        help=f"{what} [env IRBENCH_RESULTS; default: ./results].")
