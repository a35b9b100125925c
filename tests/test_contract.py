"""Registry-driven contract test: every registered method on a tiny demo set.

Right shapes and dtypes, valid indices, no NaN, ties broken consistently, deterministic.
A new built-in method is tested here without anyone writing a test.
"""

import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.datasets.registry import load_dataset
from irbench.methods.base import RunContext
from irbench.methods.registry import METHODS, create_method


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


HEAVY = {"drcnn"}
"""Methods whose contract test trains a network twice (about 40 s here): slow tests, so
the default suite stays fast; CI runs them with the slow ones."""


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow, pytest.mark.timeout(600)]) if n in HEAVY
    else pytest.param(n, marks=pytest.mark.timeout(180)) for n in METHODS.names()])
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


@pytest.mark.parametrize("name", METHODS.names())
def test_every_config_field_declares_a_stage_the_method_has(name):
    """Cache keys are derived from these declarations: a built-in method declares the
    stage of every field (a plugin may leave it out: the field then feeds every stage)."""
    import dataclasses

    from irbench.core.config import field_stage
    from irbench.methods.base import NO_STAGE, QUERY_STAGE

    cls = METHODS.get(name)
    if not cls.__module__.startswith("irbench."):
        pytest.skip("a plugin")
    allowed = {*cls.stages, QUERY_STAGE, NO_STAGE}
    for f in dataclasses.fields(cls.Config):
        assert field_stage(f) in allowed, f"{name}.{f.name}: stage {field_stage(f)!r}"
    for stage in cls.stages:
        cls.upstream(stage)  # every `after` names a declared stage


def test_sift_extraction_parameters_are_the_fields_of_stage_sift():
    import dataclasses

    from irbench.core.config import field_stage
    from irbench.methods.sift.keypoints import SIFT_STAGE, SiftOptions, SiftParams

    declared = {f.name for f in dataclasses.fields(SiftOptions) if field_stage(f) == SIFT_STAGE}
    assert declared == {f.name for f in dataclasses.fields(SiftParams)}
