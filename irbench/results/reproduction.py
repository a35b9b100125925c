"""The reproduction report of `bench paper`: measured against reported, the paper's
figures redrawn from the records, and its claims checked.

Per dataset:
- a table of every experiment's headline number, mAP (%) with its 95% bootstrap
  interval, beside the number the paper reports where it states one (only three, all
  DR-CNN: 40.4 on Oxford105k at K = 2 with concatenation, Sec. 4.3.1; 28.6 and, with
  class scores, 32.2 in Sec. 5, presumed on INSTRE-S and compared at K = 1, the setting
  of the paper's Fig. 5). On data the paper does not use the reported numbers are shown
  for reference, never as a difference;
- Fig. 3 / Fig. 5: the methods as bars with their intervals;
- Fig. 4: DR-CNN's mAP against K per fusion, with the global CNN and F-CNN (cropped
  query, the same backbone) as horizontal lines (`irbench.results.report`);
- Fig. 6: mAP per class of HE+WGC and DR-CNN (K = 1) on at most 30 classes drawn at
  random (seeded), as the paper does;
- efficiency: mAP against query latency (the query stage with nothing cached, per
  query) and against index bytes per database image;
- the paper's qualitative claims on these records (`irbench.results.claims`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from irbench.core.cache import atomic_write_text
from irbench.results.claims import check_claims, claims_markdown
from irbench.results.figures import (
    Bar,
    BarChart,
    GroupedBars,
    Point,
    draw_bars,
    draw_efficiency,
    draw_grouped,
    efficiency_of,
    per_class_map,
)
from irbench.results.leaderboard import REPORTED, ReportedResult, dataset_label
from irbench.results.report import (
    add_baselines,
    check_output,
    draw,
    sweep_figures,
    write_manifest,
)
from irbench.results.store import RunRecord

MAX_CLASSES = 30
"""Fig. 6 shows 30 classes drawn at random."""


@dataclass
class ExperimentResult:
    """One experiment on one dataset: its records, or the error that stopped it."""

    name: str
    method: str
    figures: tuple[str, ...]
    dataset: str
    records: list[RunRecord] = field(default_factory=list)
    error: str | None = None


@dataclass
class Headline:
    """A row of the measured-vs-reported table."""

    label: str
    figures: str
    record: RunRecord | None
    point: Point | None
    reported: ReportedResult | None = None
    error: str | None = None


def _pick(records: Sequence[RunRecord], **config: object) -> RunRecord | None:
    for r in records:
        if all(r.config.get(k) == v for k, v in config.items()):
            return r
    return None


def _reported(dataset: str, method: str, config: Mapping[str, object]
              ) -> ReportedResult | None:
    """The paper's number for this run: same method, the config fields it names (the
    backbone aside; `class_scores` false unless named), on this dataset when it is one
    of the paper's, on any when it is not (then shown as other data)."""
    paper = {_paper_dataset(rep) for rep in REPORTED}
    for rep in REPORTED:
        if rep.method != method or not rep.runnable:
            continue
        if dataset in paper and _paper_dataset(rep) != dataset:
            continue
        wanted = {"class_scores": "false",
                  **dict(part.split("=", 1) for part in rep.config.split(", "))}
        wanted.pop("backbone", None)
        if "regions" not in wanted:
            wanted["regions"] = "1"  # K not stated: compared at K = 1 (Figs. 3 and 5)
        if all(str(config.get(k, "")).lower() == v for k, v in wanted.items()):
            return rep
    return None


def headlines(results: Sequence[ExperimentResult]) -> list[Headline]:
    """The rows of one dataset's table: one per single run, and for each DR-CNN sweep
    its K = 1 concatenation (Figs. 3 / 5), its best point, and K = 2 concatenation
    (the paper's best on Oxford105k)."""
    rows: list[Headline] = []
    for res in results:
        figs = ", ".join(res.figures)
        if res.error is not None or not res.records:
            rows.append(Headline(res.name, figs, None, None, error=res.error or "no record"))
            continue
        if len(res.records) == 1:
            r = res.records[0]
            rows.append(Headline(res.name, figs, r, Point.of(r)))
            continue
        picks = [("K=1, concat", _pick(res.records, regions=1, fusion="concat")),
                 ("K=2, concat", _pick(res.records, regions=2, fusion="concat"))]
        best = max(res.records, key=lambda r: Point.of(r).value if Point.of(r) else -1.0)
        picks.append((f"best: K={best.config.get('regions')}, {best.config.get('fusion')}",
                      best))
        shown: set[str] = set()
        for what, r in picks:
            if r is None or r.run_id in shown:
                continue
            shown.add(r.run_id)
            rep = _reported(res.dataset, res.method, r.config)
            rows.append(Headline(f"{res.name} ({what})", figs, r, Point.of(r), rep))
    return rows


def _paper_dataset(rep: ReportedResult) -> str:
    return rep.dataset.replace(" (presumed)", "")


def shared_settings(records: Sequence[RunRecord]) -> dict[str, dict[str, object]]:
    """Method -> the changed config fields every one of its records has (said once
    above the table instead of in every row)."""
    out: dict[str, dict[str, object]] = {}
    for method in dict.fromkeys(r.method for r in records):
        mine = [r.config_changed for r in records if r.method == method]
        keys = set.intersection(*(set(c) for c in mine))
        out[method] = {k: mine[0][k] for k in sorted(keys)
                       if all(c[k] == mine[0][k] for c in mine)}
    return out


def _own_config(record: RunRecord, shared: Mapping[str, Mapping[str, object]]) -> str:
    common = shared.get(record.method, {})
    own = {k: v for k, v in record.config_changed.items() if k not in common}
    return ", ".join(f"{k}={_value(v)}" for k, v in sorted(own.items())) or "—"


def _value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return str(v)


def _table(rows: Sequence[Headline], dataset: str) -> list[str]:
    shared = shared_settings([h.record for h in rows if h.record is not None])
    lines = []
    for method, fields in shared.items():
        if fields:
            lines.append(f"- every run of `{method}`: " + ", ".join(
                f"{k}={_value(v)}" for k, v in fields.items()))
    if lines:
        lines.append("")
    lines += ["| experiment | figures | other settings | mAP % [95% CI] | reported | "
              "difference |", "|---|---|---|---|---|---|"]
    for h in rows:
        if h.point is None:
            lines.append(f"| {h.label} | {h.figures} | | failed: {h.error} | | |")
            continue
        ci = "" if h.point.low is None else f" [{h.point.low:.1f}, {h.point.high:.1f}]"
        reported, diff = "", ""
        if h.reported is not None:
            same = _paper_dataset(h.reported) == dataset
            reported = f"{h.reported.map_percent:.1f}" + (
                "" if same else f" (on {_paper_dataset(h.reported)}: other data)")
            if same:
                diff = f"{h.point.value - h.reported.map_percent:+.1f}"
        lines.append(f"| {h.label} | {h.figures} | {_own_config(h.record, shared)} | "
                     f"{h.point.value:.2f}{ci} | {reported} | {diff} |")
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _method_bars(results: Sequence[ExperimentResult], rows: Sequence[Headline],
                 dataset: str) -> BarChart | None:
    bars = []
    for h in rows:
        if h.point is None or not any(f in h.figures for f in ("fig3", "fig5")):
            continue
        if h.record.method == "drcnn" and not h.label.endswith("(K=1, concat)"):
            continue  # Figs. 3 and 5 show DR-CNN with the top region
        reported = None
        if h.reported is not None and _paper_dataset(h.reported) == dataset:
            reported = h.reported.map_percent
        bars.append(Bar(h.label.replace(" (K=1, concat)", " K=1"), h.point, reported))
    if not bars:
        return None
    return BarChart(f"methods on {dataset} (95% bootstrap intervals)", "mAP (%)", bars)


def _per_class(results: Sequence[ExperimentResult], label_of: Mapping[str, str],
               dataset: str, seed: int = 0) -> GroupedBars | None:
    he = next((r.records[0] for r in results if r.method == "he-wgc" and r.records), None)
    dr = next((_pick(r.records, regions=1, fusion="concat") for r in results
               if r.method == "drcnn" and r.records and "fig6" in r.figures), None)
    if he is None or dr is None or not label_of:
        return None
    a, b = per_class_map(he, label_of), per_class_map(dr, label_of)
    classes = sorted(set(a) & set(b))
    if len(classes) > MAX_CLASSES:
        rng = np.random.default_rng(seed)
        classes = sorted(rng.choice(classes, MAX_CLASSES, replace=False).tolist())
    if not classes:
        return None
    return GroupedBars(f"mAP per class on {dataset} ({len(classes)} classes)", classes,
                       {"he-wgc": [a[c] for c in classes],
                        "drcnn K=1": [b[c] for c in classes]})


def _efficiency(rows: Sequence[Headline]):
    points, missing = [], []
    for h in rows:
        if h.record is None or "best:" in h.label:
            continue
        p = efficiency_of(h.label, h.record)
        if p is None:
            continue
        points.append(p)
        if p.ms_per_query is None:
            missing.append(h.label)
    return points, missing


def write_reproduction(results: Sequence[ExperimentResult], out_dir: Path, *,
                       skipped: Mapping[str, str], labels: Mapping[str, Mapping[str, str]],
                       command: str, machine: str) -> Path:
    """Write `out_dir/README.md` and the figures (PNG, SVG, PDF) of every dataset.
    `labels`: dataset -> query id -> class (Fig. 6)."""
    out_dir = Path(out_dir)
    identity = {"report": "paper", "datasets": list(dict.fromkeys(
        [*skipped, *(r.dataset for r in results)]))}
    check_output(out_dir, identity)  # never over another report
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, identity)
    lines = ["# Reproduction of Mei et al. 2018 (deep region CNN)", "",
             f"Generated by `{command}` from its run records; do not edit. Machine: "
             f"{machine}.", "",
             "mAP in % with its 95% bootstrap interval over queries (10,000 resamples, "
             "seeded). Figures are PNG here, with SVG and PDF beside them.", ""]
    for name, reason in skipped.items():
        lines += [f"**{name}: skipped** (not installed):", "", "```", reason, "```", ""]
    for dataset in dict.fromkeys(r.dataset for r in results):
        mine = [r for r in results if r.dataset == dataset]
        lines += _dataset_section(mine, dataset, out_dir, labels.get(dataset, {}))
    atomic_write_text(out_dir / "README.md", "\n".join(lines) + "\n")
    return out_dir / "README.md"


def _dataset_section(results: Sequence[ExperimentResult], dataset: str, out_dir: Path,
                     label_of: Mapping[str, str]) -> list[str]:
    rows = headlines(results)
    records = [r for res in results for r in res.records]
    if records:  # `manifest:PATH` and the like: the dataset's own name and options
        dataset = dataset_label(records[0])
    slug = _slug(dataset)
    lines = [f"## {dataset}", "", "### Measured and reported", "", *_table(rows, dataset), ""]
    chart = _method_bars(results, rows, dataset)
    if chart is not None:
        draw_bars(chart, out_dir / f"methods__{slug}")
        lines += ["### Figs. 3 and 5: the methods", "", f"![methods](methods__{slug}.png)", ""]
    fig4 = [r for res in results if "fig4" in res.figures for r in res.records]
    for i, fig in enumerate(sweep_figures(fig4, None, "drcnn", "regions", "fusion")):
        add_baselines(fig, records, ("cnn", "fcnn"))
        stem = f"fig4__{slug}" + (f"_{i}" if i else "")
        draw(fig, out_dir / stem)
        lines += ["### Fig. 4: DR-CNN, K regions and fusion", "", f"![fig4]({stem}.png)", "",
                  "Baselines (dashed): " + (", ".join(f"{k} {v:.2f}" for k, v in
                                                      sorted(fig.baselines.items()))
                                           or "none") + ".", ""]
    grouped = _per_class(results, label_of, dataset)
    if grouped is not None:
        draw_grouped(grouped, out_dir / f"fig6__{slug}")
        lines += ["### Fig. 6: mAP per class, HE+WGC and DR-CNN", "",
                  f"![fig6](fig6__{slug}.png)", ""]
    points, missing = _efficiency(rows)
    if points:
        draw_efficiency(f"efficiency on {dataset}", points, out_dir / f"efficiency__{slug}")
        lines += ["### Efficiency", "", f"![efficiency](efficiency__{slug}.png)", "",
                  "| experiment | mAP % | ms per query | index bytes per image |",
                  "|---|---|---|---|"]
        for p in points:
            ms = "not measured" if p.ms_per_query is None else f"{p.ms_per_query:.1f}"
            size = "—" if p.bytes_per_image is None else f"{p.bytes_per_image:,.0f}"
            lines.append(f"| {p.label} | {p.map:.2f} | {ms} | {size} |")
        lines += ["", "Latency: the query stage's seconds with nothing reused from the cache "
                  "(reused artifacts counted at the time they took to compute), divided by "
                  "the number of queries; it includes extracting the queries' features."
                  + (f" Not measured for {', '.join(missing)}: their cached parts were "
                     "stored before computing times were recorded." if missing else ""), ""]
    lines += claims_markdown(check_claims(records))
    return lines
