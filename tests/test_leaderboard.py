import csv
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from irbench.cli import leaderboard as cli_lb
from irbench.cli.main import cli
from irbench.errors import UnknownNameError
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
           index_bytes: int | None = 2**20, seed: int = 0) -> RunRecord:
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
        index_bytes=index_bytes, seed=seed, topk=100, search="exact", database_size=100,
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


# -- sorting, column selection, narrow terminals, seeds ---------------------------------------

LONG = {"vocabulary_size": 64, "rootsift": False, "ratio_threshold": 0.8}
"""A config too long for a narrow terminal's config column."""


def _maps(table, column="mAP"):
    return [d.get(column) for d in table.data]


def test_sort_rows_best_first_and_text_ascending():
    runs = [record("a", [0.5, 0.6], index_bytes=3 * 2**20), record("b", [0.9, 0.8]),
            record("c", [0.1, 0.2], index_bytes=None)]
    t = lb.sort_rows(lb.detail(runs, "demo", ci=False, resamples=200), "mAP")
    assert [d["method"] for d in t.data] == ["b", "a", "c"]
    assert t.rows[0][t.columns.index("mAP")].startswith("85.00")
    by_index = lb.sort_rows(t, "index MiB")  # lower is better; no index last
    assert [d["method"] for d in by_index.data] == ["b", "a", "c"]
    by_name = lb.sort_rows(lb.sort_rows(t, "mAP"), "method")
    assert [r[0] for r in by_name.rows] == ["a", "b", "c"]
    # the best mark follows its row
    assert (by_name.data.index(next(d for d in by_name.data if d["method"] == "b")),
            "mAP") in lb.best_cells(by_name)


def test_reported_rows_sort_among_the_others_by_their_value():
    runs = [record("hi", [0.9, 0.9], dataset="oxford105k"),
            record("lo", [0.2, 0.2], dataset="oxford105k")]
    t = lb.sort_rows(lb.overview(runs), "oxford105k")
    values = [v for v in _maps(t, "oxford105k") if v is not None]
    assert values == [90.0, 40.4, 20.0]
    assert 1 in t.reported_rows and t.rows[1][t.columns.index("kind")] == "reported"
    assert [d["method"] for d in t.data[:3]] == ["hi", "drcnn", "lo"]


def test_unknown_sort_or_column_lists_the_columns():
    t = lb.detail(_runs(), "demo", ci=False, resamples=200)
    with pytest.raises(UnknownNameError, match=r"did you mean 'mAP'.*available: method, "
                                                r"config, .*mP@1"):
        lb.sort_rows(t, "mAp")
    with pytest.raises(UnknownNameError, match="no column 'nope'"):
        lb.select_columns(t, ["mAP", "nope"])


def test_select_columns_keeps_labels_and_each_columns_typed_values():
    t = lb.select_columns(lb.detail(_runs(), "demo", resamples=200), ["fit s", "mAP"])
    assert t.columns == ["method", "config", "fit s", "mAP"]
    assert all(len(row) == 4 for row in t.rows)
    header = lb.to_csv(t).splitlines()[0].split(",")
    assert {"mAP", "mAP ci_low", "mAP p_vs_best", "fit s", "fit cached", "run_id"} <= set(
        header)
    assert not {"kind", "mP@1", "query s", "query cached", "peak MiB"} & set(header)
    assert "seed" in header  # no `run` column shows it (every run used the defaults)
    tex = lb.to_latex(t)
    assert r"\begin{tabular}{llrr}" in tex  # labels left, numbers right, without `kind`


def test_sort_and_columns_apply_to_every_format(tmp_path):
    for r in _runs():
        write_record(r, tmp_path / "r")
    base = ["leaderboard", "--results-dir", str(tmp_path / "r"), "-d", "demo", "--no-ci",
            "--sort", "mAP", "--columns", "mAP,kind"]
    outputs = {}
    for fmt in ("table", "markdown", "csv", "json", "latex"):
        out = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*base, "--format", fmt])
        assert out.exit_code == 0, out.output
        assert "mP@1" not in out.output and "peak MiB" not in out.output, fmt
        outputs[fmt] = out.output
    order = [r["method"] for r in csv.DictReader(io.StringIO(outputs["csv"]))]
    assert order[:2] == ["best", "tied"] and order[-1] == "worse"
    assert [r["method"] for r in json.loads(outputs["json"])["rows"]] == order
    for fmt in ("table", "markdown", "latex"):
        text = outputs[fmt]
        assert text.index("best") < text.index("tied") < text.index("worse"), fmt
    bad = CliRunner().invoke(cli, [*base[:-2], "--columns", "mAP,nope"])
    assert bad.exit_code == 2
    assert "--columns" in bad.output and "available: method, config, kind" in bad.output
    bad = CliRunner().invoke(cli, [*base[:-4], "--sort", "nope"])
    assert bad.exit_code == 2 and "--sort" in bad.output and "mAP" in bad.output


def test_split_columns_keeps_dataset_options_together():
    assert cli_lb.split_columns("demo[a=1,b=2], oxford5k,") == ["demo[a=1,b=2]", "oxford5k"]


def _render(table, width: int) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), emoji=False,
                      markup=False)
    console.print(cli_lb.render(table, width))
    return console.export_text()


def test_narrow_terminal_moves_long_configs_to_a_legend():
    runs = [record("bow", [0.5, 0.7], config=LONG),
            record("bow", [0.5, 0.7], config=LONG, fingerprint="fp-2"),
            record("cop", [0.6, 0.9], config={"match_hamming_threshold": 22}),
            record("vlad", [0.4, 0.2])]
    label = lb.config_label(runs[0])
    t = lb.detail(runs, "demo", resamples=200)
    text = _render(t, 100)
    assert max(map(len, text.splitlines())) <= 100
    assert "…" not in text
    table, _, legend = text.partition("└")
    assert label not in table and table.count("[1]") == 2  # identical configs share [1]
    assert "[2]" in table and "default" in table  # short configs stay in their cell
    assert f"[1] {label}" in legend and "[2] match_hamming_threshold=22" in legend
    for i, row in enumerate(t.rows):  # every mAP cell whole, on one line
        if i not in t.reported_rows:
            assert row[t.columns.index("mAP")] in table
    assert "hidden at this width: fit s" in legend and "--columns" in legend
    wide = _render(t, 400)
    assert label in wide and "[1]" not in wide and "hidden" not in wide
    assert label in lb.to_markdown(t) and "[1]" not in lb.to_markdown(t)


def test_narrow_terminal_from_the_cli(tmp_path):
    runs = [record("bow", [0.5, 0.7], config=LONG), record("cop", [0.6, 0.9])]
    for r in runs:
        write_record(r, tmp_path / "r")
    args = ["leaderboard", "--results-dir", str(tmp_path / "r"), "-d", "demo"]
    out = CliRunner(env={"COLUMNS": "100"}).invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert f"[1] {lb.config_label(runs[0])}" in out.output and "…" not in out.output
    assert max(map(len, out.output.splitlines())) <= 100
    csv_out = CliRunner(env={"COLUMNS": "100"}).invoke(cli, [*args, "--format", "csv"])
    assert lb.config_label(runs[0]) in csv_out.output and "[1]" not in csv_out.output


def _seeded() -> list[RunRecord]:
    """bow with seeds 0, 1, 2 (mAP 50, 60, 90 %) and cop with one seed (55 %)."""
    return [*(record("bow", [m, m], config={"vocabulary_size": 64}, seed=s)
              for s, m in enumerate((0.5, 0.6, 0.9))), record("cop", [0.55, 0.55])]


def _spread() -> str:
    return f"66.67 ± {float(np.std([50.0, 60.0, 90.0], ddof=1)):.2f}"


def test_records_of_different_seeds_are_not_collapsed():
    runs = _seeded()
    assert len({r.run_id for r in runs}) == 4
    assert len(lb.latest_records(runs)) == 4
    newer = replace(runs[1], date="2027-01-01")
    kept = lb.latest_records([*runs, newer])
    assert len(kept) == 4 and newer in kept and runs[1] not in kept
    assert [len(g) for g in lb.seed_groups(runs)] == [3]


def test_overview_adds_a_mean_of_the_seeds():
    t = lb.overview(_seeded(), reported=False)
    kinds = [(d["method"], r[t.columns.index("run")], d["kind"]) for d, r in zip(
        t.data, t.rows, strict=True)]
    assert kinds == [("bow", "", "measured"), ("bow", "seed=1", "measured"),
                     ("bow", "seed=2", "measured"), ("bow", "", "mean of 3 seeds"),
                     ("cop", "", "measured")]
    std = float(np.std([50.0, 60.0, 90.0], ddof=1))
    assert t.rows[3][t.columns.index("demo")] == _spread()
    assert lb.SEEDS_NOTE in t.notes
    assert (3, "demo") not in lb.best_cells(t) and (2, "demo") in lb.best_cells(t)
    rows = json.loads(lb.to_json(t))["rows"]
    assert rows[3]["demo"] == pytest.approx(200 / 3) and rows[3]["demo std"] == pytest.approx(
        std)
    assert rows[3]["n_seeds"] == 3 and rows[3]["seed"] is None and len(rows[3]["run_ids"]) == 3
    assert rows[0]["n_seeds"] is None and rows[0]["demo std"] is None
    assert "demo std" not in lb.to_csv(lb.overview(_seeded()[3:], reported=False))


def test_detail_adds_a_mean_of_the_seeds():
    t = lb.detail(_seeded(), "demo", resamples=200)
    means = [i for i, d in enumerate(t.data) if d["kind"] == "mean of 3 seeds"]
    assert means == [3]  # after its seeds
    std = float(np.std([50.0, 60.0, 90.0], ddof=1))
    assert t.rows[3][t.columns.index("mAP")] == _spread()
    assert t.rows[3][t.columns.index("mP@1")] == ""
    row = next(r for r in csv.DictReader(io.StringIO(lb.to_csv(t)))
               if r["kind"] == "mean of 3 seeds")
    assert float(row["mAP"]) == pytest.approx(200 / 3)
    assert float(row["mAP std"]) == pytest.approx(std) and row["n_seeds"] == "3"
    assert row["seed"] == "" and row["run_id"] == ""
    ordered = lb.sort_rows(t, "mAP")  # the mean sorts by its value among the seeds
    assert [(d["method"], d["kind"], d["seed"]) for d in ordered.data] == [
        ("bow", "measured", 2), ("bow", "mean of 3 seeds", None), ("bow", "measured", 1),
        ("cop", "measured", 0), ("bow", "measured", 0)]
    assert lb.SEEDS_NOTE in t.notes
