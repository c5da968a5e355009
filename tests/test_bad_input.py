"""The bad-input corpus: every kind of bad input a careless or hostile user gives, each tool that
reads it run as a subprocess. Each case asserts the exit status, one ``error:`` line naming the file
and the problem, no traceback, and that the input folder is byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_CFG = str(REPO / "configs" / "train" / "fyolo_synthetic.py")
DISTILL_CFG = str(REPO / "configs" / "distill" / "fyolo_synthetic.py")
PRUNE_CFG = str(REPO / "configs" / "prune" / "ssd_cpu_synthetic.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``inputs/``: a small dataset of ours and every kind of bad file, made once."""
    from detkd.data.synthetic import generate_synthetic
    from detkd.engine.checkpoint import save_detector
    from detkd.models.factory import build_model

    inputs = tmp_path_factory.mktemp("corpus") / "inputs"
    data = inputs / "data"
    generate_synthetic(data, seed=2, counts={"train": 6, "val": 3, "test": 0, "unlabeled": 0}, size=96, workers=1, progress=False)
    user = inputs / "user_voc"  # "a user's dataset": not made by the generator
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (user / sub).mkdir(parents=True)
    shutil.copy(next((data / "JPEGImages").iterdir()), user / "JPEGImages" / "0001.jpg")
    shutil.copy(next((data / "Annotations").iterdir()), user / "Annotations" / "0001.xml")
    (user / "ImageSets" / "Main" / "train.txt").write_text("0001\n")
    (inputs / "broken_cfg.py").write_text("train = dict(epochs=3\n")
    (inputs / "random.pth").write_bytes(os.urandom(4096))
    (inputs / "empty.pth").write_bytes(b"")
    torch.save({"state_dict": {}, "meta": {"cfg": __import__("argparse").Namespace(a=1)}}, inputs / "pickled.pth")
    (inputs / "teacher.pt").write_bytes(b"\x80\x02}q\x00.")
    (inputs / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\nnc: 2\n")
    classes = json.loads((data / "annotations" / "instances_val.json").read_text())["categories"]
    save_detector(build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.125), inputs / "two_classes.pth")
    save_detector(build_model("fyolo", class_names=[c["name"] for c in classes], imgsz=64, width=0.125), inputs / "fyolo.pth")
    (inputs / "broken.json").write_text('{"images": [\n')
    (inputs / "dets_unknown_image.json").write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    other_run = inputs / "other_run"
    other_run.mkdir()
    torch.save({"state_dict": {}}, other_run / "epoch_1.pth")
    return inputs


def _data(corpus: Path) -> list[str]:
    return ["--cfg-options", f"data.root={corpus / 'data'}", "data.generate=None", "imgsz=64", "model.width=0.125",
            "train.epochs=1", "train.batch_size=2", "train.num_workers=0"]


# (id, argv builder, expected exit status, words the one error line must hold)
Case = tuple[str, Callable[[Path, Path], list[str]], int, list[str]]
CASES: list[Case] = [
    ("missing config", lambda c, o: ["tools/train.py", str(c / "nope.py")], 2, ["nope.py", "config file not found"]),
    ("broken config", lambda c, o: ["tools/train.py", str(c / "broken_cfg.py")], 2, ["broken_cfg.py", "SyntaxError"]),
    ("misspelled key", lambda c, o: ["tools/train.py", TRAIN_CFG, "--cfg-options", "train.epoch=3"], 2, ["did you mean train.epochs"]),
    ("missing data root", lambda c, o: ["tools/train.py", TRAIN_CFG, "--work-dir", str(o / "w"), "--cfg-options",
                                        f"data.root={c / 'no_such_data'}", "data.generate=None"], 2, ["no_such_data"]),
    ("generate into a user's dataset", lambda c, o: ["tools/train.py", TRAIN_CFG, "--work-dir", str(o / "w"), "--cfg-options",
                                                     f"data.root={c / 'user_voc'}"], 2, ["user_voc", "not made by detkd"]),
    ("work dir of another run", lambda c, o: ["tools/train.py", TRAIN_CFG, "--work-dir", str(c / "other_run"), *_data(c)], 2,
     ["other_run", "--resume", "--work-dir"]),
    ("random bytes checkpoint", lambda c, o: ["tools/eval.py", TRAIN_CFG, str(c / "random.pth"), *_data(c)], 2,
     ["random.pth", "not a PyTorch checkpoint"]),
    ("empty checkpoint", lambda c, o: ["tools/export.py", TRAIN_CFG, str(c / "empty.pth"), "--out", str(o / "m.onnx"), *_data(c)], 2,
     ["empty.pth", "empty file"]),
    ("pickled checkpoint", lambda c, o: ["tools/eval.py", TRAIN_CFG, str(c / "pickled.pth"), *_data(c)], 2, ["pickled.pth", "--trust"]),
    ("class mismatch on export", lambda c, o: ["tools/export.py", TRAIN_CFG, str(c / "two_classes.pth"), "--out", str(o / "m.onnx"),
                                               *_data(c)], 2, ["two_classes.pth", "classes"]),
    ("class mismatch on benchmark", lambda c, o: ["tools/benchmark.py", TRAIN_CFG, f"x={c / 'two_classes.pth'}", "--out-dir", str(o / "b"),
                                                  *_data(c)], 2, ["two_classes.pth", "classes"]),
    ("untrusted .pt teacher", lambda c, o: ["tools/train_distill.py", DISTILL_CFG, "--work-dir", str(o / "w"), "--teacher-ckpt",
                                            str(c / "teacher.pt"), *_data(c), "unlabeled.ratio=0"], 2, ["teacher.pt", "--trust-teacher"]),
    ("data.yaml as teacher", lambda c, o: ["tools/train_distill.py", DISTILL_CFG, "--work-dir", str(o / "w"), "--teacher-ckpt",
                                           str(c / "data.yaml"), *_data(c), "unlabeled.ratio=0"], 2, ["data.yaml", "dataset description"]),
    ("prune a broken checkpoint", lambda c, o: ["tools/prune.py", PRUNE_CFG, "--checkpoint", str(c / "random.pth"), "--work-dir",
                                                str(o / "prune"), *_data(c)[:4]], 2, ["random.pth", "not a PyTorch checkpoint"]),
    ("prune a YOLO checkpoint", lambda c, o: ["tools/prune.py", PRUNE_CFG, "--checkpoint", str(c / "fyolo.pth"), "--work-dir",
                                              str(o / "prune"), *_data(c)[:4], "imgsz=64"], 2, ["fyolo.pth"]),
    ("malformed ground truth", lambda c, o: ["tools/eval.py", "--gt", str(c / "broken.json"), "--dets", str(c / "dets_unknown_image.json")], 2,
     ["broken.json", "malformed JSON"]),
    ("detections of unknown images", lambda c, o: ["tools/eval.py", "--gt", str(c / "data" / "annotations" / "instances_val.json"),
                                                   "--dets", str(c / "dets_unknown_image.json")], 2, ["dets_unknown_image.json", "999"]),
    ("convert into a user's dataset", lambda c, o: ["tools/convert.py", str(c / "data"), "--to", "voc", "--out", str(c / "user_voc"),
                                                    "--split", "train"], 2, ["user_voc"]),
    ("make_dataset into a user's dataset", lambda c, o: ["tools/make_dataset.py", "synthetic", "--out", str(c / "user_voc"), "--train", "2",
                                                         "--val", "1", "--test", "0"], 2, ["user_voc"]),
]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("name", "argv", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(corpus, tmp_path, name, argv, status, words):
    before = _digest(corpus)
    proc = subprocess.run([sys.executable, *argv(corpus, tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr[-2000:]
    assert _digest(corpus) == before  # the inputs are untouched
    assert not (tmp_path / "prune").exists() and not (tmp_path / "m.onnx").exists()  # refused runs leave nothing behind
