"""FM-NMS on crafted teacher maps, against a slow reference, and what each mode suppresses."""

from __future__ import annotations

import pytest
import torch

from detkd.ops.fm_nms import TeacherMap, TeacherTargets, apply_fm_nms, fm_nms, fm_nms_targets

A, S, K = 2, 5, 3  # anchors, grid side, classes of the crafted maps

Candidate = tuple[int, int, int, int, float]  # (anchor, row, col, class, objectness)


def crafted(candidates: list[Candidate]) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: background candidates predict class 0 with objectness 0, so they never
    outrank the crafted ones, which use classes 1 and 2."""
    obj = torch.zeros(1, A, S, S)
    cls = torch.zeros(1, A, S, S, K)
    cls[..., 0] = 1.0
    for a, row, col, label, score in candidates:
        obj[0, a, row, col] = score
        cls[0, a, row, col] = torch.nn.functional.one_hot(torch.tensor(label), K).float()
    return obj, cls


def kept(candidates: list[Candidate], kernel: int = 3) -> list[bool]:
    obj, cls = crafted(candidates)
    keep = fm_nms(obj, cls, kernel)
    return [bool(keep[0, a, row, col]) for a, row, col, _, _ in candidates]


@pytest.mark.parametrize(("dcol", "expected"), [(1, [True, False]), (2, [True, True]), (3, [True, True])])
def test_same_class_pair_suppressed_only_inside_window(dcol: int, expected: list[bool]) -> None:
    assert kept([(0, 2, 0, 1, 0.9), (0, 2, dcol, 1, 0.6)]) == expected


def test_diagonal_neighbour_on_other_anchor_is_suppressed() -> None:
    assert kept([(0, 2, 2, 1, 0.6), (1, 3, 3, 1, 0.9)]) == [False, True]


def test_larger_kernel_reaches_two_cells() -> None:
    assert kept([(0, 2, 0, 1, 0.9), (0, 2, 2, 1, 0.6)], kernel=5) == [True, False]
    assert kept([(0, 0, 0, 1, 0.9), (0, 2, 3, 1, 0.6)], kernel=5) == [True, True]


def test_different_classes_side_by_side_both_survive() -> None:
    assert kept([(0, 2, 2, 1, 0.9), (0, 2, 3, 2, 0.6)]) == [True, True]
    assert kept([(0, 2, 2, 1, 0.9), (1, 2, 2, 2, 0.6)]) == [True, True]


def test_two_anchors_of_one_cell_same_class_keep_the_higher() -> None:
    assert kept([(0, 1, 1, 2, 0.3), (1, 1, 1, 2, 0.7)]) == [False, True]


def test_kernel_one_only_compares_anchors_of_a_cell() -> None:
    assert kept([(0, 2, 2, 1, 0.9), (0, 2, 3, 1, 0.6)], kernel=1) == [True, True]
    assert kept([(0, 2, 2, 1, 0.9), (1, 2, 2, 1, 0.6), (1, 2, 3, 1, 0.5)], kernel=1) == [True, False, True]


def test_ties_go_to_the_lowest_flat_index() -> None:
    # flat index (a * S + row) * S + col: (0, 2, 3) -> 13 beats (1, 2, 2) -> 37
    assert kept([(1, 2, 2, 1, 0.5), (0, 2, 3, 1, 0.5)]) == [False, True]
    # same anchor: (0, 2, 2) -> 12 beats (0, 2, 3) -> 13
    assert kept([(0, 2, 2, 1, 0.5), (0, 2, 3, 1, 0.5)]) == [True, False]
    # same cell: anchor 0 beats anchor 1
    assert kept([(1, 4, 4, 2, 0.5), (0, 4, 4, 2, 0.5)]) == [False, True]


def test_suppressed_candidate_still_suppresses_weaker_neighbour() -> None:
    # A > B > C in a row, A and C two cells apart: not greedy NMS, so C also goes
    assert kept([(0, 2, 0, 1, 0.9), (0, 2, 1, 1, 0.8), (0, 2, 2, 1, 0.7)]) == [True, False, False]


def test_no_wrap_around_at_the_border() -> None:
    assert kept([(0, 0, 0, 1, 0.5), (0, 0, 4, 1, 0.9), (1, 4, 0, 1, 0.8)]) == [True, True, True]


def test_images_of_a_batch_are_independent() -> None:
    obj, cls = crafted([(0, 2, 2, 1, 0.9)])
    weak, _ = crafted([(0, 2, 3, 1, 0.6)])
    keep = fm_nms(torch.cat((obj, weak)), torch.cat((cls, cls)), 3)
    assert keep[0, 0, 2, 2] and keep[1, 0, 2, 3]


def reference_fm_nms(obj: torch.Tensor, cls: torch.Tensor, kernel: int) -> torch.Tensor:
    """The module docstring's definition, one candidate pair at a time."""
    bsz, num_a, s_h, s_w = obj.shape
    label = cls.argmax(-1).tolist()
    score = obj.tolist()
    keep = torch.ones(obj.shape, dtype=torch.bool)
    r = kernel // 2
    for b in range(bsz):
        for a in range(num_a):
            for i in range(s_h):
                for j in range(s_w):
                    me = (score[b][a][i][j], -((a * s_h + i) * s_w + j))
                    for a2 in range(num_a):
                        for i2 in range(max(0, i - r), min(s_h, i + r + 1)):
                            for j2 in range(max(0, j - r), min(s_w, j + r + 1)):
                                other = (score[b][a2][i2][j2], -((a2 * s_h + i2) * s_w + j2))
                                if label[b][a2][i2][j2] == label[b][a][i][j] and other > me:
                                    keep[b, a, i, j] = False
    return keep


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_random_map_matches_reference(kernel: int) -> None:
    gen = torch.Generator().manual_seed(kernel)
    # objectness on a coarse grid of values so that many ties occur
    obj = torch.randint(0, 5, (2, 3, 6, 7), generator=gen).float() / 4
    cls = torch.rand(2, 3, 6, 7, 4, generator=gen)
    assert torch.equal(fm_nms(obj, cls, kernel), reference_fm_nms(obj, cls, kernel))


@pytest.mark.parametrize("kernel", [0, 2, -1])
def test_kernel_must_be_positive_odd(kernel: int) -> None:
    obj, cls = crafted([])
    with pytest.raises(ValueError, match="odd"):
        fm_nms(obj, cls, kernel)


def _teacher() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    obj, cls = crafted([(0, 2, 2, 1, 0.9), (0, 2, 3, 1, 0.6), (1, 0, 0, 2, 0.4)])
    box = torch.arange(1 * A * S * S * 4, dtype=torch.float32).reshape(1, A, S, S, 4) / 100
    return obj, cls, box, fm_nms(obj, cls, 3)


@pytest.mark.parametrize("mode", ["class", "class_box", "all"])
def test_apply_modes_zero_exactly_what_they_say(mode: str) -> None:
    obj, cls, box, keep = _teacher()
    before = (obj.clone(), cls.clone(), box.clone())
    out = apply_fm_nms(obj, cls, box, keep, mode)  # type: ignore[arg-type]
    gone = ~keep
    assert not keep[0, 0, 2, 3] and keep[0, 0, 2, 2] and keep[0, 1, 0, 0]
    assert torch.equal(out.cls[gone], torch.zeros_like(out.cls[gone]))
    assert torch.equal(out.cls[keep], cls[keep])
    assert torch.equal(out.cls_weight, keep.float())
    assert torch.equal(out.box, box)
    expected_box_weight = torch.ones_like(obj) if mode == "class" else keep.float()
    assert torch.equal(out.box_weight, expected_box_weight)
    expected_obj = obj * keep if mode == "all" else obj
    assert torch.equal(out.obj, expected_obj)
    # the teacher's own tensors are untouched
    assert all(torch.equal(x, y) for x, y in zip((obj, cls, box), before, strict=True))


def test_apply_rejects_unknown_mode() -> None:
    obj, cls, box, keep = _teacher()
    with pytest.raises(ValueError, match="mode"):
        apply_fm_nms(obj, cls, box, keep, "boxes")  # type: ignore[arg-type]


def test_fm_nms_targets_and_from_map() -> None:
    obj, cls, box, keep = _teacher()
    teacher = TeacherMap(obj, cls, box)
    out = fm_nms_targets(teacher, kernel=3, mode="class")
    assert torch.equal(out.cls_weight, keep.float())
    plain = TeacherTargets.from_map(teacher)
    assert torch.equal(plain.cls, cls) and torch.equal(plain.box_weight, torch.ones_like(obj))
