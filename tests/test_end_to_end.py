"""The main job as a new user runs it: `bench run --method bow --dataset demo`, twice."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.datasets import load


@pytest.mark.slow
def test_bow_on_demo_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    first = runner.invoke(cli, ["run", "--method", "bow", "--dataset", "demo", "-q"],
                          catch_exceptions=False)
    assert first.exit_code == 0, first.output
    files = list(Path(os.environ["IRBENCH_RESULTS"]).glob("*.json"))
    assert len(files) == 1
    rec1 = json.loads(files[0].read_text())
    second = runner.invoke(cli, ["run", "--method", "bow", "--dataset", "demo", "-q"],
                           catch_exceptions=False)
    assert second.exit_code == 0
    rec2 = json.loads(files[0].read_text())
    assert rec2["metrics"] == rec1["metrics"]
    assert all(rec2["timings"][s]["cached"] for s in ("fit", "index", "query"))
    ds = load("demo")
    chance = np.mean([len(t["positives"]) / len(ds.database) for t in ds.ground_truth])
    assert rec1["metrics"]["settings"][""]["map"] > 3 * chance
    assert rec1["method_info"]["vocabulary_trained_on"] == "train"
    board = runner.invoke(cli, ["leaderboard", "--format", "csv"])
    assert "bow,default,measured" in board.output


@pytest.mark.slow
def test_bow_on_a_folder_of_photographs(tmp_path):
    """`folder:DIR` on the demo's photographic views, laid out one subfolder per object."""
    from tests.tiny import demo_photo_folder

    root = demo_photo_folder(tmp_path / "photos", objects=6)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["run", "-m", "bow", "-d", f"folder:{root}", "-q", "--results-dir",
              str(tmp_path / "r")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    m = rec["metrics"]["settings"][""]
    assert m["queries_evaluated"] == 6 * 7
    assert rec["protocol"]["exclude_query"]
    assert m["map"] > 3 * (6 / 41)


@pytest.mark.slow
def test_bow_on_oxford5k_laid_out_as_the_readme_says(tmp_path, monkeypatch):
    """Acceptance: the official Oxford ground truth + placeholder images under the data
    root, then `bench run --method bow --dataset oxford5k` end to end."""
    from tests.conftest import OFFICIAL
    from tests.placeholders import make_oxford

    if not OFFICIAL.is_dir():
        pytest.skip("official fixtures not found")
    root = make_oxford(tmp_path / "data", distinct=True, size=1024)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    # Paris6k (the default vocabulary set for Oxford) is not laid out: train on the split
    result = runner.invoke(cli, ["run", "--method", "bow", "--dataset", "oxford5k",
                                 "--data-root", str(root), "-q",
                                 "--set", "vocabulary_source=train"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [record] = [json.loads(f.read_text())
                for f in Path(os.environ["IRBENCH_RESULTS"]).glob("*.json")]
    assert record["dataset"] == "oxford5k"
    assert record["method_info"]["vocabulary_trained_on"] == "train"
    assert record["metrics"]["settings"][""]["queries_evaluated"] == 55
    assert record["protocol"]["crop_query"] is True
