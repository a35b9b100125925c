"""The seed paper's qualitative claims, checked on the run records at hand.

Mei et al. 2018 state four comparisons; each is evaluated per dataset (and per backbone
or per sweep where it compares CNN variants), from records only:

1. "CNN < F-CNN < DR-CNN" (Sec. 4.3.1 on Oxford105k, Sec. 4.4 on INSTRE): on each
   dataset and backbone, the best record of `cnn` is below the best of `fcnn`, which is
   below the best of `drcnn`. Best = highest mAP among that method's records there (the
   paper too reports DR-CNN at its best K and fusion).
2. "COP and HE+WGC beat CNN on INSTRE" (Sec. 4.4, observation 1): on `instre` and
   `instre-s`, the best `cop` and the best `he-wgc` are above the best `cnn`.
3. "Concatenation beats mean and max" (Sec. 4.3.1, Fig. 4): in each regions × fusion
   sweep of `drcnn`, concat is above mean and max at every K >= 2 the three share (at
   K = 1 the three fusions are the same vector).
4. "Every fusion peaks at K = 2" (Sec. 4.3.1, Fig. 4): in each sweep, each fusion
   measured at K = 1, 2 and 3 at least has its highest mAP at K = 2.

A claim is `held`, `not held`, or `not enough runs` (the records needed are missing),
with the numbers it was decided on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from irbench.results.leaderboard import dataset_label, latest_records
from irbench.results.report import region_figures
from irbench.results.store import RunRecord

HELD = "held"
NOT_HELD = "not held"
NOT_ENOUGH = "not enough runs"
INSTRE = ("instre", "instre-s")


@dataclass(frozen=True)
class ClaimCheck:
    """One claim evaluated on one dataset (or sweep)."""

    claim: str
    scope: str
    status: str
    evidence: str


def _map(record: RunRecord) -> float | None:
    settings = record.metrics.get("settings", {})
    name = "medium" if "medium" in settings else next(iter(settings), "")
    value = settings.get(name, {}).get("map")
    return None if value is None else 100.0 * value


def _best(records: list[RunRecord]) -> dict[tuple[str, str], dict[str, float]]:
    """(dataset with its options, backbone) -> method -> best mAP (%); SIFT methods under
    backbone ''."""
    best: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in latest_records(records):
        value = _map(r)
        if value is None:
            continue
        key = (dataset_label(r), str(r.config.get("backbone", "")))
        if value > best[key].get(r.method, float("-inf")):
            best[key][r.method] = value
    return best


def _fmt(values: dict[str, float], methods: tuple[str, ...]) -> str:
    return ", ".join(f"{m} {values[m]:.2f}" if m in values else f"{m} —" for m in methods)


def _verdict(claim: str, scope: str, values: dict[str, float], methods: tuple[str, ...],
             holds) -> ClaimCheck:
    """`not enough runs` unless every method has a value, else whether `holds(values)`."""
    evidence = _fmt(values, methods)
    if not all(m in values for m in methods):
        return ClaimCheck(claim, scope, NOT_ENOUGH, evidence)
    return ClaimCheck(claim, scope, HELD if holds(values) else NOT_HELD, evidence)


def cnn_order(records: list[RunRecord]) -> list[ClaimCheck]:
    claim = "CNN < F-CNN < DR-CNN"
    out = []
    for (dataset, backbone), values in sorted(_best(records).items()):
        methods = ("cnn", "fcnn", "drcnn")
        if not backbone or not any(m in values for m in methods):
            continue
        out.append(_verdict(claim, f"{dataset} ({backbone})", values, methods,
                            lambda v: v["cnn"] < v["fcnn"] < v["drcnn"]))
    if not out:
        out.append(ClaimCheck(claim, "any dataset", NOT_ENOUGH,
                              "no run of cnn, fcnn or drcnn"))
    return out


def sift_beat_cnn(records: list[RunRecord]) -> list[ClaimCheck]:
    claim = "COP and HE+WGC beat CNN on INSTRE"
    best = _best(records)
    out = []
    for dataset in INSTRE:
        sift = {m: v for (d, _), vals in best.items() if d == dataset
                for m, v in vals.items() if m in ("cop", "he-wgc")}
        cnn = [vals["cnn"] for (d, _), vals in best.items() if d == dataset and "cnn" in vals]
        values = {**sift, **({"cnn": max(cnn)} if cnn else {})}
        if not values:
            continue
        out.append(_verdict(claim, dataset, values, ("cop", "he-wgc", "cnn"),
                            lambda v: v["cop"] > v["cnn"] and v["he-wgc"] > v["cnn"]))
    if not out:
        out.append(ClaimCheck(claim, "instre, instre-s", NOT_ENOUGH,
                              "no run on INSTRE or INSTRE-S"))
    return out


def _sweep_scope(fig, common: set[tuple[str, str]]) -> str:
    """The sweep's dataset and the non-default settings that tell it from the others."""
    own = sorted((k, v) for k, v in ((k, json.dumps(v)) for k, v in fig.changed.items())
                 if (k, v) not in common)
    changed = ", ".join(f"{k}={json.loads(v)}" for k, v in own)
    return f"{fig.dataset} drcnn sweep" + (f" [{changed}]" if changed else "")


def fusion_checks(records: list[RunRecord]) -> list[ClaimCheck]:
    concat_claim = "concatenation beats mean and max"
    peak_claim = "every fusion peaks at K = 2"
    out = []
    figures = [f for f in region_figures(records) if len(f.series) > 1]  # fusions compared
    settings = [{(k, json.dumps(v)) for k, v in f.changed.items()} for f in figures]
    common = set.intersection(*settings) if len(settings) > 1 else set()
    for fig in figures:
        scope = _sweep_scope(fig, common)
        s = fig.series
        shared = sorted(set(s.get("concat", {})) & set(s.get("mean", {}))
                        & set(s.get("max", {})))
        shared = [k for k in shared if k >= 2]
        if not shared:
            out.append(ClaimCheck(concat_claim, scope, NOT_ENOUGH,
                                  "needs concat, mean and max at a common K >= 2"))
        else:
            losses = [k for k in shared
                      if not s["concat"][k] > max(s["mean"][k], s["max"][k])]
            evidence = "; ".join(f"K={k}: concat {s['concat'][k]:.2f}, mean "
                                 f"{s['mean'][k]:.2f}, max {s['max'][k]:.2f}" for k in shared)
            out.append(ClaimCheck(concat_claim, scope, NOT_HELD if losses else HELD,
                                  evidence))
        peaks, enough = {}, True
        for fusion in ("concat", "mean", "max"):
            series = s.get(fusion, {})
            if not {1, 2, 3} <= set(series):
                enough = False
                continue
            peaks[fusion] = max(series, key=lambda k, series=series: (series[k], -k))
        if not enough or not peaks:
            out.append(ClaimCheck(peak_claim, scope, NOT_ENOUGH,
                                  "needs each of concat, mean, max at K = 1, 2, 3"))
        else:
            held = all(k == 2 for k in peaks.values())
            out.append(ClaimCheck(peak_claim, scope, HELD if held else NOT_HELD,
                                  ", ".join(f"{f} peaks at K={k}" for f, k in peaks.items())))
    if not figures:
        for claim in (concat_claim, peak_claim):
            out.append(ClaimCheck(claim, "drcnn", NOT_ENOUGH,
                                  "no regions x fusion sweep of drcnn"))
    return out


def check_claims(records: list[RunRecord]) -> list[ClaimCheck]:
    """Every claim of the paper, evaluated on `records` (see the module doc)."""
    return [*cnn_order(records), *sift_beat_cnn(records), *fusion_checks(records)]


def claims_markdown(checks: list[ClaimCheck]) -> list[str]:
    lines = ["## The paper's claims on these records", "",
             "| claim | where | verdict | numbers (mAP %) |", "|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.claim} | {c.scope} | {c.status} | {c.evidence} |")
    return [*lines, "", "Rules: `irbench.results.claims` (best record of each method per "
            "dataset and backbone; sweeps compared at equal K).", ""]


def to_json(checks: list[ClaimCheck]) -> str:
    return json.dumps([c.__dict__ for c in checks], indent=1)
