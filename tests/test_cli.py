import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.core.parallel import parallel_map
from irbench.results.store import read_records
from tests.conftest import REPO
from tests.test_parallel import (
    kill_leftovers,
    pids_recorded,
    record_and_sleep,
    wait_dead,
    wait_for,
)
from tests.tiny import MeanColor, make_manifest

pytestmark = pytest.mark.usefixtures("toy_method")


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
    assert "c1_1.png" in result.output and "not an image" in result.output


# -- signals and exit codes ---------------------------------------------------------------------

class SlowColor(MeanColor):
    """`mean-color` whose encode first runs two long worker processes (signal tests)."""

    name = "slow-color"

    def encode(self, images):
        folder = Path(os.environ["IRBENCH_TEST_SLOW_DIR"])
        try:
            parallel_map(record_and_sleep, [str(folder / "w0"), str(folder / "w1")], workers=2,
                         chunksize=1)
        finally:
            (folder / "finally-ran").touch()
        return super().encode(images)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


RUN_SLOW = """
from irbench.cli.main import main
from irbench.methods.registry import METHODS
from tests.test_cli import SlowColor
METHODS.register("slow-color", SlowColor, source="tests")
main()
"""


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_ends_the_run_promptly(tmp_path, sig, code, line):
    manifest = make_manifest(tmp_path / "d", classes=2, per_class=2)
    env = dict(os.environ, PYTHONPATH=str(REPO), IRBENCH_TEST_SLOW_DIR=str(tmp_path))
    args = ["run", "-m", "slow-color", "-d", f"manifest:{manifest}", "-q", "--no-record",
            "--cache-dir", str(tmp_path / "c")]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        # as from a terminal: a shell's background job (a CI script started with `&`)
        # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
        child = subprocess.Popen([sys.executable, "-c", RUN_SLOW, *args], cwd=REPO, env=env,
                                 stdout=out, stderr=err, start_new_session=True,
                                 preexec_fn=_default_sigint)
    pids: list[int] = []
    try:
        wait_for(lambda: len(pids_recorded(tmp_path, "w")) == 2, 120, "two workers to start")
        pids = pids_recorded(tmp_path, "w")
        if sig == signal.SIGINT:
            os.killpg(child.pid, sig)  # Ctrl-C reaches the whole foreground process group
        else:
            child.send_signal(sig)
        assert child.wait(timeout=30) == code
        stderr = (tmp_path / "err").read_text()
        assert line in stderr.splitlines(), stderr
        assert "Aborted!" not in stderr and "Traceback" not in stderr, stderr
        assert (tmp_path / "finally-ran").exists()
        assert wait_dead(pids, 5.0) == []
    finally:
        if child.poll() is None:
            child.kill()
        kill_leftovers(pids)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, EOFError])
def test_interrupt_and_eof_are_never_aborted(exc):
    @click.command("raise-it")
    def raise_it() -> None:
        raise exc

    cli.add_command(raise_it)
    try:
        result = CliRunner().invoke(cli, ["raise-it"])
    finally:
        cli.commands.pop("raise-it")
    assert "Aborted!" not in result.output
    if exc is KeyboardInterrupt:
        assert result.exit_code == 130
        assert result.output.strip() == "interrupted"
    else:  # a bug, shown as one
        assert result.exit_code == 1
        assert isinstance(result.exception, RuntimeError)
        assert isinstance(result.exception.__cause__, EOFError)


# -- IRBENCH_WORKERS and --workers ---------------------------------------------------------------

def test_bad_irbench_workers_does_not_break_help():
    env = dict(os.environ, IRBENCH_WORKERS="abc")
    for args in (["--help"], ["run", "--help"]):
        done = subprocess.run([sys.executable, "-m", "irbench.cli.main", *args], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_bad_irbench_workers_is_one_line_when_used(tmp_path, value):
    manifest = make_manifest(tmp_path / "d")
    result = CliRunner(env={"IRBENCH_WORKERS": value}).invoke(
        cli, ["run", "-m", "mean-color", "-d", f"manifest:{manifest}", "--no-record", "-q"])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: IRBENCH_WORKERS='{value}'")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["0", "-2"])
def test_workers_below_one_is_a_usage_error(tmp_path, value):
    manifest = make_manifest(tmp_path / "d")
    result = CliRunner().invoke(cli, ["run", "-m", "mean-color", "-d", f"manifest:{manifest}",
                                      "--no-record", "-q", "--workers", value])
    assert result.exit_code == 2
    assert "--workers" in result.output


def test_reports_of_other_datasets_go_to_their_own_folders():
    from irbench.cli.report import report_name

    names = {report_name("drcnn", None), report_name("drcnn", "demo"),
             report_name("drcnn", "demo[object_scale=small]"), report_name("cnn", "demo")}
    assert len(names) == 4 and "drcnn__demo_object_scale_small" in names


def test_several_seeds_give_one_record_each_and_their_spread(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    common = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                 "--seeds", "0,1,2", *common)
    assert out.exit_code == 0, out.output
    assert "across seeds" in out.output and " ± " in out.output
    records, problems = read_records(tmp_path / "r")
    assert not problems and sorted(r.seed for r in records) == [0, 1, 2]
    from irbench.results.stats import across_seeds

    spread = across_seeds([100 * r.metrics["settings"][""]["map"] for r in records])
    assert f"{spread.mean:.2f} ± {spread.std:.2f}" in out.output and spread.runs == 3
    for bad, message in (("1,1", "distinct"), ("a,b", "integers")):
        out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                     "--seeds", bad, *common)
        assert out.exit_code == 2 and message in out.output
    out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                 "--seed", "3", "--seeds", "0,1", *common)
    assert out.exit_code == 2 and "either --seed or --seeds" in out.output


def test_methods_name_shows_one_method_field_by_field():
    out = invoke("methods", "drcnn")
    assert out.exit_code == 0 and "detector_iterations" in out.output
    assert "concat | mean | max" in out.output and "he-wgc" not in out.output
    out = invoke("methods", "drcnn", "--json")
    data = json.loads(out.output)
    assert [m["name"] for m in data["methods"]] == ["drcnn"]
    out = invoke("methods", "drcn")
    assert out.exit_code == 2 and "Did you mean: drcnn" in out.output
    out = invoke("datasets", "demo")
    assert out.exit_code == 0 and "object_scale" in out.output


def test_leaderboard_shows_only_the_methods_asked_for(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    common = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    assert invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                  *common).exit_code == 0
    out = invoke("leaderboard", "--results-dir", str(tmp_path / "r"), "--format", "csv",
                 "-m", "mean-color")
    assert out.exit_code == 0 and "mean-color" in out.output
    assert "reported" not in out.output  # the paper's rows are DR-CNN's
    out = invoke("leaderboard", "--results-dir", str(tmp_path / "r"), "-m", "drcnn")
    assert out.exit_code == 1 and "no run records of drcnn" in out.output
    assert "methods with records: mean-color" in out.output
