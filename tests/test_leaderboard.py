import csv
import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.harness.runner import RunOptions, run
from irbench.results import leaderboard as lb
from irbench.results.stats import bootstrap_interval
from irbench.results.store import RunRecord, StageTiming, write_record
from tests.tiny import MeanColor, make_manifest


def _records(tmp_path):
    ds = f"manifest:{make_manifest(tmp_path / 'data')}"
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1)
    return [run(MeanColor, ds, opts), run(MeanColor, ds, opts, {"grid": "1"})]


def test_overview_rows_and_reported(tmp_path):
    recs = _records(tmp_path)
    t = lb.overview(recs)
    assert "tiny" in t.columns and "oxford105k" in t.columns
    assert lb.INSTRE_S_PRESUMED in t.columns and "oxford5k" not in t.columns
    measured = [r for i, r in enumerate(t.rows) if i not in t.reported_rows]
    assert {r[1] for r in measured} == {"default", "grid=1"}
    reported = [t.rows[i] for i in t.reported_rows]
    assert "run" not in t.columns  # every run used the default options
    kinds = {r[t.columns.index("config")]: r[t.columns.index("kind")] for r in reported}
    assert kinds["feature_backbone=zf"] == "reported (not runnable here)"
    assert {k for c, k in kinds.items() if c != "feature_backbone=zf"} == {"reported"}
    values = {r[t.columns.index(lb.INSTRE_S_PRESUMED)] for r in reported}
    assert {"28.6", "26.9", "32.2"} <= values
    assert any(r[t.columns.index("oxford105k")] == "40.4" for r in reported)
    cell = measured[0][t.columns.index("tiny")]
    assert float(cell) == round(100 * recs[0].primary_map(), 2) or float(cell) == round(
        100 * recs[1].primary_map(), 2)
    assert not lb.overview(recs, reported=False).reported_rows


def test_detail_and_exports(tmp_path):
    recs = _records(tmp_path)
    t = lb.detail(recs, "tiny")
    assert {"mAP", "mP@1", "mP@3", "index s", "peak MiB"} <= set(t.columns)
    assert len(t.rows) == 2
    md = lb.to_markdown(t)
    assert md.count("\n|") >= 3
    assert lb.to_csv(t).splitlines()[0].startswith("method,config")
    assert len(json.loads(lb.to_json(t))["rows"]) == 2


def test_latest_record_wins(tmp_path):
    recs = _records(tmp_path)
    old = recs[0]
    newer = type(old)(**{**old.__dict__, "date": "9999-01-01", "metrics": old.metrics})
    assert lb.latest_records([old, newer])[0] is newer


def test_detail_accepts_the_run_spec_of_a_folder(tmp_path):
    from tests.tiny import make_folder

    folder = make_folder(tmp_path / "my photos")
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1)
    rec = run(MeanColor, f"folder:{folder}", opts)
    assert rec.dataset == "folder:my photos"
    for spec in (f"folder:{folder}", f"folder:{folder}/", "folder:my photos"):
        assert len(lb.detail([rec], spec).rows) == 1
    assert not lb.detail([rec], "folder:other").rows
    result = CliRunner().invoke(cli, ["leaderboard", "-d", "demo",
                                      "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "no run records for dataset 'demo'" in result.output
    assert "folder:my photos" in result.output


# -- uncertainty and typed exports ------------------------------------------------------------

def record(method: str, ap: list[float | None], *, fingerprint: str = "fp-demo",
           dataset: str = "demo", config: dict | None = None, cached: bool = False,
           index_bytes: int | None = 2**20) -> RunRecord:
    """A run record of `method` with the per-query APs `ap` (one unnamed setting)."""
    valid = [v for v in ap if v is not None]
    metrics = {"map": sum(valid) / len(valid), "precision_at": {"1": 0.5, "5": None},
               "ap": list(ap), "queries_evaluated": len(valid),
               "queries_without_positives": len(ap) - len(valid)}
    config = config or {}
    return RunRecord(
        method=method, config=config, config_hash=f"h-{method}-{sorted(config.items())}",
        config_changed=config, dataset=dataset, dataset_version="1", dataset_options={},
        dataset_fingerprint=fingerprint, dataset_root=None, protocol={},
        metrics={"settings": {"": metrics}},
        timings={"fit": StageTiming(1.5, 1.0, 2**21),
                 "query": StageTiming(0.25, 0.2, 3 * 2**20, cached=cached)},
        index_bytes=index_bytes, seed=0, topk=100, search="exact", database_size=100,
        method_code="x", date="2026-01-01")


def _runs() -> list[RunRecord]:
    """best; tied (the best's APs, a little lower on a few queries); worse (far lower);
    other (other data, lower than best: never tested against it)."""
    rng = np.random.default_rng(0)
    best = rng.uniform(0.5, 1.0, size=60)
    tied = best.copy()
    tied[:3] -= 0.02
    worse = best - rng.uniform(0.1, 0.3, size=60)
    other = best - 0.2
    return [record("best", [*best, None]), record("tied", [*tied, None], cached=True),
            record("worse", [*worse, None], config={"vocabulary_size": 64}),
            record("other", list(other), fingerprint="fp-other")]


def _cell(table, method, column="mAP"):
    i = next(i for i, d in enumerate(table.data) if d["method"] == method)
    return table.rows[i][table.columns.index(column)]


def test_detail_shows_bootstrap_interval_half_widths():
    runs = _runs()
    t = lb.detail(runs, "demo", resamples=2000)
    low, high = bootstrap_interval(runs[0].metrics["settings"][""]["ap"], resamples=2000)
    half = 100.0 * (high - low) / 2
    assert _cell(t, "best") == f"{100 * runs[0].primary_map():.2f} ±{half:.1f}"
    assert re.fullmatch(r"\d+\.\d\d ±\d\.\d( ≈)?", _cell(t, "worse"))
    assert any("bootstrap interval" in n for n in t.notes)
    plain = lb.detail(runs, "demo", ci=False, resamples=2000)
    assert "±" not in _cell(plain, "best") and not any("bootstrap" in n for n in plain.notes)
    assert _cell(plain, "best") == f"{100 * runs[0].primary_map():.2f}"


def test_rows_not_significantly_worse_than_the_best_are_marked():
    runs = _runs()
    t = lb.detail(runs, "demo", resamples=2000)
    assert "data" in t.columns  # two fingerprints of one dataset name
    assert _cell(t, "tied").endswith(lb.SAME_AS_BEST)
    assert not _cell(t, "worse").endswith(lb.SAME_AS_BEST)
    assert not _cell(t, "best").endswith(lb.SAME_AS_BEST)
    assert not _cell(t, "other").endswith(lb.SAME_AS_BEST)  # the best of its own data
    by_method = {d["method"]: d for d in t.data}
    assert by_method["best"]["mAP best"] and by_method["other"]["mAP best"]
    assert by_method["tied"]["mAP p_vs_best"] >= 0.05 > by_method["worse"]["mAP p_vs_best"]
    assert lb.SIGNIFICANCE_NOTE in t.notes
    assert "Holm-corrected" in lb.SIGNIFICANCE_NOTE and "α = 0.05" in lb.SIGNIFICANCE_NOTE
    alone = lb.detail(runs[:1], "demo", resamples=2000)
    assert lb.SIGNIFICANCE_NOTE not in alone.notes


def test_the_significance_mark_is_holm_corrected(monkeypatch):
    runs = _runs()[:3]
    # raw p-values 0.03 and 0.04: both below 0.05, but Holm makes them 0.06 and 0.06
    fake = iter([0.03, 0.04])
    monkeypatch.setattr(lb, "randomisation_p", lambda d, **kw: next(fake))
    t = lb.detail(runs, "demo", resamples=100)
    assert _cell(t, "tied").endswith(lb.SAME_AS_BEST)
    assert _cell(t, "worse").endswith(lb.SAME_AS_BEST)
    assert [d["mAP p_vs_best"] for d in t.data] == [None, pytest.approx(0.06),
                                                    pytest.approx(0.06)]


def test_reported_rows_are_never_tested():
    runs = [record(m, r.metrics["settings"][""]["ap"], dataset="oxford105k")
            for m, r in zip(("a", "b"), _runs()[:2], strict=True)]
    t = lb.detail(runs, "oxford105k", resamples=500)
    [i] = t.reported_rows
    assert t.rows[i][t.columns.index("mAP")] == "40.4"
    assert t.data[i].get("mAP best") is None and t.data[i].get("mAP p_vs_best") is None
    assert _cell(t, "b").endswith(lb.SAME_AS_BEST)


def test_json_exports_numbers(tmp_path):
    runs = _runs()
    t = lb.detail(runs, "demo", resamples=500)
    doc = json.loads(lb.to_json(t))
    row = next(r for r in doc["rows"] if r["method"] == "tied")
    assert row["mAP"] == pytest.approx(100 * runs[1].primary_map())
    assert row["mAP ci_low"] < row["mAP"] < row["mAP ci_high"]
    assert row["mP@1"] == 50.0 and row["mP@5"] is None
    assert row["queries"] == 60 and row["fit s"] == 1.5 and row["fit cached"] is False
    assert row["query s"] == 0.25 and row["query cached"] is True
    assert row["peak MiB"] == 3.0 and row["index MiB"] == 1.0
    assert (row["run_id"], row["seed"], row["search"], row["depth"], row["stale"]) == (
        runs[1].run_id, 0, "exact", None, False)
    reported = json.loads(lb.to_json(lb.overview(runs)))
    rows = {r["config"]: r for r in reported["rows"]}
    assert rows["backbone=vgg16"][lb.INSTRE_S_PRESUMED] == 28.6
    assert rows["backbone=vgg16"]["run_ids"] == [] and rows["backbone=vgg16"]["seed"] is None
    measured = next(r for r in reported["rows"] if r["method"] == "best")
    assert isinstance(measured["demo@fp-dem"], float) and measured["run_ids"] == [
        runs[0].run_id]
    write_record(runs[0], tmp_path / "r")
    out = CliRunner().invoke(cli, ["leaderboard", "--results-dir", str(tmp_path / "r"),
                                   "-d", "demo", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows"][0]["mAP"] == pytest.approx(
        100 * runs[0].primary_map())


def test_csv_exports_numbers_and_cached_apart(tmp_path):
    runs = _runs()
    for r in runs:
        write_record(r, tmp_path / "r")
    out = CliRunner().invoke(cli, ["leaderboard", "--results-dir", str(tmp_path / "r"),
                                   "-d", "demo", "--format", "csv", "--no-ci"])
    assert out.exit_code == 0, out.output
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert "(cached)" not in out.output and "±" not in out.output and "mAP ci_low" not in rows[
        "best"]
    assert float(rows["best"]["mAP"]) == pytest.approx(100 * runs[0].primary_map())
    assert float(rows["tied"]["query s"]) == 0.25 and rows["tied"]["query cached"] == "true"
    assert rows["best"]["query cached"] == "false" and rows["best"]["mP@5"] == ""
    assert rows["tied"]["run_id"] == runs[1].run_id and rows["tied"]["depth"] == ""
    assert rows["worse"]["config"] == "vocabulary_size=64"
    overview = list(csv.reader(io.StringIO(lb.to_csv(lb.overview(runs)))))
    header = overview[0]
    assert header[:3] == ["method", "config", "kind"] and "run_ids" in header
    best = next(r for r in overview if r[0] == "best")
    assert float(best[header.index("demo@fp-dem")]) == pytest.approx(
        100 * runs[0].primary_map())


def test_latex_export():
    runs = _runs()
    t = lb.detail(runs, "demo", resamples=500)
    tex = lb.to_latex(t)
    lines = tex.splitlines()
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\caption{demo: metrics in \%, times in wall seconds}" in tex
    row = next(line for line in lines if line.startswith("best &"))
    cells = row.removesuffix(r" \\").split(" & ")
    mAP = cells[t.columns.index("mAP")]
    assert mAP.startswith(r"\textbf{") and r"$\pm$" in mAP  # the best of its data
    worse = next(line for line in lines if line.startswith("worse &"))
    assert "vocabulary\\_size=64" in worse and r"\textbf" not in worse.split(" & ")[
        t.columns.index("mAP")]
    tied = next(line for line in lines if line.startswith("tied &")).split(" & ")
    assert r"$\approx$" in tied[t.columns.index("mAP")]
    # a stage read from the cache is never the fastest
    assert r"\textbf" not in tied[t.columns.index("query s")]
    assert not any(ch in tex for ch in "±≈α—")
    assert r"$\alpha$ = 0.05" in tex
    assert lb.latex_escape("a_b & 50% #1 {x} ~ ^ \\") == (
        r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}")


def test_latex_from_the_cli(tmp_path):
    for r in _runs():
        write_record(r, tmp_path / "r")
    out = CliRunner().invoke(cli, ["leaderboard", "--results-dir", str(tmp_path / "r"),
                                   "--format", "latex"])
    assert out.exit_code == 0, out.output
    assert r"\begin{tabular}" in out.output and r"\bottomrule" in out.output
    row = next(line for line in out.output.splitlines() if line.startswith("best &"))
    assert r"\textbf{" in row
