"""`bench compare`: two runs of one dataset, query by query (is B's mAP really higher?)."""

from __future__ import annotations

import json

import click
from rich.table import Table as RichTable

from irbench.cli.ui import console, results_dir_option
from irbench.results.compare import Comparison, QueryChange, compare_records, find_record
from irbench.results.leaderboard import config_label, dataset_label
from irbench.results.store import default_results_dir


@click.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--setting", default=None,
              help="Compare this protocol setting only (default: every setting of both).")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many queries that gained most and lost most to list.")
@click.option("--resamples", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Bootstrap resamples and random sign flips.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the resampling (the same seed gives the same numbers).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format (json: numbers as numbers).")
@results_dir_option("Where run ids are looked up")
def compare_cmd(run_a, run_b, setting, top, resamples, seed, fmt, results_dir) -> None:
    """Compare run B with run A on the same queries: for each protocol setting, both mAPs,
    the difference B - A in points with its 95% paired bootstrap interval, the paired
    randomisation and Wilcoxon p-values, and the queries that gained and lost most.

    RUN_A and RUN_B are record files (.json) or run ids, looked up in the results
    folder. Runs of different data cannot be compared (exit code 2)."""
    results_dir = results_dir or default_results_dir()
    a, b = find_record(run_a, results_dir), find_record(run_b, results_dir)
    comparison = compare_records(a, b, setting=setting, top=top, resamples=resamples,
                                 seed=seed)
    if fmt == "json":
        click.echo(json.dumps(comparison.to_dict(), indent=1, ensure_ascii=False))
        return
    show(comparison)


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _ap(value: float) -> str:
    return f"{100.0 * value:.2f}"


def show(comparison: Comparison) -> None:
    """Print the comparison: the two runs, one row per setting, the largest changes."""
    a, b = comparison.a, comparison.b
    for letter, r in (("A", a), ("B", b)):
        console.print(f"{letter}: {r.run_id}  ({r.method}, {config_label(r)})",
                      highlight=False, soft_wrap=True)
    first = comparison.settings[0].test
    console.print(f"dataset {dataset_label(a)} (fingerprint {a.dataset_fingerprint[:12]}); "
                  f"{first.resamples:,} resamples", highlight=False)
    table = RichTable(title="B - A per protocol setting (mAP in %, differences in points)",
                      caption="95% CI: paired percentile bootstrap over queries; p rand.: "
                              "two-sided paired randomisation (sign-flip) test; p Wilcoxon: "
                              "signed-rank test")
    named = any(s.setting for s in comparison.settings)  # else one unnamed setting
    for col in (*(["setting"] if named else []), "queries", "mAP A", "mAP B", "B - A",
                "95% CI", "p rand.", "p Wilcoxon"):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
    for s in comparison.settings:
        t = s.test
        table.add_row(*([s.setting or "—"] if named else []), str(t.queries),
                      "—" if s.map_a is None else _ap(s.map_a),
                      "—" if s.map_b is None else _ap(s.map_b),
                      f"{100 * t.mean_difference:+.2f}",
                      f"[{100 * t.ci_low:+.2f}, {100 * t.ci_high:+.2f}]",
                      _p(t.p_randomisation), _p(t.p_wilcoxon))
    console.print(table)
    for s in comparison.settings:
        where = f", setting {s.setting}" if s.setting else ""
        for title, changes in ((f"gained most{where}: B over A", s.gains),
                               (f"lost most{where}: B under A", s.losses)):
            if changes:
                console.print(_changes(title, changes))
            else:
                console.print(f"{title}: no query", highlight=False)


def _changes(title: str, changes: list[QueryChange]) -> RichTable:
    with_ids = any(c.query_id is not None for c in changes)
    table = RichTable(title=f"{title} (AP in %)")
    for col in ("query", *(["query id"] if with_ids else []), "AP A", "AP B", "B - A"):
        table.add_column(col, justify="left" if col == "query id" else "right",
                         no_wrap=col != "query id")
    for c in changes:
        table.add_row(str(c.index), *([c.query_id or ""] if with_ids else []), _ap(c.ap_a),
                      _ap(c.ap_b), f"{100 * c.difference:+.2f}")
    return table
