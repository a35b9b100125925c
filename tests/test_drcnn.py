"""The deep region CNN: fusion, padding, detector fine-tuning, one extraction per sweep,
detection recall and the mAP-vs-K report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irbench.harness.registry import load_dataset
from irbench.harness.runner import RunOptions, sweep
from irbench.methods.cnn.detector import (
    DetectorSettings,
    build_detector,
    frozen_parameters,
    iou,
    pad_regions,
    train_detector,
)
from irbench.methods.cnn.drcnn import DrcnnMethod, detection_recall, fuse
from irbench.results.report import region_figures, write_report

FAST = dict(DrcnnMethod.contract_overrides)


def _unit(rows):
    a = np.asarray(rows, np.float32)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_fusion_definitions():
    r = np.stack([_unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                  _unit([[1, 1, 0], [1, 0, 0], [0, 0, 1]])])  # (2 images, 3 regions, 3)
    np.testing.assert_allclose(fuse(r, 1, "concat"), r[:, 0])  # concat K=1 = the region
    c2 = fuse(r, 2, "concat")
    assert c2.shape == (2, 6)
    np.testing.assert_allclose(c2[0], np.r_[r[0, 0], r[0, 1]] / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(fuse(r, 2, "mean")[0], _unit([[0.5, 0.5, 0]])[0], rtol=1e-6)
    np.testing.assert_allclose(fuse(r, 3, "max")[0], _unit([[1, 1, 1]])[0], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fuse(r, 3, "mean"), axis=1), 1, rtol=1e-6)
    with_cs = fuse(r, 1, "max", class_scores=np.array([[0.9, 0.1], [0.2, 0.8]]),
                   class_score_weight=1.0)
    assert with_cs.shape == (2, 5)
    np.testing.assert_allclose(np.linalg.norm(with_cs, axis=1), 1, rtol=1e-6)


def test_padding_rules():
    boxes = np.array([[1, 2, 10, 20], [0, 0, 5, 5]], np.float32)
    scores = np.array([0.9, 0.5], np.float32)
    b, s = pad_regions(boxes, scores, 4, "repeat_best", 100, 80)
    assert b.shape == (4, 4) and (b[2] == boxes[0]).all() and s.tolist()[2] == pytest.approx(0.9)
    b, s = pad_regions(boxes, scores, 3, "whole_image", 100, 80)
    assert b[2].tolist() == [0, 0, 100, 80] and s[2] == 0
    b, _ = pad_regions(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 2,
                       "repeat_best", 100, 80)
    assert b.tolist() == [[0, 0, 100, 80]] * 2
    b, _ = pad_regions(boxes, scores, 1, "repeat_best", 100, 80)
    assert b.tolist() == [boxes[0].tolist()]


def test_iou_and_recall():
    assert iou((0, 0, 10, 10), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
               ).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    from irbench.datasets.base import Image

    images = [Image("a", None, box=(0, 0, 10, 10)), Image("b", None, box=(0, 0, 10, 10)),
              Image("c", None)]
    boxes = np.array([[[20, 20, 30, 30], [0, 0, 10, 9]],
                      [[20, 20, 30, 30], [40, 40, 50, 50]],
                      [[0, 0, 1, 1], [0, 0, 1, 1]]], np.float32)
    assert detection_recall(images, boxes) == {"images": 2, "1": 0.0, "2": 0.5}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    return load_dataset("demo", cache_dir=tmp_path_factory.mktemp("demo"),
                        options={"objects": 3, "distractors": 1, "database_views": 2})


def test_detector_fine_tuning_lowers_losses_and_keeps_frozen_layers(tiny_demo):
    s = DetectorSettings(backbone="efficientnet-lite0", min_size=128, max_size=128,
                         rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                         box_batch_size_per_image=32, epochs=3, learning_rate=5e-3)
    frozen = frozen_parameters(build_detector(s))
    assert frozen and all("body.net._conv_stem" in k or "body.net._bn0" in k for k in frozen)
    model, history = train_detector(s, list(tiny_demo.train)[:6], {}, seed=0)
    total = [sum(v for k, v in h.items() if k != "epoch") for h in history]
    assert total[-1] < total[0]
    after = dict(model.named_parameters())
    for k, v in frozen.items():
        assert torch.equal(after[k].detach(), v), k


@pytest.mark.slow
def test_sweep_extracts_regions_once(tiny_demo, tmp_path):
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1)
    over = {**FAST, "max_regions": 3}
    records = sweep("drcnn", tiny_demo, {"regions": ["1", "2", "3"],
                                         "fusion": ["concat", "mean", "max"]}, opts, over)
    assert len(records) == 9
    computed = [e for r in records for e in r.cache_events
                if e["kind"].startswith("drcnn/") and not e["hit"]]
    assert sorted(e["kind"] for e in computed) == ["drcnn/detector", "drcnn/query_regions",
                                                    "drcnn/regions"]  # database + queries
    rec = records[0].method_info["detection_recall_iou50"]
    assert rec["images"] == 3 * 2 and set(rec) == {"images", "1", "2", "3"}
    figs = region_figures(records)
    assert len(figs) == 1 and set(figs[0].series) == {"concat", "mean", "max"}
    path, figures = write_report(records, tmp_path / "report")
    png = figures[0].path
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert "| concat |" in path.read_text()


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "resnet50-fpn"])
def test_detector_backbones_and_class_scores(backbone):
    from irbench.methods.cnn.detector import detect

    s = DetectorSettings(backbone=backbone, weights="none", classes=3, min_size=96,
                         max_size=96, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    model = build_detector(s).eval()
    image = (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8)
    out = detect(model, image, 4, with_class_scores=True)
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 4
    assert out["class_scores"].shape == (len(out["boxes"]), 3)
    assert (np.diff(out["scores"]) <= 0).all()


@pytest.mark.slow
def test_class_score_variant_end_to_end(tiny_demo, tmp_path):
    from irbench.harness.runner import run

    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=None, workers=1)
    record = run("drcnn", tiny_demo, opts, {**FAST, "class_scores": True, "regions": 1})
    n_classes = len({im.label for im in tiny_demo.train})
    assert record.method_info["feature_dim"] == 1280 + n_classes
    assert record.metrics["settings"][""]["map"] is not None


@pytest.mark.slow
def test_detector_resumes_from_its_checkpoint(tiny_demo, tmp_path):
    s = DetectorSettings(backbone="efficientnet-lite0", min_size=128, max_size=128,
                         rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                         box_batch_size_per_image=32, epochs=2)
    train = list(tiny_demo.train)[:4]
    straight, _ = train_detector(s, train, {}, seed=1)
    ck = tmp_path / "ck.pt"
    train_detector(s, train, {}, seed=1, checkpoint=ck, stop_after_epoch=1)
    resumed, history = train_detector(s, train, {}, seed=1, checkpoint=ck)
    assert [h["epoch"] for h in history] == [1, 2]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_vgg16_detector_head_is_imagenet_fc6_fc7_on_roi_pooling(tmp_path):
    """py-faster-rcnn's VGG16 detector: roi_pool5 (7x7 max pooling at 1/16) feeding
    VGG16's own fc6/fc7 (4,096-D), copied from the weights the backbone loads."""
    from torchvision.models import vgg16

    from irbench.methods.cnn.detector import RoIPool, describe_detector, detect, state_arrays

    torch.manual_seed(0)
    reference = vgg16().state_dict()  # stands in for ImageNet's: any state dict loads
    path = tmp_path / "vgg16.pt"
    torch.save(reference, path)
    s = DetectorSettings(backbone="vgg16", weights=str(path), classes=2, min_size=128,
                         max_size=160, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    model = build_detector(s).eval()
    head = model.roi_heads.box_head
    fc = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fc] == [(25088, 4096), (4096, 4096)]
    torch.testing.assert_close(fc[0].weight, reference["classifier.0.weight"])
    torch.testing.assert_close(fc[0].bias, reference["classifier.0.bias"])
    torch.testing.assert_close(fc[1].weight, reference["classifier.3.weight"])
    assert isinstance(model.roi_heads.box_roi_pool, RoIPool)
    assert model.roi_heads.box_predictor.cls_score.in_features == 4096
    image = (np.random.default_rng(0).random((128, 160, 3)) * 255).astype(np.uint8)
    out = detect(model, image, 3, with_class_scores=True)
    assert out["class_scores"].shape == (len(out["boxes"]), 2)
    info = describe_detector(state_arrays(model), "vgg16", 1)
    assert "fc6/fc7" in info["detector_box_head"]
    assert "box_head.1: 25088->4096" in info["detector_box_layers"]
    assert info["detector_parameters"]["box_head"] == 25088 * 4096 + 4096 + 4096 * 4096 + 4096
    # weights=none: the same 4,096-D head, randomly initialized (marked untrained)
    untrained = build_detector(DetectorSettings(backbone="vgg16", weights="none"),
                               pretrained=False)
    assert untrained.roi_heads.box_head[1].out_features == 4096
