"""`bench paper` and the figures of `bench report`: experiments, overrides, skipped
datasets, the reproduction report, sweeps with baselines, and figure files."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.errors import ConfigError
from irbench.harness import paper
from irbench.harness.paper import Experiment, experiments_for, run_paper, split_sets
from irbench.harness.runner import RunOptions
from irbench.results import figures, reproduction
from irbench.results.report import (
    ReportConflict,
    add_baselines,
    baseline_record,
    sweep_figures,
    write_report,
)
from irbench.results.reproduction import ExperimentResult, write_reproduction
from irbench.results.store import RunRecord, StageTiming
from tests.tiny import make_manifest

_ids = itertools.count()


def record(method, mAP, *, changed=(), fingerprint="fp", compute_s=0.5, **config):
    aps = [min(1.0, mAP / 100 + d) for d in (-0.1, 0.0, 0.1)]
    return RunRecord(
        method=method, config=config, config_hash=f"h{next(_ids)}",
        config_changed={k: config[k] for k in changed}, dataset="demo", dataset_version="1",
        dataset_options={}, dataset_fingerprint=fingerprint, dataset_root=None, protocol={},
        metrics={"settings": {"": {"map": sum(aps) / 3, "ap": aps}}},
        timings={"query": StageTiming(0.1, 0.1, 2**20, compute_s=compute_s)},
        index_bytes=3000, seed=0, topk=10, search="exact", database_size=10, method_code="x",
        date=f"2026-11-29T00:00:{next(_ids) % 60:02d}", query_ids=["q/a/0", "q/a/1", "q/b/0"])


def magic(path):
    return path.read_bytes()[:5]


def test_every_figure_is_written_as_png_svg_and_pdf_the_same_each_time(tmp_path):
    plot = figures.LinePlot("t", "x", "y", {"s": {1: figures.Point(10, 8, 12),
                                                  2: figures.Point(20, 15, 25)}},
                            {"base": 15.0})
    first = figures.draw_lines(plot, tmp_path / "a")
    assert [p.suffix for p in first] == [".png", ".svg", ".pdf"]
    assert magic(first[0])[:4] == b"\x89PNG" and magic(first[2]) == b"%PDF-"
    assert b"<svg" in first[1].read_bytes()[:500]
    again = figures.draw_lines(plot, tmp_path / "b")
    for a, b in zip(first[1:], again[1:], strict=True):  # no dates in SVG / PDF
        assert a.read_bytes() == b.read_bytes()
    bars = figures.BarChart("t", "mAP", [figures.Bar("a", figures.Point(5, 4, 6), 5.5)])
    grouped = figures.GroupedBars("t", ["c1", "c2"], {"x": [1, 2], "y": [2, 1]})
    eff = [figures.EfficiencyPoint("a", 50, 12.0, 4096), figures.EfficiencyPoint("b", 40, None,
                                                                                  100)]
    for paths in (figures.draw_bars(bars, tmp_path / "bars"),
                  figures.draw_grouped(grouped, tmp_path / "grouped"),
                  figures.draw_efficiency("t", eff, tmp_path / "eff")):
        assert all(p.stat().st_size > 500 for p in paths)


def test_efficiency_uses_the_computing_time_per_query_and_bytes_per_image():
    r = record("cnn", 50, compute_s=0.3)
    p = figures.efficiency_of("cnn", r)
    assert p.ms_per_query == pytest.approx(100.0) and p.bytes_per_image == 300
    assert figures.efficiency_of("cnn", record("cnn", 50, compute_s=None)).ms_per_query is None


def test_per_class_map_groups_queries_by_their_class():
    r = record("he-wgc", 50)
    ap = r.metrics["settings"][""]["ap"]
    out = figures.per_class_map(r, {"q/a/0": "a", "q/a/1": "a", "q/b/0": "b"})
    assert out == pytest.approx({"a": 50 * (ap[0] + ap[1]), "b": 100 * ap[2]})


def test_any_sweep_any_series_and_the_baselines_of_the_same_data_and_backbone():
    recs = [record("cnn", v, pooling=p, image_size=s, backbone="b1")
            for (p, s), v in {("fc7", 224): 40, ("fc7", 320): 45, ("gem", 224): 50,
                              ("gem", 320): 55}.items()]
    (fig,) = sweep_figures(recs, method="cnn", x="image_size", series="pooling")
    assert fig.series == {"fc7": {224: pytest.approx(40), 320: pytest.approx(45)},
                          "gem": {224: pytest.approx(50), 320: pytest.approx(55)}}
    assert fig.points["gem"][320].low < 55 < fig.points["gem"][320].high
    single = sweep_figures(recs, method="cnn", x="image_size", series=None)
    assert {tuple(f.series) for f in single} == {("cnn",)} and len(single) == 2
    sweep = [record("drcnn", 30 + k, regions=k, fusion="concat", backbone="b1")
             for k in (1, 2)]
    base = [record("fcnn", 60, backbone="b1", changed=("backbone",)),
            record("fcnn", 90, backbone="b2", changed=("backbone",)),   # other backbone
            record("fcnn", 95, backbone="b1", fingerprint="other"),     # other data
            record("cnn", 70, backbone="b1", pooling="gem", changed=("pooling",))]
    (fig,) = sweep_figures(sweep + base)
    assert baseline_record(sweep + base, "fcnn", "fp", "b1") is base[0]
    add_baselines(fig, sweep + base, ("cnn", "fcnn"))
    assert fig.baselines == {"fcnn": pytest.approx(60), "cnn [pooling=gem]": pytest.approx(70)}


def test_a_report_never_replaces_another(tmp_path):
    recs = [record("drcnn", 30 + k, regions=k, fusion="concat") for k in (1, 2)]
    path, figs = write_report(recs, tmp_path / "r")
    assert len(figs) == 1 and all(p.is_file() for p in figs[0].paths)
    assert json.loads((tmp_path / "r" / ".irbench-report").read_text())["method"] == "drcnn"
    write_report(recs, tmp_path / "r")  # the same report again: allowed
    with pytest.raises(ReportConflict, match="another report"):
        write_report(recs, tmp_path / "r", method="cnn")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my notes")
    with pytest.raises(ReportConflict, match="not a report"):
        write_report(recs, tmp_path / "mine")
    assert (tmp_path / "mine" / "README.md").read_text() == "my notes"


def test_the_paper_experiments_per_dataset():
    oxford = {e.name for e in experiments_for("oxford105k")}
    instre = {e.name for e in experiments_for("instre-s")}
    assert "vlad-intra" in oxford and "vlad-intra" not in instre
    assert {"spatial-coding", "geometric-coding", "cop", "he-wgc",
            "drcnn + class scores"} <= instre - oxford
    assert {"cnn (cropped query)", "cnn (full query)", "fcnn", "drcnn"} <= oxford & instre
    assert len(experiments_for("demo")) == len(paper.EXPERIMENTS)
    (dr,) = [e for e in paper.EXPERIMENTS if e.name == "drcnn"]
    assert list(dr.sweeps["regions"]) == ["1", "2", "3", "4", "5"]
    assert list(dr.sweeps["fusion"]) == ["concat", "mean", "max"]


def test_set_goes_to_every_method_with_the_field_or_to_one():
    exps = experiments_for("demo")
    out = split_sets({"backbone": "efficientnet-lite0", "drcnn.min_size": "240"}, exps)
    assert out["cnn"] == {"backbone": "efficientnet-lite0"} == out["fcnn"]
    assert out["drcnn"] == {"backbone": "efficientnet-lite0", "min_size": "240"}
    assert out["he-wgc"] == {}
    with pytest.raises(ConfigError, match="no method of these experiments"):
        split_sets({"nonsense": "1"}, exps)
    with pytest.raises(ConfigError, match="has no field"):
        split_sets({"cnn.min_size": "1"}, exps)
    with pytest.raises(ConfigError, match="not a method"):
        split_sets({"bow.k": "1"}, exps)


def test_the_numbers_the_paper_reports_are_matched_to_their_runs():
    rep = reproduction._reported
    at = {"regions": 2, "fusion": "concat", "class_scores": False}
    assert rep("oxford105k", "drcnn", at).map_percent == 40.4
    assert rep("oxford105k", "drcnn", {**at, "regions": 1}) is None
    k1 = {**at, "regions": 1}
    assert rep("instre-s", "drcnn", k1).map_percent == 28.6
    assert rep("instre-s", "drcnn", {**k1, "class_scores": True}).map_percent == 32.2
    assert rep("instre-s", "drcnn", at) is None  # Sec. 5 states no K: compared at K = 1
    assert rep("demo", "drcnn", at).map_percent == 40.4  # shown as other data
    assert rep("oxford105k", "cnn", at) is None


def test_paper_runs_what_is_installed_and_reports_failures(tmp_path, monkeypatch, toy_method):
    monkeypatch.setattr(paper, "EXPERIMENTS", (
        Experiment("colour", "mean-color", ("oxford",), ("fig3",)),
        Experiment("colour grid 1", "mean-color", ("oxford",), ("fig3",), {"grid": "1"}),
        Experiment("broken", "mean-color", ("oxford",), ("fig3",), {"grid": "0"}),
    ))
    spec = f"manifest:{make_manifest(tmp_path / 'data')}"
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1,
                      data_root=tmp_path / "nothing")
    done = run_paper([spec, "oxford105k"], opts)
    assert "bench data fetch oxford105k" in done.skipped["oxford105k"]
    by_name = {o.experiment.name: o for o in done.outcomes}
    assert len(by_name["colour"].records) == 1 and by_name["broken"].error
    assert "grid" in by_name["broken"].error
    results = [ExperimentResult(o.experiment.name, o.experiment.method, o.experiment.figures,
                                o.dataset, o.records, o.error) for o in done.outcomes]
    path = write_reproduction(results, tmp_path / "out", skipped=done.skipped, labels={},
                              command="bench paper", machine="test")
    text = path.read_text()
    assert "oxford105k: skipped" in text and "bench data fetch oxford105k" in text
    assert "| broken | fig3 | | failed:" in text
    assert "| colour | fig3 | — |" in text and "[" in text.split("| colour |")[1]
    assert "| colour grid 1 | fig3 | grid=1 |" in text  # what differs, row by row
    assert (tmp_path / "out" / "methods__tiny.png").is_file()
    assert "## The paper's claims" in text


def test_bench_paper_skips_an_absent_dataset_with_its_fetch_command(tmp_path):
    out = CliRunner().invoke(cli, ["paper", "-d", "instre-s", "-q", "--data-root",
                                   str(tmp_path / "none"), "--results-dir",
                                   str(tmp_path / "r"), "-o", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "rep" / "README.md").read_text()
    assert "instre-s: skipped" in text and "bench data fetch" in text
    assert "skipped instre-s" in out.output
    other = CliRunner().invoke(cli, ["report", "--results-dir", str(tmp_path / "r"), "-o",
                                     str(tmp_path / "rep")])  # another report, same folder
    assert other.exit_code == 2 and "another report" in other.output
    assert (tmp_path / "rep" / "README.md").read_text() == text
