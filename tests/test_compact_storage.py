"""Compact SIFT storage: quantised geometry, and descriptors dropped after a run
(`--drop-descriptors`) and extracted again, with the same results, when a later run
needs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.harness.runner import RunOptions, run
from irbench.methods.base import RunContext
from irbench.methods.sift.keypoints import (
    FEATURES_KIND,
    CacheConsistencyError,
    SiftParams,
    drop_descriptors,
    extract_features,
)
from tests.tiny import make_folder

CONFIG = {"vocabulary_size": 64, "max_keypoints": 150}


def _options(cache: Path, **kw) -> RunOptions:
    return RunOptions(cache_dir=cache, results_dir=None, workers=1, **kw)


def _descriptor_files(cache: Path) -> list[Path]:
    return sorted((cache / "artifacts" / "sift" / "features").rglob("descriptors.npy"))


def test_runs_after_dropping_descriptors_give_the_same_results(tmp_path):
    folder = make_folder(tmp_path / "photos", classes=3, per_class=3)
    dataset = f"folder:{folder}"
    cache = tmp_path / "cache"
    first = run("bow", dataset, _options(cache, drop_descriptors=True), CONFIG)
    assert first.method_info["descriptors_dropped_bytes"] > 0
    assert _descriptor_files(cache) == []
    # the same run again reuses its rankings; a new vocabulary needs the descriptors:
    # they are extracted again and the results equal those of a cache that never dropped
    again = run("bow", dataset, _options(cache), CONFIG)
    assert again.metrics == first.metrics
    for method, config in (("bow", {**CONFIG, "vocabulary_size": 32}), ("he-wgc", CONFIG)):
        after = run(method, dataset, _options(cache), config)
        fresh = run(method, dataset, _options(tmp_path / f"fresh-{method}"), config)
        assert after.metrics == fresh.metrics
        assert after.ranking == fresh.ranking
    assert len(_descriptor_files(cache)) >= 1  # extracted again and kept


def test_an_extraction_that_differs_from_the_dropped_one_is_refused(tmp_path):
    folder = make_folder(tmp_path / "photos", classes=2, per_class=2)
    images = sorted(folder.rglob("*.png"))
    from irbench.datasets.base import Image

    items = [Image(p.stem, p) for p in images]
    context = RunContext(cache=Cache(tmp_path / "cache"), workers=1)
    params = SiftParams(max_keypoints=100)
    extract_features(items, params, context)
    assert drop_descriptors(items, params, context) > 0
    # tamper with the checksum the cache kept of what it deleted
    meta = next((tmp_path / "cache" / "artifacts" / "sift" / "features").rglob("meta.json"))
    record = json.loads(meta.read_text())
    record["meta"]["dropped_arrays"]["descriptors"] = "0" * 64
    from irbench.core.cache import _meta_checksum

    record["meta_sha256"] = _meta_checksum(record["meta"])
    meta.write_text(json.dumps(record))
    feats = extract_features(items, params, context)
    np.testing.assert_array_equal(feats.offsets[:1], [0])  # geometry loads as it was
    with pytest.raises(CacheConsistencyError, match="differs from the extraction"):
        feats.descriptors  # noqa: B018 - reading them extracts again
    assert FEATURES_KIND == "sift/features"
