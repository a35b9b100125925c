"""`bench leaderboard`: the run records as a table (rich, markdown, CSV, JSON or LaTeX).

CSV and JSON carry numbers as numbers (metrics in %, empty or null when missing); the
detail table of one dataset (`-d`) adds each mAP's 95% bootstrap interval and marks the
mAPs not significantly different from the best of their column (`--no-ci` hides the
interval). `--sort` and `--columns` order and trim every format; in a terminal too narrow
for the table, long configs move to a numbered legend under it and the detail's timings,
memory and mP@k columns are hidden as far as needed (a note names them)."""

from __future__ import annotations

import re

import click
from rich.cells import cell_len
from rich.console import Group
from rich.table import Table as RichTable
from rich.text import Text

from irbench.cli.ui import console, err_console, results_dir_option
from irbench.errors import UnknownNameError
from irbench.results import leaderboard as lb
from irbench.results.store import default_results_dir, read_records


@click.command("leaderboard")
@click.option("-d", "--dataset", default=None,
              help="Detail for one dataset: every setting, mP@k, timings, memory, index size, "
                   "each mAP's 95% bootstrap interval and significance against the best.")
@click.option("--format", "fmt",
              type=click.Choice(["table", "markdown", "csv", "json", "latex"]),
              default="table", show_default=True,
              help="Output format (csv and json: numbers as numbers; latex: booktabs).")
@click.option("-m", "--method", "methods", multiple=True, metavar="NAME",
              help="Only these methods (repeat the option for several).")
@click.option("--no-reported", is_flag=True, help="Hide the paper's reported reference rows.")
@click.option("--no-ci", is_flag=True,
              help="Detail: hide the ± bootstrap interval of each mAP.")
@click.option("--sort", "sort_by", metavar="COLUMN", default=None,
              help="Sort the rows by this column, best first (numbers descending, times and "
                   "memory ascending, text A to Z).")
@click.option("--columns", "columns", metavar="A,B,...", default=None,
              help="Show only these columns (comma-separated), besides method and config.")
@results_dir_option("Where run records are read from")
def leaderboard_cmd(dataset, fmt, methods, no_reported, no_ci, sort_by, columns,
                    results_dir) -> None:
    """Compare runs: rows are method + config, columns datasets (and protocol settings),
    cells mAP in %. Rows marked `reported` are the paper's numbers, not measured here."""
    results_dir = results_dir or default_results_dir()
    records, problems = read_records(results_dir)
    for p in problems:
        err_console.print(Text.assemble(("warning: skipped ", "yellow"), p), soft_wrap=True)
    if methods:
        unknown = sorted(set(methods) - {r.method for r in records})
        if records and unknown:
            err_console.print(f"no run records of {', '.join(unknown)} in {results_dir}/; "
                              f"methods with records: "
                              f"{', '.join(sorted({r.method for r in records}))}",
                              highlight=False)
            raise SystemExit(1)
        records = [r for r in records if r.method in methods]
        no_reported = no_reported or not any(rep.method in methods for rep in lb.REPORTED)
    code = current_code(records)
    if not records:
        err_console.print(f"no run records in {results_dir}/ yet: try "
                          "`bench run --method bow --dataset demo`", highlight=False)
    if dataset and records and not any(lb.matches_dataset(r, dataset) for r in records):
        known = sorted({lb.dataset_label(r) for r in records})
        err_console.print(f"no run records for dataset {dataset!r} in {results_dir}/; "
                          f"datasets with records: {', '.join(known)}", highlight=False)
        raise SystemExit(1)
    table = (lb.detail(records, dataset, reported=not no_reported, current_code=code,
                       ci=not no_ci)
             if dataset else lb.overview(records, reported=not no_reported, current_code=code))
    table = arrange(table, sort_by, split_columns(columns) if columns else None)
    exports = {"markdown": lb.to_markdown, "csv": lb.to_csv, "json": lb.to_json,
               "latex": lb.to_latex}
    if fmt in exports:
        click.echo(exports[fmt](table), nl=False)
    else:
        console.print(render(table, console.width, hide=columns is None))


def current_code(records: list) -> dict[str, str]:
    """The code identity today of each registered method that has records (a record of
    another code identity is stale); methods no longer registered are left out."""
    from irbench.errors import IrbenchError
    from irbench.methods.base import code_identity
    from irbench.methods.registry import METHODS

    out = {}
    for name in sorted({r.method for r in records}):
        try:
            out[name] = code_identity(METHODS.get(name))
        except (IrbenchError, OSError, SyntaxError):
            continue
    return out


def split_columns(text: str) -> list[str]:
    """`--columns` as names: split at the commas outside brackets (`demo[a=1,b=2]` is one
    column)."""
    return [name.strip() for name in re.split(r",(?![^\[]*\])", text) if name.strip()]


def arrange(table: lb.Table, sort_by: str | None, columns: list[str] | None) -> lb.Table:
    """`table` sorted by `sort_by`, then cut to `columns`; an unknown column is a usage
    error that lists the table's columns."""
    try:
        table = lb.sort_rows(table, sort_by) if sort_by else table
    except UnknownNameError as exc:
        raise click.BadParameter(str(exc), param_hint="'--sort'") from None
    try:
        return lb.select_columns(table, columns) if columns else table
    except UnknownNameError as exc:
        raise click.BadParameter(str(exc), param_hint="'--columns'") from None


_BORDER = 3
"""Width a column adds besides its content: one space each side and one rule."""
_HEADER_FOLD = 8
"""A number column is never narrower than this (or its header's longest word)."""


def _extents(table: lb.Table) -> list[tuple[int, int]]:
    """(natural, minimum) content width of each column: the longest line, and the
    narrowest that wraps no number and cuts no word of a label column (a number
    column's header words longer than `_HEADER_FOLD` may fold)."""
    labels = lb.label_count(table)
    out = []
    for j, col in enumerate(table.columns):
        cells = [row[j] for row in table.rows]
        natural = max(map(cell_len, [col, *cells]))
        words = max(cell_len(w) for w in col.split() or [""])
        if j < labels:
            minimum = max([words, *(cell_len(w) for t in cells for w in t.split())])
        else:
            minimum = max([min(words, _HEADER_FOLD), *map(cell_len, cells)])
        out.append((natural, minimum))
    return out


def _fits(table: lb.Table, width: int, *, natural: bool) -> bool:
    extents = _extents(table)
    return sum(e[0 if natural else 1] for e in extents) + _BORDER * len(extents) + 1 <= width


def _widths(table: lb.Table, width: int) -> list[int] | None:
    """Column widths that fit `width` without cutting a word or wrapping a number: the
    widest label columns narrowed first (their words wrap), then the widest headers of
    number columns (they fold); None when the table fits as it is, or cannot fit."""
    extents = _extents(table)
    labels = lb.label_count(table)
    room = width - _BORDER * len(extents) - 1
    widths = [natural for natural, _ in extents]
    if sum(widths) <= room or sum(minimum for _, minimum in extents) > room:
        return None
    while sum(widths) > room:
        j = max((j for j, (_, minimum) in enumerate(extents) if widths[j] > minimum),
                key=lambda j: (j < labels, widths[j]))
        widths[j] -= 1
    return widths


def _hideable(table: lb.Table) -> list[str]:
    """Columns a narrow terminal hides, first to last: stage times, memory, index size,
    queries, N-S, then mP@k (the deepest first). mAP and the labels are always shown."""
    return [*(c for c in table.columns if c.endswith(" s")),
            *(c for c in ("peak MiB", "index MiB", "queries", "N-S") if c in table.columns),
            *(c for c in reversed(table.columns) if "mP@" in c)]


def _legend(lines: list[str]) -> RichTable:
    """The config legend, `[n]` beside its config (wrapped lines indented)."""
    grid = RichTable.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for line in lines:
        number, _, config = line.partition(" ")
        grid.add_row(Text(number), Text(config))
    return grid


def render(table: lb.Table, width: int, *, hide: bool = True) -> Group:
    """The table for a terminal `width` columns wide. When it does not fit, configs
    longer than `lb.CONFIG_INLINE` move to a numbered legend under it and, when `hide`,
    the columns of `_hideable` are hidden until it fits, with a note naming them."""
    legend: list[str] = []
    hidden: list[str] = []
    if not _fits(table, width, natural=True):
        table, legend = lb.config_legend(table)
        for col in _hideable(table) if hide else []:
            if _fits(table, width, natural=False):
                break
            table = lb.select_columns(table, [c for c in table.columns if c != col])
            hidden.append(col)
    parts = [to_rich(table, _widths(table, width)), *([_legend(legend)] if legend else [])]
    if hidden:
        parts.append(Text(f"hidden at this width: {', '.join(hidden)} (--columns or a wider "
                          f"terminal shows them)", style="dim"))
    return Group(*parts)


def to_rich(table: lb.Table, widths: list[int] | None = None) -> RichTable:
    """The table for the terminal: the best value of each ranked column in bold,
    reported rows dimmed; `widths`: each column's content width (rich's own when None)."""
    out = RichTable(title=table.title, caption="\n".join(table.notes) or None)
    labels = lb.label_count(table)  # method, config, [run], kind, [data]: text
    for i, col in enumerate(table.columns):
        out.add_column(col, justify="left" if i < labels else "right", overflow="fold",
                       width=None if widths is None else widths[i])
    best = lb.best_cells(table)
    for i, row in enumerate(table.rows):
        cells = [Text(cell, style="bold" if (i, col) in best else "")
                 for col, cell in zip(table.columns, row, strict=True)]
        out.add_row(*cells, style="italic dim" if i in table.reported_rows else None)
    return out
