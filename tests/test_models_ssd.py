"""SSD detectors: protocol shapes, label shift, loss, torchvision checkpoint loading, ONNX export."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from detkd.errors import CheckpointError
from detkd.models.detector import DecodeConfig
from detkd.models.factory import build_model
from detkd.models.ssd import (
    SSDDetector,
    load_torchvision_ssd,
    ssd300_vgg16,
    ssd_cpu,
    torchvision_coco_class_names,
)
from detkd.models.ssd_vgg import ssd_anchor_generator, ssd_feature_sizes

CLASSES = ["cat", "dog", "person"]
IMGSZ = 96


@pytest.fixture
def tiny() -> SSDDetector:
    torch.manual_seed(0)
    return ssd_cpu(CLASSES, imgsz=IMGSZ, width=0.125)


def _images(n: int = 2, size: int = IMGSZ) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _target(boxes: list[list[float]], labels: list[int], difficult: list[bool] | None = None) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * len(labels), dtype=torch.bool),
    }


# ---- ssd_cpu architecture -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("imgsz", "sizes"),
    [
        (300, [38, 19, 10, 5, 3, 1]),  # SSD300
        (320, [40, 20, 10, 5, 3, 1]),
        (512, [64, 32, 16, 8, 4, 2, 1]),  # SSD512's seven maps
        (96, [12, 6, 3, 1]),
        (64, [8, 4, 2, 1]),
    ],
)
def test_feature_sizes_follow_ssd300_and_scale_with_imgsz(imgsz: int, sizes: list[int]) -> None:
    assert ssd_feature_sizes(imgsz) == sizes


def test_ssd300_layout_gives_8732_default_boxes() -> None:
    generator = ssd_anchor_generator(6)
    per_cell = generator.num_anchors_per_location()
    assert per_cell == [4, 6, 6, 6, 4, 4]
    assert sum(s * s * a for s, a in zip(ssd_feature_sizes(300), per_cell)) == 8732


def test_too_small_imgsz_is_refused() -> None:
    with pytest.raises(ValueError, match="imgsz"):
        ssd_feature_sizes(16)


def test_forward_shapes_are_the_same_in_train_and_eval(tiny: SSDDetector) -> None:
    x = _images()
    out_train = tiny.train()(x)
    tiny.eval()
    with torch.no_grad():
        out_eval, again = tiny(x), tiny(x)
    n = tiny.anchors().shape[0]
    per_cell = tiny.anchor_generator.num_anchors_per_location()
    assert n == sum(s * s * a for s, a in zip(tiny.backbone.feature_sizes, per_cell))
    for out in (out_train, out_eval):
        assert set(out) == {"bbox_regression", "cls_logits"}
        assert out["bbox_regression"].shape == (2, n, 4)
        assert out["cls_logits"].shape == (2, n, len(CLASSES) + 1)
    assert torch.equal(out_eval["cls_logits"], again["cls_logits"])
    assert tiny.class_names == CLASSES and tiny.num_classes == 3 and tiny.imgsz == IMGSZ


def test_forward_rejects_other_input_sizes(tiny: SSDDetector) -> None:
    with pytest.raises(ValueError, match="96x96"):
        tiny(torch.rand(1, 3, 128, 128))


def test_anchors_without_a_forward_leave_batchnorm_statistics_alone(tiny: SSDDetector) -> None:
    bn = next(m for m in tiny.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    anchors = tiny.train().anchors()  # probes the map sizes with a dummy forward
    assert tiny.training and bn.training
    assert torch.equal(bn.running_mean, before)
    assert anchors.shape[1] == 4 and (anchors[:, 2:] > anchors[:, :2]).all()


# ---- decode -------------------------------------------------------------------------------------
def test_decode_is_well_formed(tiny: SSDDetector) -> None:
    tiny.eval()
    with torch.no_grad():
        dets = tiny.decode(tiny(_images()), DecodeConfig(score_thr=0.0, max_det=50))
    assert len(dets) == 2
    for det in dets:
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape and 0 < len(scores) <= 50
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < len(CLASSES)
        assert (boxes >= 0).all() and (boxes <= IMGSZ).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (scores[:-1] >= scores[1:]).all()  # best first


def test_decode_shifts_torchvision_class_2_to_our_label_1(tiny: SSDDetector) -> None:
    n = tiny.anchors().shape[0]
    logits = torch.zeros(1, n, len(CLASSES) + 1)
    logits[..., 0] = 10.0  # background everywhere ...
    best = n // 3
    logits[0, best] = torch.tensor([0.0, 0.0, 10.0, 0.0])  # ... except one anchor: torchvision class 2
    outputs = {"bbox_regression": torch.zeros(1, n, 4), "cls_logits": logits}
    (det,) = tiny.decode(outputs, DecodeConfig(score_thr=0.5))
    assert det["labels"].tolist() == [1]
    expected = tiny.anchors()[best].clamp(0, IMGSZ)  # zero offsets decode to the default box itself
    torch.testing.assert_close(det["boxes"][0], expected)
    # an ONNX runtime's (bbox_regression, cls_logits) tuple decodes the same
    (det2,) = tiny.decode((outputs["bbox_regression"].numpy(), logits.numpy()), DecodeConfig(score_thr=0.5))
    assert det2["labels"].tolist() == [1]


# ---- loss ---------------------------------------------------------------------------------------
def test_loss_is_finite_and_decreases_on_a_fixed_batch(tiny: SSDDetector) -> None:
    x = _images(3)
    targets = [
        _target([[10, 12, 60, 70], [40, 40, 90, 94]], [0, 2]),
        _target([[5, 30, 50, 60], [60, 5, 90, 30]], [1, 2], [False, True]),
        _target([], []),  # an image without objects
    ]
    optimizer = torch.optim.Adam(tiny.parameters(), lr=1e-3)
    tiny.train()
    history = []
    for _ in range(20):
        losses = tiny.loss(tiny(x), targets)
        assert set(losses) == {"loss_box", "loss_cls"}
        total = losses["loss_box"] + losses["loss_cls"]
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0]


def test_images_without_boxes_give_zero_loss_that_backpropagates(tiny: SSDDetector) -> None:
    losses = tiny.loss(tiny(_images()), [_target([], []), _target([], [])])
    assert losses["loss_box"].item() == 0.0 and losses["loss_cls"].item() == 0.0
    (losses["loss_box"] + losses["loss_cls"]).backward()


def test_difficult_boxes_are_left_out_of_matching(tiny: SSDDetector) -> None:
    out = tiny(_images(1))
    only_difficult = tiny.loss(out, [_target([[10, 10, 60, 60]], [0], [True])])
    assert only_difficult["loss_box"].item() == 0.0 and only_difficult["loss_cls"].item() == 0.0
    easy = tiny.loss(out, [_target([[10, 10, 40, 40]], [1])])
    with_difficult = tiny.loss(out, [_target([[10, 10, 40, 40], [50, 50, 90, 90]], [1, 2], [False, True])])
    torch.testing.assert_close(easy["loss_box"], with_difficult["loss_box"])


def test_labels_outside_the_class_range_are_an_error(tiny: SSDDetector) -> None:
    with pytest.raises(ValueError, match="0..2"):
        tiny.loss(tiny(_images(1)), [_target([[10, 10, 40, 40]], [3])])


# ---- registry and export ------------------------------------------------------------------------
def test_build_model_records_the_spec() -> None:
    model = build_model("ssd_cpu", class_names=CLASSES, imgsz=64, width=0.125)
    assert isinstance(model, SSDDetector)
    assert model.detkd_spec == {"name": "ssd_cpu", "kwargs": {"class_names": CLASSES, "imgsz": 64, "width": 0.125}}


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:The feature will be removed")
def test_onnx_export_runs_and_matches(tiny: SSDDetector, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    tiny.eval()
    x = _images(1)
    path = tmp_path / "ssd_cpu.onnx"
    torch.onnx.export(tiny, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["bbox_regression", "cls_logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    regression, logits = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = tiny(x)
    np.testing.assert_allclose(logits, expected["cls_logits"].numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(regression, expected["bbox_regression"].numpy(), rtol=1e-3, atol=1e-4)


def test_torch_pruning_removes_conv4_3_channels_and_everything_that_consumes_them(tiny: SSDDetector) -> None:
    tp = pytest.importorskip("torch_pruning")
    tiny.eval()
    x = _images(1)
    backbone = tiny.backbone
    graph = tp.DependencyGraph().build_dependency(
        tiny, example_inputs=x, output_transform=lambda out: sum(v.sum() for v in out.values()),
        unwrapped_parameters=[(backbone.l2norm.weight, 0)],  # L2Norm's per-channel scale
    )
    conv4_3 = backbone.features.conv4_3[0]
    graph.get_pruning_group(conv4_3, tp.prune_conv_out_channels, idxs=[0, 1, 2]).prune()
    c = conv4_3.out_channels
    assert backbone.l2norm.weight.shape == (c,) and backbone.extra[0].conv5_1[0].in_channels == c
    assert tiny.head.classification_head.module_list[0].in_channels == c
    assert tiny.head.regression_head.module_list[0].in_channels == c
    assert tiny(x)["cls_logits"].shape == (1, tiny.anchors().shape[0], len(CLASSES) + 1)


# ---- torchvision architectures and checkpoints --------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_ssd300(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    from torchvision.models.detection import ssd300_vgg16 as tv_ssd300

    torch.manual_seed(0)
    model = tv_ssd300(weights=None, weights_backbone=None, num_classes=91).eval()  # no downloads
    path = tmp_path_factory.mktemp("tv") / "ssd300_vgg16_random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_ssd300_vgg16_loads_a_torchvision_checkpoint_and_computes_the_same(
    torchvision_ssd300: tuple[torch.nn.Module, Path],
) -> None:
    tv, path = torchvision_ssd300
    ours = build_model("ssd300_vgg16", class_names=torchvision_coco_class_names(), weights_path=str(path)).eval()
    assert sum(p.numel() for p in ours.parameters()) == 35_641_826  # torchvision's count
    for key, value in tv.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = _images(1, 300)
    with torch.no_grad():
        out = ours(x)
        images, _ = tv.transform([x[0]])  # 300 -> 300: no resize, only the caffe-style scaling
        feats = list(tv.backbone(images.tensors).values())
        expected = tv.head(feats)
        tv_anchors = tv.anchor_generator(images, feats)[0]
    assert out["cls_logits"].shape == (1, 8732, 91)
    torch.testing.assert_close(out["cls_logits"], expected["cls_logits"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out["bbox_regression"], expected["bbox_regression"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours.anchors(), tv_anchors)


def test_other_class_count_skips_only_the_classification_head(torchvision_ssd300: tuple[torch.nn.Module, Path]) -> None:
    tv, path = torchvision_ssd300
    with pytest.warns(UserWarning, match="classification head not loaded"):
        ours = ssd300_vgg16(CLASSES, weights_path=str(path))
    state = ours.state_dict()
    for key, value in tv.state_dict().items():
        if key.startswith("head.classification_head."):
            assert state[key].shape != value.shape
        else:
            assert torch.equal(state[key], value), key


def test_missing_and_mismatched_checkpoints_name_the_file(tiny: SSDDetector, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_torchvision_ssd(tiny, missing)
    state = tiny.state_dict()
    del state["backbone.l2norm.weight"]
    state["backbone.features.conv1_1.0.weight"] = torch.zeros(1, 3, 3, 3)
    state["extra.key"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*conv1_1.*l2norm"):
        load_torchvision_ssd(tiny, bad)


class _Payload:
    """Any class: unpickling it would need code execution, which weights_only refuses."""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_never_unpickled(tiny: SSDDetector, tmp_path: Path) -> None:
    path = tmp_path / "object.pth"
    with path.open("wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(CheckpointError, match=r"object\.pth.*weights_only") as info:
        load_torchvision_ssd(tiny, path)
    assert "\n" not in str(info.value)


def test_ssd300_vgg16_is_fixed_to_300() -> None:
    with pytest.raises(ValueError, match="300"):
        ssd300_vgg16(CLASSES, imgsz=320)


def test_ssdlite_builds_runs_and_loads_a_coco_sized_checkpoint(tmp_path: Path) -> None:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large as tv_ssdlite

    torch.manual_seed(0)
    path = tmp_path / "ssdlite_random.pth"
    torch.save(tv_ssdlite(weights=None, weights_backbone=None, num_classes=91).state_dict(), path)
    with pytest.warns(UserWarning, match="classification head"):
        model = build_model("ssdlite320_mobilenet_v3_large", class_names=CLASSES, weights_path=str(path))
    model.eval()
    with torch.no_grad():
        out = model(_images(1, 320))
    n = model.anchors().shape[0]
    assert out["cls_logits"].shape == (1, n, 4) and out["bbox_regression"].shape == (1, n, 4)
    assert all(len(d["boxes"]) <= 100 for d in model.decode(out))
