"""Registry-driven contract test: every registered method on a tiny demo set.

Right shapes and dtypes, valid indices, no NaN, ties broken consistently, deterministic.
A new built-in method is tested here without anyone writing a test.
"""

import numpy as np
import pytest

from irbench.harness.cache import Cache
from irbench.harness.registry import METHODS, create_method, load_dataset
from irbench.methods.base import RunContext


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo-cache")
    return load_dataset("demo", cache_dir=cache,
                        options={"objects": 4, "distractors": 4, "database_views": 4})


def _ranks(name, ds, cache_dir):
    ctx = RunContext(cache=Cache(cache_dir), workers=1, dataset_id=f"{ds.name}@{ds.version}")
    method = create_method(name, METHODS.get(name).contract_overrides, context=ctx)
    method.fit(ds.train)
    method.index(ds.database)
    return method.query(ds.queries, len(ds.database))


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tiny_demo, tmp_path):
    ds = tiny_demo
    ranks, scores = _ranks(name, ds, tmp_path / "a")
    nq, n = len(ds.queries), len(ds.database)
    assert ranks.shape == (nq, n) and ranks.dtype == np.int64
    assert scores.shape == (nq, n) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    assert ((ranks >= 0) & (ranks < n)).all()
    assert all(len(set(row)) == n for row in ranks.tolist())  # a full ranking is a permutation
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    again, again_scores = _ranks(name, ds, tmp_path / "b")  # fresh cache: recomputed
    np.testing.assert_array_equal(ranks, again)
    np.testing.assert_allclose(scores, again_scores, rtol=1e-6, atol=1e-7)
