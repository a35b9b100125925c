"""Leaderboard tables built from run records (never hand-edited), plus the paper's
reported numbers as reference rows that are always marked `reported`.

The functions here build a plain table (columns + rows of strings); the CLI renders it
with rich, and `to_markdown` / `to_csv` / `to_json` export it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from irbench.results.store import RunRecord

PAPER = "Mei et al. 2018"


@dataclass(frozen=True)
class ReportedResult:
    """A number a paper reports (mAP in %), shown as a reference row, never as measured."""

    method: str
    config: str
    dataset: str
    setting: str
    map_percent: float
    source: str
    note: str = ""


REPORTED: tuple[ReportedResult, ...] = (
    ReportedResult("drcnn", "backbone=vgg16, fusion=concat, regions=2", "oxford5k", "", 40.4,
                   PAPER, "Sec. 4.2, Fig. 4: best of all fusions and K"),
    ReportedResult("drcnn", "backbone=vgg16", "instre-s", "", 28.6, PAPER,
                   "Sec. 4.3: VGG16 features"),
    ReportedResult("drcnn", "backbone=zf", "instre-s", "", 26.9, PAPER,
                   "Sec. 4.3: ZF network features"),
    ReportedResult("drcnn", "backbone=vgg16, class_scores=true", "instre-s", "", 32.2, PAPER,
                   "Sec. 4.3: region features combined with predicted class scores"),
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
    """One record per run id: the most recent."""
    best: dict[str, RunRecord] = {}
    for r in records:
        if r.run_id not in best or r.date >= best[r.run_id].date:
            best[r.run_id] = r
    return sorted(best.values(), key=lambda r: (r.method, r.config_hash, r.dataset))


def config_label(record: RunRecord) -> str:
    """The config fields that differ from the method's defaults, or `default`."""
    changed = record.config_changed
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(changed.items())) or "default"


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


def _column(dataset: str, setting: str) -> str:
    return f"{dataset}/{setting}" if setting else dataset


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100.0 * value:.{digits}f}"


def overview(records: list[RunRecord], *, reported: bool = True) -> Table:
    """Rows: method + config; columns: dataset (and protocol setting); cells: mAP in %."""
    records = latest_records(records)
    columns: list[str] = []
    cells: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in records:
        marks = "untrained" if r.untrained else "measured"
        row_key = (r.method, config_label(r), marks)
        for setting, m in r.metrics.get("settings", {}).items():
            col = _column(dataset_label(r), setting)
            if col not in columns:
                columns.append(col)
            cells.setdefault(row_key, {})[col] = _pct(m.get("map"))
    if reported:
        for rep in REPORTED:
            col = _column(rep.dataset, rep.setting)
            if col not in columns:
                columns.append(col)
            key = (rep.method, rep.config, "reported")
            cells.setdefault(key, {})[col] = f"{rep.map_percent:.1f}"
    table = Table(title="mAP (%)", columns=["method", "config", "kind", *columns])
    for i, (key, row) in enumerate(sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][2]
                                                                         .startswith("reported"),
                                                                         kv[0][1]))):
        table.rows.append([*key, *(row.get(c, "") for c in columns)])
        if key[2].startswith("reported"):
            table.reported_rows.add(i)
    if reported:
        table.notes.append(f"rows of kind 'reported' are numbers printed in {PAPER}, "
                           "not measured here")
    return table


def matches_dataset(record: RunRecord, dataset: str) -> bool:
    """Whether `record` ran on `dataset`: its name, its label with options, or the spec
    given to `bench run` (`folder:PATH` is recorded as `folder:<folder name>`)."""
    if record.dataset == dataset or dataset_label(record) == dataset:
        return True
    name, sep, arg = dataset.partition(":")
    return bool(sep and arg) and record.dataset == f"{name}:{PurePath(arg.rstrip('/')).name}"


def detail(records: list[RunRecord], dataset: str, *, reported: bool = True) -> Table:
    """One dataset: every setting's mAP and mP@k, N-S score, stage timings, memory, index size."""
    records = [r for r in latest_records(records) if matches_dataset(r, dataset)]
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
    cols = ["method", "config", "kind", *metric_cols]
    if has_ns:
        cols.append("N-S")
    cols += ["queries", "fit s", "index s", "query s", "peak MiB", "index MiB"]
    table = Table(title=f"{dataset}: metrics in %, times in wall seconds", columns=cols)
    if reported and any(rep.dataset == dataset for rep in REPORTED):
        table.notes.append(f"rows of kind 'reported' are numbers printed in {PAPER}, "
                           "not measured here")
    for r in records:
        row = [r.method, config_label(r), "untrained" if r.untrained else "measured"]
        for s in settings:
            m = r.metrics.get("settings", {}).get(s, {})
            row.append(_pct(m.get("map")))
            row.extend(_pct(m.get("precision_at", {}).get(k)) for k in ks)
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
                row = [rep.method, rep.config, "reported"]
                row += [f"{rep.map_percent:.1f}" if c.endswith("mAP") and
                        (rep.setting == "" or c.startswith(rep.setting)) else ""
                        for c in metric_cols]
                row += [""] * (len(cols) - len(row))
                table.reported_rows.add(len(table.rows))
                table.rows.append(row)
    return table


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
