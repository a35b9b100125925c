"""Run records: one versioned JSON file per run, written atomically, read back for tables."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irbench.errors import IrbenchError
from irbench.harness.cache import atomic_write_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def default_results_dir() -> Path:
    """`IRBENCH_RESULTS`, else `./results`."""
    return Path(os.environ.get("IRBENCH_RESULTS", "results")).expanduser()


@dataclass
class StageTiming:
    """One stage of a run: wall and CPU seconds, peak resident memory, and whether cached."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    cached: bool = False


@dataclass
class RunRecord:
    """Everything about one run (schema `SCHEMA_VERSION`; see DESIGN.md, Contracts)."""

    method: str
    config: dict[str, Any]
    config_hash: str
    config_changed: dict[str, Any]
    """The config fields that differ from the method's defaults (the leaderboard label)."""
    dataset: str
    dataset_version: str
    dataset_options: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, Any]
    timings: dict[str, StageTiming]
    index_bytes: int | None
    seed: int
    topk: int
    search: str
    method_info: dict[str, Any] = field(default_factory=dict)
    cache_events: list[dict[str, Any]] = field(default_factory=list)
    untrained: bool = False
    """True when the method ran with weights=none (marked in the leaderboard)."""
    environment: dict[str, Any] = field(default_factory=dict)
    date: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def run_id(self) -> str:
        """Stable name of this (method, config, dataset, options, depth) combination."""
        ds = _slug(self.dataset)
        if self.dataset_options:
            ds += "-" + _slug(",".join(f"{k}={v}" for k, v in sorted(self.dataset_options.items())))
        return f"{_slug(self.method)}__{ds}__{self.config_hash[:12]}__k{self.topk}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} (this irbench reads {SCHEMA_VERSION})")
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
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IrbenchError(f"run record {path} is not readable: {exc}") from None


def read_records(results_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """All records under `results_dir` (recursively) and a list of problems with the rest."""
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
