"""Distiller, teacher adapters (direct and projected), unlabeled mixing and hint stage, on tiny models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from detkd.data.dataset import DetectionDataset
from detkd.data.mixed import MixedDataset, as_unlabeled
from detkd.distill.distiller import DistillConfig, DistillModel, HintTap
from detkd.distill.teachers import (
    Candidates,
    StudentSpace,
    TeacherError,
    TeacherAdapter,
    YoloTeacher,
    build_teacher_adapter,
    class_mapping,
    project_candidates,
)
from detkd.errors import ConfigError
from detkd.models.box_coder import encode
from detkd.models.factory import build_model

CLASSES = ["a", "b", "c"]
IMGSZ = 64
ANCHORS = [[8.0, 8.0], [24.0, 16.0], [48.0, 48.0]]


def _yolo(name: str = "fyolo", seed: int = 0, classes: list[str] = CLASSES, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, class_names=list(classes), imgsz=kw.pop("imgsz", IMGSZ), width=0.125,
                       anchors=kw.pop("anchors", ANCHORS), **kw)


def _targets(n: int, labeled: bool = True) -> list[dict]:
    return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
             "difficult": torch.tensor([False]), "labeled": labeled} for _ in range(n)]


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


def _space() -> StudentSpace:
    return StudentSpace(torch.tensor(ANCHORS), 32, IMGSZ, tuple(CLASSES))


# ---- distiller ---------------------------------------------------------------------------------

def test_teacher_terms_vanish_when_student_equals_teacher() -> None:
    student = _yolo()
    teacher = copy.deepcopy(student)
    adapter = build_teacher_adapter(teacher, student)
    assert isinstance(adapter, YoloTeacher) and adapter.direct
    model = DistillModel(student.eval(), adapter, DistillConfig(gt_weight=0.0, hinton_weight=1.0, logit_l2_weight=1.0))
    terms = model.distill_loss(_images(), _targets(2))
    assert set(terms) == {"loss_kd_obj", "loss_kd_cls", "loss_kd_box", "loss_hinton", "loss_logit_l2"}
    for name, value in terms.items():
        assert abs(float(value.detach())) < 1e-5, name


def test_teacher_is_frozen_outside_the_state_dict_and_gets_no_gradient() -> None:
    student, teacher = _yolo(seed=0), _yolo("yolov2", seed=1)
    model = DistillModel(student, build_teacher_adapter(teacher, student), DistillConfig())
    model.train()
    assert not teacher.training  # train() on the distiller leaves the teacher in eval mode
    terms = model.distill_loss(_images(), _targets(2))
    assert {"loss_obj", "loss_noobj", "loss_cls", "loss_box", "loss_kd_obj", "loss_kd_cls", "loss_kd_box"} <= set(terms)
    sum(terms.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.head.parameters())
    assert all(k.startswith("detector.") for k in model.state_dict())


def test_objectness_scaling_switch_changes_only_class_and_box_terms() -> None:
    student, teacher = _yolo(seed=0), _yolo(seed=1)
    adapter = build_teacher_adapter(teacher, student)
    images = _images()
    on = DistillModel(student, adapter, DistillConfig(gt_weight=0.0, fm_nms=False)).distill_loss(images, _targets(2))
    off = DistillModel(student, adapter, DistillConfig(gt_weight=0.0, fm_nms=False, scale_by_objectness=False)).distill_loss(
        images, _targets(2))
    assert torch.allclose(on["loss_kd_obj"], off["loss_kd_obj"])
    # every teacher objectness is < 1, so the scaled terms are strictly smaller
    assert on["loss_kd_cls"] < off["loss_kd_cls"] and on["loss_kd_box"] < off["loss_kd_box"]


def test_unlabeled_batch_gets_only_teacher_terms() -> None:
    student, teacher = _yolo(seed=0), _yolo(seed=1)
    model = DistillModel(student, build_teacher_adapter(teacher, student), DistillConfig())
    terms = model.distill_loss(_images(), _targets(2, labeled=False))
    for name in ("loss_obj", "loss_noobj", "loss_cls", "loss_box"):
        assert float(terms[name].detach()) == 0.0, name
    assert float(terms["loss_kd_obj"].detach()) > 0


def test_hint_stage_trains_only_up_to_the_guided_layer() -> None:
    student, teacher = _yolo(seed=0), _yolo("yolov2", seed=1)
    taps = [HintTap(student="backbone.stages.3", teacher="backbone.stages.3", weight=0.5)]
    model = DistillModel(student, build_teacher_adapter(teacher, student), DistillConfig(), taps, stage="hint")
    terms = model.distill_loss(_images(), _targets(2))
    assert list(terms) == ["loss_hint_0"] and float(terms["loss_hint_0"].detach()) > 0
    terms["loss_hint_0"].backward()
    assert all(p.grad is None for p in student.head.parameters())
    assert all(p.grad is not None for p in student.backbone.stages[0].parameters())
    assert all(p.grad is not None for p in model.regressors.parameters())
    assert any(k.startswith("regressors.0.") for k in model.state_dict())
    # stage 2 with a weight: the hint term joins the others
    model.stage = "distill"
    assert "loss_hint_0" in model.distill_loss(_images(), _targets(2))


def test_cached_distillation_takes_hint_pairs_of_weight_zero_only() -> None:
    """FitNets' stage 2 (hint weight 0) reads the cache and never the teacher's features; a weighted pair, or the
    hint stage itself, needs them and is refused with cache=True."""
    student, teacher = _yolo(seed=0), _yolo("yolov2", seed=1)
    adapter = build_teacher_adapter(teacher, student, direct=False)
    idle = [HintTap(student="backbone.stages.3", teacher="backbone.stages.3", weight=0.0)]
    model = DistillModel(student, adapter, DistillConfig(), idle, cached=True)
    assert any(k.startswith("regressors.0.") for k in model.state_dict())  # stage 1's checkpoint loads into it
    with pytest.raises(ConfigError, match=r"hint weight > 0.*hints.taps\[\].weight"):
        DistillModel(student, adapter, DistillConfig(), [HintTap("backbone.stages.3", "backbone.stages.3", weight=0.5)],
                     cached=True)
    with pytest.raises(ConfigError, match="hint weight > 0"):
        DistillModel(student, adapter, DistillConfig(), idle, stage="hint", cached=True)


def test_unknown_hint_module_is_named() -> None:
    student, teacher = _yolo(seed=0), _yolo("yolov2", seed=1)
    with pytest.raises(KeyError, match="no submodule 'backbone.stage.3'.*backbone.stages.3"):
        DistillModel(student, build_teacher_adapter(teacher, student), DistillConfig(), [HintTap("backbone.stage.3", "neck")])


def test_distill_config_rejects_unknown_keys_and_modes() -> None:
    with pytest.raises(ValueError, match=r"unknown config key distill.lamda_d \(did you mean distill.lambda_d\?\)"):
        DistillConfig.from_dict({"lamda_d": 1.0})
    with pytest.raises(ValueError, match="fm_nms.mode"):
        DistillConfig.from_dict({"fm_nms": {"mode": "boxes"}})
    cfg = DistillConfig.from_dict({"fm_nms": {"enabled": False, "kernel": 5}, "hinton": {"weight": 0.5, "tau": 2}})
    assert not cfg.fm_nms and cfg.fm_nms_kernel == 5 and cfg.hinton_weight == 0.5 and cfg.hinton_tau == 2.0


# ---- projection ----------------------------------------------------------------------------------

def test_projected_box_lands_in_its_cell_and_anchor_with_the_right_encoding() -> None:
    space = _space()  # 2x2 grid of 32 px, anchors 8x8, 24x16, 48x48
    box = torch.tensor([40.0, 10.0, 62.0, 26.0])  # centre (51, 18): column 1, row 0; 22x16 fits anchor 1
    boxes = torch.stack([box, box + torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([2.0, 34.0, 10.0, 42.0])])[None]
    obj = torch.tensor([[0.9, 0.5, 0.7]])  # the 2nd candidate shares the 1st's slot and loses
    cls = torch.tensor([[[0.1, 0.8, 0.1], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    tmap = project_candidates(Candidates(boxes, obj, cls), space)
    assert tmap.valid.sum() == 2
    assert tmap.valid[0, 1, 0, 1] and tmap.valid[0, 0, 1, 0]  # [b, anchor, row, col]
    assert torch.isclose(tmap.obj[0, 1, 0, 1], torch.tensor(0.9))
    assert torch.allclose(tmap.cls[0, 1, 0, 1], cls[0, 0])
    expected = torch.tensor([51 / 32 - 1, 18 / 32, np.log(22 / 24), np.log(16 / 16)], dtype=torch.float32)
    assert torch.allclose(tmap.box[0, 1, 0, 1], expected, atol=1e-6)
    assert torch.allclose(tmap.box[0, 0, 1, 0], encode(boxes[0, 2], torch.tensor([0, 1]), torch.tensor([8.0, 8.0]), 32))
    assert float(tmap.obj.sum()) == pytest.approx(0.9 + 0.7)  # empty slots: objectness 0


def test_projection_breaks_ties_by_lowest_index_and_drops_degenerate_boxes() -> None:
    space = _space()
    boxes = torch.tensor([[[2.0, 2.0, 10.0, 10.0], [3.0, 3.0, 11.0, 11.0], [5.0, 5.0, 5.0, 9.0]]])
    obj = torch.tensor([[0.5, 0.5, 0.99]])
    cls = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    tmap = project_candidates(Candidates(boxes, obj, cls), space)
    assert tmap.valid.sum() == 1 and torch.equal(tmap.cls[0, 0, 0, 0], torch.tensor([1.0, 0, 0]))


def test_yolo_teacher_with_other_anchors_is_projected_and_consistent() -> None:
    student = _yolo(seed=0)
    teacher = _yolo("yolov2", seed=1, anchors=[[10.0, 12.0], [30.0, 20.0], [50.0, 40.0]])
    adapter = build_teacher_adapter(teacher, student)
    assert isinstance(adapter, YoloTeacher) and not adapter.direct
    tmap = adapter(_images())
    assert tmap.obj.shape == (2, 3, 2, 2) and tmap.cls.shape == (2, 3, 2, 2, 3) and tmap.valid.any()
    # a teacher with the student's anchors gives the same map directly or through projection (an
    # untrained head predicts its anchors; the 48 px anchor crosses the border and is clipped, so skip it)
    same = _yolo("yolov2", seed=1)
    direct = build_teacher_adapter(same, student)
    projected = project_candidates(direct.candidates(same(_images())), direct.space)
    d = direct(_images())
    mask = projected.valid.clone()
    mask[:, 2] = False
    assert mask.sum() == 2 * 2 * 4
    assert torch.allclose(d.obj[mask], projected.obj[mask], atol=1e-6)
    assert torch.allclose(d.box[mask], projected.box[mask], atol=1e-4)


def test_ssd_teacher_projects_a_known_default_box_prediction() -> None:
    torch.manual_seed(0)
    ssd = build_model("ssd_cpu", class_names=CLASSES, imgsz=IMGSZ, width=0.125)
    adapter = build_teacher_adapter(ssd, _yolo())
    assert type(adapter) is TeacherAdapter  # the generic adapter over SSDDetector.candidates()
    anchors = ssd.anchors()
    num = anchors.shape[0]
    box = torch.tensor([[36.0, 4.0, 60.0, 20.0]])  # centre (48, 12): column 1, row 0; 24x16 = anchor 1
    regression = torch.zeros(1, num, 4)
    regression[0, 7] = ssd.box_coder.encode_single(box, anchors[7:8])[0]
    logits = torch.full((1, num, 4), -10.0)
    logits[..., 0] = 10.0  # background everywhere ...
    logits[0, 7] = torch.tensor([0.0, -10.0, -10.0, 4.0])  # ... but default box 7 sees class "c"
    outputs = {"bbox_regression": regression, "cls_logits": logits}
    own = ssd.candidates(outputs)  # the detector's own view: every default box, before NMS
    assert own.boxes.shape == (1, num, 4) and torch.allclose(own.boxes[0, 7], box[0], atol=1e-4)
    assert own.obj[0, 7] > 0.98 and torch.isclose(own.cls[0, 7].sum(), torch.tensor(1.0)) and own.cls[0, 7].argmax() == 2
    tmap = project_candidates(adapter.candidates(outputs), adapter.space)
    obj = tmap.obj[0, 1, 0, 1]
    assert obj > 0.9 and float(tmap.obj.sum() - obj) < 1e-3 * num
    assert tmap.cls[0, 1, 0, 1].argmax() == 2
    expected = encode(box[0], torch.tensor([1, 0]), torch.tensor([24.0, 16.0]), 32)
    assert torch.allclose(tmap.box[0, 1, 0, 1], expected, atol=1e-4)


def test_ultralytics_teacher_projects_a_known_anchor_point() -> None:
    from detkd.models.ultralytics_adapter import load_ultralytics

    yolo = load_ultralytics("yolov8n.yaml", CLASSES, imgsz=IMGSZ)
    adapter = build_teacher_adapter(yolo, _yolo())
    assert type(adapter) is TeacherAdapter
    n = 5
    out = torch.zeros(1, 4 + 3, n)
    out[0, :4, 2] = torch.tensor([12.0, 44.0, 8.0, 8.0])  # cx, cy, w, h: column 0, row 1, anchor 0
    out[0, 4:, 2] = torch.tensor([0.1, 0.6, 0.2])
    out[0, :4, [0, 1, 3, 4]] = torch.tensor([40.0, 40.0, 20.0, 20.0])[:, None]
    out[0, 4:, [0, 1, 3, 4]] = 0.01
    own = yolo.candidates(out)
    assert torch.equal(own.boxes[0, 2], torch.tensor([8.0, 40.0, 16.0, 48.0])) and torch.isclose(own.obj[0, 2], torch.tensor(0.6))
    tmap = project_candidates(adapter.candidates(out), adapter.space)
    assert torch.isclose(tmap.obj[0, 0, 1, 0], torch.tensor(0.6))  # best class score = objectness
    assert torch.allclose(tmap.cls[0, 0, 1, 0], torch.tensor([0.1, 0.6, 0.2]) / 0.9)
    assert torch.allclose(tmap.box[0, 0, 1, 0], torch.tensor([12 / 32, 44 / 32 - 1, 0.0, 0.0]), atol=1e-6)
    assert adapter(_images()).obj.shape == (2, 3, 2, 2)  # the real network runs through the adapter


# ---- sizes and classes ---------------------------------------------------------------------------

def test_yolo_candidates_are_every_grid_slot() -> None:
    teacher = _yolo("yolov2", seed=1)
    raw = teacher(_images())
    own = teacher.candidates(raw)
    assert own.boxes.shape == (2, 3 * 2 * 2, 4) and own.obj.shape == (2, 12) and own.cls.shape == (2, 12, 3)
    assert torch.allclose(own.obj, torch.sigmoid(raw[..., 4]).reshape(2, -1))
    assert torch.allclose(own.cls.sum(-1), torch.ones(2, 12))


def test_a_teacher_without_candidates_is_refused() -> None:
    class Plain(torch.nn.Module):
        class_names, imgsz = CLASSES, IMGSZ

    with pytest.raises(TeacherError, match="has no candidates"):
        build_teacher_adapter(Plain(), _yolo())


def test_class_mismatch_needs_a_map() -> None:
    with pytest.raises(TeacherError, match="class_map"):
        build_teacher_adapter(_yolo("yolov2", classes=["b", "a", "c"]), _yolo())
    mapping = class_mapping(["person", "a", "b", "c"], CLASSES, "by_name")
    assert mapping.tolist() == [-1, 0, 1, 2]
    with pytest.raises(TeacherError, match="unknown classes"):
        class_mapping(["x"], CLASSES, {"x": "zebra"})


def test_mapped_classes_move_probability_and_drop_unknown_mass() -> None:
    student = _yolo()
    teacher = _yolo("yolov2", seed=3, classes=["c", "dog", "a"])
    adapter = build_teacher_adapter(teacher, student, class_map={"c": "c", "a": "a", "dog": None})
    raw = teacher(_images())
    cands = adapter.candidates(raw)
    probs = torch.softmax(raw[..., 5:], dim=-1).reshape(2, -1, 3)
    mass = probs[..., 0] + probs[..., 2]
    assert torch.allclose(cands.obj, torch.sigmoid(raw[..., 4]).reshape(2, -1) * mass, atol=1e-6)
    assert torch.allclose(cands.cls[..., 2], probs[..., 0] / mass, atol=1e-6)  # teacher "c" -> student "c"
    assert torch.all(cands.cls[..., 1] == 0)  # student "b" has no teacher class


def test_size_mismatch_needs_teacher_imgsz() -> None:
    student = _yolo()
    teacher = _yolo("yolov2", imgsz=96)
    with pytest.raises(TeacherError, match="teacher.imgsz=96"):
        build_teacher_adapter(teacher, student)
    adapter = build_teacher_adapter(teacher, student, imgsz=96)
    tmap = adapter(_images())
    assert tmap.obj.shape == (2, 3, 2, 2)


# ---- unlabeled mixing ----------------------------------------------------------------------------

def test_mixed_dataset_draws_unlabeled_images_per_epoch(fixture_index) -> None:
    labeled = DetectionDataset(fixture_index)
    pool = DetectionDataset(as_unlabeled(fixture_index))
    mixed = MixedDataset(labeled, pool, ratio=2.0, seed=0)
    assert len(mixed) == 3 + 6
    items = [mixed[i][1] for i in range(len(mixed))]
    assert [t["labeled"] for t in items] == [True] * 3 + [False] * 6
    assert all(t["boxes"].shape == (0, 4) for t in items[3:])
    draw0 = mixed._draw.copy()
    assert sorted(draw0.tolist()) == [0, 0, 1, 1, 2, 2]  # the pool is used up before repeating
    mixed.set_epoch(1)
    draw1 = mixed._draw.copy()
    mixed.set_epoch(0)
    assert np.array_equal(mixed._draw, draw0) and not np.array_equal(draw0, draw1)
    with pytest.raises(ValueError, match=">= 0"):
        MixedDataset(labeled, pool, ratio=-1)


def test_a_same_space_teacher_can_be_projected_instead_of_read_directly() -> None:
    student, teacher = _yolo(seed=0), _yolo("yolov2", seed=1)
    assert build_teacher_adapter(teacher, student).direct
    projected = build_teacher_adapter(teacher, student, direct=False)
    assert not projected.direct and projected(_images()).valid is not None  # the candidates' route: valid slots marked
