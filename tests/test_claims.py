"""The paper's claims, evaluated on records (`irbench.results.claims`)."""

from __future__ import annotations

import itertools

from irbench.results.claims import HELD, NOT_ENOUGH, NOT_HELD, check_claims
from irbench.results.store import RunRecord

_ids = itertools.count()


def record(method: str, dataset: str, mAP: float, **config) -> RunRecord:
    changed = dict(config)
    return RunRecord(
        method=method, config=config, config_hash=f"h{next(_ids)}", config_changed=changed,
        dataset=dataset, dataset_version="1", dataset_options={}, dataset_fingerprint=dataset,
        dataset_root=None, protocol={}, metrics={"settings": {"": {"map": mAP / 100}}},
        timings={}, index_bytes=None, seed=0, topk=10, search="exact", database_size=10,
        method_code="x", date="2026-11-29")


def sweep(dataset: str, table: dict[str, list[float]], **fixed) -> list[RunRecord]:
    return [record("drcnn", dataset, v, regions=k, fusion=f, **fixed)
            for f, values in table.items() for k, v in enumerate(values, start=1)]


def by_claim(checks):
    out = {}
    for c in checks:
        out.setdefault(c.claim, []).append(c)
    return out


def test_claims_held_as_in_the_paper():
    recs = [record("cnn", "oxford105k", 20.0, backbone="vgg16"),
            record("fcnn", "oxford105k", 30.0, backbone="vgg16"),
            record("cop", "instre-s", 25.0), record("he-wgc", "instre-s", 27.0),
            record("cnn", "instre-s", 20.0, backbone="vgg16"),
            *sweep("oxford105k", {"concat": [30, 40.4, 35], "mean": [30, 33, 31],
                                  "max": [30, 32, 29]}, backbone="vgg16")]
    checks = by_claim(check_claims(recs))
    order = checks["CNN < F-CNN < DR-CNN"]
    assert [(c.scope, c.status) for c in order] == [
        ("instre-s (vgg16)", NOT_ENOUGH), ("oxford105k (vgg16)", HELD)]
    assert "drcnn 40.40" in order[1].evidence
    sift = {c.scope: c.status for c in checks["COP and HE+WGC beat CNN on INSTRE"]}
    assert sift == {"instre-s": HELD}
    assert [c.status for c in checks["concatenation beats mean and max"]] == [HELD]
    assert [c.status for c in checks["every fusion peaks at K = 2"]] == [HELD]


def test_claims_not_held_and_missing_runs():
    recs = [record("cnn", "demo", 80.0, backbone="b"), record("fcnn", "demo", 70.0, backbone="b"),
            record("drcnn", "demo", 90.0, backbone="b", regions=1, fusion="concat"),
            *sweep("demo", {"concat": [70, 60, 50], "mean": [70, 65, 60],
                            "max": [70, 61, 62]}, backbone="b")]
    checks = by_claim(check_claims(recs))
    assert [c.status for c in checks["CNN < F-CNN < DR-CNN"]] == [NOT_HELD]
    assert [c.status for c in checks["COP and HE+WGC beat CNN on INSTRE"]] == [NOT_ENOUGH]
    concat = checks["concatenation beats mean and max"][0]
    assert concat.status == NOT_HELD and "K=2: concat 60.00, mean 65.00" in concat.evidence
    peak = checks["every fusion peaks at K = 2"][0]
    assert peak.status == NOT_HELD and "concat peaks at K=1" in peak.evidence
    # no sweep at all: both fusion claims say so
    none = by_claim(check_claims([record("bow", "demo", 50.0)]))
    assert [c.status for c in none["every fusion peaks at K = 2"]] == [NOT_ENOUGH]
    assert [c.status for c in none["CNN < F-CNN < DR-CNN"]] == [NOT_ENOUGH]


def test_a_sweep_of_one_fusion_is_not_a_fusion_comparison():
    recs = sweep("demo", {"concat": [30, 32, 31]}, class_scores=True)
    checks = by_claim(check_claims(recs))
    for claim in ("concatenation beats mean and max", "every fusion peaks at K = 2"):
        assert [c.scope for c in checks[claim]] == ["drcnn"]  # only "no sweep" is said
        assert checks[claim][0].status == NOT_ENOUGH
