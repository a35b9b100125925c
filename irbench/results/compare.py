"""Two runs of one dataset compared query by query: mAP difference, its interval, p-values,
and the queries that gained and lost most (`bench compare`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irbench.errors import IrbenchError
from irbench.results.leaderboard import config_label, dataset_label, latest_records
from irbench.results.stats import PairedComparison, paired_test
from irbench.results.store import RunRecord, read_record, read_records


class IncomparableRunsError(IrbenchError):
    """Two runs whose per-query APs cannot be paired (other data, other queries, no
    common protocol setting)."""


class RunNotFoundError(IrbenchError):
    """A run given by id that has no record in the results folder."""


@dataclass(frozen=True)
class QueryChange:
    """One query's AP in both runs (fractions)."""

    index: int
    """Position of the query in the dataset's query list."""
    query_id: str | None
    """The query's id, when the records name their queries."""
    ap_a: float
    ap_b: float

    @property
    def difference(self) -> float:
        return self.ap_b - self.ap_a


@dataclass(frozen=True)
class SettingComparison:
    """One protocol setting: both mAPs, the paired test of B - A, the largest changes."""

    setting: str
    map_a: float | None
    map_b: float | None
    test: PairedComparison
    gains: list[QueryChange] = field(default_factory=list)
    """Queries where B is better than A, largest gain first."""
    losses: list[QueryChange] = field(default_factory=list)
    """Queries where B is worse than A, largest loss first."""


@dataclass(frozen=True)
class Comparison:
    """Run B against run A on the same queries, per protocol setting."""

    a: RunRecord
    b: RunRecord
    settings: list[SettingComparison]

    def to_dict(self) -> dict[str, Any]:
        """The comparison as plain data: mAP, AP and differences in % (points), p-values
        as fractions, numbers as numbers (a run's `depth` is its ranking depth when below
        the database size, None when the whole database was ranked)."""
        def run(r: RunRecord) -> dict[str, Any]:
            return {"run_id": r.run_id, "method": r.method, "config": config_label(r),
                    "dataset": dataset_label(r), "dataset_fingerprint": r.dataset_fingerprint,
                    "seed": r.seed, "search": r.search,
                    "depth": None if r.full_depth else r.topk}

        def change(c: QueryChange) -> dict[str, Any]:
            return {"index": c.index, "query_id": c.query_id, "ap_a": _points(c.ap_a),
                    "ap_b": _points(c.ap_b), "difference": _points(c.difference)}

        first = self.settings[0].test if self.settings else None
        return {
            "a": run(self.a), "b": run(self.b),
            "units": "mAP, AP and differences in % (points); p-values as fractions",
            "confidence": first.confidence if first else None,
            "resamples": first.resamples if first else None,
            "settings": [{
                "setting": s.setting, "map_a": _points(s.map_a), "map_b": _points(s.map_b),
                "difference": _points(s.test.mean_difference),
                "ci_low": _points(s.test.ci_low), "ci_high": _points(s.test.ci_high),
                "p_randomisation": s.test.p_randomisation, "p_wilcoxon": s.test.p_wilcoxon,
                "queries": s.test.queries,
                "gains": [change(c) for c in s.gains], "losses": [change(c) for c in s.losses],
            } for s in self.settings],
        }


def _points(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _describe(record: RunRecord) -> str:
    return (f"{record.run_id} (dataset {dataset_label(record)}, "
            f"fingerprint {record.dataset_fingerprint[:12]})")


def _query_ids(record: RunRecord, setting: dict[str, Any], queries: int) -> list[str] | None:
    """The record's query ids (of the setting, else of the record) when there is one per
    query, else None."""
    ids = setting.get("query_ids") or getattr(record, "query_ids", None)
    return [str(i) for i in ids] if ids and len(ids) == queries else None


def compare_records(a: RunRecord, b: RunRecord, *, setting: str | None = None, top: int = 5,
                    resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Run B against run A on each protocol setting both have (or only `setting`): the
    mAPs, the paired bootstrap interval of the difference, the paired randomisation and
    Wilcoxon p-values (`irbench.results.stats.paired_test`), and the `top` queries that
    gained and lost most. IncomparableRunsError when the runs are of different data or
    queries, or share no setting."""
    if a.dataset_fingerprint != b.dataset_fingerprint:
        raise IncomparableRunsError(
            f"runs of different data cannot be compared query by query: A is "
            f"{_describe(a)}, B is {_describe(b)}")
    settings_a = a.metrics.get("settings", {})
    settings_b = b.metrics.get("settings", {})
    shared = [s for s in settings_a if s in settings_b]
    if setting is not None:
        if setting not in shared:
            raise IncomparableRunsError(
                f"setting {setting!r} is not in both runs; settings of both: "
                f"{', '.join(repr(s) for s in shared) or 'none'}")
        shared = [setting]
    if not shared:
        raise IncomparableRunsError(f"runs {a.run_id} and {b.run_id} share no protocol "
                                    f"setting ({list(settings_a)} and {list(settings_b)})")
    out = []
    for name in shared:
        ma, mb = settings_a[name], settings_b[name]
        ap_a, ap_b = ma.get("ap"), mb.get("ap")
        if not ap_a or not ap_b:
            missing = a.run_id if not ap_a else b.run_id
            raise IncomparableRunsError(f"run {missing} has no per-query APs for setting "
                                        f"{name!r}: rerun it to write a current record")
        if len(ap_a) != len(ap_b):
            raise IncomparableRunsError(
                f"setting {name!r}: A has {len(ap_a)} queries, B {len(ap_b)}; A is "
                f"{_describe(a)}, B is {_describe(b)}")
        try:
            test = paired_test(ap_a, ap_b, resamples=resamples, seed=seed)
        except ValueError as exc:
            raise IncomparableRunsError(f"setting {name!r} of runs {a.run_id} and "
                                        f"{b.run_id}: {exc}") from None
        ids = _query_ids(a, ma, len(ap_a)) or _query_ids(b, mb, len(ap_b))
        changes = [QueryChange(i, ids[i] if ids else None, float(x), float(y))
                   for i, (x, y) in enumerate(zip(ap_a, ap_b, strict=True))
                   if x is not None and y is not None and x != y]
        gains = sorted((c for c in changes if c.difference > 0),
                       key=lambda c: (-c.difference, c.index))
        losses = sorted((c for c in changes if c.difference < 0),
                        key=lambda c: (c.difference, c.index))
        out.append(SettingComparison(name, ma.get("map"), mb.get("map"), test,
                                     gains[:top], losses[:top]))
    return Comparison(a, b, out)


def find_record(run: str | Path, results_dir: str | Path) -> RunRecord:
    """The record of `run`: a record file (a path to a `.json` file), or a run id (the
    file name without `.json`, or a prefix of only one run id) looked up under
    `results_dir`; the latest record when several files hold the run."""
    path = Path(run).expanduser()
    if str(run).endswith(".json") or path.is_file():
        if not path.is_file():
            raise RunNotFoundError(f"run record {path} does not exist")
        return read_record(path)
    results_dir = Path(results_dir)
    direct = results_dir / f"{run}.json"
    if direct.is_file():
        return read_record(direct)
    records = latest_records(read_records(results_dir)[0])
    exact = [r for r in records if r.run_id == str(run)]
    if exact:
        return exact[0]
    prefixed = [r for r in records if r.run_id.startswith(str(run))]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        listed = ", ".join(r.run_id for r in prefixed[:10])
        more = f" and {len(prefixed) - 10} more" if len(prefixed) > 10 else ""
        raise RunNotFoundError(f"{run!r} is the start of {len(prefixed)} run ids in "
                               f"{results_dir}/: {listed}{more}; give more of it")
    starts = {r.run_id[:len(str(run))]: r.run_id for r in reversed(records)}
    close = [starts[s] for s in difflib.get_close_matches(str(run), list(starts), n=3)]
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    raise RunNotFoundError(f"no run {str(run)!r} in {results_dir}/ (give a record file or "
                           f"a run id, as `bench leaderboard --format csv` lists them)"
                           f"{hint}")
