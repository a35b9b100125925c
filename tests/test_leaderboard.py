import json

from irbench.harness.runner import RunOptions, run
from irbench.results import leaderboard as lb
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
    from click.testing import CliRunner

    from irbench.cli.main import cli
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
