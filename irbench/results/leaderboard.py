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
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from irbench.results.stats import bootstrap_interval, holm, randomisation_p
from irbench.results.store import RunRecord

PAPER = "Mei et al. 2018"

ALPHA = 0.05
"""Significance level of the detail table's `≈` mark (family-wise, per column)."""
SAME_AS_BEST = "≈"
"""Mark of a mAP not significantly different from the best of its column."""
SIGNIFICANCE_NOTE = (f"{SAME_AS_BEST}: not significantly different from the best: paired "
                     f"randomisation test on per-query APs against the column's best row, "
                     f"Holm-corrected, α = {ALPHA}")


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
    recent."""
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


def overview(records: list[RunRecord], *, reported: bool = True,
             current_code: Mapping[str, str] | None = None) -> Table:
    """Rows: method + config + run options + kind; columns: dataset (and protocol
    setting); cells: mAP in %. Runs that differ in anything that changes a number
    (config, seed, search backend, depth, data) never share a cell. The typed rows
    have `seed`, `search`, `depth`, `stale` and `run_ids` (the runs of the row's cells,
    in column order) in place of the `run` label."""
    records = latest_records(records)
    by_fp = dataset_columns(records)
    columns: list[str] = []
    cells: dict[tuple[str, str, str, str], dict[str, str]] = {}
    values: dict[tuple[str, str, str, str], dict[str, float | None]] = {}
    runs: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in records:
        row_key = (r.method, config_label(r), run_label(r), kind_label(r, current_code))
        for setting, m in r.metrics.get("settings", {}).items():
            col = _column(by_fp[r.dataset_fingerprint], setting)
            if col not in columns:
                columns.append(col)
            row = cells.setdefault(row_key, {})
            if col in row:  # same label, other run (defaults changed between versions)
                row_key = (*row_key[:3], f"{row_key[3]} [{r.run_id[-8:]}]")
                row = cells.setdefault(row_key, {})
            row[col] = percent(m.get("map"))
            values.setdefault(row_key, {})[col] = _points(m.get("map"))
            run = runs.setdefault(row_key, {**_run_data(r, current_code), "run_ids": {}})
            run["run_ids"][col] = r.run_id
    if reported:
        for rep in REPORTED:
            col = _column(rep.dataset, rep.setting)
            if col not in columns:
                columns.append(col)
            key = (rep.method, rep.config, "", rep.kind)
            cells.setdefault(key, {})[col] = f"{rep.map_percent:.1f}"
            values.setdefault(key, {})[col] = rep.map_percent
    table = Table(title="mAP (%)", columns=["method", "config", "run", "kind", *columns],
                  data_columns=["method", "config", "kind", *columns, "seed", "search",
                                "depth", "stale", "run_ids"],
                  ranked=dict.fromkeys(columns, "higher"))
    order = sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][3].startswith("reported"),
                                                   kv[0][1], kv[0][2]))
    for key, row in order:
        run = runs.get(key, {"seed": None, "search": None, "depth": None, "stale": None,
                             "run_ids": {}})
        data = {"method": key[0], "config": key[1], "kind": key[3],
                **{c: values[key].get(c) for c in columns}, **run,
                "run_ids": [run["run_ids"][c] for c in columns if c in run["run_ids"]]}
        table.add_row([*key, *(row.get(c, "") for c in columns)], data,
                      reported=key[3].startswith("reported"))
    table.notes += _data_notes(records, by_fp)
    if any(run_label(r) for r in records):
        table.notes.append("run: the options that differ from a default run (seed, search "
                           "backend, top-k = ranking depth below the database size)")
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


def detail(records: list[RunRecord], dataset: str, *, reported: bool = True,
           current_code: Mapping[str, str] | None = None, ci: bool = True,
           resamples: int = 10_000, seed: int = 0) -> Table:
    """One dataset: every setting's mAP and mP@k, N-S score, stage timings, memory, index
    size. Each mAP shows the half-width of its 95% bootstrap interval (`±`, unless `ci`
    is False) and `≈` when it is not significantly different from the best of its column
    (see the module docstring); `resamples` and `seed` drive both. The smallest
    randomisation p is 1 / (resamples + 1), so after Holm's correction a column of m
    tested rows can show a difference only while m / (resamples + 1) < α (up to about
    500 rows at 10,000 resamples)."""
    records = [r for r in latest_records(records) if matches_dataset(r, dataset)]
    by_fp = dataset_columns(records)
    several = len(by_fp) > 1
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
        data_metric_cols.append(f"{prefix}mAP")
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
                      "peak MiB", "index MiB", "seed", "search", "depth", "stale", "run_id"],
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
    text_cols = table.columns.index("kind") + 1 + ("data" in table.columns)
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
