"""`bench run`: one method on one dataset (or a sweep), then the metrics as a table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from rich.table import Table

from irbench.cli.ui import (
    console,
    make_progress,
    parse_pairs,
    results_dir_option,
    setup_logging,
)
from irbench.core.cache import default_cache_dir
from irbench.core.executor import EXECUTORS
from irbench.core.parallel import default_workers
from irbench.core.search import BACKENDS
from irbench.errors import ConfigError
from irbench.harness.runner import RunOptions, run, sweep
from irbench.results.leaderboard import config_label, percent, run_label
from irbench.results.stats import across_seeds
from irbench.results.store import RunRecord, default_results_dir


def common_paths(fn):
    """--cache-dir, --results-dir, --data-root (shared by the commands that need them)."""
    fn = click.option("--data-root", type=click.Path(path_type=Path), default=None,
                      help="Root of downloaded datasets [env IRBENCH_DATA; default: "
                           "<cache-dir>/data].")(fn)
    fn = results_dir_option("Where run records are written")(fn)
    fn = click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                      help="Stage artifacts and generated datasets [env IRBENCH_CACHE; "
                           "default: ~/.cache/irbench].")(fn)
    return fn


def executor_options(fn):
    """--executor and --ray-address (shared by `bench run` and `bench paper`)."""
    fn = click.option("--ray-address", default=None, metavar="ADDRESS",
                      help="With --executor ray: the Ray cluster to run on, 'auto' (the "
                           "cluster this machine joined with `ray start`) or HOST:PORT of "
                           "its head [env RAY_ADDRESS; default: start a Ray on this "
                           "machine].")(fn)
    fn = click.option("--executor", type=click.Choice(EXECUTORS), default="local",
                      show_default=True,
                      help="Where per-image extraction runs: here, or as Ray tasks, one "
                           "per shard (pip install 'irbench-harness[ray]'; the cache "
                           "directory must be shared by every node). Same results.")(fn)
    return fn


@click.command("run")
@click.option("-m", "--method", required=True, help="Registered method name (see `bench methods`).")
@click.option("-d", "--dataset", default="demo", show_default=True,
              help="Registered dataset name, or folder:PATH, or manifest:FILE.json "
                   "(see `bench datasets`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a method config field (repeatable).")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="Run every combination of these values (repeatable); shared stages are "
                   "computed once.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Set a dataset option (repeatable; see `bench datasets`).")
@click.option("--topk", type=int, default=0, show_default=True,
              help="Ranking depth evaluated; 0 ranks the whole database (official protocols).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Run once per seed (each run its own record), then print each mAP's mean "
                   "and standard deviation across the seeds.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for extraction [env IRBENCH_WORKERS; default: CPUs "
                   "available, at most 8].")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, ...).")
@executor_options
@click.option("--search", type=click.Choice(BACKENDS), default="exact", show_default=True,
              help="Dense search backend for global descriptors: exact, faiss (exact), or "
                   "approximate ivfpq / hnsw (their recall@100 against exact search and "
                   "index bytes go into the record).")
@click.option("--search-option", "search_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the approximate search backend (repeatable; see README, "
                   "`bench run`).")
@click.option("--overwrite", is_flag=True, help="Recompute every stage, ignoring cached ones.")
@click.option("--verify-images", is_flag=True,
              help="Hash every image file again instead of trusting the signatures memoized "
                   "for files whose size, times and inode are unchanged.")
@click.option("--no-cache", is_flag=True, help="Keep nothing on disk (compute in memory).")
@click.option("--no-record", is_flag=True, help="Do not write a run record.")
@click.option("--keep-ranking", type=click.IntRange(min=0), default=100, show_default=True,
              metavar="N", help="Keep the top N of each query's ranking (indices, scores) "
                                "in the record; 0 keeps none.")
@click.option("--query-block", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="Rank and evaluate N queries at a time; 0 picks as many as "
                                "fit in 256 MiB of rankings at the run's depth.")
@click.option("--drop-descriptors", is_flag=True,
              help="When the run is done, delete its cached SIFT descriptors (128 of the 135 "
                   "bytes a feature takes), keeping the geometry and everything computed "
                   "from them; a later run that needs them extracts SIFT again.")
@common_paths
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or info messages.")
@click.option("-v", "--verbose", is_flag=True, help="Debug messages.")
def run_cmd(method, dataset, sets, sweeps, dataset_options, topk, seed, seeds, workers, device,
            executor, ray_address, search, search_options, overwrite, verify_images, no_cache,
            no_record, keep_ranking, query_block, drop_descriptors, cache_dir, results_dir,
            data_root, quiet, verbose):
    """Run METHOD on DATASET: fit -> index -> query -> evaluate, and write a run record."""
    setup_logging(quiet, verbose)
    seed_list = parse_seeds(seeds, seed)
    options = RunOptions(
        cache_dir=cache_dir or default_cache_dir(),
        results_dir=None if no_record else (results_dir or default_results_dir()),
        data_root=data_root,
        topk=topk, seed=seed, workers=workers or default_workers(), device=device,
        search=search, search_options=parse_pairs(search_options, "--search-option"),
        overwrite=overwrite, use_cache=not no_cache,
        progress=make_progress(quiet),
        dataset_options=parse_pairs(dataset_options, "--dataset-option"),
        verify_images=verify_images, keep_ranking=keep_ranking, query_block=query_block,
        executor=executor, ray_address=ray_address, drop_descriptors=drop_descriptors,
    )
    overrides = parse_pairs(sets, "--set")
    sweep_values = {k: [v.strip() for v in vals.split(",") if v.strip() != ""]
                    for k, vals in parse_pairs(sweeps, "--sweep").items()}
    records = []
    for s in seed_list:
        at_seed = dataclasses.replace(options, seed=s)
        if sweep_values:
            records += sweep(method, dataset, sweep_values, at_seed, overrides)
        else:
            records.append(run(method, dataset, at_seed, overrides))
    console.print(records_table(records))
    for line in search_lines(records):
        console.print(line, highlight=False)
    if len(seed_list) > 1:
        console.print(seeds_table(records))
    if options.results_dir is not None:
        console.print(f"run records in {options.results_dir}/", highlight=False)


def search_lines(records: list[RunRecord]) -> list[str]:
    """One line per run with an approximate search: its recall and index size."""
    out = []
    for r in records:
        rep = r.search_report
        if not rep:
            continue
        recall = "—" if rep.get("recall") is None else f"{rep['recall']:.3f}"
        opts = ", ".join(f"{k}={v}" for k, v in rep.get("options", {}).items())
        out.append(f"{r.method} {config_label(r)}: search {rep.get('backend')} ({opts}) "
                   f"on {rep.get('device')}: recall@{rep.get('recall_at')} {recall} against "
                   f"exact search on {rep.get('recall_queries')} queries; index "
                   f"{rep.get('index_bytes', 0) / 2**20:.2f} MiB")
    return out


def parse_seeds(seeds: str | None, seed: int) -> list[int]:
    """The seeds of `--seeds` (distinct integers), or `[seed]` without it."""
    if seeds is None:
        return [seed]
    if seed != 0:
        raise ConfigError("give either --seed or --seeds, not both")
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes integers separated by commas, got {seeds!r}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"--seeds needs distinct seeds, got {seeds!r}")
    return values


def seeds_table(records: list[RunRecord]) -> Table:
    """mAP mean ± standard deviation across the seeds, per config and setting."""
    groups: dict[tuple[str, str, str], list[float | None]] = {}
    for r in records:
        for setting, m in r.metrics["settings"].items():
            groups.setdefault((r.method, config_label(r), setting), []).append(m["map"])
    table = Table(title="mAP in % across seeds: mean ± standard deviation (n - 1)")
    for col in ("method", "config", "setting", "mAP", "seeds"):
        table.add_column(col, justify="right" if col in ("mAP", "seeds") else "left")
    for (method, config, setting), values in groups.items():
        spread = across_seeds([100 * v for v in values if v is not None])
        table.add_row(method, config, setting, f"{spread.mean:.2f} ± {spread.std:.2f}",
                      str(spread.runs))
    return table


def records_table(records: list[RunRecord]) -> Table:
    """The metrics of some run records, one row per run and setting."""
    first = records[0]
    table = Table(title=f"{first.dataset}: metrics in % ({first.topk} of "
                        f"{first.database_size} ranked per query)")
    table.add_column("method", no_wrap=True)
    table.add_column("config", min_width=7, overflow="fold")
    runs = any(run_label(r) for r in records)
    if runs:
        table.add_column("run")
    named = any(s for r in records for s in r.metrics["settings"])
    if named:
        table.add_column("setting")
    table.add_column("mAP", justify="right", min_width=5, no_wrap=True)
    ks = list(next(iter(first.metrics["settings"].values()), {}).get("precision_at", {}))
    for k in ks:
        table.add_column(f"mP@{k}", justify="right", min_width=5, no_wrap=True)
    has_ns = "ns_score" in first.metrics
    if has_ns:
        table.add_column("N-S", justify="right")
    table.add_column("queries", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("reused")
    for r in records:
        wall = sum(t.wall_s for t in r.timings.values() if not t.cached)
        cached = [s for s, t in r.timings.items() if t.cached]
        hits = dict.fromkeys(e["kind"] for e in (r.cache_events or []) if e.get("hit"))
        reused = "all" if len(cached) >= 3 else (", ".join([*cached, *hits]) or "none")
        for setting, m in r.metrics["settings"].items():
            row = [r.method, config_label(r), *([run_label(r)] if runs else []),
                   *([setting] if named else []), percent(m["map"])]
            row += [percent(m["precision_at"].get(k)) for k in ks]
            if has_ns:
                ns = r.metrics.get("ns_score")
                row.append("—" if ns is None else f"{ns:.3f}")
            evaluated = m["queries_evaluated"]
            without = m["queries_without_positives"]
            row.append(f"{evaluated}" + (f" (+{without} w/o positives)" if without else ""))
            row += [f"{wall:.1f}", reused]
            table.add_row(*row)
    return table

