"""`bench report`: sweep figures (the paper's Fig. 4 by default) and a markdown report."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from irbench.cli.ui import console, err_console, results_dir_option
from irbench.harness.runner import check_writable
from irbench.results.claims import HELD, NOT_HELD, check_claims
from irbench.results.leaderboard import matches_dataset
from irbench.results.report import write_report
from irbench.results.store import default_results_dir, read_records


def report_name(method: str, dataset: str | None) -> str:
    """The default report folder's name: the method, and the dataset when one is asked
    for (characters other than letters, digits, `.`, `_`, `-` become `_`)."""
    name = method + (f"__{dataset}" if dataset else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


@click.command("report")
@click.option("-d", "--dataset", default=None, help="Only this dataset (default: every one).")
@click.option("-m", "--method", default="drcnn", show_default=True,
              help="Method whose sweep is drawn.")
@click.option("--x", "x_field", default="regions", show_default=True, metavar="FIELD",
              help="Config field on the x axis.")
@click.option("--series", default="fusion", show_default=True, metavar="FIELD",
              help="Config field with one line per value (`none`: one line).")
@click.option("--baseline", "baselines", multiple=True, metavar="METHOD",
              help="Method drawn as a horizontal line: its run on the same data and "
                   "backbone (repeat for several; `none` for no line) [default: cnn and "
                   "fcnn under drcnn, none otherwise].")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: <results dir>/report/<method>[__<dataset>], one "
                   "per method and dataset]. A folder holding another report is refused.")
@results_dir_option("Where run records are read from")
def report_cmd(dataset, method, x_field, series, baselines, out, results_dir) -> None:
    """Draw mAP against one config field, one line per value of another, with 95%
    bootstrap intervals and baselines, as PNG, SVG and PDF, from the run records of a
    `--sweep` run. The default is the paper's Fig. 4 (DR-CNN: K regions x fusion, CNN
    and F-CNN as baselines). The report also checks the paper's claims (CNN < F-CNN <
    DR-CNN, COP and HE+WGC above CNN on INSTRE, concatenation above mean and max, every
    fusion at its best at K = 2) on the records: held, not held, or not enough runs."""
    results_dir = Path(results_dir or default_results_dir())
    series_field = None if series == "none" else series
    chosen = None if not baselines else tuple(b for b in baselines if b != "none")
    out = out or results_dir / "report" / report_name(method, dataset)
    check_writable(out, "report folder", "-o/--out")
    records, problems = read_records(results_dir)
    for p in problems:
        err_console.print(Text.assemble(("warning: skipped ", "yellow"), p), soft_wrap=True)
    path, figures = write_report(records, out, dataset, method, x_field, series_field, chosen)
    for fig in figures:
        console.print(f"{fig.dataset}: {fig.path} (+ .svg, .pdf)")
    checks = check_claims([r for r in records if dataset is None
                           or matches_dataset(r, dataset)])
    console.print(claims_table(checks))
    console.print(f"report: {path}" + ("" if figures else " (no sweep found)"))


def claims_table(checks) -> Table:
    """The claims as a rich table, verdicts coloured."""
    table = Table(title="The paper's claims on these records")
    for col in ("claim", "where", "verdict", "numbers (mAP %)"):
        table.add_column(col)
    styles = {HELD: "green", NOT_HELD: "red"}
    for c in checks:
        table.add_row(c.claim, c.scope, Text(c.status, style=styles.get(c.status, "yellow")),
                      c.evidence)
    return table
