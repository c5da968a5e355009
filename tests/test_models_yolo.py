"""YOLOv2-family models: shapes, decode, reorg, box coder, target building, loss, registry, ONNX."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from detkd.models.yolo_loss import build_targets, cls_term, obj_term, yolo_loss
from detkd.models.backbones import depth_to_space, space_to_depth
from detkd.models.box_coder import assign_cells, best_anchors, decode, decode_grid, encode
from detkd.models.detector import DecodeConfig
from detkd.models.factory import build_model, model_spec
from detkd.models.yolo import YoloDetector, yolo_decode

CLASSES = ["a", "b", "c"]
MODELS = ["yolov2", "tiny_yolov2", "fyolo"]
ANCHORS = torch.tensor([[10.0, 10.0], [30.0, 60.0], [80.0, 80.0]])  # for hand-made grids, stride 32


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads are slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, imgsz: int = 64, **kwargs: object) -> YoloDetector:
    torch.manual_seed(0)
    model = build_model(name, class_names=list(CLASSES), imgsz=imgsz, width=0.125, **kwargs)
    assert isinstance(model, YoloDetector)
    return model


def grid(num_anchors: int = 3, size: int = 3, num_classes: int = 3) -> torch.Tensor:
    return torch.zeros(1, num_anchors, size, size, 5 + num_classes)


def target(boxes: list[list[float]], labels: list[int], difficult: list[bool] | None = None) -> dict[str, object]:
    n = len(labels)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * n, dtype=torch.bool),
    }


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_train_and_eval(name: str) -> None:
    model = tiny(name)
    for imgsz in (64, 96, 128):
        s = imgsz // 32
        x = torch.rand(2, 3, imgsz, imgsz)
        assert model.train()(x).shape == (2, 5, s, s, 5 + len(CLASSES))
        assert model.eval()(x).shape == (2, 5, s, s, 5 + len(CLASSES))
    with pytest.raises(ValueError, match="multiple of the stride"):
        model(torch.rand(1, 3, 70, 64))


@pytest.mark.parametrize("name", MODELS)
def test_decode_returns_well_formed_detections(name: str) -> None:
    model = tiny(name, imgsz=96).eval()
    with torch.no_grad():
        dets = model.decode(model(torch.rand(2, 3, 96, 96)), DecodeConfig(score_thr=0.0, max_det=7))
    assert len(dets) == 2
    for det in dets:
        assert set(det) == {"boxes", "scores", "labels"}
        n = len(det["scores"])
        assert 0 < n <= 7 and det["boxes"].shape == (n, 4) and det["labels"].dtype == torch.int64
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= 96
        assert torch.all(det["boxes"][:, 2:] >= det["boxes"][:, :2])
        assert det["scores"].min() >= 0 and det["scores"].max() <= 1
        assert det["labels"].min() >= 0 and det["labels"].max() < len(CLASSES)


def test_decode_of_one_confident_cell_gives_the_hand_computed_box() -> None:
    out = grid()
    out[..., 4] = -20.0  # everything else is background
    cell = out[0, 1, 2, 1]  # anchor 1 (30x60), row 2, column 1
    cell[:4] = torch.tensor([math.log(0.25 / 0.75), 0.0, math.log(40 / 30), math.log(15 / 60)])
    cell[4] = 10.0
    cell[5:] = torch.tensor([0.0, 5.0, 0.0])
    [det] = yolo_decode(out, ANCHORS, 32, DecodeConfig(score_thr=0.5))
    # center ((0.25 + 1) * 32, (0.5 + 2) * 32) = (40, 80), size 40x15
    torch.testing.assert_close(det["boxes"], torch.tensor([[20.0, 72.5, 60.0, 87.5]]))
    expected = torch.sigmoid(torch.tensor(10.0)) * math.exp(5) / (math.exp(5) + 2)
    torch.testing.assert_close(det["scores"], expected.reshape(1))
    assert det["labels"].tolist() == [1]


def test_space_to_depth_channel_order_and_inverse() -> None:
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    y = space_to_depth(x, 2)
    assert y.shape == (1, 8, 2, 2)
    # channel c*4 + dy*2 + dx holds x[c, 2i + dy, 2j + dx]
    assert y[0, 0].tolist() == [[0, 2], [8, 10]]
    assert y[0, 1].tolist() == [[1, 3], [9, 11]]
    assert y[0, 2].tolist() == [[4, 6], [12, 14]]
    assert y[0, 5].tolist() == [[17, 19], [25, 27]]
    torch.testing.assert_close(y, F.pixel_unshuffle(x, 2))
    z = torch.randn(2, 3, 16, 8)
    torch.testing.assert_close(depth_to_space(space_to_depth(z, 4), 4), z)


def test_box_coder_encode_decode_round_trip() -> None:
    torch.manual_seed(0)
    xy = torch.rand(50, 2) * 80
    boxes = torch.cat((xy, xy + 2 + torch.rand(50, 2) * 40), dim=1)
    cells = assign_cells(boxes, 32, (4, 4))
    anchor_wh = ANCHORS[best_anchors(boxes, ANCHORS)]
    enc = encode(boxes, cells, anchor_wh, 32)
    assert enc[:, :2].min() >= 0 and enc[:, :2].max() <= 1
    torch.testing.assert_close(decode(enc, cells, anchor_wh, 32), boxes)


def test_build_targets_picks_cell_and_anchor_of_a_hand_placed_box() -> None:
    # center (50, 28) -> column 1, row 0; 28x56 fits anchor 1 (30x60) best
    t = build_targets(grid(), [target([[36, 0, 64, 56]], [2])], ANCHORS, 32)
    assert t.pos.sum() == 1 and t.pos[0, 1, 0, 1]
    assert t.tcls[0, 1, 0, 1] == 2 and t.gt_index[0, 1, 0, 1] == 0
    expected = torch.tensor([50 / 32 - 1, 28 / 32, math.log(28 / 30), math.log(56 / 60)])
    torch.testing.assert_close(t.tbox[0, 1, 0, 1], expected)
    assert t.box_weight[0, 1, 0, 1].item() == pytest.approx(2 - 28 * 56 / 96**2)
    assert 0 < t.tobj[0, 1, 0, 1] < 1 and not t.noobj[0, 1, 0, 1]
    assert t.noobj.sum() > 20


def test_difficult_boxes_are_never_positive_but_suppress_noobj() -> None:
    # equal to the prior box of anchor 1 at cell (1, 1): IoU 1 with that prediction
    t = build_targets(grid(), [target([[33, 18, 63, 78]], [0], [True])], ANCHORS, 32)
    assert not t.pos.any()
    assert not t.noobj[0, 1, 1, 1] and t.noobj[0, 0, 1, 1]


def test_two_boxes_on_one_cell_and_anchor_keep_the_larger() -> None:
    small, large = [40, 5, 60, 45], [38, 0, 62, 48]
    for boxes, labels, winner in (([small, large], [0, 1], 1), ([large, small], [1, 0], 0)):
        t = build_targets(grid(), [target(boxes, labels)], ANCHORS, 32)
        assert t.pos.sum() == 1 and t.tcls[0, 1, 0, 1] == 1 and t.gt_index[0, 1, 0, 1] == winner


def test_loss_is_finite_for_an_image_without_boxes() -> None:
    model = tiny("fyolo")
    out = model(torch.rand(2, 3, 64, 64))
    losses = model.loss(out, [target([], []), target([[5, 5, 40, 30]], [1])])
    assert set(losses) == {"loss_obj", "loss_noobj", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    empty = model.loss(model(torch.rand(1, 3, 64, 64)), [target([], [])])
    assert empty["loss_box"] == 0 and empty["loss_noobj"] > 0


def test_unlabeled_images_contribute_nothing_and_bad_labels_raise() -> None:
    unlabeled = {**target([], []), "labeled": False}
    losses = yolo_loss(grid(), [unlabeled], ANCHORS, 32)
    assert all(v == 0 for v in losses.values())
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        yolo_loss(grid(), [target([[0, 0, 10, 10]], [3])], ANCHORS, 32)


def test_terms_vanish_at_soft_targets() -> None:
    p = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(obj_term(torch.logit(p), p), torch.zeros(3), atol=1e-6, rtol=0)
    probs = torch.tensor([[0.2, 0.3, 0.5]])
    torch.testing.assert_close(cls_term(probs.log(), probs), torch.zeros(1), atol=1e-6, rtol=0)
    assert cls_term(torch.zeros(1, 3), torch.tensor([2])).item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("name", MODELS)
def test_loss_decreases_on_a_fixed_batch(name: str) -> None:
    model = tiny(name).train()
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    targets = [target([[4, 6, 30, 40], [34, 30, 60, 60]], [0, 2]), target([[10, 20, 50, 44]], [1])]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = sum(model.loss(model(images), targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]


def test_build_model_records_spec_and_anchors_buffer() -> None:
    model = tiny("fyolo")
    assert model_spec(model) == {"name": "fyolo", "kwargs": {"class_names": CLASSES, "imgsz": 64, "width": 0.125}}
    assert model.class_names == CLASSES and model.imgsz == 64 and model.num_classes == 3 and model.stride == 32
    assert "anchors" in model.state_dict() and model.anchors.shape == (5, 2)
    custom = tiny("tiny_yolov2", anchors=[[8.0, 8.0], [20.0, 30.0]])
    assert custom(torch.rand(1, 3, 64, 64)).shape == (1, 2, 2, 2, 8)


def test_fyolo_concatenation_channels_at_width_one() -> None:
    assert build_model("fyolo", class_names=CLASSES).neck.concat_channels == 1664
    assert build_model("fyolo", class_names=CLASSES, stack_channels=[4, 16, 64]).neck.concat_channels == 1792


def test_decode_grid_prior_boxes_sit_on_cell_centers() -> None:
    boxes = decode_grid(grid(), ANCHORS, 32)  # zeros: sigmoid 0.5, exp 1
    torch.testing.assert_close(boxes[0, 2, 1, 0], torch.tensor([16.0 - 40, 48.0 - 40, 16.0 + 40, 48.0 + 40]))


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
def test_onnx_export_of_tiny_fyolo(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = tiny("fyolo").eval()
    path = tmp_path / "fyolo.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["outputs"])
    onnx.checker.check_model(onnx.load(str(path)))


def test_fyolo_conv_stem_computes_the_first_conv_at_stride_two_and_drops_the_first_pool() -> None:
    """stem="conv": stage 0 is one 3x3 conv at stride 2, stage 1 has no pool; every later stage and the grid match
    the published layout's, and with the same weights the strided stem gives the published stem's first-conv output
    at every other row and column (a stride-2 conv with padding 1 samples the stride-1 one at even positions)."""
    plain = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.5).eval()
    strided = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.5, stem="conv").eval()
    assert plain.backbone.strides == [1, 2, 4, 8, 16, 32] and strided.backbone.strides == [2, 2, 4, 8, 16, 32]
    assert plain.backbone.out_channels == strided.backbone.out_channels == [8, 16, 32, 64, 128, 256]
    first = strided.backbone.stages[0][0][0]
    assert isinstance(first, torch.nn.Conv2d) and first.stride == (2, 2) and first.out_channels == 8
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.backbone.stages[1].modules())
    assert isinstance(plain.backbone.stages[1][0], torch.nn.MaxPool2d)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in strided.parameters())
    strided.backbone.stages[0].load_state_dict(plain.backbone.stages[0].state_dict())
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(strided.backbone.stages[0](image), plain.backbone.stages[0](image)[..., ::2, ::2])
        feats = strided.backbone(image)
        assert [f.shape[-1] for f in feats] == [32, 32, 16, 8, 4, 2]
        assert strided(image).shape == plain(image).shape == (1, 5, 2, 2, 8)


def test_fyolo_min_channels_widens_only_the_convs_below_it() -> None:
    default = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.5)
    wide = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.5, min_channels=16)
    assert default.backbone.out_channels == [8, 16, 32, 64, 128, 256]
    assert wide.backbone.out_channels == [16, 16, 32, 64, 128, 256]
    assert wide.backbone.stages[1][1][0].in_channels == 16  # the next conv reads the wider map
    assert model_spec(wide)["kwargs"]["min_channels"] == 16
    # the defaults keep the published layout's parameter names and shapes, so checkpoints made before the options load
    shapes = {k: tuple(v.shape) for k, v in default.state_dict().items()}
    assert shapes["backbone.stages.0.0.0.weight"] == (8, 3, 3, 3) and shapes["backbone.stages.1.1.0.weight"] == (16, 8, 3, 3)
    assert "backbone.stages.1.0.0.weight" not in shapes


def test_fyolo_refuses_an_unknown_stem_or_a_bad_min_channels_in_one_config_line() -> None:
    from detkd.errors import ConfigError
    from detkd.models.backbones import TINY_DARKNET, strided_stem

    with pytest.raises(ConfigError, match=r"model\.stem = 'strided'.*pool, conv"):
        build_model("fyolo", class_names=CLASSES, imgsz=64, stem="strided")
    for bad in (0, 12, True):
        with pytest.raises(ConfigError, match=rf"model\.min_channels = {bad}: must be a multiple of 8"):
            build_model("fyolo", class_names=CLASSES, imgsz=64, min_channels=bad)
    assert strided_stem(TINY_DARKNET)[:2] == [[(16, 3, 2)], [(32, 3)]]
    with pytest.raises(ValueError, match="first stage of one conv"):
        strided_stem([[(16, 3), (32, 3)], ["M", (64, 3)]])


def test_a_conv_stem_student_round_trips_through_its_checkpoint(tmp_path: Path) -> None:
    from detkd.engine.checkpoint import load_detector, save_detector

    torch.manual_seed(0)
    model = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.25, stem="conv", min_channels=16).eval()
    loaded = load_detector(save_detector(model, tmp_path / "student.pth")).eval()
    assert loaded.backbone.strides[0] == 2 and loaded.backbone.out_channels[0] == 16
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image))
