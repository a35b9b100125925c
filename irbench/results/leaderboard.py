"""Leaderboard tables built from run records (never hand-edited), plus the paper's
reported numbers as reference rows that are always marked `reported`.

The functions here build a plain table (columns + rows of strings); the CLI renders it
with rich, and `to_markdown` / `to_csv` / `to_json` export it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from irbench.results.store import RunRecord

PAPER = "Mei et al. 2018"


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
    """A rendered-agnostic table: a title, column names, rows of cells (strings)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    reported_rows: set[int] = field(default_factory=set)
    """Indices of rows that are reported (not measured) numbers."""
    notes: list[str] = field(default_factory=list)


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
    """Remove column `name` when no row has a value in it (the `run` column of runs that
    all used the default options)."""
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
    (config, seed, search backend, depth, data) never share a cell."""
    records = latest_records(records)
    by_fp = dataset_columns(records)
    columns: list[str] = []
    cells: dict[tuple[str, str, str, str], dict[str, str]] = {}
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
    if reported:
        for rep in REPORTED:
            col = _column(rep.dataset, rep.setting)
            if col not in columns:
                columns.append(col)
            key = (rep.method, rep.config, "", rep.kind)
            cells.setdefault(key, {})[col] = f"{rep.map_percent:.1f}"
    table = Table(title="mAP (%)", columns=["method", "config", "run", "kind", *columns])
    order = sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][3].startswith("reported"),
                                                   kv[0][1], kv[0][2]))
    for i, (key, row) in enumerate(order):
        table.rows.append([*key, *(row.get(c, "") for c in columns)])
        if key[3].startswith("reported"):
            table.reported_rows.add(i)
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


def detail(records: list[RunRecord], dataset: str, *, reported: bool = True,
           current_code: Mapping[str, str] | None = None) -> Table:
    """One dataset: every setting's mAP and mP@k, N-S score, stage timings, memory, index size."""
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
    metric_cols = []
    for s in settings:
        prefix = f"{s} " if s else ""
        metric_cols.append(f"{prefix}mAP")
        metric_cols.extend(f"{prefix}mP@{k}" for k in ks)
    cols = ["method", "config", "run", "kind", *(["data"] if several else []), *metric_cols]
    if has_ns:
        cols.append("N-S")
    cols += ["queries", "fit s", "index s", "query s", "peak MiB", "index MiB"]
    table = Table(title=f"{dataset}: metrics in %, times in wall seconds", columns=cols)
    for r in records:
        row = [r.method, config_label(r), run_label(r), kind_label(r, current_code)]
        if several:
            row.append(by_fp[r.dataset_fingerprint])
        for s in settings:
            m = r.metrics.get("settings", {}).get(s, {})
            row.append(percent(m.get("map")))
            row.extend(percent(m.get("precision_at", {}).get(k)) for k in ks)
        if has_ns:
            ns = r.metrics.get("ns_score")
            row.append("—" if ns is None else f"{ns:.3f}")
        first = next(iter(r.metrics.get("settings", {}).values()), {})
        row.append(str(first.get("queries_evaluated", "")))
        for stage in ("fit", "index", "query"):
            t = r.timings.get(stage)
            row.append("—" if t is None else f"{t.wall_s:.2f}" + (" (cached)" if t.cached else ""))
        peak = max((t.peak_rss_bytes for t in r.timings.values()), default=0)
        row.append(f"{peak / 2**20:.0f}")
        row.append("—" if r.index_bytes is None else f"{r.index_bytes / 2**20:.2f}")
        table.rows.append(row)
    if reported:
        for rep in REPORTED:
            if rep.dataset == dataset:
                row = [rep.method, rep.config, "", rep.kind, *([""] if several else [])]
                row += [f"{rep.map_percent:.1f}" if c.endswith("mAP") and
                        (rep.setting == "" or c.startswith(rep.setting)) else ""
                        for c in metric_cols]
                row += [""] * (len(cols) - len(row))
                table.reported_rows.add(len(table.rows))
                table.rows.append(row)
    table.notes += _data_notes(records, by_fp)
    if any(not r.full_depth for r in records):
        table.notes.append("top-k: only the first k of the database were ranked; AP counts "
                           "the positives found there, and mP@k that the depth cannot "
                           "determine is shown as —")
    return _finish(table, records, current_code,
                   reported and any(rep.dataset == dataset for rep in REPORTED))


def to_markdown(table: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{table.title}**", "", "| " + " | ".join(map(esc, table.columns)) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    lines += ["", *(f"_{n}_" for n in table.notes)] if table.notes else []
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.columns)
    w.writerows(table.rows)
    return buf.getvalue()


def to_json(table: Table) -> str:
    rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    return json.dumps({"title": table.title, "columns": table.columns, "rows": rows,
                       "notes": table.notes}, indent=1) + "\n"
