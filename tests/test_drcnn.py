"""The deep region CNN: fusion, padding, detector fine-tuning, one extraction per sweep,
detection recall and the mAP-vs-K report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irbench.datasets.registry import load_dataset
from irbench.harness.runner import RunOptions, sweep
from irbench.methods.cnn.detector import (
    DetectorConfig,
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


SMALL_DETECTOR = dict(backbone="efficientnet-lite0", min_size=128, max_size=128,
                      anchor_sizes=(32, 64, 128), rpn_pre_nms_top_n_train=100,
                      rpn_post_nms_top_n_train=50, box_batch_size_per_image=32)


def test_detector_defaults_are_py_faster_rcnn_s():
    """The values read in py-faster-rcnn's config.py, solver and scripts."""
    d = DetectorConfig()
    assert (d.backbone, d.min_size, d.max_size, d.anchor_sizes) == ("vgg16", 600, 1000,
                                                                    (128, 256, 512))
    assert (d.rpn_pre_nms_top_n_train, d.rpn_post_nms_top_n_train) == (12000, 2000)
    assert (d.rpn_pre_nms_top_n_test, d.rpn_post_nms_top_n_test) == (6000, 300)
    assert (d.box_batch_size_per_image, d.box_nms_thresh) == (128, 0.3)
    assert (d.detector_iterations, d.detector_lr_step, d.detector_learning_rate,
            d.detector_images_per_iteration) == (70000, 50000, 1e-3, 2)
    assert d.detector_classes == "per_label" and d.frozen_stages == 1
    model = build_detector(d, 11, pretrained=False)
    rpn, heads = model.rpn, model.roi_heads
    assert rpn.anchor_generator.num_anchors_per_location() == [9]
    assert (rpn._pre_nms_top_n, rpn._post_nms_top_n) == (
        {"training": 12000, "testing": 6000}, {"training": 2000, "testing": 300})
    assert rpn.fg_bg_sampler.batch_size_per_image == 256
    assert heads.fg_bg_sampler.batch_size_per_image == 128
    assert heads.fg_bg_sampler.positive_fraction == 0.25
    assert heads.box_predictor.cls_score.out_features == 12  # 11 landmarks + background


def test_step_schedule_and_loss_curve_points():
    from irbench.methods.cnn.detector import history_window, learning_rate

    d = DetectorConfig()
    assert learning_rate(d, 0) == learning_rate(d, 49999) == 1e-3
    assert learning_rate(d, 50000) == pytest.approx(1e-4)
    assert learning_rate(DetectorConfig(detector_lr_step=0), 69999) == 1e-3
    assert history_window(70000) == 1400 and history_window(7) == 1


def test_convergence_rule():
    from irbench.methods.cnn.detector import convergence_problems

    falling = [{"loss": v} for v in np.linspace(2.0, 0.4, 20)]
    flat = [{"loss": v} for v in [2.0, 2.0] + [1.9] * 16 + [1.8, 1.8]]
    assert convergence_problems(falling, {"images": 10, "1": 0.8, "5": 1.0}) == []
    low = convergence_problems(falling, {"images": 10, "1": 0.1, "5": 0.3})
    assert len(low) == 1 and "30% of its own 10 train boxes" in low[0]
    slow = convergence_problems(flat, {"images": 10, "1": 0.8, "5": 1.0})
    assert len(slow) == 1 and "from 2.000 to 1.800" in slow[0]


@pytest.mark.slow  # 12-15 s: builds and trains full detectors
def test_detector_fine_tuning_lowers_losses_and_keeps_frozen_layers(tiny_demo):
    s = DetectorConfig(**SMALL_DETECTOR, detector_iterations=9,
                       detector_learning_rate=5e-3, detector_lr_step=6)
    frozen = frozen_parameters(build_detector(s, 1))
    assert frozen and all("body.net._conv_stem" in k or "body.net._bn0" in k for k in frozen)
    model, history = train_detector(s, list(tiny_demo.train)[:6], {}, seed=0)
    assert [h["iteration"] for h in history] == list(range(1, 10))
    assert [h["lr"] for h in history] == [5e-3] * 6 + [pytest.approx(5e-4)] * 3
    total = [h["loss"] for h in history]
    assert np.mean(total[-3:]) < np.mean(total[:3])
    after = dict(model.named_parameters())
    for k, v in frozen.items():
        assert torch.equal(after[k].detach(), v), k


@pytest.mark.slow
def test_sweep_extracts_regions_once(tiny_demo, tmp_path, caplog, monkeypatch):
    from irbench.methods.cnn import drcnn

    monkeypatch.setattr(drcnn, "_WARNED", set())  # warned once per detector and process
    opts = RunOptions(cache_dir=tmp_path / "c", results_dir=tmp_path / "r", workers=1)
    over = {**FAST, "max_regions": 3}
    with caplog.at_level("WARNING", logger="irbench"):
        records = sweep("drcnn", tiny_demo, {"regions": ["1", "2", "3"],
                                             "fusion": ["concat", "mean", "max"]}, opts, over)
    assert len(records) == 9
    info = records[0].method_info
    assert [h["iteration"] for h in info["detector_history"]] == [1, 2, 3, 4]
    assert info["detector_classes"] == len({im.label for im in tiny_demo.train})
    assert set(info["detector_train_recall"]) == {"images", "1", "5"}
    assert info["detector_converged"] == (not info["detector_convergence_problems"])
    assert info["detector_converged"] == ("did not converge" not in caplog.text)
    assert caplog.text.count("did not converge") == len(info["detector_convergence_problems"])
    assert set(info["detector_trainable_parameters"]) == {"backbone", "rpn", "box_head",
                                                          "box_predictor"}
    ious = info["database_best_box_iou"]
    assert len(ious) == len(tiny_demo.database) and all(
        (v is None) == (im.box is None) for v, im in zip(ious, tiny_demo.database, strict=True))
    assert len(info["query_best_box_iou"]) == len(tiny_demo.queries)
    recall_1 = np.mean([v >= 0.5 for v in ious if v is not None])
    assert recall_1 == pytest.approx(info["detection_recall_iou50"]["1"], abs=1e-4)
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

    s = DetectorConfig(backbone=backbone, weights="none", min_size=96, max_size=96,
                       anchor_sizes=(32, 64), rpn_pre_nms_top_n_test=50,
                       rpn_post_nms_top_n_test=20)
    model = build_detector(s, 3).eval()
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
def test_detector_resumes_from_its_checkpoint(tiny_demo, tmp_path, monkeypatch):
    from irbench.methods.cnn import detector

    monkeypatch.setattr(detector, "CHECKPOINTS", 2)
    s = DetectorConfig(**SMALL_DETECTOR, detector_iterations=4, detector_lr_step=3)
    train = list(tiny_demo.train)[:4]
    straight, curve = train_detector(s, train, {}, seed=1)
    ck = tmp_path / "ck.pt"
    train_detector(s, train, {}, seed=1, checkpoint=ck, stop_after=2)  # interrupted
    resumed, history = train_detector(s, train, {}, seed=1, checkpoint=ck)
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in curve])
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow  # 12-15 s: builds and trains full detectors
def test_vgg16_detector_head_is_imagenet_fc6_fc7_on_roi_pooling(tmp_path):
    """py-faster-rcnn's VGG16 detector: roi_pool5 (7x7 max pooling at 1/16) feeding
    VGG16's own fc6/fc7 (4,096-D), copied from the weights the backbone loads."""
    from torchvision.models import vgg16

    from irbench.methods.cnn.detector import RoIPool, describe_detector, detect

    torch.manual_seed(0)
    reference = vgg16().state_dict()  # stands in for ImageNet's: any state dict loads
    path = tmp_path / "vgg16.pt"
    torch.save(reference, path)
    s = DetectorConfig(backbone="vgg16", weights=str(path), min_size=128, max_size=160,
                       rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    model = build_detector(s, 2).eval()
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
    info = describe_detector(model, "vgg16", 1)
    assert "fc6/fc7" in info["detector_box_head"]
    assert "box_head.1: 25088->4096" in info["detector_box_layers"]
    assert info["detector_parameters"]["box_head"] == 25088 * 4096 + 4096 + 4096 * 4096 + 4096
    trainable = info["detector_trainable_parameters"]
    conv1 = 3 * 64 * 9 + 64 + 64 * 64 * 9 + 64  # conv1_1, conv1_2: frozen (the paper)
    assert trainable["backbone"] == info["detector_parameters"]["backbone"] - conv1
    assert trainable["box_head"] == info["detector_parameters"]["box_head"]
    # weights=none: the same 4,096-D head, randomly initialized (marked untrained)
    untrained = build_detector(DetectorConfig(backbone="vgg16", weights="none"), 1,
                               pretrained=False)
    assert untrained.roi_heads.box_head[1].out_features == 4096
