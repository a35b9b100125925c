import json

import numpy as np
import pytest

from irbench.errors import ConfigError
from irbench.harness.runner import RunOptions, run, sweep
from irbench.results.store import read_records
from tests.tiny import MeanColor, make_manifest


@pytest.fixture
def tiny(tmp_path):
    return f"manifest:{make_manifest(tmp_path / 'data')}"


def options(tmp_path, **kw):
    return RunOptions(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results",
                      workers=1, **kw)


def test_run_produces_a_complete_record(tmp_path, tiny):
    rec = run(MeanColor, tiny, options(tmp_path))
    assert set(rec.timings) == {"fit", "index", "query", "evaluate"}
    for t in rec.timings.values():
        assert t.wall_s >= 0 and t.cpu_s >= 0 and t.peak_rss_bytes > 0
    m = rec.metrics["settings"][""]
    assert 0 <= m["map"] <= 1 and len(m["ap"]) == 4
    assert rec.topk == 12 and rec.index_bytes == 12 * 12 * 4
    assert rec.dataset == "tiny" and rec.protocol["crop_query"]
    assert rec.environment["numpy"] == np.__version__
    records, problems = read_records(tmp_path / "results")
    assert not problems and [r.run_id for r in records] == [rec.run_id]
    doc = json.loads((tmp_path / "results" / f"{rec.run_id}.json").read_text())
    assert doc["schema_version"] == 2 and doc["metrics"]["settings"][""]["map"] == m["map"]


def test_rerun_reuses_cache_and_is_identical(tmp_path, tiny):
    MeanColor.encoded = 0
    first = run(MeanColor, tiny, options(tmp_path))
    encoded = MeanColor.encoded
    assert encoded == 16
    second = run(MeanColor, tiny, options(tmp_path))
    assert MeanColor.encoded == encoded  # nothing recomputed
    assert all(second.timings[s].cached for s in ("fit", "index", "query"))
    assert any(e["hit"] for e in second.cache_events)
    assert second.metrics == first.metrics
    third = run(MeanColor, tiny, options(tmp_path, overwrite=True))
    assert MeanColor.encoded == 2 * encoded and third.metrics == first.metrics


def test_sweep_shares_stages(tmp_path, tiny):
    MeanColor.encoded = 0
    records = sweep(MeanColor, tiny, {"unused": ["1", "2", "3"]}, options(tmp_path))
    assert len(records) == 3 and len({r.config_hash for r in records}) == 3
    assert MeanColor.encoded == 16  # features depend on `grid` only: extracted once
    records = sweep(MeanColor, tiny, {"grid": ["1", "2"], "unused": ["0", "5"]},
                    options(tmp_path))
    assert len(records) == 4 and MeanColor.encoded == 32  # grid=1 is new, grid=2 cached


def test_bad_overrides(tmp_path, tiny):
    with pytest.raises(ConfigError, match="grid"):
        run(MeanColor, tiny, options(tmp_path), {"gird": "2"})
    with pytest.raises(ConfigError, match="unknown config field"):
        sweep(MeanColor, tiny, {"nope": ["1"]}, options(tmp_path))


def test_topk_truncates_and_is_recorded(tmp_path, tiny):
    rec = run(MeanColor, tiny, options(tmp_path, topk=2))
    assert rec.topk == 2 and rec.metrics["depth"] == 2
    full = run(MeanColor, tiny, options(tmp_path))
    assert rec.metrics["settings"][""]["map"] <= full.metrics["settings"][""]["map"]


def test_record_keeps_query_ids_and_the_top_of_each_ranking(tmp_path, tiny):
    """Per-query results need only the record: the query ids in the order of the APs,
    and the top of each ranking with its scores, as deep as `keep_ranking` asks."""
    from irbench.harness.registry import load_dataset

    rec = run(MeanColor, tiny, options(tmp_path, keep_ranking=3))
    ds = load_dataset(tiny, cache_dir=tmp_path / "cache")
    assert rec.query_ids == [q.id for q in ds.queries]
    assert len(rec.query_ids) == len(rec.metrics["settings"][""]["ap"])
    kept = rec.ranking
    assert kept["depth"] == 3 and len(kept["indices"]) == len(ds.queries)
    assert all(len(row) == 3 for row in kept["indices"] + kept["scores"])
    for scores in kept["scores"]:
        assert scores == sorted(scores, reverse=True)  # best first
    # the AP of each query follows from its kept ranking when the ranking holds it all
    full = run(MeanColor, tiny, options(tmp_path, keep_ranking=100))
    assert full.ranking["depth"] == full.database_size
    for q, (row, truth) in enumerate(zip(full.ranking["indices"], ds.ground_truth,
                                         strict=True)):
        positives = set(np.asarray(truth["positives"]).tolist())
        junk = set(np.asarray(truth.get("junk", [])).tolist())
        row = [idx for idx in row if idx not in junk]  # junk images are not ranked
        hits = [i for i, idx in enumerate(row) if idx in positives]
        ap = np.mean([(n + 1) / (i + 1) for n, i in enumerate(hits)])
        assert ap == pytest.approx(full.metrics["settings"][""]["ap"][q])
    doc = json.loads((tmp_path / "results" / f"{full.run_id}.json").read_text())
    assert doc["ranking"]["indices"] == full.ranking["indices"]
    assert run(MeanColor, tiny, options(tmp_path, keep_ranking=0)).ranking == {}
