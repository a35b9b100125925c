"""`bench show`: a run's queries and their top results as a static HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from irbench.cli.ui import console, results_dir_option
from irbench.core.cache import default_cache_dir
from irbench.datasets.registry import load_dataset
from irbench.results.compare import find_record
from irbench.results.show import dataset_spec, write_show
from irbench.results.store import default_results_dir


@click.command("show")
@click.argument("run", metavar="RUN")
@click.option("--vs", "run_b", default=None, metavar="RUN_B",
              help="Also show each query's AP in RUN_B and the gain, sortable by it.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: <results dir>/show/<run id>].")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Results shown per query (at most the depth the record kept).")
@click.option("--setting", default=None,
              help="Protocol setting that marks results (default: medium, else the first).")
@click.option("--dataset", "dataset_spec_", default=None, metavar="SPEC",
              help="The run's data, when the record cannot say where it is (manifest:...).")
@results_dir_option("Where run ids are looked up")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where generated datasets (demo) live [env IRBENCH_CACHE; default: "
                   "~/.cache/irbench].")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Root of downloaded datasets [env IRBENCH_DATA; default: "
                   "<cache-dir>/data].")
def show_cmd(run, run_b, out, top, setting, dataset_spec_, results_dir, cache_dir,
             data_root) -> None:
    """Write a static HTML page of RUN: per query its crop, AP and its first results,
    each marked positive, junk or wrong; sortable by AP (and, with --vs, by the gain
    over RUN_B). RUN is a record file or a run id; the record must have kept its ranking
    (`bench run --keep-ranking N`, default 100) and the data must be unchanged."""
    results_dir = Path(results_dir or default_results_dir())
    record = find_record(run, results_dir)
    other = None if run_b is None else find_record(run_b, results_dir)
    spec = dataset_spec_ or dataset_spec(record)
    ds = load_dataset(spec, data_root=data_root, cache_dir=cache_dir or default_cache_dir(),
                      options=record.dataset_options)
    out = out or results_dir / "show" / (record.run_id + ("" if other is None
                                                        else f"__vs__{other.run_id}"))
    shown = write_show(record, ds, out, vs=other, setting=setting, top=top)
    console.print(f"{shown.page}: {shown.queries} queries, {shown.thumbnails} thumbnails "
                  f"({shown.written} written now)", highlight=False)
