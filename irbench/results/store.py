"""Run records: one versioned JSON file per run, written atomically, read back for tables."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irbench.core.cache import atomic_write_text
from irbench.core.config import stable_hash
from irbench.errors import IrbenchError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: records name the dataset's content fingerprint and root, the database size and the
method's code identity; the run id covers everything that changes a number."""


def default_results_dir() -> Path:
    """`IRBENCH_RESULTS`, else `./results`."""
    return Path(os.environ.get("IRBENCH_RESULTS", "results")).expanduser()


@dataclass
class StageTiming:
    """One stage of a run: wall and CPU seconds, peak resident memory, whether its
    result was reused from the cache (`cached`: the times are then those of the run that
    computed it), and `compute_s`: the seconds the stage would have taken with no cached
    artifact reused (each reused artifact counted at the time it took to compute; None
    when one was stored before that time was recorded). Latency figures use `compute_s`."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    cached: bool = False
    compute_s: float | None = None


@dataclass(frozen=True)
class SettingMetrics:
    """The metrics of one protocol setting, typed (values in [0, 1], not %)."""

    name: str
    map: float | None
    map_ci: tuple[float, float] | None
    """95% bootstrap interval of `map` over queries (None in records older than it)."""
    precision_at: dict[int, float | None]
    ap: list[float | None]
    """AP per query, in the order of the record's `query_ids` (None: no positives)."""
    queries_evaluated: int
    queries_without_positives: int

    @classmethod
    def of(cls, name: str, m: dict[str, Any]) -> SettingMetrics:
        ci = m.get("map_ci")
        return cls(name, m.get("map"), None if ci is None else (float(ci[0]), float(ci[1])),
                   {int(k): v for k, v in (m.get("precision_at") or {}).items()},
                   list(m.get("ap") or []), int(m.get("queries_evaluated", 0)),
                   int(m.get("queries_without_positives", 0)))


class Metrics(dict):
    """A run's metrics: the JSON object stored in the record
    (`metrics["settings"][name]["map"]`, ...), with typed views: `settings` (name ->
    `SettingMetrics`), `main` (the setting figures and claims use: `medium` on the
    revisited datasets, else the only one), and `map`, `map_ci`, `precision_at` of it."""

    @property
    def settings(self) -> dict[str, SettingMetrics]:
        return {name: SettingMetrics.of(name, m)
                for name, m in (self.get("settings") or {}).items()}

    @property
    def main(self) -> SettingMetrics | None:
        settings = self.settings
        if not settings:
            return None
        return settings.get("medium") or next(iter(settings.values()))

    @property
    def map(self) -> float | None:
        return None if self.main is None else self.main.map

    @property
    def map_ci(self) -> tuple[float, float] | None:
        return None if self.main is None else self.main.map_ci

    @property
    def precision_at(self) -> dict[int, float | None]:
        return {} if self.main is None else self.main.precision_at


@dataclass
class RunRecord:
    """Everything about one run (schema `SCHEMA_VERSION`; see DESIGN.md, Contracts).
    `metrics` is a `Metrics`: the stored JSON object with typed views (`.map`)."""

    method: str
    config: dict[str, Any]
    config_hash: str
    config_changed: dict[str, Any]
    """The config fields that differ from the method's defaults (the leaderboard label)."""
    dataset: str
    dataset_version: str
    dataset_options: dict[str, Any]
    dataset_fingerprint: str
    """The dataset's content identity (`Dataset.fingerprint`): root, options, protocol,
    ground truth and every image's content signature."""
    dataset_root: str | None
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, StageTiming]
    index_bytes: int | None
    seed: int
    topk: int
    """Ranking depth evaluated (the database size when the whole database is ranked)."""
    search: str
    database_size: int
    method_code: str
    """SHA-256 of the method's source (`irbench.methods.base.code_identity`): a record
    whose method's code has changed since is stale."""
    method_info: dict[str, Any] = field(default_factory=dict)
    cache_events: list[dict[str, Any]] = field(default_factory=list)
    untrained: bool = False
    """True when the method ran with weights=none (marked in the leaderboard)."""
    search_options: dict[str, str] = field(default_factory=dict)
    """The `--search-option`s given (an approximate backend's settings)."""
    search_report: dict[str, Any] = field(default_factory=dict)
    """What an approximate search measured: the options in effect, index bytes and
    recall@100 against exact search on a sample of queries (`irbench.core.search`)."""
    environment: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    schema_version: int = SCHEMA_VERSION
    query_ids: list[str] = field(default_factory=list)
    """The dataset's query ids, in the order of every per-query list (`ap` of each
    setting, `ranking`); empty in records written before they were kept."""
    ranking: dict[str, Any] = field(default_factory=dict)
    """The top of each query's ranking (`bench run --keep-ranking N`, default 100):
    `{"depth": N, "indices": [[database index, ...] per query], "scores": [[...]]}`,
    best first (-1: no more results); empty when none was kept."""

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Metrics):
            self.metrics = Metrics(self.metrics)

    @property
    def full_depth(self) -> bool:
        """Whether the whole database was ranked (the official protocols)."""
        return self.topk >= self.database_size

    @property
    def run_id(self) -> str:
        """Name of this run: method, dataset (with options) and a hash of everything
        else that changes a number (config, dataset fingerprint, seed, search backend and
        its options, ranking depth), so two different runs never share a record file and a rerun of
        the same run replaces its own."""
        ds = _slug(self.dataset)
        if self.dataset_options:
            ds += "-" + _slug(",".join(f"{k}={v}" for k, v in sorted(self.dataset_options.items())))
        parts = [self.config_hash, self.dataset_fingerprint, self.seed, self.search, self.topk]
        if self.search_options:
            parts.append(dict(sorted(self.search_options.items())))
        ident = stable_hash(parts)
        return f"{_slug(self.method)}__{ds}__{ident[:16]}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: Any) -> RunRecord:
        """A record from its JSON form; ValueError saying what is wrong otherwise."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} (this irbench reads "
                             f"{SCHEMA_VERSION}; rerun the run to write a current record)")
        _check_types(d)
        d = {k: v for k, v in d.items() if k != "run_id"}
        d["timings"] = {k: StageTiming(**v) for k, v in d["timings"].items()}
        return cls(**d)

    def primary_map(self, setting: str | None = None) -> float | None:
        settings = self.metrics.get("settings", {})
        if not settings:
            return None
        key = setting if setting is not None else next(iter(settings))
        value = settings.get(key, {}).get("map")
        return None if value is None else float(value)


_NUMBER = (int, float)


def _check_types(d: dict[str, Any]) -> None:
    """ValueError naming the first field of a record dict whose type is wrong."""
    expected: dict[str, tuple[type, ...]] = {
        "method": (str,), "config": (dict,), "config_hash": (str,), "config_changed": (dict,),
        "dataset": (str,), "dataset_version": (str,), "dataset_options": (dict,),
        "dataset_fingerprint": (str,), "dataset_root": (str, type(None)),
        "protocol": (dict,), "metrics": (dict,), "timings": (dict,),
        "index_bytes": (int, type(None)), "seed": (int,), "topk": (int,), "search": (str,),
        "database_size": (int,), "method_code": (str,),
    }
    for name, types in expected.items():
        if name not in d:
            raise ValueError(f"field {name!r} is missing")
        if not isinstance(d[name], types) or (isinstance(d[name], bool) and bool not in types):
            raise ValueError(f"field {name!r} has type {type(d[name]).__name__}")
    settings = d["metrics"].get("settings")
    if not isinstance(settings, dict):
        raise ValueError("metrics.settings is not an object")
    for setting, m in settings.items():
        where = f"metrics.settings[{setting!r}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where} is not an object")
        if m.get("map") is not None and not isinstance(m["map"], _NUMBER):
            raise ValueError(f"{where}.map is not a number")
        precision = m.get("precision_at", {})
        if not isinstance(precision, dict) or any(
                v is not None and not isinstance(v, _NUMBER) for v in precision.values()):
            raise ValueError(f"{where}.precision_at is not an object of numbers")
        if not isinstance(m.get("ap", []), list):
            raise ValueError(f"{where}.ap is not a list")
        for count in ("queries_evaluated", "queries_without_positives"):
            if not isinstance(m.get(count, 0), int):
                raise ValueError(f"{where}.{count} is not an integer")
    ns = d["metrics"].get("ns_score")
    if ns is not None and not isinstance(ns, _NUMBER):
        raise ValueError("metrics.ns_score is not a number")
    for stage, t in d["timings"].items():
        if not isinstance(t, dict) or not all(isinstance(t.get(k), _NUMBER)
                                              for k in ("wall_s", "cpu_s", "peak_rss_bytes")):
            raise ValueError(f"timings[{stage!r}] is not a stage timing")
    ids = d.get("query_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("field 'query_ids' is not a list of strings")
    ranking = d.get("ranking", {})
    if not isinstance(ranking, dict):
        raise ValueError("field 'ranking' is not an object")
    if ranking:
        rows = ranking.get("indices")
        if not isinstance(ranking.get("depth"), int) or not isinstance(rows, list) \
                or not isinstance(ranking.get("scores"), list) \
                or len(ranking["scores"]) != len(rows):
            raise ValueError("field 'ranking' needs depth, and indices and scores of one "
                             "length")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text).strip("_")[:80] or "x"


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    """Write `<results_dir>/<run_id>.json` atomically (a rerun replaces its own file)."""
    path = Path(results_dir) / f"{record.run_id}.json"
    atomic_write_text(path, json.dumps(record.to_dict(), indent=1, sort_keys=False) + "\n")
    return path


def read_record(path: str | Path) -> RunRecord:
    path = Path(path)
    try:
        return RunRecord.from_dict(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IrbenchError(f"run record {path} is not readable: {exc}") from None


def read_records(results_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """All records under `results_dir` (recursively) and one problem line per file that
    is not a readable record (the caller warns and shows the rest)."""
    root = Path(results_dir)
    records, problems = [], []
    if not root.is_dir():
        return records, problems
    for path in sorted(root.rglob("*.json")):
        try:
            records.append(read_record(path))
        except IrbenchError as exc:
            problems.append(str(exc))
    return records, problems
