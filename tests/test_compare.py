"""`bench compare`: two runs of one dataset, query by query (`irbench.results.compare`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.results.compare import IncomparableRunsError, compare_records, find_record
from irbench.results.stats import paired_test
from irbench.results.store import RunRecord, StageTiming, write_record


def record(method: str, ap: list[float | None], *, fingerprint: str = "fp-demo",
           dataset: str = "demo", query_ids: list[str] | None = None,
           settings: tuple[str, ...] = ("",)) -> RunRecord:
    """A run record of `method` whose every setting has the per-query APs `ap`."""
    valid = [v for v in ap if v is not None]
    metrics = {"map": sum(valid) / len(valid), "precision_at": {"1": 0.5}, "ap": list(ap),
               "queries_evaluated": len(valid),
               "queries_without_positives": len(ap) - len(valid)}
    if query_ids is not None:
        metrics["query_ids"] = query_ids
    return RunRecord(
        method=method, config={}, config_hash=f"h-{method}", config_changed={},
        dataset=dataset, dataset_version="1", dataset_options={},
        dataset_fingerprint=fingerprint, dataset_root=None, protocol={},
        metrics={"settings": {s: dict(metrics) for s in settings}},
        timings={"query": StageTiming(0.5, 0.5, 2**20)}, index_bytes=None, seed=0,
        topk=100, search="exact", database_size=100, method_code="x", date="2026-01-01")


def _pair(n: int = 40) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, size=n)
    b = a + rng.uniform(0.0, 0.2, size=n)
    b[3] = a[3] - 0.3  # the one query that B loses clearly
    return [float(x) for x in a], [float(x) for x in b]


@pytest.fixture
def results(tmp_path):
    a, b = _pair()
    ra, rb = record("alpha", a), record("beta", b)
    for r in (ra, rb):
        write_record(r, tmp_path / "r")
    return tmp_path / "r", ra, rb


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "160"}).invoke(cli, ["compare", *args])


def test_compare_prints_the_runs_the_difference_and_p_values(results):
    root, ra, rb = results
    out = invoke("--results-dir", str(root), ra.run_id, rb.run_id, "--resamples", "2000")
    assert out.exit_code == 0, out.output
    assert ra.run_id in out.output and rb.run_id in out.output
    expected = paired_test(ra.metrics["settings"][""]["ap"], rb.metrics["settings"][""]["ap"],
                           resamples=2000)
    assert f"{100 * expected.mean_difference:+.2f}" in out.output
    assert f"[{100 * expected.ci_low:+.2f}, {100 * expected.ci_high:+.2f}]" in out.output
    assert f"{expected.p_wilcoxon:.1e}" in out.output  # far below 0.001
    assert f"{expected.p_randomisation:.1e}" in out.output
    assert "p rand." in out.output and "p Wilcoxon" in out.output
    lost = out.output.split("lost most", 1)[1]
    assert lost.split()[lost.split().index("│") + 1] == "3"  # query 3, the only loss


def test_runs_are_record_files_ids_or_id_prefixes(results):
    root, ra, rb = results
    by_file = invoke("--results-dir", "/nonexistent", str(root / f"{ra.run_id}.json"),
                     str(root / f"{rb.run_id}.json"), "--format", "json")
    assert by_file.exit_code == 0, by_file.output
    by_prefix = invoke("--results-dir", str(root), "alpha__", "beta__", "--format", "json")
    assert json.loads(by_prefix.output) == json.loads(by_file.output)
    assert find_record(ra.run_id, root).run_id == ra.run_id
    missing = invoke("--results-dir", str(root), "alpah__demo", rb.run_id)
    assert missing.exit_code == 2
    assert "no run 'alpah__demo'" in missing.output and "did you mean" in missing.output


def test_json_has_numbers(results):
    root, ra, rb = results
    out = invoke("--results-dir", str(root), ra.run_id, rb.run_id, "--format", "json",
                 "--top", "2", "--resamples", "500", "--seed", "3")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert (doc["a"]["run_id"], doc["b"]["run_id"]) == (ra.run_id, rb.run_id)
    [s] = doc["settings"]
    a, b = _pair()
    assert s["difference"] == pytest.approx(100 * (np.mean(b) - np.mean(a)))
    assert s["map_a"] == pytest.approx(100 * np.mean(a))
    assert isinstance(s["p_randomisation"], float) and 0 < s["p_randomisation"] < 0.01
    assert isinstance(s["ci_low"], float) and s["ci_low"] < s["difference"] < s["ci_high"]
    assert s["queries"] == 40 and doc["resamples"] == 500
    assert len(s["gains"]) == 2 and [c["index"] for c in s["losses"]] == [3]
    gains = [c["difference"] for c in s["gains"]]
    assert gains == sorted(gains, reverse=True) and gains[0] == pytest.approx(
        100 * max(np.subtract(b, a)))
    again = json.loads(invoke("--results-dir", str(root), ra.run_id, rb.run_id, "--format",
                              "json", "--top", "2", "--resamples", "500", "--seed",
                              "3").output)
    assert again == doc  # seeded


def test_different_datasets_are_refused(tmp_path):
    a, b = _pair()
    ra = record("alpha", a)
    rb = record("beta", b, fingerprint="fp-other", dataset="holidays")
    for r in (ra, rb):
        write_record(r, tmp_path / "r")
    out = invoke("--results-dir", str(tmp_path / "r"), ra.run_id, rb.run_id)
    assert out.exit_code == 2
    assert "dataset demo" in out.output and "dataset holidays" in out.output
    assert ra.run_id in out.output and rb.run_id in out.output
    assert "Traceback" not in out.output


def test_different_query_counts_are_refused():
    a, b = _pair()
    with pytest.raises(IncomparableRunsError, match="A has 40 queries, B 39"):
        compare_records(record("alpha", a), record("beta", b[:-1]))


def test_settings_and_query_ids():
    a, b = _pair(6)
    ids = [f"q{i}" for i in range(6)]
    ra = record("alpha", a, settings=("easy", "hard"))
    rb = record("beta", b, settings=("hard", "medium"), query_ids=ids)
    comparison = compare_records(ra, rb, top=1, resamples=200)
    assert [s.setting for s in comparison.settings] == ["hard"]  # the one both have
    [hard] = comparison.settings
    assert len(hard.gains) == 1 and hard.gains[0].query_id == f"q{hard.gains[0].index}"
    assert hard.losses[0].index == 3
    with pytest.raises(IncomparableRunsError, match="'easy' is not in both runs"):
        compare_records(ra, rb, setting="easy")
    plain_a, plain_b = record("alpha", a), record("beta", b)
    out = compare_records(plain_a, plain_b, resamples=200)
    assert out.settings[0].gains[0].query_id is None  # records without query ids
    plain_a.query_ids = ids  # the record's own list of query ids
    out = compare_records(plain_a, plain_b, resamples=200)
    assert [c.query_id for c in out.settings[0].losses] == ["q3"]


def test_unknown_setting_exits_with_code_2(results):
    root, ra, rb = results
    out = invoke("--results-dir", str(root), ra.run_id, rb.run_id, "--setting", "hard")
    assert out.exit_code == 2 and "'hard' is not in both runs" in out.output
