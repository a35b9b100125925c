"""`bench leaderboard`: the run records as a table (rich, markdown, CSV, JSON or LaTeX).

CSV and JSON carry numbers as numbers (metrics in %, empty or null when missing); the
detail table of one dataset (`-d`) adds each mAP's 95% bootstrap interval and marks the
mAPs not significantly different from the best of their column (`--no-ci` hides the
interval)."""

from __future__ import annotations

import click
from rich.table import Table as RichTable
from rich.text import Text

from irbench.cli.ui import console, err_console, results_dir_option
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
@results_dir_option("Where run records are read from")
def leaderboard_cmd(dataset, fmt, methods, no_reported, no_ci, results_dir) -> None:
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
    exports = {"markdown": lb.to_markdown, "csv": lb.to_csv, "json": lb.to_json,
               "latex": lb.to_latex}
    if fmt in exports:
        click.echo(exports[fmt](table), nl=False)
    else:
        console.print(to_rich(table))


def current_code(records: list) -> dict[str, str]:
    """The code identity today of each registered method that has records (a record of
    another code identity is stale); methods no longer registered are left out."""
    from irbench.errors import IrbenchError
    from irbench.harness.registry import METHODS
    from irbench.methods.base import code_identity

    out = {}
    for name in sorted({r.method for r in records}):
        try:
            out[name] = code_identity(METHODS.get(name))
        except (IrbenchError, OSError, SyntaxError):
            continue
    return out


def to_rich(table: lb.Table) -> RichTable:
    """The table for the terminal: the best value of each ranked column in bold,
    reported rows dimmed."""
    out = RichTable(title=table.title, caption="\n".join(table.notes) or None)
    labels = table.columns.index("kind") + 1  # method, config, [run], kind: text
    for i, col in enumerate(table.columns):
        out.add_column(col, justify="left" if i < labels else "right")
    best = lb.best_cells(table)
    for i, row in enumerate(table.rows):
        cells = [Text(cell, style="bold" if (i, col) in best else "")
                 for col, cell in zip(table.columns, row, strict=True)]
        out.add_row(*cells, style="italic dim" if i in table.reported_rows else None)
    return out
