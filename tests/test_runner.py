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
    lo, hi = m["map_ci"]  # the 95% bootstrap interval of the mAP over queries
    assert 0 <= lo <= m["map"] <= hi <= 1
    assert rec.metrics.map == m["map"] and rec.metrics.map_ci == (lo, hi)  # typed views
    assert rec.metrics.settings[""].ap == m["ap"] and rec.metrics.precision_at[1] == \
        m["precision_at"]["1"]
    records, problems = read_records(tmp_path / "results")
    assert not problems and [r.run_id for r in records] == [rec.run_id]
    assert records[0].metrics.map == rec.metrics.map  # typed after reading back too
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


def test_a_stage_that_reuses_features_records_what_computing_them_cost(tmp_path, tiny):
    first = run(MeanColor, tiny, options(tmp_path))
    assert all(t.compute_s is not None for t in first.timings.values())
    assert first.timings["query"].compute_s == pytest.approx(first.timings["query"].wall_s,
                                                             abs=1e-3)
    second = run(MeanColor, tiny, options(tmp_path, topk=5))  # new ranking, same features
    query = second.timings["query"]
    assert not query.cached and any(e["hit"] for e in second.cache_events)
    reused = [e for e in second.cache_events if e["hit"]]
    assert all(e["compute_seconds"] is not None for e in reused)
    # the loading time of the reused features is replaced by their computing time
    assert query.compute_s >= query.wall_s - sum(e["seconds"] for e in reused) - 1e-3


@pytest.mark.parametrize("backend", ["ivfpq", "hnsw"])
def test_an_approximate_search_records_its_recall_and_index_size(tmp_path, tiny, backend):
    exact = run(MeanColor, tiny, options(tmp_path))
    approx = run(MeanColor, tiny, options(tmp_path, search=backend))
    rep = approx.search_report
    assert exact.search_report == {} and rep["backend"] == backend
    assert 0 <= rep["recall"] <= 1 and rep["recall_queries"] == 4 and rep["index_bytes"] > 0
    option = {"ivfpq": {"nprobe": "1"}, "hnsw": {"ef_search": "300"}}[backend]
    other = run(MeanColor, tiny, options(tmp_path, search=backend, search_options=option))
    key, value = next(iter(option.items()))
    assert other.search_options == option and other.search_report["options"][key] == int(value)
    assert len({exact.run_id, approx.run_id, other.run_id}) == 3  # three records
    again = run(MeanColor, tiny, options(tmp_path, search=backend))
    assert again.timings["query"].cached and again.search_report == rep
    with pytest.raises(ConfigError, match="no option"):
        options(tmp_path, search=backend, search_options={"bogus": "1"})


def test_sweep_shares_stages(tmp_path, tiny):
    MeanColor.encoded = 0
    records = sweep(MeanColor, tiny, {"unused": ["1", "2", "3"]}, options(tmp_path))
    assert len(records) == 3 and len({r.config_hash for r in records}) == 3
    assert MeanColor.encoded == 16  # features depend on `grid` only: extracted once
    records = sweep(MeanColor, tiny, {"grid": ["1", "2"], "unused": ["0", "5"]},
                    options(tmp_path))
    assert len(records) == 4 and MeanColor.encoded == 32  # grid=1 is new, grid=2 cached
    sweep(MeanColor, tiny, {"unused": ["1", "2", "3"]}, options(tmp_path, overwrite=True))
    assert MeanColor.encoded == 48  # --overwrite recomputes the shared stage once, not 3x


def test_a_sweep_has_one_bar_for_its_points(tmp_path, tiny):
    import contextlib

    bars = {}

    class Recorder:
        @contextlib.contextmanager
        def task(self, description, total=None):
            steps = bars.setdefault(description, [])
            yield lambda n=1, status=None: steps.append((n, status))

    sweep(MeanColor, tiny, {"unused": ["1", "2"]}, options(tmp_path, progress=Recorder()))
    assert bars["mean-color: sweep points"] == [(1, "unused=1"), (1, "unused=2")]


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
    from irbench.datasets.registry import load_dataset

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


def test_queries_ranked_in_blocks_give_the_same_record(tmp_path, tiny, monkeypatch):
    """Rankings made and evaluated a block of queries at a time (stored memory-mapped)
    equal those of one block; the query stage's timing sums the blocks. (Scores may
    differ in the last bit: a matrix product sums in another order for another number
    of query rows.)"""
    whole = run(MeanColor, tiny, options(tmp_path / "a"))
    calls = []
    original = MeanColor.query

    def query(self, queries, k):
        calls.append(len(queries))
        return original(self, queries, k)

    monkeypatch.setattr(MeanColor, "query", query)
    blocks = run(MeanColor, tiny, options(tmp_path / "b", query_block=3))
    assert calls == [3, 1]
    assert blocks.metrics == whole.metrics
    assert blocks.ranking["indices"] == whole.ranking["indices"]
    np.testing.assert_allclose(blocks.ranking["scores"], whole.ranking["scores"], rtol=1e-6)
    assert blocks.timings["query"].wall_s > 0 and not blocks.timings["query"].cached
    again = run(MeanColor, tiny, options(tmp_path / "b", query_block=3))
    assert calls == [3, 1] and again.timings["query"].cached
    assert again.timings["query"].wall_s == blocks.timings["query"].wall_s
    with pytest.raises(ConfigError, match="query_block"):
        options(tmp_path, query_block=-1)


def test_the_block_size_keeps_a_block_of_rankings_within_its_budget():
    from irbench.harness.runner import RANKING_BLOCK_BYTES, query_block_size

    assert query_block_size(70, 5063) == 70  # Oxford5k: all queries at once
    r1m = query_block_size(70, 1_001_001)
    assert r1m * 12 * 1_001_001 <= RANKING_BLOCK_BYTES < (r1m + 1) * 12 * 1_001_001
    assert query_block_size(70, 10**9) == 1 and query_block_size(70, 5063, 4) == 4
