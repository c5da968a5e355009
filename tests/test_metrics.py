"""Tests of :mod:`detkd.engine.metrics` and ``tools/eval.py`` (COCO boxes are ``[x, y, w, h]``)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkd.engine.metrics import (
    COCO_STAT_KEYS,
    coco_metrics,
    evaluate_detections,
    format_metrics_table,
    voc_ap,
    voc_metrics,
)

EVAL_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "eval.py"


def _gt(boxes: list[tuple[int, int, list[float]]], cats: dict[int, str], num_images: int = 2, **extra: Any) -> dict:
    """COCO dict from ``(image_id, category_id, [x, y, w, h])`` triples; ``extra[i]`` adds keys to box i."""
    annotations = [
        {"id": i + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        | extra.get(f"ann{i}", {})
        for i, (img, cat, box) in enumerate(boxes)
    ]
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(1, num_images + 1)],
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for cid, name in cats.items()],
    }


def _det(img: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _random_case(seed: int = 0) -> tuple[dict, list[dict]]:
    """Imperfect detections on 6 images, 3 classes, boxes small to large: misses, duplicates,
    localisation errors, class confusions and background false positives."""
    rng = np.random.default_rng(seed)
    boxes, dets = [], []
    for img in range(1, 7):
        for _ in range(rng.integers(3, 7)):
            side = float(rng.choice([rng.uniform(8, 30), rng.uniform(40, 90), rng.uniform(110, 250)]))
            w, h = side, side * float(rng.uniform(0.6, 1.4))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            cat = int(rng.integers(1, 4))
            boxes.append((img, cat, [x, y, w, h]))
            fate = rng.uniform()
            if fate < 0.15:  # missed
                continue
            shift = 0.05 if fate < 0.7 else 0.35  # good or badly localised
            jitter = rng.normal(0, shift, 4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
            dets.append(_det(img, cat, box, float(rng.uniform(0.3, 1.0))))
            if rng.uniform() < 0.2:  # duplicate, or the right box under the wrong class
                other = cat if rng.uniform() < 0.5 else int(cat % 3 + 1)
                dets.append(_det(img, other, [b + 1.0 for b in box], float(rng.uniform(0.1, 0.9))))
        for _ in range(2):  # background false positives
            dets.append(_det(img, int(rng.integers(1, 4)), [float(rng.uniform(0, 500)), 10.0, 40.0, 30.0], 0.4))
    gt = _gt(boxes, {1: "person", 2: "car", 3: "dog"}, num_images=6, ann0={"difficult": 1}, ann3={"iscrowd": 1})
    return gt, dets


def _pycocotools_stats(gt_path: Path, dets_path: Path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(dets_path)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def test_perfect_detections_score_one() -> None:
    gt = _gt([(1, 1, [10, 10, 20, 20]), (1, 2, [100, 80, 60, 50]), (2, 1, [200, 100, 150, 200])], {1: "a", 2: "b"})
    dets = [_det(a["image_id"], a["category_id"], a["bbox"], 1.0) for a in gt["annotations"]]
    metrics = evaluate_detections(gt, dets)
    for key in ("AP", "AP50", "AP75", "voc07_AP50", "voc_AP50"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["APs"] == pytest.approx(1.0) and metrics["APm"] == pytest.approx(1.0)
    assert metrics["APl"] == pytest.approx(1.0)
    assert (metrics["num_images"], metrics["num_gt"], metrics["num_dets"]) == (2, 3, 3)
    assert all(v["AP"] == pytest.approx(1.0) for v in metrics["per_class"].values())
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics  # plain JSON values


def test_coco_stats_match_pycocotools(tmp_path: Path) -> None:
    gt, dets = _random_case()
    gt_path, dets_path = _write(tmp_path / "gt.json", gt), _write(tmp_path / "dets.json", dets)
    expected = _pycocotools_stats(gt_path, dets_path)
    ours = coco_metrics(gt_path, dets_path)
    assert [ours[k] for k in COCO_STAT_KEYS] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert 0.1 < ours["AP"] < 0.9 and all(v > -1 for v in expected)  # a case that tests something
    # Every class has GT, so the per-class APs average to the overall AP.
    assert np.mean([v["AP"] for v in ours["per_class"].values()]) == pytest.approx(ours["AP"])
    assert evaluate_detections(gt, dets)["AP"] == pytest.approx(ours["AP"])  # dict input, same result


# 3 GT boxes of one class; detections in descending score order:
#   d1 0.9 img1 exactly on A                 -> TP
#   d2 0.8 img1 on A again, shifted by 1     -> FP (duplicate)
#   d3 0.7 img2 on C, IoU 324/400 = 0.81     -> TP
#   d4 0.6 img1 near B, IoU 64/136 = 0.47    -> FP (localisation); B is never found
# cum TP = 1 1 2 2, cum FP = 0 1 1 2: recall = 1/3 1/3 2/3 2/3, precision = 1 1/2 2/3 1/2.
# VOC2010+ area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], nothing after: 1/3 + 2/9 = 5/9.
# VOC2007: t = 0..0.3 -> 1 (4 points), t = 0.4..0.6 -> 2/3 (3 points), t = 0.7..1 -> 0: 6/11.
HAND_GT = [(1, 1, [0, 0, 10, 10]), (1, 1, [20, 20, 10, 10]), (2, 1, [0, 0, 20, 20])]
HAND_DETS = [
    _det(1, 1, [0, 0, 10, 10], 0.9),
    _det(1, 1, [1, 0, 10, 10], 0.8),
    _det(2, 1, [2, 2, 18, 18], 0.7),
    _det(1, 1, [22, 22, 10, 10], 0.6),
]


def test_voc_ap_hand_computed_case() -> None:
    result = voc_metrics(_gt(HAND_GT, {1: "thing"}), HAND_DETS)
    assert result["voc_AP50"] == pytest.approx(5 / 9)
    assert result["voc07_AP50"] == pytest.approx(6 / 11)
    assert result["per_class"]["thing"] == pytest.approx({"voc07_AP50": 6 / 11, "voc_AP50": 5 / 9})
    # Stable sort: equal scores keep the input order, so the duplicate still comes second.
    tied = [d | {"score": 0.5} for d in HAND_DETS]
    assert voc_metrics(_gt(HAND_GT, {1: "thing"}), tied)["voc07_AP50"] == pytest.approx(6 / 11)


def test_voc_ap_definitions() -> None:
    assert voc_ap([0.5, 1.0], [1.0, 0.5], use_07_metric=False) == pytest.approx(0.75)
    assert voc_ap([0.5, 1.0], [1.0, 0.5], use_07_metric=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    # The envelope lifts the dip: precision 0.5 at recall 0.5 counts as the later 0.8.
    assert voc_ap([0.25, 0.5, 0.75], [1.0, 0.5, 0.8], use_07_metric=False) == pytest.approx(0.25 + 0.5 * 0.8)
    # A recall of exactly 0.3 reaches the t = 0.3 point (np.arange(0, 1.1, 0.1) would miss it).
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap([], [], use_07_metric=True) == 0.0 and voc_ap([], [], use_07_metric=False) == 0.0
    with pytest.raises(ValueError, match="length"):
        voc_ap([0.5], [1.0, 0.5], use_07_metric=False)


def test_difficult_gt_is_neither_tp_nor_fp() -> None:
    # A normal, B difficult. d1 and d1b hit B (ignored), d2 hits A (TP), d3 is background (FP).
    # cum TP = 0 0 1 1, cum FP = 0 0 0 1, npos = 1: recall 0 0 1 1, precision 0 0 1 1/2 -> AP 1.
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 1, [50, 50, 10, 10])]
    dets = [
        _det(1, 1, [50, 50, 10, 10], 0.9),
        _det(1, 1, [51, 50, 10, 10], 0.85),
        _det(1, 1, [0, 0, 10, 10], 0.8),
        _det(1, 1, [100, 100, 10, 10], 0.7),
    ]
    difficult = evaluate_detections(_gt(boxes, {1: "a"}, ann1={"difficult": 1}), dets)
    assert difficult["voc_AP50"] == pytest.approx(1.0) and difficult["voc07_AP50"] == pytest.approx(1.0)
    assert difficult["num_gt"] == 2 and difficult["per_class"]["a"]["num_gt"] == 2
    # Not difficult: TP FP TP FP with npos = 2, recall 1/2 1/2 1 1, precision 1 1/2 2/3 1/2:
    # area 1/2 * 1 + 1/2 * 2/3 = 5/6; 11-point (6 * 1 + 5 * 2/3) / 11 = 28/33.
    normal = evaluate_detections(_gt(boxes, {1: "a"}), dets)
    assert normal["voc_AP50"] == pytest.approx(5 / 6) and normal["voc07_AP50"] == pytest.approx(28 / 33)
    assert difficult["AP50"] == pytest.approx(normal["AP50"])  # pycocotools ignores the key


def test_category_ids_with_gaps_report_names() -> None:
    gt = _gt([(1, 3, [10, 10, 50, 50]), (2, 7, [30, 30, 80, 60])], {3: "cat", 7: "dog"})
    metrics = evaluate_detections(gt, [_det(1, 3, [10, 10, 50, 50], 0.9)])
    assert set(metrics["per_class"]) == {"cat", "dog"}
    cat, dog = metrics["per_class"]["cat"], metrics["per_class"]["dog"]
    assert cat["AP"] == pytest.approx(1.0) and cat["voc_AP50"] == pytest.approx(1.0)
    assert dog["AP"] == 0.0 and dog["voc07_AP50"] == 0.0
    assert metrics["voc_AP50"] == pytest.approx(0.5) and metrics["AP"] == pytest.approx(0.5)
    table = format_metrics_table(metrics)
    assert "| cat | 1.0000 |" in table and "| dog | 0.0000 |" in table and "| AP50 |" in table


def test_class_without_gt_is_undefined() -> None:
    gt = _gt([(1, 1, [10, 10, 50, 50])], {1: "a", 2: "b"})
    metrics = evaluate_detections(gt, [_det(1, 1, [10, 10, 50, 50], 0.9)])
    assert metrics["per_class"]["b"] == {"AP": -1.0, "AP50": -1.0, "voc07_AP50": -1.0, "voc_AP50": -1.0, "num_gt": 0}
    assert metrics["voc_AP50"] == pytest.approx(1.0)  # the mean skips classes without GT
    assert "| b | n/a |" in format_metrics_table(metrics)


def test_empty_detections_give_zero() -> None:
    metrics = evaluate_detections(_gt(HAND_GT, {1: "thing"}), [])
    for key in ("AP", "AP50", "AP75", "AR100", "voc07_AP50", "voc_AP50"):
        assert metrics[key] == 0.0, key
    assert metrics["num_dets"] == 0


def test_unknown_image_id_is_rejected(tmp_path: Path) -> None:
    gt = _gt(HAND_GT, {1: "thing"})
    with pytest.raises(ValueError, match="unknown image_id 999"):
        evaluate_detections(gt, [_det(999, 1, [0, 0, 1, 1], 0.5)])
    dets_path = _write(tmp_path / "dets.json", [_det(999, 1, [0, 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match="dets.json: detection 0: unknown image_id 999"):
        coco_metrics(gt, dets_path)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"category_id": 5}, "unknown category_id 5"),
        ({"bbox": [0, 0, 1]}, "4 finite numbers"),
        ({"bbox": [0, 0, -1, 1]}, ">= 0"),
        ({"score": float("nan")}, "score"),
        ({"score": "high"}, "score"),
    ],
)
def test_invalid_detections_are_rejected(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        voc_metrics(_gt(HAND_GT, {1: "thing"}), [_det(1, 1, [0, 0, 10, 10], 0.5) | bad])


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [\n  {"id": 1,]\n')
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 2"):
        evaluate_detections(bad, [])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate_detections(tmp_path / "missing.json", [])


def _run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EVAL_SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_eval_tool_writes_metrics(tmp_path: Path) -> None:
    gt_path = _write(tmp_path / "gt.json", _gt(HAND_GT, {1: "thing"}))
    dets_path = _write(tmp_path / "dets.json", HAND_DETS)
    out = tmp_path / "out" / "metrics.json"
    proc = _run_eval("--gt", str(gt_path), "--dets", str(dets_path), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| voc_AP50 | 0.5556 |" in proc.stdout
    metrics = json.loads(out.read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "voc07_AP50", "voc_AP50", "per_class"} <= set(metrics)
    assert metrics["per_class"]["thing"]["voc07_AP50"] == pytest.approx(6 / 11)


@pytest.mark.parametrize("case", ["missing", "malformed", "unknown_image"])
def test_eval_tool_bad_input_exits_2(tmp_path: Path, case: str) -> None:
    gt_path = _write(tmp_path / "gt.json", _gt(HAND_GT, {1: "thing"}))
    dets_path = tmp_path / "dets.json"
    if case == "malformed":
        dets_path.write_text("[{]")
    elif case == "unknown_image":
        _write(dets_path, [_det(42, 1, [0, 0, 5, 5], 0.3)])
    proc = _run_eval("--gt", str(gt_path), "--dets", str(dets_path), "--out", str(tmp_path / "m.json"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert "dets.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()
