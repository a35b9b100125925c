"""Numbers that cannot be wrong silently: every reproduction of the trust issue, kept.

Each test reproduces one way the harness used to print a wrong number while saying all
went well (or lose a result), and checks the number is now right or the failure is one
clear line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.core import cache as cache_module
from irbench.datasets.signature import ImageSigner
from irbench.errors import BadImagesError, ConfigError, DatasetError
from irbench.harness.runner import RunOptions, run, sweep
from irbench.results import leaderboard as lb
from irbench.results.store import read_records
from tests.tiny import MeanColor, make_folder, make_image, make_manifest

pytestmark = pytest.mark.usefixtures("toy_method")


def options(tmp_path: Path, cache: str = "cache", **kw) -> RunOptions:
    return RunOptions(cache_dir=tmp_path / cache, results_dir=tmp_path / "results",
                      workers=1, **kw)


def fresh(tmp_path: Path, dataset: str, name: str, **kw):
    """The same run in an empty cache: the number the cached run must give."""
    return run(MeanColor, dataset, RunOptions(cache_dir=tmp_path / f"fresh-{name}",
                                              results_dir=None, workers=1), kw or None)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def _map(record) -> float:
    return record.metrics["settings"][""]["map"]


def _permuted_manifest(root: Path, name: str) -> Path:
    """A manifest named like `make_manifest`'s (name "tiny", version "1") over other
    images: every database image shows the next class's colour."""
    path = make_manifest(root)
    for c in range(4):
        for v in range(3):
            make_image(root / f"db/c{c}_{v}.png", (c + 1) % 4, v)
    return path


# -- 1. identity by content -------------------------------------------------------------------


def test_same_name_and_version_other_root_is_not_served_from_the_cache(tmp_path):
    m1 = make_manifest(tmp_path / "one")
    m2 = _permuted_manifest(tmp_path / "two", "tiny")
    first = run(MeanColor, f"manifest:{m1}", options(tmp_path))
    second = run(MeanColor, f"manifest:{m2}", options(tmp_path))
    assert not second.timings["query"].cached
    assert _map(second) == _map(fresh(tmp_path, f"manifest:{m2}", "m2")) != _map(first)
    assert first.run_id != second.run_id
    assert len(list((tmp_path / "results").glob("*.json"))) == 2


def test_a_dataset_whose_images_are_gone_is_an_error_not_a_cached_number(tmp_path):
    manifest = make_manifest(tmp_path / "data")
    run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    shutil.rmtree(tmp_path / "data" / "db")
    with pytest.raises(BadImagesError) as err:
        run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    assert len(err.value.problems) == 12 and "file not found" in str(err.value)
    result = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
                    "--cache-dir", str(tmp_path / "cache"), "--no-record")
    one_line_error(result, "12 images cannot be read", "c0_0.png")


def _same_size_replacement(target: Path, source: Path) -> None:
    """Overwrite `target` with the picture in `source`, padded to `target`'s byte size
    (bytes after the image's end are ignored by decoders)."""
    data = source.read_bytes()
    size = target.stat().st_size
    if len(data) > size:  # pad the other one instead: same effect, sizes equal
        target.write_bytes(target.read_bytes() + b"\0" * (len(data) - size))
        size = len(data)
    target.write_bytes(data + b"\0" * (size - len(data)))


def test_a_folder_image_replaced_by_another_of_the_same_size_is_recomputed(tmp_path):
    root = make_folder(tmp_path / "photos")
    spec = f"folder:{root}"
    before = run(MeanColor, spec, options(tmp_path))
    target, other = root / "object0" / "view0.png", root / "object2" / "view1.png"
    _same_size_replacement(target, other)
    after = run(MeanColor, spec, options(tmp_path))
    assert not after.timings["query"].cached
    assert _map(after) == _map(fresh(tmp_path, spec, "folder")) != _map(before)


def test_features_are_keyed_by_the_network_that_made_them(tmp_path):
    """F-CNN's bug, on a toy: two datasets of one name and version whose train splits
    differ train two networks; the second must not get the first network's features."""
    from tests.tiny import TrainedColor

    # one folder, one database, two manifests "tiny" version "1" with other train splits
    m1 = make_manifest(tmp_path / "d", train_classes=(0, 1))
    m2 = make_manifest(tmp_path / "d", train_classes=(2, 3), filename="tiny2.json")
    run(TrainedColor, f"manifest:{m1}", options(tmp_path))
    second = run(TrainedColor, f"manifest:{m2}", options(tmp_path))
    hits = [(e["kind"], e["hit"]) for e in second.cache_events]
    assert ("trained-color/finetune", False) in hits
    assert ("trained-color/features", True) not in hits
    expected = run(TrainedColor, f"manifest:{m2}",
                   RunOptions(cache_dir=tmp_path / "fresh", results_dir=None, workers=1))
    assert second.metrics == expected.metrics


def test_fingerprint_covers_root_images_and_options(tmp_path):
    root = make_folder(tmp_path / "a" / "base")
    copy = tmp_path / "b" / "base"
    shutil.copytree(root, copy)
    from irbench.datasets import load

    signer = ImageSigner()
    a, b = load(f"folder:{root}"), load(f"folder:{copy}")
    assert a.name == b.name and a.version == b.version
    assert a.fingerprint(signer) != b.fingerprint(signer)  # the root is part of it
    again = load(f"folder:{root}", min_images_per_class=1)
    assert again.fingerprint(signer) != a.fingerprint(signer)  # so are the options


def test_signatures_are_memoized_and_verify_rehashes(tmp_path, monkeypatch):
    from irbench.datasets import signature

    root = make_folder(tmp_path / "photos")
    paths = sorted(root.rglob("*.png"))
    memo = tmp_path / "memo.sqlite"
    first = ImageSigner(memo).sign(paths)
    assert len(set(first.values())) == len(paths)
    hashed = []
    real = signature._hash_file
    monkeypatch.setattr(signature, "_hash_file", lambda p: hashed.append(p) or real(p))
    assert ImageSigner(memo).sign(paths) == first and not hashed  # one stat each, no read
    assert ImageSigner(memo, verify=True).sign(paths) == first and len(hashed) == len(paths)
    target = paths[0]
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a change the status would show...
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...but mtime is put back
    seen = ImageSigner(memo).sign(paths)[os.path.abspath(target)]
    assert seen != first[os.path.abspath(target)]  # ctime still moved: rehashed
    assert ImageSigner(memo, verify=True).sign(paths)[os.path.abspath(target)] == seen
    # a damaged memo is discarded with a warning, not an error
    memo.write_bytes(b"not a database" * 100)
    assert ImageSigner(memo).sign(paths) == ImageSigner().sign(paths)



def test_a_locked_memo_is_skipped_not_deleted(tmp_path, monkeypatch, caplog):
    """Another process holding the memo's write lock past the timeout costs speed only:
    signatures come from the files, and the memo (in use elsewhere) is not deleted."""
    import sqlite3

    from irbench.datasets import signature

    root = make_folder(tmp_path / "photos")
    paths = sorted(root.rglob("*.png"))
    memo = tmp_path / "memo.sqlite"
    first = ImageSigner(memo).sign(paths)
    holder = sqlite3.connect(memo)
    holder.execute("BEGIN EXCLUSIVE")  # another process, mid-write
    real_connect = sqlite3.connect
    monkeypatch.setattr(signature.sqlite3, "connect",
                        lambda path, timeout: real_connect(path, timeout=0.05))
    try:
        with caplog.at_level("WARNING", logger="irbench.datasets.signature"):
            assert ImageSigner(memo).sign(paths) == first
    finally:
        holder.rollback()
        holder.close()
    assert "unavailable" in caplog.text and "damaged" not in caplog.text
    assert memo.is_file()
    monkeypatch.setattr(signature.sqlite3, "connect", real_connect)
    hashed = []
    real = signature._hash_file
    monkeypatch.setattr(signature, "_hash_file", lambda p: hashed.append(p) or real(p))
    assert ImageSigner(memo).sign(paths) == first and not hashed  # the memo still serves

def test_bad_files_are_all_listed_before_anything_runs(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    (tmp_path / "d" / "db" / "c0_1.png").write_bytes(b"")
    (tmp_path / "d" / "db" / "c2_2.png").write_text("hello")
    (tmp_path / "d" / "q" / "c3.png").unlink()
    half = tmp_path / "d" / "db" / "c1_0.png"
    half.write_bytes(half.read_bytes()[:200])  # a truncated download
    jpeg = tmp_path / "d" / "db" / "c3_0.png"  # a truncated JPEG (by its bytes)
    import cv2

    ok, data = cv2.imencode(".jpg", np.full((32, 32, 3), 99, np.uint8))
    jpeg.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(BadImagesError) as err:
        run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    problems = dict(err.value.problems)
    assert len(problems) == 5
    for words in ("empty file", "not an image", "file not found", "truncated PNG",
                  "truncated JPEG"):
        assert words in str(err.value)
    assert not (tmp_path / "cache" / "artifacts").exists()  # nothing was computed


# -- 2. a cache that heals itself -----------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _wrong_values(path: Path) -> None:
    array = np.load(path)
    if array.size:
        np.save(path, np.ascontiguousarray(array[::-1]))  # a valid file, other values


def _extended(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 8)


def _removed(path: Path) -> None:
    path.unlink()


DAMAGE = {
    "truncated": ("*.npy", _truncate),
    "extended": ("*.npy", _extended),
    "bit-flipped": ("*.npy", _flip),
    "empty": ("*.npy", _empty),
    "array-file-removed": ("*.npy", _removed),
    "meta-is-a-list": ("meta.json", lambda p: p.write_text("[]")),
    "meta-edited": ("meta.json", lambda p: p.write_text(
        p.read_text().replace('"timings"', '"timings "', 1))),
    "valid-npy-wrong-values": ("*.npy", _wrong_values),
}


def _artifact_of(path: Path) -> Path:
    """The artifact folder a file belongs to (arrays are in its arrays/ folder)."""
    return path.parent.parent if path.suffix == ".npy" else path.parent


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_artifacts_are_recomputed_with_one_warning(tmp_path, caplog, damage):
    manifest = make_manifest(tmp_path / "d")
    spec = f"manifest:{manifest}"
    good = run(MeanColor, spec, options(tmp_path))
    filename, hurt = DAMAGE[damage]
    files = sorted((tmp_path / "cache" / "artifacts").rglob(filename))
    # features of the database, of the queries, the rankings
    assert len({_artifact_of(p) for p in files}) == 3
    damaged = set()
    for path in files:
        before = path.read_bytes()
        hurt(path)
        if not path.exists() or path.read_bytes() != before:
            damaged.add(_artifact_of(path))
    assert damaged  # meta-edited touches the rankings' meta only
    caplog.set_level(logging.WARNING, logger="irbench")
    again = run(MeanColor, spec, options(tmp_path))
    assert again.metrics == good.metrics
    assert not again.timings["query"].cached
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(damaged)  # one warning per damaged artifact, naming it
    assert {p for p in damaged if any(str(p) in w for w in warnings)} == damaged
    third = run(MeanColor, spec, options(tmp_path))  # healed: everything reused
    assert third.timings["query"].cached and third.metrics == good.metrics


def test_a_damaged_artifact_never_reaches_the_cli_as_aborted(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    args = ["run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q", "--no-record",
            "--cache-dir", str(tmp_path / "cache")]
    assert invoke(*args).exit_code == 0
    for path in (tmp_path / "cache" / "artifacts").rglob("*.npy"):
        _empty(path)  # an empty .npy has no header
    result = invoke(*args)
    assert result.exit_code == 0 and "Aborted" not in result.output, result.output


def test_a_damaged_training_checkpoint_restarts_training(tmp_path, caplog):
    import torch

    from irbench.methods.cnn.checkpoint import resume

    ck = tmp_path / "last.pt"
    ck.write_bytes(b"PK\x03\x04 not a checkpoint")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="irbench"):
        assert resume(ck, model, optimizer) == ([], 0)
    assert not ck.exists() and "damaged" in caplog.text


# -- 3. records that never collide ----------------------------------------------------------


def test_records_of_different_runs_never_overwrite_each_other(tmp_path):
    """Two people sharing a cache and a results folder: different data (same folder
    name), seeds, search backends and depths all keep their own record and number."""
    a = make_folder(tmp_path / "A" / "base")
    b = make_folder(tmp_path / "B" / "base", classes=3, per_class=4)
    runs = []
    for data in (a, b):
        for seed in (0, 1):
            for search in ("exact", "faiss"):
                runs.append(run(MeanColor, f"folder:{data}",
                                options(tmp_path, seed=seed, search=search)))
    runs.append(run(MeanColor, f"folder:{a}", options(tmp_path, topk=2)))
    files = sorted((tmp_path / "results").glob("*.json"))
    assert len(files) == len(runs) == 9
    assert len({r.run_id for r in runs}) == 9
    records, problems = read_records(tmp_path / "results")
    assert not problems
    for r in runs:  # every record holds its own number
        again = next(x for x in records if x.run_id == r.run_id)
        assert again.metrics == r.metrics
    rerun = run(MeanColor, f"folder:{a}", options(tmp_path, seed=1))
    assert len(list((tmp_path / "results").glob("*.json"))) == 9  # replaced its own
    assert rerun.run_id in {r.run_id for r in runs}

    table = lb.overview(records, reported=False)
    columns = [c for c in table.columns if c.startswith("folder:base")]
    assert len(columns) == 2 and all("@" in c for c in columns)
    labels = {row[table.columns.index("run")] for row in table.rows}
    assert {"", "seed=1", "search=faiss", "seed=1, search=faiss", "top-2"} <= labels
    kind = table.columns.index("kind")
    per_run = [row for row in table.rows if not row[kind].startswith("mean of")]
    cells = [c for row in per_run for c in row[kind + 1:] if c]
    assert len(cells) == 9  # one cell per run: nothing overwritten (means are added rows)
    means = [row for row in table.rows if row[kind].startswith("mean of")]
    assert len(means) == 2 and all(row[kind] == "mean of 2 seeds" for row in means)
    assert all(len([c for c in row[kind + 1:] if " ± " in c]) == 2 for row in means)
    assert any(n.startswith(columns[0]) for n in table.notes)


def test_precision_beyond_the_ranking_depth_is_not_reported(tmp_path):
    manifest = make_manifest(tmp_path / "d")  # mP@1 and mP@3
    shallow = run(MeanColor, f"manifest:{manifest}", options(tmp_path, topk=2))
    m = shallow.metrics["settings"][""]
    assert m["precision_at"]["3"] is None and m["precision_at"]["1"] is not None
    table = lb.detail([shallow], "tiny")
    row = table.rows[0]
    assert row[table.columns.index("mP@3")] == "—" and row[table.columns.index("run")] == "top-2"


def test_a_record_of_changed_method_code_is_stale(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    record = run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    from irbench.methods.base import code_identity

    assert record.method_code == code_identity(MeanColor)
    assert lb.kind_label(record, {"mean-color": record.method_code}) == "measured"
    assert lb.kind_label(record, {"mean-color": "0" * 64}) == "stale"
    table = lb.overview([record], reported=False, current_code={"mean-color": "0" * 64})
    assert table.rows[0][table.columns.index("kind")] == "stale"
    assert any("stale" in n for n in table.notes)


def test_leaderboard_skips_unreadable_records_with_a_warning(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    record = run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    results = tmp_path / "results"
    (results / "a-list.json").write_text("[1, 2]")
    doc = json.loads((results / f"{record.run_id}.json").read_text())
    doc["metrics"]["settings"][""]["map"] = "57.96"
    (results / "typed.json").write_text(json.dumps(doc))
    (results / "broken.json").write_text("{")
    result = CliRunner().invoke(cli, ["leaderboard", "--results-dir", str(results),
                                      "--format", "csv", "--no-reported"])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: skipped") == 3
    assert "a-list.json" in result.output and "map is not a number" in result.output
    rows = [ln for ln in result.output.splitlines() if ln.startswith("mean-color")]
    assert len(rows) == 1


# -- 6 and 7. one-line errors, checked before any long computation ----------------------------


def test_run_option_errors_are_one_line_and_early(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    base = ["run", "-m", "mean-color", "-d", f"manifest:{manifest}", "-q",
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "r")]
    one_line_error(invoke(*base, "--sweep", "grid="), "--sweep grid= lists no values")
    one_line_error(invoke(*base, "--device", "bogus"), "not a torch device")
    import torch

    if not torch.cuda.is_available():
        one_line_error(invoke(*base, "--device", "cuda"), "no CUDA GPU")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(invoke(*base[:-2], "--results-dir", str(blocker / "r")),
                   "results folder", "not writable", "--results-dir")
    one_line_error(invoke(*base[:6], "--cache-dir", str(blocker / "c")),
                   "cache folder", "not writable")
    one_line_error(invoke("report", "-o", str(blocker / "out"), "--results-dir",
                          str(tmp_path / "r")), "report folder", "not writable")
    assert not (tmp_path / "cache" / "artifacts").exists()  # no work was started
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_sweep_values_are_all_checked_before_the_first_point(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    with pytest.raises(ConfigError, match="grid"):
        sweep(MeanColor, f"manifest:{manifest}", {"grid": ["2", "-1"]}, options(tmp_path))
    assert not (tmp_path / "results").exists()
    result = invoke("run", "-m", "bow", "-d", f"manifest:{manifest}", "-q",
                    "--sweep", "vocabulary_size=32,-1", "--results-dir", str(tmp_path / "r"))
    one_line_error(result, "vocabulary_size", "minimum")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--set", "max_keypoints=-1"], "max_keypoints"),
    (["--set", "kmeans_iterations=0"], "kmeans_iterations"),
    (["--set", "signature_bits=65", "-m", "he-wgc"], "signature_bits"),
    (["--set", "contrast_threshold=nan"], "NaN"),
])
def test_out_of_range_config_values_are_refused(tmp_path, args, fragment):
    cmd = ["run", "-m", "bow", "-d", "folder:/nonexistent", "-q", *args]
    if "-m" in args:
        cmd = ["run", "-d", "folder:/nonexistent", "-q", *args]
    one_line_error(invoke(*cmd), fragment)


def test_dataset_option_bounds(tmp_path):
    root = make_folder(tmp_path / "photos")
    one_line_error(invoke("run", "-m", "mean-color", "-d", f"folder:{root}", "-q",
                          "--dataset-option", "min_images_per_class=-1"),
                   "min_images_per_class")


def test_a_dataset_without_queries_or_database_is_an_error():
    import dataclasses

    from irbench.datasets import load

    ds = load("demo", objects=2, distractors=0, train_views=0)
    no_queries = dataclasses.replace(ds, queries=(), ground_truth=())
    with pytest.raises(DatasetError, match="no queries"):
        run(MeanColor, no_queries, RunOptions(results_dir=None, use_cache=False, workers=1))


# -- 8. files respect the umask ----------------------------------------------------------------


def test_files_respect_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "UMASK", 0o027)
    manifest = make_manifest(tmp_path / "d")
    record = run(MeanColor, f"manifest:{manifest}", options(tmp_path))
    files = [tmp_path / "results" / f"{record.run_id}.json",
             *(tmp_path / "cache" / "artifacts").rglob("*.npz"),
             *(tmp_path / "cache" / "artifacts").rglob("meta.json")]
    assert len(files) >= 4
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}
    folders = [p.parent for p in files[1:]]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o750}


@pytest.mark.slow
def test_two_people_sharing_a_cache_and_results_folder(tmp_path):
    """Two `bench run`s at the same time on one cache and one results folder (same
    images, other seeds: they race to write the shared SIFT features) both finish,
    keep their own record, and a later rerun reuses everything with the same numbers."""
    import subprocess
    import sys

    env = {**os.environ, "IRBENCH_CACHE": str(tmp_path / "cache"),
           "IRBENCH_RESULTS": str(tmp_path / "results")}
    base = [sys.executable, "-m", "irbench.cli.main", "run", "-m", "bow", "-d", "demo", "-q",
            "--dataset-option", "objects=6", "--set", "vocabulary_size=256"]
    procs = [subprocess.Popen([*base, "--seed", str(seed)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for seed in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    if [p.returncode for p in procs] != [0, 0]:  # the whole output: a race is rare
        pytest.fail("\n".join(f"--- seed {seed}: exit {p.returncode}\n{out}" for seed, p, out
                              in zip((0, 1), procs, outputs, strict=True)), pytrace=False)
    records, problems = read_records(tmp_path / "results")
    assert not problems and sorted(r.seed for r in records) == [0, 1]
    again = subprocess.run([*base, "--seed", "0", "--no-record"], env=env, text=True,
                           capture_output=True, timeout=600)
    assert again.returncode == 0 and "all" in again.stdout, again.stdout + again.stderr
    first = next(r for r in records if r.seed == 0)
    assert f"{100 * _map(first):.2f}" in again.stdout


@pytest.mark.slow
def test_fcnn_features_follow_the_fine_tuned_network(tmp_path):
    """F-CNN on two manifests of one name and version over one database whose train
    splits differ: the second fine-tunes its own network and describes the database with
    it (before, it reused the first network's features)."""
    m1 = make_manifest(tmp_path / "d", train_classes=(0, 1))
    m2 = make_manifest(tmp_path / "d", train_classes=(2, 3), filename="tiny2.json")
    config = {"backbone": "efficientnet-lite0", "epochs": 1, "image_size": 64,
              "train_batch_size": 4}
    run("fcnn", f"manifest:{m1}", options(tmp_path), config)
    second = run("fcnn", f"manifest:{m2}", options(tmp_path), config)
    events = [(e["kind"], e["hit"]) for e in second.cache_events]
    assert ("fcnn/finetune", False) in events
    assert ("fcnn/features", True) not in events
    fresh_run = run("fcnn", f"manifest:{m2}", RunOptions(
        cache_dir=tmp_path / "fresh", results_dir=None, workers=1), config)
    assert second.metrics == fresh_run.metrics
