"""`--executor ray` on a local Ray of 2 CPUs gives the artifacts and metrics of the local
executor, for `bow` and `cnn` on demo (slow: starts Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irbench.core.cache import Cache
from irbench.datasets.registry import load_dataset
from irbench.harness.runner import RunOptions, run

RUNS = {"bow": {"vocabulary_size": 64},
        "cnn": {"backbone": "efficientnet-lite0", "image_size": 128, "conv_max_size": 128}}


def artifact_checksums(cache_dir: Path) -> dict[str, dict[str, str]]:
    """`kind/id` -> the checksum of each array, for every merged artifact of a cache."""
    out = {}
    for meta in (cache_dir / "artifacts").rglob("meta.json"):
        record = json.loads(meta.read_text())
        kind = "/".join(meta.parent.relative_to(cache_dir / "artifacts").parts[:-2])
        out[f"{kind}/{record['id']}"] = record["arrays"]
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_artifacts_and_metrics_of_the_local_executor(local_ray, tmp_path,
                                                                    monkeypatch):
    # small shards, so that every stage runs as several tasks at once
    map_cached = Cache.map_cached
    monkeypatch.setattr(Cache, "map_cached",
                        lambda self, *a, **kw: map_cached(self, *a, **{**kw, "shard_size": 8}))
    ds = load_dataset("demo", cache_dir=tmp_path / "data",
                      options={"objects": 4, "distractors": 4, "database_views": 4})
    caches, metrics = {}, {}
    for executor in ("local", "ray"):
        caches[executor] = tmp_path / executor
        for method, overrides in RUNS.items():
            record = run(method, ds, RunOptions(cache_dir=caches[executor], results_dir=None,
                                                workers=1, executor=executor), overrides)
            assert record.environment["executor"] == ("local" if executor == "local"
                                                      else "ray (address local)")
            metrics[executor, method] = record.metrics
    for method in RUNS:
        assert metrics["ray", method] == metrics["local", method], method
    local, remote = (artifact_checksums(caches[e]) for e in ("local", "ray"))
    kinds = {key.rsplit("/", 1)[0] for key in local}
    assert {"sift/features", "words", "cnn/features", "rankings"} <= kinds, kinds
    assert local == remote
