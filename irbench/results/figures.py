"""Figures drawn from run records: sweeps, methods as bars, per-class bars, efficiency.

Every figure is written as PNG, SVG and PDF (`save`), atomically, without a creation
date in its metadata so that the same records give the same files. The data behind each
figure is a small dataclass built from records only (`irbench.results.report` and
`irbench.results.reproduction` build them); drawing imports matplotlib (Agg) lazily.

Error bars are 95% percentile-bootstrap intervals over queries
(`irbench.results.stats.bootstrap_interval`, seeded): the uncertainty due to which
queries a dataset happens to have, not to seeds or training.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irbench.core.cache import atomic_write_bytes
from irbench.results.stats import bootstrap_interval
from irbench.results.store import RunRecord

FORMATS = ("png", "svg", "pdf")
"""Every figure is written in each of these formats."""


def setting_of(record: RunRecord) -> str:
    """The protocol setting a figure shows: `medium` where there is one (revisited
    Oxford / Paris), else the first (the only one for the other datasets)."""
    settings = record.metrics.get("settings", {})
    return "medium" if "medium" in settings else next(iter(settings), "")


def map_percent(record: RunRecord) -> float | None:
    """The record's mAP in % for `setting_of(record)`, None when it has none."""
    value = record.metrics.get("settings", {}).get(setting_of(record), {}).get("map")
    return None if value is None else 100.0 * value


def interval_percent(record: RunRecord) -> tuple[float, float] | None:
    """95% bootstrap interval of the record's mAP (%), None without per-query APs."""
    ap = record.metrics.get("settings", {}).get(setting_of(record), {}).get("ap")
    if not ap or all(v is None for v in ap):
        return None
    lo, hi = bootstrap_interval(ap)
    return 100.0 * lo, 100.0 * hi


@dataclass
class Point:
    """One measured value with its interval (both in %)."""

    value: float
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, record: RunRecord) -> Point | None:
        value = map_percent(record)
        if value is None:
            return None
        ci = interval_percent(record)
        return cls(value, *(ci or (None, None)))


@dataclass
class Bar:
    label: str
    point: Point
    reported: float | None = None
    """The paper's number for this bar, drawn as a marker, when it states one."""


@dataclass
class BarChart:
    title: str
    ylabel: str
    bars: list[Bar]


@dataclass
class GroupedBars:
    """Per-category values of a few series (the paper's Fig. 6: mAP per class)."""

    title: str
    categories: list[str]
    series: dict[str, list[float]]


@dataclass
class EfficiencyPoint:
    label: str
    map: float
    ms_per_query: float | None
    bytes_per_image: float | None


@dataclass
class LinePlot:
    """y against x, one line per series, with optional error bars and horizontal
    baselines (label -> value)."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, dict[Any, Point]]
    baselines: dict[str, float] = field(default_factory=dict)
    legend_title: str = ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "irbench"  # the same SVG ids on every run
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, base: Path) -> list[Path]:
    """Write the matplotlib figure as `base`.png, .svg and .pdf; close it."""
    plt = _pyplot()
    paths = []
    meta = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=meta[fmt])
        path = base.with_name(f"{base.name}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def sorted_x(values: Sequence[Any]) -> list[Any]:
    """Numbers in numeric order, anything else in its first-seen order."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sorted(set(values))
    return list(dict.fromkeys(values))


def _errors(points: Sequence[Point]) -> list[list[float]] | None:
    if any(p.low is None for p in points):
        return None
    return [[p.value - p.low for p in points], [p.high - p.value for p in points]]


def draw_lines(plot: LinePlot, base: Path) -> list[Path]:
    """One line per series over x (categorical x kept in order), 95% intervals as error
    bars, baselines as dashed horizontal lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs = sorted_x([x for s in plot.series.values() for x in s])
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    pos = {x: (x if numeric else i) for i, x in enumerate(xs)}
    markers = "os^Dvp*"
    step = min((b - a for a, b in zip(xs, xs[1:], strict=False)), default=1) if numeric else 1
    n = len(plot.series)
    for i, (name, points) in enumerate(sorted(plot.series.items())):
        keys = [x for x in xs if x in points]
        pts = [points[x] for x in keys]
        dodge = (i - (n - 1) / 2) * 0.06 * step  # error bars side by side, not on top
        ax.errorbar([pos[x] + dodge for x in keys], [p.value for p in pts], yerr=_errors(pts),
                    marker=markers[i % len(markers)], capsize=3, linewidth=2, label=name)
    for i, (name, value) in enumerate(sorted(plot.baselines.items())):
        ax.axhline(value, linestyle="--", linewidth=1.2, color=f"C{len(plot.series) + i}",
                   label=f"{name} ({value:.1f})")
    ax.set_xticks([pos[x] for x in xs], [str(x) for x in xs])
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(plot.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title=plot.legend_title or None, fontsize=8)
    fig.tight_layout()
    return save(fig, base)


def draw_bars(chart: BarChart, base: Path) -> list[Path]:
    """One bar per entry with its 95% interval; the paper's number as a black marker."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(chart.bars) + 1.5), 4.2), dpi=120)
    xs = range(len(chart.bars))
    points = [b.point for b in chart.bars]
    ax.bar(xs, [p.value for p in points], yerr=_errors(points), capsize=4,
           color=[f"C{i % 10}" for i in xs])
    reported = [(i, b.reported) for i, b in zip(xs, chart.bars, strict=True)
                if b.reported is not None]
    if reported:
        ax.scatter([i for i, _ in reported], [v for _, v in reported], marker="_", s=600,
                   color="black", zorder=3, label="reported in the paper")
        ax.legend(fontsize=8)
    for i, p in zip(xs, points, strict=True):
        ax.annotate(f"{p.value:.1f}", (i, p.high if p.high is not None else p.value),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(list(xs), [b.label for b in chart.bars], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel(chart.ylabel)
    ax.set_title(chart.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, base)


def draw_grouped(chart: GroupedBars, base: Path) -> list[Path]:
    """Side-by-side bars per category, one colour per series."""
    plt = _pyplot()
    n = max(1, len(chart.series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(chart.categories) * n + 2), 4.2),
                           dpi=120)
    width = 0.8 / n
    for i, (name, values) in enumerate(chart.series.items()):
        ax.bar([c + (i - (n - 1) / 2) * width for c in range(len(chart.categories))], values,
               width=width, label=name)
    ax.set_xticks(range(len(chart.categories)), chart.categories, rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("mAP (%)")
    ax.set_title(chart.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, base)


def draw_efficiency(title: str, points: Sequence[EfficiencyPoint], base: Path) -> list[Path]:
    """mAP against query latency (ms per query) and against index bytes per image, both
    on log axes; points without a measurement are left out of that panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    panels = ((axes[0], "ms_per_query", "query latency (ms per query, nothing cached)"),
              (axes[1], "bytes_per_image", "index size (bytes per database image)"))
    for ax, attr, xlabel in panels:
        for i, p in enumerate(points):
            x = getattr(p, attr)
            if x is None or x <= 0:
                continue
            ax.scatter([x], [p.map], color=f"C{i % 10}", s=30)
            ax.annotate(p.label, (x, p.map), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # labels on decades only
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, base)


def efficiency_of(label: str, record: RunRecord) -> EfficiencyPoint | None:
    """The record's mAP, its query latency (the query stage's `compute_s` per query:
    what answering the queries costs with nothing reused from the cache) and its index
    bytes per database image; None without a mAP."""
    value = map_percent(record)
    if value is None:
        return None
    query = record.timings.get("query")
    n = len(record.query_ids) if record.query_ids else None
    latency = (1000.0 * query.compute_s / n if query is not None
               and query.compute_s is not None and n else None)
    per_image = (record.index_bytes / record.database_size
                 if record.index_bytes and record.database_size else None)
    return EfficiencyPoint(label, value, latency, per_image)


def per_class_map(record: RunRecord, label_of: Mapping[str, str]) -> dict[str, float]:
    """Class -> mAP (%) of the record's queries of that class (`label_of`: query id ->
    class); queries without an AP or a class are left out."""
    ap = record.metrics.get("settings", {}).get(setting_of(record), {}).get("ap") or []
    sums: dict[str, list[float]] = {}
    for qid, value in zip(record.query_ids or [], ap, strict=False):
        cls = label_of.get(qid)
        if cls is not None and value is not None:
            sums.setdefault(cls, []).append(value)
    return {c: 100.0 * sum(v) / len(v) for c, v in sums.items()}
