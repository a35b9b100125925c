"""`bench leaderboard`: the run records as a table (rich, markdown, CSV or JSON)."""

from __future__ import annotations

import click
from rich.table import Table as RichTable
from rich.text import Text

from irbench.cli.ui import console, err_console, results_dir_option
from irbench.results import leaderboard as lb
from irbench.results.store import default_results_dir, read_records


@click.command("leaderboard")
@click.option("-d", "--dataset", default=None,
              help="Detail for one dataset: every setting, mP@k, timings, memory, index size.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]),
              default="table", show_default=True, help="Output format.")
@click.option("--no-reported", is_flag=True, help="Hide the paper's reported reference rows.")
@results_dir_option("Where run records are read from")
def leaderboard_cmd(dataset, fmt, no_reported, results_dir) -> None:
    """Compare runs: rows are method + config, columns datasets (and protocol settings),
    cells mAP in %. Rows marked `reported` are the paper's numbers, not measured here."""
    results_dir = results_dir or default_results_dir()
    records, problems = read_records(results_dir)
    for p in problems:
        err_console.print(Text.assemble(("warning: skipped ", "yellow"), p), soft_wrap=True)
    code = current_code(records)
    if not records:
        err_console.print(f"no run records in {results_dir}/ yet: try "
                          "`bench run --method bow --dataset demo`", highlight=False)
    if dataset and records and not any(lb.matches_dataset(r, dataset) for r in records):
        known = sorted({lb.dataset_label(r) for r in records})
        err_console.print(f"no run records for dataset {dataset!r} in {results_dir}/; "
                          f"datasets with records: {', '.join(known)}", highlight=False)
        raise SystemExit(1)
    table = (lb.detail(records, dataset, reported=not no_reported, current_code=code)
             if dataset else lb.overview(records, reported=not no_reported, current_code=code))
    if fmt == "markdown":
        click.echo(lb.to_markdown(table), nl=False)
    elif fmt == "csv":
        click.echo(lb.to_csv(table), nl=False)
    elif fmt == "json":
        click.echo(lb.to_json(table), nl=False)
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
    out = RichTable(title=table.title, caption="\n".join(table.notes) or None)
    labels = table.columns.index("kind") + 1  # method, config, [run], kind: text
    for i, col in enumerate(table.columns):
        out.add_column(col, justify="left" if i < labels else "right")
    for i, row in enumerate(table.rows):
        out.add_row(*row, style="italic dim" if i in table.reported_rows else None)
    return out
