"""Leaderboard tables built from run records (never hand-edited), plus the paper's
reported numbers as reference rows that are always marked `reported`.

The functions here build a plain `Table`: display cells (strings) for the terminal and
markdown, and beside each row the same content typed (numbers as numbers, `None` when
missing, `cached` as its own boolean column; `seed`, `search`, `depth`, `stale` and the
run id of measured rows) for `to_csv` and `to_json`. Metrics are in %. `to_latex` gives
a booktabs table with the best value of each ranked column in bold. The CLI renders
tables with rich.

The detail table of one dataset also says how sure each mAP is: the half-width of its
95% percentile bootstrap interval over queries (`±`), and `≈` on the rows whose mAP is
not significantly different from the best of their column and data (paired
randomisation test on the per-query APs against the best row, Holm-corrected across the
column's rows, α = 0.05; `irbench.results.stats`). Reported rows have no per-query APs
and are never tested.

Runs that differ only in their seed (`bench run --seeds`) keep their own rows, and get
one more row each: their mAP as `mean ± std` across the seeds (`across_seeds`).
`sort_rows` and `select_columns` order and trim any table; `config_legend` moves long
configs to a numbered legend for narrow terminals.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

from irbench.errors import UnknownNameError
from irbench.results.stats import (
    SeedSpread,
    across_seeds,
    bootstrap_interval,
    holm,
    randomisation_p,
)
from irbench.results.store import RunRecord

PAPER = "Mei et al. 2018"

ALPHA = 0.05
"""Significance level of the detail table's `≈` mark (family-wise, per column)."""
SAME_AS_BEST = "≈"
"""Mark of a mAP not significantly different from the best of its column."""
SIGNIFICANCE_NOTE = (f"{SAME_AS_BEST}: not significantly different from the best: paired "
                     f"randomisation test on per-query APs against the column's best row, "
                     f"Holm-corrected, α = {ALPHA}")
SEEDS_NOTE = ("mean of N seeds: mean ± sample standard deviation (n - 1) of the mAPs of the "
              "runs that differ only in their seed (their rows are shown too)")

LABELS = ("method", "config", "run", "kind", "data")
"""Display columns that name a row (text); the others hold numbers."""
ALWAYS_SHOWN = ("method", "config")
"""Label columns that `select_columns` always keeps."""
RUN_KEYS = ("seed", "search", "depth", "stale")
"""Typed values that the `run` display column shows."""
CONFIG_INLINE = 12
"""`config_legend` leaves configs up to this many characters in their cell."""


@dataclass(frozen=True)
class ReportedResult:
    """A number a paper reports (mAP in %), shown as a reference row, never as measured.
    `runnable` is False when no run here can have its configuration (a network irbench
    does not provide): its kind says so instead of promising a row that never matches."""

    method: str
    config: str
    dataset: str
    setting: str
    map_percent: float
    source: str
    note: str = ""
    runnable: bool = True

    @property
    def kind(self) -> str:
        return "reported" if self.runnable else "reported (not runnable here)"


INSTRE_S_PRESUMED = "instre-s (presumed)"
"""The column of numbers the paper gives without naming a dataset (its Sec. 5): INSTRE-S
is the only dataset of the paper they can be about besides Oxford105k, whose number is
stated in Sec. 4.3.1."""

REPORTED: tuple[ReportedResult, ...] = (
    ReportedResult("drcnn", "backbone=vgg16, fusion=concat, regions=2", "oxford105k", "",
                   40.4, PAPER, "Sec. 4.3.1 (Evaluation on Oxford105k), Fig. 4: "
                   "concatenation, K = 2, the best of all fusions and K"),
    ReportedResult("drcnn", "backbone=vgg16", INSTRE_S_PRESUMED, "", 28.6, PAPER,
                   "Sec. 5: VGG16 region features; the paper names no dataset"),
    ReportedResult("drcnn", "feature_backbone=zf", INSTRE_S_PRESUMED, "", 26.9, PAPER,
                   "Sec. 5: ZF network as the region-feature network; no ZF network here",
                   runnable=False),
    ReportedResult("drcnn", "backbone=vgg16, class_scores=true", INSTRE_S_PRESUMED, "", 32.2,
                   PAPER, "Sec. 5: region features combined with predicted class scores; "
                   "the paper names no dataset"),
)


@dataclass
class Table:
    """A rendering-agnostic table: a title, column names, rows of display cells
    (strings), and beside each row the same content typed (`data`)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    reported_rows: set[int] = field(default_factory=set)
    """Indices of rows that are reported (not measured) numbers."""
    notes: list[str] = field(default_factory=list)
    data_columns: list[str] = field(default_factory=list)
    """Keys of the typed rows, in export order."""
    data: list[dict[str, Any]] = field(default_factory=list)
    """Per row: column -> number, bool, str, list of str or None (what CSV and JSON
    export). A display column's typed value has the display column's name."""
    ranked: dict[str, str] = field(default_factory=dict)
    """Display columns whose best value is shown in bold: column -> `higher` or `lower`
    (the better direction)."""
    groups: list[str] = field(default_factory=list)
    """Per row, the data it is ranked within (a dataset fingerprint; "" for one)."""
    unranked: set[tuple[int, str]] = field(default_factory=set)
    """(row, column) cells that never count as best (a stage time read from the cache)."""

    def add_row(self, cells: list[str], data: dict[str, Any], *, reported: bool = False,
                group: str = "") -> None:
        """Append one row: its display cells and its typed values."""
        if reported:
            self.reported_rows.add(len(self.rows))
        self.rows.append(cells)
        self.data.append(data)
        self.groups.append(group)


def latest_records(records: list[RunRecord]) -> list[RunRecord]:
    """One record per run id (the run ids of different runs never collide): the most
    recent. The run id hashes the seed, so the runs of `bench run --seeds` all stay."""
    best: dict[str, RunRecord] = {}
    for r in records:
        if r.run_id not in best or r.date >= best[r.run_id].date:
            best[r.run_id] = r
    return sorted(best.values(), key=lambda r: (r.method, r.config_hash, r.dataset, r.seed,
                                                r.search, r.topk))


def config_label(record: RunRecord) -> str:
    """The config fields that differ from the method's defaults, or `default`."""
    changed = record.config_changed
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(changed.items())) or "default"


def run_label(record: RunRecord) -> str:
    """The run options that change a number, where they differ from the defaults: the
    seed, the search backend, a ranking depth below the database size; "" for none."""
    parts = []
    if record.seed != 0:
        parts.append(f"seed={record.seed}")
    if record.search != "exact":
        parts.append(f"search={record.search}")
    if not record.full_depth:
        parts.append(f"top-{record.topk}")
    return ", ".join(parts)


def kind_label(record: RunRecord, current_code: Mapping[str, str] | None = None) -> str:
    """`measured`, or what makes the number less than that: `untrained` (random
    weights), `stale` (the method's code has changed since the run; `current_code` maps
    method names to their code identity today)."""
    marks = []
    if current_code and current_code.get(record.method) not in (None, record.method_code):
        marks.append("stale")
    if record.untrained:
        marks.append("untrained")
    return ", ".join(marks) or "measured"


def _run_data(record: RunRecord, current_code: Mapping[str, str] | None) -> dict[str, Any]:
    """The typed run options of a measured row (`depth`: the ranking depth when it is
    below the database size, None when the whole database was ranked)."""
    return {"seed": record.seed, "search": record.search,
            "depth": None if record.full_depth else record.topk,
            "stale": "stale" in kind_label(record, current_code)}


def seed_groups(records: list[RunRecord],
                current_code: Mapping[str, str] | None = None) -> list[list[RunRecord]]:
    """Runs that differ only in their seed (`bench run --seeds`): the same method,
    config, data, search backend, ranking depth and kind; groups of two seeds or more,
    each in the order of `records`."""
    groups: dict[tuple[Any, ...], list[RunRecord]] = {}
    for r in records:
        key = (r.method, r.config_hash, dataset_label(r), r.dataset_fingerprint, r.search,
               r.topk, kind_label(r, current_code))
        groups.setdefault(key, []).append(r)
    return [g for g in groups.values() if len({r.seed for r in g}) > 1]


def _seedless(record: RunRecord) -> RunRecord:
    """`record` with the default seed: its run label without `seed=N`."""
    return replace(record, seed=0)


def seeds_kind(group: list[RunRecord], current_code: Mapping[str, str] | None) -> str:
    """The kind of a group's aggregate row: `mean of N seeds` (and what its runs are
    besides measured, e.g. `untrained`)."""
    kind = kind_label(group[0], current_code)
    return f"mean of {len(group)} seeds" + ("" if kind == "measured" else f", {kind}")


def _seed_spread(group: list[RunRecord], setting: str) -> SeedSpread | None:
    """Mean and standard deviation of one setting's mAP (in %) across the group's seeds;
    None when fewer than two of them have one."""
    values = [r.primary_map(setting) for r in group]
    values = [100.0 * v for v in values if v is not None]
    return across_seeds(values) if len(values) > 1 else None


def _spread_cell(spread: SeedSpread) -> str:
    return f"{spread.mean:.2f} ± {spread.std:.2f}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def dataset_label(record: RunRecord) -> str:
    if not record.dataset_options:
        return record.dataset
    opts = ",".join(f"{k}={_fmt_value(v)}" for k, v in sorted(record.dataset_options.items()))
    return f"{record.dataset}[{opts}]"


def dataset_columns(records: list[RunRecord]) -> dict[str, str]:
    """Column label of each dataset fingerprint: the dataset label, followed by
    `@<fingerprint prefix>` when records of one label come from different data (two
    folders of the same name, a manifest edited in place, other images)."""
    prints: dict[str, set[str]] = {}
    for r in records:
        prints.setdefault(dataset_label(r), set()).add(r.dataset_fingerprint)
    out = {}
    for r in records:
        label = dataset_label(r)
        out[r.dataset_fingerprint] = (label if len(prints[label]) == 1
                                      else f"{label}@{r.dataset_fingerprint[:6]}")
    return out


def _drop_empty_column(table: Table, name: str) -> Table:
    """Remove display column `name` when no row has a value in it (the `run` column of
    runs that all used the default options); the typed rows keep their own columns."""
    i = table.columns.index(name)
    if any(row[i] for row in table.rows):
        return table
    table.columns.pop(i)
    for row in table.rows:
        row.pop(i)
    return table


def _finish(table: Table, records: list[RunRecord], current_code: Mapping[str, str] | None,
            reported: bool) -> Table:
    """The notes on kinds a table shows, and no empty `run` column."""
    if reported:
        table.notes.append(f"rows of kind 'reported' are numbers printed in {PAPER}, "
                           f"not measured here; '{INSTRE_S_PRESUMED}': numbers the paper "
                           f"gives without naming a dataset (its Sec. 5)")
    if any("stale" in kind_label(r, current_code) for r in records):
        table.notes.append("kind 'stale': the method's code has changed since the run; "
                           "rerun it for a current number")
    return _drop_empty_column(table, "run")


def _column(dataset: str, setting: str) -> str:
    return f"{dataset}/{setting}" if setting else dataset


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` decimals, or — when unknown."""
    return "—" if value is None else f"{100.0 * value:.{digits}f}"


def _points(value: float | None) -> float | None:
    """A fraction as a number in %, None when unknown."""
    return None if value is None else 100.0 * float(value)


def _data_notes(records: list[RunRecord], columns: Mapping[str, str]) -> list[str]:
    """Where the data of each disambiguated column (`label@fingerprint`) comes from."""
    notes = {}
    for r in records:
        label = columns[r.dataset_fingerprint]
        if label != dataset_label(r):
            notes[label] = (f"{label}: {r.dataset} version {r.dataset_version} at "
                            f"{r.dataset_root or '(no root)'}")
    return [notes[k] for k in sorted(notes)]


@dataclass
class _Line:
    """One overview row while it is built: cells, typed values and runs by column."""

    cells: dict[str, str] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    run_ids: dict[str, list[str]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(RUN_KEYS))
    base: str = ""
    """The run label without the seed (a seed's rows are sorted next to their mean)."""
    n_seeds: int | None = None


def _line(lines: dict[tuple[str, str, str, str], _Line], key: tuple[str, str, str, str],
          col: str, tag: str) -> _Line:
    """The row of `key`, or a row marked with `tag` when `key`'s row already has a cell in
    `col` (same label, other run: defaults changed between versions)."""
    line = lines.setdefault(key, _Line())
    if col in line.cells:
        line = lines.setdefault((*key[:3], f"{key[3]} [{tag[-8:]}]"), _Line())
    return line


def _add_column(columns: list[str], col: str) -> str:
    if col not in columns:
        columns.append(col)
    return col


def _overview_lines(records: list[RunRecord], by_fp: Mapping[str, str], columns: list[str],
                    current_code: Mapping[str, str] | None
                    ) -> dict[tuple[str, str, str, str], _Line]:
    """The measured rows of the overview and the mean row of each seed group."""
    lines: dict[tuple[str, str, str, str], _Line] = {}
    for r in records:
        key = (r.method, config_label(r), run_label(r), kind_label(r, current_code))
        for setting, m in r.metrics.get("settings", {}).items():
            col = _add_column(columns, _column(by_fp[r.dataset_fingerprint], setting))
            line = _line(lines, key, col, r.run_id)
            if not line.run_ids:
                line.run, line.base = _run_data(r, current_code), run_label(_seedless(r))
            line.cells[col], line.values[col] = percent(m.get("map")), _points(m.get("map"))
            line.run_ids[col] = [r.run_id]
    for group in seed_groups(records, current_code):
        first = group[0]
        key = (first.method, config_label(first), run_label(_seedless(first)),
               seeds_kind(group, current_code))
        for setting in first.metrics.get("settings", {}):
            spread = _seed_spread(group, setting)
            if spread is None:
                continue
            col = _column(by_fp[first.dataset_fingerprint], setting)
            line = _line(lines, key, col, first.config_hash)
            line.run = {**_run_data(first, current_code), "seed": None}
            line.base, line.n_seeds = key[2], len(group)
            line.cells[col], line.values[col] = _spread_cell(spread), spread.mean
            line.stds[col], line.run_ids[col] = spread.std, [r.run_id for r in group]
    return lines


def overview(records: list[RunRecord], *, reported: bool = True,
             current_code: Mapping[str, str] | None = None) -> Table:
    """Rows: method + config + run options + kind; columns: dataset (and protocol
    setting); cells: mAP in %. Runs that differ in anything that changes a number
    (config, seed, search backend, depth, data) never share a cell; runs that differ only
    in their seed also get a row of `mean ± std` across the seeds. The typed rows have
    `seed`, `search`, `depth`, `stale` and `run_ids` (the runs of the row's cells, in
    column order) in place of the `run` label, and, when there are seed means, each
    column's `<column> std` and `n_seeds` (None on the other rows)."""
    records = latest_records(records)
    by_fp = dataset_columns(records)
    columns: list[str] = []
    lines = _overview_lines(records, by_fp, columns, current_code)
    if reported:
        for rep in REPORTED:
            col = _add_column(columns, _column(rep.dataset, rep.setting))
            line = lines.setdefault((rep.method, rep.config, "", rep.kind), _Line())
            line.cells[col], line.values[col] = f"{rep.map_percent:.1f}", rep.map_percent
    seeded = any(line.n_seeds for line in lines.values())
    table = Table(title="mAP (%)", columns=["method", "config", "run", "kind", *columns],
                  data_columns=["method", "config", "kind",
                                *(k for c in columns for k in (c, f"{c} std")[:1 + seeded]),
                                *(["n_seeds"] if seeded else []), *RUN_KEYS, "run_ids"],
                  ranked=dict.fromkeys(columns, "higher"))
    order = sorted(lines.items(), key=lambda kv: (
        kv[0][0], kv[0][3].startswith("reported"), kv[0][1], kv[1].base,
        kv[1].n_seeds is not None, kv[0][2]))
    for key, line in order:
        data = {"method": key[0], "config": key[1], "kind": key[3],
                **{c: line.values.get(c) for c in columns},
                **{f"{c} std": line.stds.get(c) for c in columns}, **line.run,
                "n_seeds": line.n_seeds,
                "run_ids": [i for c in columns for i in line.run_ids.get(c, [])]}
        table.unranked.update((len(table.rows), c) for c in line.stds)
        table.add_row([*key, *(line.cells.get(c, "") for c in columns)], data,
                      reported=key[3].startswith("reported"))
    table.notes += _data_notes(records, by_fp)
    if any(run_label(r) for r in records):
        table.notes.append("run: the options that differ from a default run (seed, search "
                           "backend, top-k = ranking depth below the database size)")
    if seeded:
        table.notes.append(SEEDS_NOTE)
    return _finish(table, records, current_code, reported)


def matches_dataset(record: RunRecord, dataset: str) -> bool:
    """Whether `record` ran on `dataset`: its name, its label with options, or the spec
    given to `bench run` (`folder:PATH` is recorded as `folder:<folder name>`; with the
    full path, only the records of that folder match)."""
    if record.dataset == dataset or dataset_label(record) == dataset:
        return True
    name, sep, arg = dataset.partition(":")
    if not (sep and arg) or record.dataset != f"{name}:{PurePath(arg.rstrip('/')).name}":
        return False
    if record.dataset_root is None or ("/" not in arg and "\\" not in arg):
        return True
    spec = Path(arg).expanduser()
    if name == "manifest":
        spec = spec.parent
    return os.path.abspath(spec) in (record.dataset_root,
                                     os.path.abspath(PurePath(record.dataset_root)))


def _aps(record: RunRecord, setting: str) -> list[float | None] | None:
    """The per-query APs of one setting, None when the record has none or no mAP."""
    m = record.metrics.get("settings", {}).get(setting, {})
    ap = m.get("ap")
    if not ap or m.get("map") is None or all(v is None for v in ap):
        return None
    return ap


def _versus_best(records: list[RunRecord], setting: str, resamples: int,
                 seed: int) -> dict[str, tuple[bool, float | None]]:
    """Run id -> (whether it is the best, Holm-adjusted p of the paired randomisation
    test against the best) for the records of one setting that have per-query APs;
    records of other data than the best, or other query counts, are left out."""
    testable = [r for r in records if _aps(r, setting) is not None]
    out: dict[str, tuple[bool, float | None]] = {}
    for fp in dict.fromkeys(r.dataset_fingerprint for r in testable):
        group = [r for r in testable if r.dataset_fingerprint == fp]
        best = max(group, key=lambda r: r.metrics["settings"][setting]["map"])
        best_ap = _aps(best, setting)
        others, pvalues = [], []
        for r in group:
            ap = _aps(r, setting)
            if r is best or len(ap) != len(best_ap):
                continue
            pairs = [(x, y) for x, y in zip(best_ap, ap, strict=True)
                     if x is not None and y is not None]
            if not pairs:
                continue
            others.append(r)
            pvalues.append(randomisation_p([y - x for x, y in pairs], resamples=resamples,
                                           seed=seed))
        out[best.run_id] = (True, None)
        for r, p in zip(others, holm(pvalues), strict=True):
            out[r.run_id] = (False, p)
    return out


def _add_seed_row(table: Table, group: list[RunRecord], settings: list[str],
                  data_label: str | None, current_code: Mapping[str, str] | None) -> None:
    """The detail row of a seed group: each setting's mAP as `mean ± std` across the
    seeds (typed: the mean, `<column> std` and `n_seeds`); never ranked."""
    first = group[0]
    kind = seeds_kind(group, current_code)
    cells = dict.fromkeys(table.columns, "")
    cells.update(method=first.method, config=config_label(first),
                 run=run_label(_seedless(first)), kind=kind)
    data: dict[str, Any] = {"method": first.method, "config": config_label(first),
                            "kind": kind}
    if data_label is not None:
        cells["data"] = data["data"] = data_label
    for s in settings:
        col = f"{s} mAP" if s else "mAP"
        spread = _seed_spread(group, s)
        if spread is not None:
            cells[col], data[col], data[f"{col} std"] = (_spread_cell(spread), spread.mean,
                                                         spread.std)
            table.unranked.add((len(table.rows), col))
    data.update(_run_data(first, current_code), seed=None, n_seeds=len(group), run_id=None)
    table.add_row([cells[c] for c in table.columns], data,
                  group="" if data_label is None else first.dataset_fingerprint)


def detail(records: list[RunRecord], dataset: str, *, reported: bool = True,
           current_code: Mapping[str, str] | None = None, ci: bool = True,
           resamples: int = 10_000, seed: int = 0) -> Table:
    """One dataset: every setting's mAP and mP@k, N-S score, stage timings, memory, index
    size; runs that differ only in their seed also get a row of `mean ± std` across the
    seeds. Each mAP shows the half-width of its 95% bootstrap interval (`±`, unless `ci`
    is False) and `≈` when it is not significantly different from the best of its column
    (see the module docstring); `resamples` and `seed` drive both. The smallest
    randomisation p is 1 / (resamples + 1), so after Holm's correction a column of m
    tested rows can show a difference only while m / (resamples + 1) < α (up to about
    500 rows at 10,000 resamples)."""
    records = [r for r in latest_records(records) if matches_dataset(r, dataset)]
    by_fp = dataset_columns(records)
    several = len(by_fp) > 1
    last_seed_of = {g[-1].run_id: g for g in seed_groups(records, current_code)}
    settings: list[str] = []
    ks: list[str] = []
    for r in records:
        for s, m in r.metrics.get("settings", {}).items():
            if s not in settings:
                settings.append(s)
            for k in m.get("precision_at", {}):
                if k not in ks:
                    ks.append(k)
    has_ns = any("ns_score" in r.metrics for r in records)
    metric_cols, data_metric_cols = [], []
    ranked: dict[str, str] = {}
    for s in settings:
        prefix = f"{s} " if s else ""
        metric_cols.append(f"{prefix}mAP")
        metric_cols.extend(f"{prefix}mP@{k}" for k in ks)
        data_metric_cols += [f"{prefix}mAP", *([f"{prefix}mAP std"] if last_seed_of else [])]
        if ci:
            data_metric_cols += [f"{prefix}mAP ci_low", f"{prefix}mAP ci_high"]
        data_metric_cols += [f"{prefix}mAP best", f"{prefix}mAP p_vs_best"]
        data_metric_cols.extend(f"{prefix}mP@{k}" for k in ks)
    ranked.update(dict.fromkeys(metric_cols, "higher"))
    labels = ["method", "config", "run", "kind", *(["data"] if several else [])]
    stages = ("fit", "index", "query")
    tail = [*(["N-S"] if has_ns else []), "queries", *(f"{s} s" for s in stages),
            "peak MiB", "index MiB"]
    ranked.update({"N-S": "higher", **{f"{s} s": "lower" for s in stages},
                   "peak MiB": "lower", "index MiB": "lower"})
    table = Table(
        title=f"{dataset}: metrics in %, times in wall seconds",
        columns=[*labels, *metric_cols, *tail],
        data_columns=["method", "config", "kind", *(["data"] if several else []),
                      *data_metric_cols, *(["N-S"] if has_ns else []), "queries",
                      *(c for s in stages for c in (f"{s} s", f"{s} cached")),
                      "peak MiB", "index MiB", *(["n_seeds"] if last_seed_of else []),
                      *RUN_KEYS, "run_id"],
        ranked={c: d for c, d in ranked.items() if c in metric_cols or c in tail})
    versus = {s: _versus_best(records, s, resamples, seed) for s in settings}
    marked = with_interval = False
    for r in records:
        kind = kind_label(r, current_code)
        row = [r.method, config_label(r), run_label(r), kind]
        data: dict[str, Any] = {"method": r.method, "config": config_label(r), "kind": kind}
        if several:
            row.append(by_fp[r.dataset_fingerprint])
            data["data"] = by_fp[r.dataset_fingerprint]
        for s in settings:
            prefix = f"{s} " if s else ""
            m = r.metrics.get("settings", {}).get(s, {})
            cell = percent(m.get("map"))
            data[f"{prefix}mAP"] = _points(m.get("map"))
            ap = _aps(r, s)
            if ci:
                low, high = bootstrap_interval(ap, resamples=resamples,
                                               seed=seed) if ap else (None, None)
                data[f"{prefix}mAP ci_low"], data[f"{prefix}mAP ci_high"] = (
                    _points(low), _points(high))
                if low is not None and math.isfinite(high - low):
                    cell += f" ±{100.0 * (high - low) / 2:.1f}"
                    with_interval = True
            best, p = versus[s].get(r.run_id, (None, None))
            data[f"{prefix}mAP best"], data[f"{prefix}mAP p_vs_best"] = best, p
            if p is not None and p >= ALPHA:
                cell += f" {SAME_AS_BEST}"
                marked = True
            row.append(cell)
            for k in ks:
                value = m.get("precision_at", {}).get(k)
                row.append(percent(value))
                data[f"{prefix}mP@{k}"] = _points(value)
        if has_ns:
            ns = r.metrics.get("ns_score")
            row.append("—" if ns is None else f"{ns:.3f}")
            data["N-S"] = None if ns is None else float(ns)
        first = next(iter(r.metrics.get("settings", {}).values()), {})
        queries = first.get("queries_evaluated")
        row.append("" if queries is None else str(queries))
        data["queries"] = queries
        for stage in stages:
            t = r.timings.get(stage)
            row.append("—" if t is None else f"{t.wall_s:.2f}" + (" (cached)" if t.cached else ""))
            data[f"{stage} s"] = None if t is None else float(t.wall_s)
            data[f"{stage} cached"] = None if t is None else bool(t.cached)
            if t is not None and t.cached:
                table.unranked.add((len(table.rows), f"{stage} s"))
        peak = max((t.peak_rss_bytes for t in r.timings.values()), default=0)
        row.append(f"{peak / 2**20:.0f}")
        row.append("—" if r.index_bytes is None else f"{r.index_bytes / 2**20:.2f}")
        data["peak MiB"] = peak / 2**20
        data["index MiB"] = None if r.index_bytes is None else r.index_bytes / 2**20
        data.update(_run_data(r, current_code), run_id=r.run_id)
        table.add_row(row, data, group=r.dataset_fingerprint if several else "")
        if r.run_id in last_seed_of:
            _add_seed_row(table, last_seed_of[r.run_id], settings,
                          by_fp[r.dataset_fingerprint] if several else None, current_code)
    if reported:
        for rep in REPORTED:
            if rep.dataset == dataset:
                row = [rep.method, rep.config, "", rep.kind, *([""] if several else [])]
                shows = [c.endswith("mAP") and (rep.setting == "" or c.startswith(rep.setting))
                         for c in metric_cols]
                row += [f"{rep.map_percent:.1f}" if show else ""
                        for show, c in zip(shows, metric_cols, strict=True)]
                row += [""] * (len(table.columns) - len(row))
                data = {"method": rep.method, "config": rep.config, "kind": rep.kind}
                data.update({c: rep.map_percent for show, c in
                             zip(shows, metric_cols, strict=True) if show})
                table.add_row(row, data, reported=True, group="reported")
    table.notes += _data_notes(records, by_fp)
    if any(not r.full_depth for r in records):
        table.notes.append("top-k: only the first k of the database were ranked; AP counts "
                           "the positives found there, and mP@k that the depth cannot "
                           "determine is shown as —")
    if with_interval:
        table.notes.append(f"mAP ±: half-width of its 95% percentile bootstrap interval "
                           f"over the queries ({resamples:,} resamples)")
    if marked:
        table.notes.append(SIGNIFICANCE_NOTE)
    if last_seed_of:
        table.notes.append(SEEDS_NOTE)
    return _finish(table, records, current_code,
                   reported and any(rep.dataset == dataset for rep in REPORTED))


def best_cells(table: Table) -> set[tuple[int, str]]:
    """(row, column) of the best value of each ranked column among the measured rows of
    one data group (ties: all of them)."""
    out: set[tuple[int, str]] = set()
    for col, better in table.ranked.items():
        if col not in table.columns or not table.data:
            continue
        candidates: dict[str, list[tuple[float, int]]] = {}
        for i, data in enumerate(table.data):
            value = data.get(col)
            if (i in table.reported_rows or (i, col) in table.unranked
                    or not isinstance(value, int | float) or isinstance(value, bool)):
                continue
            candidates.setdefault(table.groups[i], []).append((value, i))
        for values in candidates.values():
            target = (max if better == "higher" else min)(v for v, _ in values)
            out.update((i, col) for v, i in values if v == target)
    return out


def label_count(table: Table) -> int:
    """How many of the first display columns are labels (text, left-aligned)."""
    n = 0
    while n < len(table.columns) and table.columns[n] in LABELS:
        n += 1
    return n


def check_column(table: Table, name: str) -> None:
    """UnknownNameError naming the closest columns and all of them when `table` has no
    display column `name`."""
    if name in table.columns:
        return
    close = difflib.get_close_matches(name, table.columns, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise UnknownNameError(f"no column {name!r} in this table{hint}; available: "
                           f"{', '.join(table.columns)}")


def _reorder(table: Table, order: list[int]) -> Table:
    """`table` with its rows (and their typed values, groups and marks) in `order`."""
    new = {old: i for i, old in enumerate(order)}

    def pick(items: list[Any]) -> list[Any]:
        return [items[i] for i in order] if len(items) == len(table.rows) else list(items)

    return replace(table, rows=pick(table.rows), data=pick(table.data),
                   groups=pick(table.groups), notes=list(table.notes),
                   reported_rows={new[i] for i in table.reported_rows},
                   unranked={(new[i], c) for i, c in table.unranked})


def _sort_value(table: Table, row: int, column: str) -> float | str | None:
    """A row's typed number in `column`, else its display text; None when empty."""
    value = table.data[row].get(column) if len(table.data) == len(table.rows) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return table.rows[row][table.columns.index(column)] or None


def sort_rows(table: Table, column: str) -> Table:
    """The rows ordered by display column `column`, best first: numbers descending
    (ascending where lower is better: times, memory), text A to Z; rows without a value
    last, ties in their previous order. Reported and seed-mean rows sort by their value
    like the others. UnknownNameError listing the columns for an unknown one."""
    check_column(table, column)
    values = [_sort_value(table, i, column) for i in range(len(table.rows))]
    numeric = column not in LABELS and any(isinstance(v, float) for v in values)
    sign = 1.0 if table.ranked.get(column) == "lower" else -1.0

    def key(i: int) -> tuple[bool, float | str]:
        v = values[i]
        if numeric:
            return (not isinstance(v, float), sign * v if isinstance(v, float) else 0.0)
        return (v is None, str(v or "").casefold())

    return _reorder(table, sorted(range(len(table.rows)), key=key))


def _owner(columns: list[str], key: str) -> str | None:
    """The display column that shows typed value `key` (`mAP` shows `mAP ci_low` and
    `mAP std`, `fit s` shows `fit cached`, `run` the run options); None for values no
    column shows (run ids, `n_seeds`)."""
    if key in columns:
        return key
    if key in RUN_KEYS:
        return "run" if "run" in columns else None
    for col in sorted(columns, key=len, reverse=True):
        if key.startswith(f"{col} ") or (col.endswith(" s") and key == f"{col[:-2]} cached"):
            return col
    return None


def select_columns(table: Table, names: Sequence[str]) -> Table:
    """Only the display columns `names` (in that order, after the labels), besides
    method and config, each with its typed values; typed values that no column shows
    (run ids, `n_seeds`) stay. UnknownNameError listing the columns for an unknown one."""
    for name in names:
        check_column(table, name)
    keep = [c for c in table.columns if c in ALWAYS_SHOWN or (c in LABELS and c in names)]
    keep += [c for c in dict.fromkeys(names) if c not in keep]
    where = [table.columns.index(c) for c in keep]
    owners = {k: _owner(table.columns, k) for k in table.data_columns}
    return replace(table, columns=keep, rows=[[row[i] for i in where] for row in table.rows],
                   data_columns=[k for k in table.data_columns
                                 if owners[k] is None or owners[k] in keep],
                   notes=list(table.notes))


def config_legend(table: Table, longest: int = CONFIG_INLINE) -> tuple[Table, list[str]]:
    """`table` with each config longer than `longest` characters replaced by `[n]`
    (identical configs share a number, numbered in row order), and the legend lines
    `[n] config`; the typed values keep the full configs."""
    if "config" not in table.columns:
        return table, []
    j = table.columns.index("config")
    numbers: dict[str, int] = {}
    rows = []
    for row in table.rows:
        config = row[j]
        if len(config) > longest:
            config = f"[{numbers.setdefault(config, len(numbers) + 1)}]"
        rows.append([*row[:j], config, *row[j + 1:]])
    return (replace(table, rows=rows, notes=list(table.notes)),
            [f"[{n}] {config}" for config, n in numbers.items()])


def to_markdown(table: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{table.title}**", "", "| " + " | ".join(map(esc, table.columns)) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    lines += ["", *(f"_{n}_" for n in table.notes)] if table.notes else []
    return "\n".join(lines) + "\n"


def _typed(table: Table) -> tuple[list[str], list[dict[str, Any]]]:
    """The typed columns and rows; the display cells for a table built without them."""
    if table.data_columns and len(table.data) == len(table.rows):
        return table.data_columns, [{c: d.get(c) for c in table.data_columns}
                                    for d in table.data]
    return table.columns, [dict(zip(table.columns, row, strict=True)) for row in table.rows]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return value


def to_csv(table: Table) -> str:
    """The typed rows as CSV: numbers as numbers, empty when missing, booleans as
    true/false, lists (run ids) space-separated."""
    columns, rows = _typed(table)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([_csv_cell(row[c]) for c in columns] for row in rows)
    return buf.getvalue()


def to_json(table: Table) -> str:
    """The typed rows as JSON: numbers as numbers, null when missing."""
    columns, rows = _typed(table)
    return json.dumps({"title": table.title, "columns": columns, "rows": rows,
                       "notes": table.notes}, indent=1, ensure_ascii=False) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "—": "---", "±": r"$\pm$", SAME_AS_BEST: r"$\approx$", "α": r"$\alpha$",
          "≥": r"$\geq$", "≤": r"$\leq$"}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (and ±, ≈, α, — as LaTeX)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule): the best value of each
    ranked column in bold (among measured rows of the same data), reported rows in
    italics, the intervals as $\\pm$, the notes below."""
    best = best_cells(table)
    text_cols = label_count(table)
    spec = "l" * text_cols + "r" * (len(table.columns) - text_cols)
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\",
             r"\midrule"]
    for i, row in enumerate(table.rows):
        cells = []
        for col, cell in zip(table.columns, row, strict=True):
            text = latex_escape(cell)
            if text and (i, col) in best:
                text = rf"\textbf{{{text}}}"
            elif text and i in table.reported_rows:
                text = rf"\textit{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize",
                  *(latex_escape(n) + r"\par" for n in table.notes), "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
