"""`bench paper`: every experiment behind the seed paper's figures, on the datasets that
are installed.

Mei et al. 2018 evaluate on Oxford105k (Sec. 4.3: Fig. 3, the methods; Fig. 4, DR-CNN's
K regions x fusion) and on INSTRE-S (Sec. 4.4: Fig. 5, the methods with the SIFT
baselines; Fig. 6, mAP per class of HE+WGC and DR-CNN; Sec. 5, region features combined
with the detector's class scores). `EXPERIMENTS` lists every run this takes, each with
the dataset role it belongs to (`oxford`, `instre`); `PAPER_DATASETS` maps the paper's
datasets to their role. Any other dataset (`demo`, a folder) gets every experiment of
both roles.

Choices the paper leaves open, made here:
- "CNN" and "CNN + full cropped" (Sec. 4.3's baselines): the global CNN with the query
  cropped to its box (`query_crop=box`) and with the whole query image
  (`query_crop=full`); both are run on both datasets.
- The class-score variant (Sec. 5, 32.2%; no dataset named, INSTRE-S presumed): DR-CNN
  with `class_scores=true`, concatenation, K = 1..5.
- Every method otherwise runs at its defaults (the paper's settings where it gives
  them); `--set` changes them for every experiment whose method has the field, or for
  one method with `--set METHOD.FIELD=VALUE` (how the README runs it on `demo` with a
  backbone whose weights are available offline and a short detector schedule).

An absent dataset is skipped with the exact command that fetches it; an experiment that
fails with an `IrbenchError` is reported and the others still run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from irbench.datasets.registry import load_dataset
from irbench.errors import ConfigError, DatasetError, IrbenchError
from irbench.harness.runner import RunOptions, run, sweep
from irbench.methods.registry import METHODS
from irbench.results.store import RunRecord

OXFORD, INSTRE = "oxford", "instre"

PAPER_DATASETS: dict[str, str] = {"oxford105k": OXFORD, "instre-s": INSTRE}
"""The paper's datasets (Sec. 4.1) and the role of each."""

K_SWEEP = ("1", "2", "3", "4", "5")
FUSIONS = ("concat", "mean", "max")


@dataclass(frozen=True)
class Experiment:
    """One `bench run` (or sweep) behind one or more of the paper's figures."""

    name: str
    method: str
    roles: tuple[str, ...]
    figures: tuple[str, ...]
    overrides: Mapping[str, str] = field(default_factory=dict)
    sweeps: Mapping[str, Sequence[str]] = field(default_factory=dict)


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("spatial-coding", "spatial-coding", (INSTRE,), ("fig5",)),
    Experiment("geometric-coding", "geometric-coding", (INSTRE,), ("fig5",)),
    Experiment("cop", "cop", (INSTRE,), ("fig5",)),
    Experiment("he-wgc", "he-wgc", (INSTRE,), ("fig5", "fig6")),
    Experiment("vlad-intra", "vlad-intra", (OXFORD,), ("fig3",)),
    Experiment("cnn (cropped query)", "cnn", (OXFORD, INSTRE), ("fig3", "fig5"),
               {"query_crop": "box"}),
    Experiment("cnn (full query)", "cnn", (OXFORD, INSTRE), ("fig3", "fig5"),
               {"query_crop": "full"}),
    Experiment("fcnn", "fcnn", (OXFORD, INSTRE), ("fig3", "fig5")),
    Experiment("drcnn", "drcnn", (OXFORD, INSTRE), ("fig3", "fig4", "fig5", "fig6"),
               sweeps={"regions": K_SWEEP, "fusion": FUSIONS}),
    Experiment("drcnn + class scores", "drcnn", (INSTRE,), ("sec5",),
               {"class_scores": "true", "fusion": "concat"}, {"regions": K_SWEEP}),
)


def experiments_for(dataset: str) -> list[Experiment]:
    """The experiments of `dataset`'s role; all of them for a dataset the paper does not
    use."""
    role = PAPER_DATASETS.get(dataset)
    return [e for e in EXPERIMENTS if role is None or role in e.roles]


def split_sets(sets: Mapping[str, str], experiments: Sequence[Experiment]
               ) -> dict[str, dict[str, str]]:
    """Method -> overrides from `--set`: `FIELD=V` goes to every method of
    `experiments` that has the field, `METHOD.FIELD=V` to that method only. A field no
    method has, or an unknown method, is a ConfigError."""
    methods = list(dict.fromkeys(e.method for e in experiments))
    fields = {m: {f.name for f in dataclasses.fields(METHODS.get(m).Config)} for m in methods}
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for key, value in sets.items():
        if "." in key:
            method, name = key.split(".", 1)
            if method not in fields:
                raise ConfigError(f"--set {key}: {method!r} is not a method of these "
                                  f"experiments ({', '.join(methods)})")
            if name not in fields[method]:
                raise ConfigError(f"--set {key}: method {method!r} has no field {name!r}")
            out[method][name] = value
            continue
        owners = [m for m in methods if key in fields[m]]
        if not owners:
            raise ConfigError(f"--set {key}: no method of these experiments has that field "
                              f"({', '.join(methods)})")
        for m in owners:
            out[m][key] = value
    return out


@dataclass
class Outcome:
    """What one experiment gave on one dataset: its records, or why it has none."""

    experiment: Experiment
    dataset: str
    records: list[RunRecord] = field(default_factory=list)
    error: str | None = None


@dataclass
class PaperRun:
    """Every outcome, and the datasets skipped with the reason (their fetch command)."""

    outcomes: list[Outcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """Dataset -> query id -> class label (the paper's Fig. 6 is mAP per class)."""

    @property
    def records(self) -> list[RunRecord]:
        return [r for o in self.outcomes for r in o.records]


def run_paper(datasets: Sequence[str], options: RunOptions,
              sets: Mapping[str, str] | None = None,
              on_start: Callable[[int, int, str, Experiment], Any] | None = None) -> PaperRun:
    """Run the experiments of each installed dataset of `datasets` (sharing every
    cached stage). `on_start(i, n, dataset, experiment)` is called before each."""
    result = PaperRun()
    loaded = {}
    for name in datasets:
        try:
            loaded[name] = load_dataset(name, data_root=options.data_root,
                                        cache_dir=options.cache_dir,
                                        options=options.dataset_options)
        except DatasetError as exc:
            every = f"`bench data fetch {name}`"
            result.skipped[name] = str(exc) + (
                "" if every in str(exc) else f"\nEverything {name} needs: {every}")
            continue
        result.labels[name] = {str(q.id): q.label for q in loaded[name].queries
                               if q.label is not None}
    plan = [(name, e) for name in loaded for e in experiments_for(name)]
    overrides = {name: split_sets(sets or {}, experiments_for(name)) for name in loaded}
    for i, (name, exp) in enumerate(plan):
        if on_start is not None:
            on_start(i + 1, len(plan), name, exp)
        outcome = Outcome(exp, name)
        config = {**overrides[name][exp.method], **exp.overrides}
        try:
            if exp.sweeps:
                outcome.records = sweep(exp.method, loaded[name],
                                        {k: list(v) for k, v in exp.sweeps.items()},
                                        options, config)
            else:
                outcome.records = [run(exp.method, loaded[name], options, config)]
        except IrbenchError as exc:
            outcome.error = str(exc)
        result.outcomes.append(outcome)
    return result
