"""`bench paper`: run every experiment of the seed paper's figures and write the
reproduction report."""

from __future__ import annotations

import platform
import re
import shlex
import sys
from pathlib import Path

import click
from rich.text import Text

from irbench.cli.report import claims_table
from irbench.cli.run import common_paths, executor_options
from irbench.cli.ui import console, err_console, make_progress, parse_pairs, setup_logging
from irbench.core.cache import default_cache_dir
from irbench.core.parallel import default_workers
from irbench.harness.paper import PAPER_DATASETS, run_paper
from irbench.harness.runner import RunOptions, check_writable
from irbench.results.claims import check_claims
from irbench.results.reproduction import ExperimentResult, write_reproduction
from irbench.results.store import default_results_dir


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@click.command("paper")
@click.option("-d", "--dataset", "datasets", multiple=True, metavar="NAME",
              help="Dataset to run on (repeatable) [default: the paper's: "
                   f"{', '.join(PAPER_DATASETS)}]. Any other dataset gets every experiment.")
@click.option("--set", "sets", multiple=True, metavar="[METHOD.]KEY=VALUE",
              help="Override a config field of every method that has it, or of one method "
                   "(METHOD.KEY=VALUE); repeatable.")
@click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
              help="Set a dataset option (repeatable; see `bench datasets`).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Report folder [default: <results dir>/report/paper__<datasets>].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for extraction [env IRBENCH_WORKERS; default: CPUs "
                   "available, at most 8].")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, ...).")
@executor_options
@click.option("--overwrite", is_flag=True,
              help="Recompute every stage instead of reusing cached artifacts (so that "
                   "every latency is measured).")
@common_paths
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or info messages.")
@click.option("-v", "--verbose", is_flag=True, help="Debug messages.")
def paper_cmd(datasets, sets, dataset_options, out, seed, workers, device, executor, ray_address,
              overwrite, cache_dir,
              results_dir, data_root, quiet, verbose) -> None:
    """Run every experiment of the paper's figures (SIFT baselines, CNN with cropped and
    full query, F-CNN, DR-CNN with K = 1..5 x three fusions and with class scores) on
    the datasets that are installed, skipping an absent one with the command that fetches
    it, and write a reproduction report: measured against reported with 95% intervals,
    Figs. 3-6 and an efficiency plot (PNG, SVG, PDF), and the paper's claims checked.
    Exit code 1 when an experiment failed (the report says which and why)."""
    setup_logging(quiet, verbose)
    datasets = list(datasets or PAPER_DATASETS)
    results_dir = Path(results_dir or default_results_dir())
    out = out or results_dir / "report" / re.sub(r"[^A-Za-z0-9_.-]+", "_",
                                                 "paper__" + "+".join(datasets))
    check_writable(out, "report folder", "-o/--out")
    options = RunOptions(cache_dir=cache_dir or default_cache_dir(), results_dir=results_dir,
                         data_root=data_root, seed=seed,
                         workers=workers or default_workers(), device=device,
                         overwrite=overwrite, executor=executor, ray_address=ray_address,
                         progress=make_progress(quiet),
                         dataset_options=parse_pairs(dataset_options, "--dataset-option"))

    def on_start(i, n, dataset, exp) -> None:
        console.print(f"[{i}/{n}] {dataset}: {exp.name}", highlight=False)

    done = run_paper(datasets, options, parse_pairs(sets, "--set"), on_start)
    for name, reason in done.skipped.items():
        err_console.print(Text.assemble((f"skipped {name}: ", "yellow"), reason),
                          soft_wrap=True)
    results = [ExperimentResult(o.experiment.name, o.experiment.method, o.experiment.figures,
                                o.dataset, o.records, o.error) for o in done.outcomes]
    command = shlex.join(["bench", "paper", *sys.argv[2:]]) if len(sys.argv) > 1 else "bench paper"
    path = write_reproduction(results, out, skipped=done.skipped, labels=done.labels,
                              command=command, machine=f"{cpu_model()}, "
                              f"{options.workers} worker(s), device {device}"
                              + ("" if executor == "local" else f", executor {executor}"))
    if done.records:
        console.print(claims_table(check_claims(done.records)))
    failed = [r for r in results if r.error is not None]
    for r in failed:
        err_console.print(Text.assemble((f"failed: {r.dataset}: {r.name}: ", "red"), r.error),
                          soft_wrap=True)
    console.print(f"report: {path}", highlight=False)
    if failed:
        raise SystemExit(1)
