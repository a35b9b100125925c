import json

import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.harness.registry import METHODS
from tests.tiny import MeanColor, make_manifest


@pytest.fixture(scope="module", autouse=True)
def _toy_method():
    if "mean-color" not in METHODS.names():
        METHODS.register("mean-color", MeanColor, source="tests")


def invoke(*args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_commands():
    out = invoke("--help")
    assert out.exit_code == 0
    for cmd in ("run", "methods", "datasets", "leaderboard"):
        assert cmd in out.output


def test_methods_and_datasets_json():
    data = json.loads(invoke("methods", "--json").output)
    assert "mean-color" in {m["name"] for m in data["methods"]}
    data = json.loads(invoke("datasets", "--json").output)
    assert {"folder", "manifest"} <= {d["name"] for d in data["datasets"]}
    assert invoke("methods").exit_code == 0


def test_run_then_leaderboard(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    common = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q", *common)
    assert out.exit_code == 0, out.output
    assert "mAP" in out.output
    out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                 "--sweep", "grid=1,2", "--set", "unused=3", *common)
    assert out.exit_code == 0 and "grid=1, unused=3" in out.output
    assert out.output.count("unused=3") == 2  # grid=2 is the default: not in the label
    out = invoke("leaderboard", "--results-dir", str(tmp_path / "r"), "--format", "csv")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].startswith("method,config,kind,tiny")
    assert sum(line.startswith("mean-color") for line in lines) == 3
    assert "reported" in out.output
    out = invoke("leaderboard", "--results-dir", str(tmp_path / "r"), "-d", "tiny")
    assert out.exit_code == 0 and "mP@3" in out.output


@pytest.mark.parametrize("args,message", [
    (["run", "-m", "mean-colr", "-d", "folder:/nonexistent"], "Did you mean: mean-color"),
    (["run", "-m", "mean-color", "-d", "folder:/nonexistent/x"], "not a directory"),
    (["run", "-m", "mean-color", "-d", "nosuchset"], "unknown dataset"),
])
def test_expected_failures_are_one_clear_message(tmp_path, args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_set_key_lists_fields(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    result = CliRunner().invoke(cli, ["run", "-m", "mean-color", "-d", f"manifest:{manifest}",
                                      "--set", "gird=3", "--no-record", "-q"])
    assert result.exit_code == 2
    assert "Did you mean grid" in result.output and "unused" in result.output
    result = CliRunner().invoke(cli, ["run", "-m", "mean-color", "--set", "grid"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_unreadable_image_is_a_clear_error(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    (tmp_path / "d" / "db" / "c1_1.png").write_bytes(b"not an image")
    result = CliRunner().invoke(cli, ["run", "-m", "mean-color", "-d", f"manifest:{manifest}",
                                      "--no-record", "-q", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert "c1_1.png" in result.output and "decodable" in result.output
