"""`bench report`: sweep figures and a markdown report drawn from run records (never
edited).

Any sweep: x = one config field, one line per value of another (`series`, or a single
line), from the records of a `bench run --sweep X=... [--sweep S=...]`; records whose
other config fields, data, seed, search or depth differ go to separate figures. Each
point carries its 95% bootstrap interval (error bars); baselines (other methods on the
same data and backbone) are drawn as horizontal lines. The default is the seed paper's
Fig. 4: DR-CNN's mAP against the number of regions K, one line per fusion, with the
global CNN and F-CNN on the same backbone as baselines. The report ends with the paper's
qualitative claims evaluated on the records (`irbench.results.claims`).

A report folder holds `.irbench-report` naming what it reports; writing another report into
it is refused (`ReportConflict`), so no report replaces another.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irbench.core.cache import atomic_write_text
from irbench.errors import IrbenchError
from irbench.results.figures import (
    LinePlot,
    Point,
    draw_lines,
    map_percent,
    setting_of,
    sorted_x,
)
from irbench.results.leaderboard import dataset_label, latest_records, matches_dataset
from irbench.results.store import RunRecord

SWEPT = ("regions", "fusion")
"""The paper's Fig. 4 sweep: x = regions (K), one line per fusion."""

DEFAULT_BASELINES = {"drcnn": ("cnn", "fcnn")}
"""Baselines drawn by default under a method's sweep (the paper's Fig. 4 compares
DR-CNN with the global CNN and F-CNN)."""

MANIFEST = ".irbench-report"
"""The file naming what a report folder reports (JSON; not `*.json`, which the record
reader would take for a run record)."""


class ReportConflict(IrbenchError):
    """The output folder holds another report."""


@dataclass
class Figure:
    """One sweep of one method on one dataset."""

    method: str
    dataset: str
    setting: str
    fixed: dict[str, Any]
    """The config fields (other than x and series) shared by the plotted runs."""
    changed: dict[str, Any]
    """Those of them that differ from the method's defaults (shown)."""
    series: dict[str, dict[Any, float]]
    """series value -> x value -> mAP in %."""
    x_field: str = "regions"
    series_field: str | None = "fusion"
    points: dict[str, dict[Any, Point]] = field(default_factory=dict)
    """The same values with their 95% bootstrap intervals."""
    baselines: dict[str, float] = field(default_factory=dict)
    """Horizontal lines: label -> mAP (%)."""
    fingerprint: str = ""
    distinct: str = ""
    """The settings that tell this figure from the others of the report (its title)."""
    paths: list[Path] = field(default_factory=list)

    @property
    def path(self) -> Path | None:
        """The PNG (the other formats lie beside it)."""
        return next((p for p in self.paths if p.suffix == ".png"), None)

    @property
    def backbone(self) -> str:
        """The network whose features are compared (DR-CNN: its region features)."""
        return str(self.fixed.get("feature_backbone") or self.fixed.get("backbone") or "")


def sweep_figures(records: list[RunRecord], dataset: str | None = None,
                  method: str = "drcnn", x: str = "regions",
                  series: str | None = "fusion") -> list[Figure]:
    """Group the records of `method` (on `dataset`, or every dataset) by everything but
    `x` and `series`, and collect mAP per (series value, x value). Groups with fewer
    than two points are left out."""
    swept = (x,) if series is None else (x, series)
    groups: dict[tuple[str, str], Figure] = {}
    for r in latest_records(records):
        if r.method != method or (dataset and not matches_dataset(r, dataset)):
            continue
        if not all(f in r.config for f in swept):
            continue
        point = Point.of(r)
        if point is None:
            continue
        fixed = {k: v for k, v in r.config.items() if k not in swept}
        key = (dataset_label(r), json.dumps([fixed, r.dataset_fingerprint, r.seed, r.search,
                                             r.topk], sort_keys=True, default=str))
        changed = {k: v for k, v in r.config_changed.items() if k not in swept}
        fig = groups.setdefault(key, Figure(method, dataset_label(r), setting_of(r), fixed,
                                            changed, defaultdict(dict), x, series,
                                            defaultdict(dict), {}, r.dataset_fingerprint))
        name = method if series is None else str(r.config[series])
        value = r.config[x]
        fig.series[name][value] = point.value
        fig.points[name][value] = point
    return [f for f in groups.values() if sum(len(s) for s in f.series.values()) > 1]


def region_figures(records: list[RunRecord], dataset: str | None = None,
                   method: str = "drcnn") -> list[Figure]:
    """The paper's Fig. 4 sweeps: mAP per (fusion, K)."""
    return sweep_figures(records, dataset, method, *SWEPT)


def baseline_record(records: list[RunRecord], method: str, fingerprint: str,
                    backbone: str) -> RunRecord | None:
    """The run of `method` to draw beside a sweep: on the same data (fingerprint), on
    the same backbone when the method has one, at its defaults but for the backbone and
    weights if there is such a run, else its best; the latest of equals."""
    same = [r for r in latest_records(records) if r.method == method
            and r.dataset_fingerprint == fingerprint and map_percent(r) is not None
            and (not backbone or r.config.get("backbone", backbone) == backbone)]
    if not same:
        return None
    plain = [r for r in same if set(r.config_changed) <= {"backbone", "weights"}]
    if plain:
        return max(plain, key=lambda r: r.date)
    return max(same, key=lambda r: map_percent(r) or 0.0)


def add_baselines(fig: Figure, records: list[RunRecord], methods: tuple[str, ...]) -> None:
    """Put the `baseline_record` of each of `methods` on `fig` as a horizontal line."""
    for method in methods:
        r = baseline_record(records, method, fig.fingerprint, fig.backbone)
        if r is not None:
            changed = ", ".join(f"{k}={v}" for k, v in sorted(r.config_changed.items())
                                if k not in ("backbone", "weights"))
            fig.baselines[method + (f" [{changed}]" if changed else "")] = map_percent(r)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def draw(fig: Figure, base: Path) -> list[Path]:
    """The figure as `base`.png/.svg/.pdf."""
    title = f"{fig.method} on {fig.dataset}" + (f" ({fig.backbone})" if fig.backbone else "")
    if fig.distinct:
        title += f"\n{fig.distinct}"
    xlabel = "regions per image (K)" if fig.x_field == "regions" else fig.x_field
    plot = LinePlot(title, xlabel, "mAP (%)" + (f" — {fig.setting}" if fig.setting else ""),
                    dict(fig.points), dict(fig.baselines), fig.series_field or "")
    fig.paths = draw_lines(plot, base)
    return fig.paths


def _mark_distinct(figures: list[Figure]) -> None:
    """Set each figure's `distinct`: its changed settings that not every figure of the
    same dataset shares."""
    for dataset in {f.dataset for f in figures}:
        same = [f for f in figures if f.dataset == dataset]
        items = [{(k, json.dumps(v)) for k, v in f.changed.items()} for f in same]
        common = set.intersection(*items) if len(items) > 1 else set()
        for fig, own in zip(same, items, strict=True):
            fig.distinct = ", ".join(f"{k}={json.loads(v)}" for k, v in sorted(own - common))


def check_output(out_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to write into a folder that holds another report (another method,
    dataset, sweep or kind of report)."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.is_file():
        if (Path(out_dir) / "README.md").is_file():
            raise ReportConflict(f"{out_dir} holds a README.md that is not a report of "
                                 f"irbench ({MANIFEST} missing); choose another -o/--out")
        return
    try:
        other = json.loads(manifest.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportConflict(f"{manifest}: unreadable ({exc}); choose another -o/--out "
                             "or delete the folder") from exc
    if other != identity:
        raise ReportConflict(f"{out_dir} holds another report ({json.dumps(other)}), not "
                             f"this one ({json.dumps(identity)}); choose another -o/--out "
                             "or delete that folder")


def write_manifest(out_dir: Path, identity: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / MANIFEST, json.dumps(identity, indent=1) + "\n")


def _table(fig: Figure) -> list[str]:
    xs = sorted_x([x for s in fig.points.values() for x in s])
    head = fig.series_field or "series"
    lines = [f"| {head} | " + " | ".join(f"{fig.x_field}={x}" for x in xs) + " |",
             "|---|" + "---|" * len(xs)]
    for name in sorted(fig.points):
        cells = []
        for x in xs:
            p = fig.points[name].get(x)
            cells.append("" if p is None else f"{p.value:.2f}" + (
                "" if p.low is None else f" [{p.low:.1f}, {p.high:.1f}]"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(records: list[RunRecord], out_dir: Path, dataset: str | None = None,
                 method: str = "drcnn", x: str = "regions", series: str | None = "fusion",
                 baselines: tuple[str, ...] | None = None) -> tuple[Path, list[Figure]]:
    """Draw every sweep figure and write `out_dir/README.md` with them and their data
    (mAP % [95% interval]), then the paper's claims on the records."""
    out_dir = Path(out_dir)
    identity = {"report": "sweep", "method": method, "dataset": dataset, "x": x,
                "series": series}
    check_output(out_dir, identity)
    if baselines is None:
        baselines = DEFAULT_BASELINES.get(method, ())
    figures = sweep_figures(records, dataset, method, x, series)
    by = f" for each {series}" if series else ""
    lines = [f"# {method}: mAP against {x}{by}", "",
             "Generated by `bench report` from the run records; do not edit. Values: mAP "
             "(%) [95% bootstrap interval over queries]; each figure is also in SVG and "
             "PDF beside the PNG.", ""]
    if not figures:
        lines.append(f"No sweep over {x}" + (f" and {series}" if series else "")
                     + f" of {method} found" + (f" on {dataset}" if dataset else "") + ".")
    used: set[str] = set()
    _mark_distinct(figures)
    for fig in figures:
        add_baselines(fig, records, baselines)
        name = f"{method}__{_slug(fig.dataset)}__map_vs_{_slug(x)}"
        stem, i = name, 1
        while stem in used:
            stem, i = f"{name}_{i}", i + 1
        used.add(stem)
        draw(fig, out_dir / stem)
        lines += [f"## {fig.dataset}" + (f" ({fig.setting})" if fig.setting else "")
                  + (f" [{fig.distinct}]" if fig.distinct else ""), "",
                  f"![mAP vs {x}]({stem}.png)", "", *_table(fig), ""]
        if fig.baselines:
            lines.append("Baselines (dashed): " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(fig.baselines.items())) + ".")
        changed = ", ".join(f"{k}={v}" for k, v in sorted(fig.changed.items()))
        lines += ["", f"Settings other than the defaults: {changed or 'none'}", ""]
    from irbench.results.claims import check_claims, claims_markdown

    lines += claims_markdown(check_claims(
        [r for r in records if dataset is None or matches_dataset(r, dataset)]))
    path = out_dir / "README.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, identity)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path, figures
