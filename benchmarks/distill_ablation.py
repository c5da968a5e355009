#!/usr/bin/env python
"""Distillation ablation: the F-YOLO student trained with each part of detkd's distillation added in turn.

    python benchmarks/distill_ablation.py --dataset bccd [--data ../shared/data/bccd] [--epochs 30]
        [--seeds 0 1 2] [--teacher-ckpt CKPT [--trust-teacher] | --ultralytics-teacher] [--online] [--width W] [--student-imgsz N] [--kd-options KEY=VALUE ...]
        [--threads 2] [--only METHOD ...]
    python benchmarks/distill_ablation.py --dataset synthetic --epochs 15

Rows (``method``), every one with the same student (F-YOLO width 0.5), schedule and epochs:
``labels_only`` (tools/train.py), ``kd_plain`` (teacher terms without objectness scaling, no FM-NMS),
``kd_objscale`` (+ objectness scaling), ``kd_objscale_fmnms`` (+ FM-NMS, K=3, mode class),
``kd_full_unlabeled`` (+ unlabeled images), ``kd_hints`` (+ FitNets stage 1 for 3 extra epochs), and
``teacher``; peer rows ``ultralytics_labels_only`` and ``ultralytics_kd`` (``--only`` them: YOLOv8n
trained by ultralytics from its yaml, without / with ultralytics' own ``distill_model`` distillation
from a YOLOv8s trained the same way, same epochs and 320 px). On BCCD the teacher is the CPU-scale SSD (configs/train/ssd_cpu_bccd.py, the strongest
detkd baseline, projected onto the student's grid); BCCD has no images beyond its splits, so its
``kd_full_unlabeled`` and ``kd_hints`` rows are refused (rows made before this rule used the test split's
images as unlabeled data; they stay in the results file as they were). Rows are evaluated on val. On the built-in dataset the teacher is the YOLOv2-style model (configs/train/yolov2_synthetic.py)
and the unlabeled images are its unlabeled split (ratio 0.5); evaluated on val.

Every student row is trained once per ``--seeds`` value (``train.seed``; data order, augmentation and
initialisation change, the teacher does not: one teacher, trained with seed 0, serves every seed).
Distillation rows read the teacher cache (``teacher.cache=True``: the teacher runs once over the
training images, built by the first row and reused by the others) unless ``--online``; ``kd_hints``'s
FitNets stage always runs the online teacher (it needs its features). Each row records ``seed``,
``epochs``, ``teacher_cache``, ``train_step_ms`` (median training step, batch 16, data loading
included, after epoch 1) and ``val_curve`` (val mAP50 at every validation of the run: has it stopped
improving?). Without --teacher-ckpt the teacher is trained first (tools/train.py,
--teacher-epochs). Rows record their teacher's model and width (``teacher_model``, e.g. ``ssd_cpu_w0.25``; from
--teacher-ckpt also which file, ``ssd_cpu_w0.5@1a2b3c4d``, the first 8 hex digits of its SHA-256):
distilling from another teacher (``--teacher-ckpt`` of a width-0.5 SSD, or ``--teacher-width``) adds rows
beside the others (work folders ``<method>_from_<teacher>``), and the report then names the teacher in
each group and computes the targets per teacher. ``--width`` trains the student rows at another width
(the capacity experiment: rows keep ``student_width``, folders and names end in ``_w<width>``, and each
distilled row is compared with the labels-only row of its own width). ``--student-imgsz`` trains the student
rows at another input size while the teacher keeps its own (the input-size experiment: rows keep their
``imgsz``, folders and names end in ``_<size>px``, the teacher's boxes are scaled to the student's input, and
each distilled row is compared with the labels-only row of its own size). ``--ultralytics-teacher`` distills from
the peers' YOLOv8s (the cross-family rows: ultralytics' own trainer, seed 0, the same epochs, 320 px, the same split;
detkd reads its candidates through the one generic adapter; rows ``from_yolov8s@<hash>``, its teacher row evaluated
like a peer; ``ultralytics_kd`` rows record the same label, and rows from a YOLOv8s trained again are refused, not mixed; the YOLOv8s it trains is kept as data in ``benchmarks/subjects/yolov8s_<dataset>_<epochs>ep.pth`` and restored from there on a machine that lacks it); ``--teacher-ckpt`` also takes any ultralytics ``.pt`` with ``--trust-teacher``. ``--kd-options`` adds cfg-options to
the distilled rows only (the loss-balance experiments, e.g. ``distill.lambda_d=0.25``: rows keep ``kd_options``,
folders and names end in ``_lambda_d0.25``, and each option set gets its own line of targets). Resumable: every training resumes
from its last checkpoint, and rows already in the results file (same method, seed, epochs, teacher route,
student width and input size) are skipped; each is written as it finishes.
The markdown report gives, per method / epochs / teacher route, the mean ± sample standard deviation
over seeds, and the targets computed from those means; the plot shows the means with error bars.
Outputs: benchmarks/results/distill_ablation.{json,md,png}; work files in benchmarks/work/distill_ablation/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from common import DATA_ROOTS, REPO, RESULTS, SUBJECTS, kept_subjects, run
from common import WORK as BENCH_WORK

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.engine.benchmark import evaluate_and_time, machine_info, paired_onnx_latency, train_step_ms, validation_curve
from detkd.engine.checkpoint import checkpoint_model_label, load_detector
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.fileio import atomic_write_json, atomic_write_text, file_sha256
from detkd.models.factory import model_label
from detkd.models.ultralytics_adapter import ultralytics_run_args
from detkd.engine.results import (ResultsFile, last_validation_gain, markdown_table, mean_sd, plot_map_vs_fps, seed_summary,
                                  relative_path, write_markdown)

WORK = BENCH_WORK / "distill_ablation"
METHODS = ["labels_only", "kd_plain", "kd_objscale", "kd_objscale_fmnms", "kd_full_unlabeled", "kd_hints", "teacher"]
PEERS = ["ultralytics_labels_only", "ultralytics_kd"]  # YOLOv8n without / with ultralytics' distillation from YOLOv8s
PEER_TEACHER_RUN = "yolov8s_teacher"  # the YOLOv8s's run folder under peer_work()
KEPT_LABEL = "kept.json"  # beside a restored best.pt: the label of the kept file it was restored from
DATASETS = {
    "bccd": dict(teacher="ssd_cpu_bccd", distill="fyolo_bccd", hints="fyolo_bccd_hints", student="fyolo_bccd",
                 distill_ultralytics="fyolo_bccd_ultralytics_teacher",
                 unlabeled=None, data=str(DATA_ROOTS["bccd"])),
    "synthetic": dict(teacher="yolov2_synthetic", distill="fyolo_synthetic", hints="fyolo_synthetic_hints",
                      student="fyolo_synthetic", unlabeled=["unlabeled.ratio=0.5"], data=None),
}
NO_UNLABELED = ["unlabeled.ratio=0.0"]
OPTIONS = {  # cfg-options per distillation row
    "kd_plain": ["distill.scale_by_objectness=False", "distill.fm_nms.enabled=False", *NO_UNLABELED],
    "kd_objscale": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=False", *NO_UNLABELED],
    "kd_objscale_fmnms": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True", *NO_UNLABELED],
    "kd_full_unlabeled": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True"],  # + dataset's unlabeled
    "kd_hints": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True"],
}
COLUMNS = ["method", "seed", "epochs", "teacher_cache", "student_width", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms",
           "teacher_latency_ms", "speedup", "train_step_ms", "teacher_model", "kd_options"]
PAIR_ROUNDS = 5  # a distilled row and its teacher are timed in alternation, this many rounds of 30 runs each
KEY = ("method", "dataset", "seed", "epochs", "teacher_cache", "teacher_model", "series", "student_width", "imgsz",
       "kd_options")  # one row per run
# ``series``: None for rows of the current protocol; rows kept from an earlier protocol name it (their own
# teacher, machine and schedule), and the report shows them in a table of their own. ``teacher_model``: the
# teacher's model and width (``ssd_cpu_w0.25``), so rows distilled from another teacher (--teacher-ckpt,
# --teacher-width) sit beside the others in the same table. ``student_width``: None for the student config's width,
# else --width (the capacity experiment: a wider student, labels-only and distilled). ``imgsz``: the row's input size
# (--student-imgsz: the input-size experiment, students at another size than their teacher). ``kd_options``: None, or
# the distilled row's extra cfg-options (--kd-options, one string).
STUDENT_KD = [m for m in METHODS if m.startswith("kd_")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="bccd")
    parser.add_argument("--data", help="dataset root (default: BCCD's shared copy; the built-in one is generated)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every student row (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of the student rows (default: 0 1 2)")
    parser.add_argument("--online", action="store_true", help="distill from the online teacher instead of the teacher cache")
    parser.add_argument("--teacher-ckpt", help="use this trained teacher instead of training one (its rows are named by its model, "
                        "width and file hash, e.g. ssd_cpu_w0.5@1a2b3c4d)")
    parser.add_argument("--trust-teacher", action="store_true",
                        help="--teacher-ckpt is an ultralytics .pt (a pickle: it can run code) that you trust")
    parser.add_argument("--ultralytics-teacher", action="store_true",
                        help="distill from the peer YOLOv8s (ultralytics' own trainer, seed 0, --epochs, 320 px, same split; "
                        "trained here when missing): the cross-family rows, named from_yolov8s@<hash>")
    parser.add_argument("--teacher-epochs", type=int, default=30, help="epochs of a teacher trained here (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, help="input size of every row (default: the dataset config's)")
    parser.add_argument("--student-imgsz", type=int,
                        help="input size of the student rows only (the input-size experiment: the teacher keeps its own size)")
    parser.add_argument("--width", type=float, help="student width multiplier (default: the config's, 0.5)")
    parser.add_argument("--teacher-width", type=float, help="width of a teacher trained here (default: the config's)")
    parser.add_argument("--kd-options", nargs="+", metavar="KEY=VALUE",
                        help="extra cfg-options of the distilled rows only (e.g. distill.lambda_d=0.25; rows keep kd_options)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurements")
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the latency of every row already in the results file, in one quiet phase")
    parser.add_argument("--only", nargs="+", choices=METHODS + PEERS, help="run only these rows (default: the detkd rows)")
    parser.add_argument("--retire-teacher", metavar="LABEL",
                        help="only move the current rows of --dataset taught by (or evaluating) the teacher LABEL, a file "
                        "no machine has any more (e.g. yolov8s@529ac1ec), to a series of their own, so that rows from "
                        "its replacement can start; their numbers stay, in the report's earlier-series tables")
    return parser.parse_args()


def common_options(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    data = args.data or DATASETS[args.dataset]["data"]
    teacher = method == "teacher"
    epochs = args.teacher_epochs if teacher else args.epochs
    width = args.teacher_width if teacher else args.width
    options = [f"train.epochs={epochs}", f"train.seed={seed}"]
    imgsz = args.imgsz if teacher or method in PEERS else student_imgsz(args)
    if imgsz:
        options.append(f"imgsz={imgsz}")
    if width:
        options.append(f"model.width={width}")
    if data:
        options.append(f"data.root={data}")
    else:  # the built-in dataset, generated once for all rows
        options.append(f"data.root={WORK / args.dataset / 'data'}")
    if method in STUDENT_KD and not args.online:
        options.append("teacher.cache=True")
    return options


def cached(method: str, args: argparse.Namespace) -> bool | None:
    """The row's teacher route: True (teacher cache), False (online), None (no teacher)."""
    return (not args.online) if method in STUDENT_KD else None


def teacher_label(args: argparse.Namespace, default: bool = False) -> str:
    """The teacher's model and width (``ssd_cpu_w0.25``): from --teacher-ckpt (with its file's hash,
    ``ssd_cpu_w0.5@1a2b3c4d``), else the dataset's teacher config with --teacher-width (``default``: the
    config as it is)."""
    if args.teacher_ckpt and not default:
        if is_ultralytics_file(args.teacher_ckpt):  # the model its trainer recorded, and which file
            return ultralytics_label(args.teacher_ckpt)
        return checkpoint_model_label(args.teacher_ckpt, file_hash=True)
    model = dict(load_config(REPO / "configs" / "train" / f"{DATASETS[args.dataset]['teacher']}.py").model)
    width = model.get("width") if default or not args.teacher_width else args.teacher_width
    return model_label({"name": model["name"], "kwargs": {"width": width} if width is not None else {}})


def is_ultralytics_file(path: str | Path | None) -> bool:
    """An ultralytics checkpoint (``.pt``: a pickle, loaded only with --trust-teacher or when the run made it)."""
    return path is not None and Path(path).suffix == ".pt"


def teacher_imgsz(teacher: Path) -> int:
    """The input size ``teacher`` was trained at: a detkd checkpoint's stored size, an ultralytics run's ``imgsz``."""
    if is_ultralytics_file(teacher):
        size = ultralytics_run_args(teacher).get("imgsz")
        if not size:
            raise SystemExit(f"{teacher}: no args.yaml with imgsz beside its weights/ folder; the teacher's input size is unknown")
        return int(size)
    return int(load_detector(teacher).imgsz)


def load_row_model(ckpt: Path, method: str, imgsz: int, class_names: list[str] | None = None) -> Any:
    """A row's model: ultralytics' (peer rows, an ultralytics teacher; files this benchmark trained or the user
    trusted) or detkd's."""
    if method in PEERS or is_ultralytics_file(ckpt):
        from detkd.models.ultralytics_adapter import load_ultralytics

        return load_ultralytics(str(ckpt), class_names=class_names, imgsz=imgsz, trust=True)
    return load_detector(ckpt)


def student_config(dataset: str, data_root: str | None = None) -> Any:
    """The dataset's student training config (its width, input size, data), with ``data.root`` set when given."""
    return load_config(REPO / "configs" / "train" / f"{DATASETS[dataset]['student']}.py",
                       {"data.root": data_root} if data_root else None)


def student_width(args: argparse.Namespace) -> float | None:
    """The student rows' ``student_width``: --width where it differs from the student config's width, else None
    (rows of the config's width, as every row made before --width was recorded)."""
    if args.width is None:
        return None
    default = student_config(args.dataset).model.get("width")
    return None if default is not None and float(args.width) == float(default) else float(args.width)


def student_imgsz(args: argparse.Namespace) -> int | None:
    """The student rows' input size: --student-imgsz, else --imgsz, else None (the config's)."""
    return args.student_imgsz or args.imgsz


def other_student_imgsz(args: argparse.Namespace) -> int | None:
    """--student-imgsz where it differs from the size of the rest of the rows (--imgsz, else the student
    config's), else None: rows of the rows' common size keep their names and folders."""
    if not args.student_imgsz:
        return None
    common = args.imgsz or student_config(args.dataset).imgsz
    return None if int(args.student_imgsz) == int(common) else int(args.student_imgsz)


def kd_options(method: str, args: argparse.Namespace) -> str | None:
    """What a row records as ``kd_options``: --kd-options as one string for distilled rows, else None."""
    return " ".join(args.kd_options) if method in STUDENT_KD and getattr(args, "kd_options", None) else None


def kd_options_tag(options: str) -> str:
    """A folder- and name-safe form of ``kd_options``: each option's last key part and its value
    (``distill.lambda_d=0.25 distill.fm_nms.mode=box`` -> ``lambda_d0.25_modebox``)."""
    return "_".join(o.split("=", 1)[0].split(".")[-1] + o.split("=", 1)[-1] for o in options.split())


def row_suffix(method: str, args: argparse.Namespace) -> str:
    """What a row's name and work folder add for a student width other than the config's (``_w1``), a student
    input size other than the rows' (``_512px``) and a teacher other than the dataset's default
    (``_from_<teacher>``; the teacher row itself: ``_<teacher>``)."""
    label = teacher_label(args)
    other = label != teacher_label(args, default=True)
    if method == "teacher":
        return f"_{label}" if other else ""
    if method in PEERS:
        return ""
    width, size, options = student_width(args), other_student_imgsz(args), kd_options(method, args)
    return ((f"_w{width:g}" if width is not None else "") + (f"_{size}px" if size is not None else "")
            + (f"_{kd_options_tag(options)}" if options else "")
            + (f"_from_{label}" if other and method in STUDENT_KD else ""))


def default_teacher(dataset: str) -> str:
    """The label of ``dataset``'s default teacher (its teacher config as it is, e.g. ``ssd_cpu_w0.25``)."""
    return teacher_label(argparse.Namespace(dataset=dataset, teacher_ckpt=None, teacher_width=None), default=True)


def work_dir(method: str, seed: int, args: argparse.Namespace) -> Path:
    """Work folders: ``teacher`` / ``epochs_<e>/seed_<s>/<method>[_online]``, plus :func:`row_suffix`."""
    if method == "teacher":
        return WORK / args.dataset / f"teacher{row_suffix(method, args)}"
    route = "_online" if cached(method, args) is False else ""
    return WORK / args.dataset / f"epochs_{args.epochs}" / f"seed_{seed}" / f"{method}{route}{row_suffix(method, args)}"


def train_row(method: str, seed: int, teacher: Path | None, args: argparse.Namespace) -> Path:
    """Train (or resume) one row's model; returns its best checkpoint."""
    spec = DATASETS[args.dataset]
    work = work_dir(method, seed, args)
    opts = common_options(args, method, seed)
    if method in ("labels_only", "teacher"):
        config = spec["student"] if method == "labels_only" else spec["teacher"]
        cmd = [sys.executable, "tools/train.py", f"configs/train/{config}.py", "--work-dir", str(work), "--cfg-options", *opts]
    else:
        assert teacher is not None
        foreign = is_ultralytics_file(teacher)
        if foreign and method == "kd_hints":
            raise SystemExit("kd_hints needs a detkd teacher: FitNets hints read the teacher's features")
        if foreign and "distill_ultralytics" not in spec:
            raise SystemExit(f"{args.dataset} has no distillation config for an ultralytics teacher")
        config = spec["hints"] if method == "kd_hints" else spec["distill_ultralytics" if foreign else "distill"]
        if method in ("kd_full_unlabeled", "kd_hints") and spec["unlabeled"] is None:
            raise SystemExit(f"{method}: {args.dataset} has no images beyond its splits to serve as unlabeled data "
                             "(its val and test splits report the rows, so they cannot)")
        extra = OPTIONS[method] + (spec["unlabeled"] if method in ("kd_full_unlabeled", "kd_hints") else [])
        if other_student_imgsz(args) is not None or foreign:  # the teacher runs at its own size, its boxes scaled
            extra = [*extra, f"teacher.imgsz={teacher_imgsz(teacher)}"]
        extra = [*extra, *(args.kd_options or [])]
        cmd = [sys.executable, "tools/train_distill.py", f"configs/distill/{config}.py", "--work-dir", str(work),
               "--teacher-ckpt", str(teacher), *(["--trust-teacher"] if foreign else []), "--cfg-options", *opts, *extra]
    if not RunState(work).finished():  # --resume: continue an interrupted run (a new folder starts fresh)
        run([*cmd, "--resume"])
    return best_checkpoint(work)


def refuse_new_default_teacher(results: ResultsFile, label: str, args: argparse.Namespace) -> None:
    """Stop before training the default teacher again when the results already hold rows of a teacher
    with that label: its checkpoint is gone (a fresh machine), and students of a new teacher would be
    counted with the old one's. A new teacher's rows come from ``--teacher-ckpt``, named by its hash."""
    work = work_dir("teacher", 0, args)
    if RunState(work).finished():
        return
    if results.has(dataset=args.dataset, teacher_model=label, series=None):
        raise SystemExit(f"{RESULTS / 'distill_ablation.json'} holds rows distilled from {label}, whose checkpoint is not in "
                         f"{work}; a teacher trained again would mix with them. Train it with "
                         "tools/train.py and pass --teacher-ckpt (its rows are named by the file's hash).")


def ultralytics_label(ckpt: str | Path) -> str:
    """An ultralytics checkpoint's label: the model its trainer recorded and which file (``yolov8s@1a2b3c4d``).
    A kept model has one label wherever it is read from: a ``.pt`` restored from a kept subject (recorded beside
    it, ``kept.json``) and the trained file it was kept from (its hash is the entry's ``source_sha256``) both get
    the kept file's label."""
    kept = Path(ckpt).with_name(KEPT_LABEL)
    if kept.is_file():
        return str(json.loads(kept.read_text())["label"])
    digest = file_sha256(ckpt)
    for entry in kept_subjects(SUBJECTS).values():
        if entry.get("kind") == "ultralytics" and entry.get("source_sha256") == digest:
            return str(entry["label"])
    model = Path(str(ultralytics_run_args(ckpt).get("model", "ultralytics"))).stem
    return f"{model}@{digest[:8]}"


def peer_work(args: argparse.Namespace) -> Path:
    """The ultralytics runs' folder (the YOLO-layout split, the YOLOv8s teacher, the YOLOv8n peers)."""
    return WORK / args.dataset / "ultralytics" / f"epochs_{args.epochs}"


def peer_teacher_file(args: argparse.Namespace) -> Path:
    """Where the peers' YOLOv8s is: its run's ``best.pt`` (where train_ultralytics leaves it)."""
    return peer_work(args) / PEER_TEACHER_RUN / "weights" / "best.pt"


def kept_peer_teacher(args: argparse.Namespace) -> dict[str, Any] | None:
    """The peers' YOLOv8s kept in the repository (``benchmarks/subjects/yolov8s_<dataset>_<epochs>ep.pth``, by
    benchmarks/keep_subject.py --trust), as its ``subjects.json`` entry; None when there is none."""
    entry = kept_subjects(SUBJECTS).get(f"yolov8s_{args.dataset}_{args.epochs}ep")
    return entry if entry and entry.get("kind") == "ultralytics" else None


def peer_teacher_label(args: argparse.Namespace) -> str:
    """:func:`ultralytics_label` of the peers' YOLOv8s when it is on this machine, else the kept one's label, else
    ``yolov8s@untrained`` (no row matches it: the teacher is trained, and its rows then record its hash)."""
    best = peer_teacher_file(args)
    if best.is_file():
        return ultralytics_label(best)
    kept = kept_peer_teacher(args)
    return str(kept["label"]) if kept else "yolov8s@untrained"


def restore_peer_teacher(entry: dict[str, Any], best: Path) -> Path:
    """Write ``best`` (an ultralytics ``.pt``), its run's ``args.yaml`` and :data:`KEPT_LABEL` from a kept YOLOv8s,
    after checking the kept file's hash against its ``subjects.json`` entry."""
    import yaml

    from detkd.models.ultralytics_adapter import restore_ultralytics_checkpoint

    kept = REPO / entry["file"]
    if file_sha256(kept) != entry["sha256"]:
        raise SystemExit(f"{kept}: its SHA-256 is not the one benchmarks/subjects/subjects.json records; "
                         "the kept teacher was changed, refusing to use it")
    restore_ultralytics_checkpoint(kept, best)
    atomic_write_text(best.parent.parent / "args.yaml", yaml.safe_dump(entry["run_settings"] or {}, sort_keys=False))
    atomic_write_json(best.with_name(KEPT_LABEL), {"label": entry["label"], "restored_from": entry["file"]})
    print(f"{best}: restored from the kept {entry['file']} ({entry['label']})", flush=True)
    return best


def refuse_mixed_peer_teachers(results: ResultsFile, peer_label: str | None, args: argparse.Namespace) -> None:
    """Stop before adding ``ultralytics_kd`` rows distilled from a YOLOv8s other than the one the results'
    rows of these epochs were distilled from (its file lost and trained again): the seeds would mix teachers."""
    others = {r.get("teacher_model") for r in results.rows if r["method"] == "ultralytics_kd" and r.get("series") is None
              and r["dataset"] == args.dataset and r["epochs"] == args.epochs} - {peer_label}
    if others:
        raise SystemExit(f"{RESULTS / 'distill_ablation.json'} holds ultralytics_kd rows distilled from {', '.join(sorted(others))}, "
                         f"not from the YOLOv8s in {peer_work(args)} ({peer_label}); its rows at other seeds would mix "
                         "teachers. Bring that file back, or move its rows to a series of their own "
                         f"(--retire-teacher {' / '.join(sorted(others))}).")


def peer_setup(args: argparse.Namespace) -> dict[str, Any]:
    """What every ultralytics training of this benchmark shares: the split written in YOLO layout (once), epochs,
    320 px, batch 16, the work folder."""
    from detkd.data.voc import read_voc
    from detkd.data.writers import write_yolo

    if args.dataset != "bccd":
        raise SystemExit("peer rows are set up for --dataset bccd")
    work = peer_work(args)
    data_yaml = work / "yolo_data" / "data.yaml"
    if not data_yaml.is_file():
        root = args.data or DATASETS["bccd"]["data"]
        for split in ("train", "val"):
            write_yolo(read_voc(root, split, ["Platelets", "RBC", "WBC"]), data_yaml.parent, split)
    return dict(data_yaml=data_yaml, epochs=args.epochs, imgsz=320, batch=16, project=work, workers=2)


def peer_teacher(args: argparse.Namespace) -> Path:
    """The YOLOv8s trained by ultralytics' own trainer (seed 0): ``ultralytics_kd``'s ``distill_model`` and, with
    --ultralytics-teacher, the detkd student's teacher (the cross-family rows). When missing: restored from the
    kept one (:func:`kept_peer_teacher`), else trained."""
    from detkd.models.ultralytics_adapter import train_ultralytics

    setup = peer_setup(args)
    best, kept = peer_teacher_file(args), kept_peer_teacher(args)
    if best.with_name(KEPT_LABEL).is_file():  # restored before (no results.csv: train_ultralytics would train it)
        return best
    if kept and not best.is_file() and not (best.parent / "last.pt").is_file():
        return restore_peer_teacher(kept, best)
    best = train_ultralytics("yolov8s.yaml", name=PEER_TEACHER_RUN, **setup)
    if kept is None and best.is_file():  # trained here: keep it in the repository before any row is named from it
        keep_peer_teacher(best, args)
    return best


def keep_peer_teacher(best: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Keep a YOLOv8s trained here as ``benchmarks/subjects/yolov8s_<dataset>_<epochs>ep.pth`` (benchmarks/keep_subject.py:
    data only; the benchmark made the ``.pt``, so it is trusted), so that it outlives this machine; commit the file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("keep_subject", Path(__file__).with_name("keep_subject.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = module.keep(best, f"yolov8s_{args.dataset}_{args.epochs}ep", trust=True, subjects=SUBJECTS,
                        trained_by=f"python benchmarks/distill_ablation.py --dataset {args.dataset} --epochs {args.epochs} "
                                   "--ultralytics-teacher --only teacher (train_ultralytics yolov8s.yaml, seed 0, 320 px, batch 16)")
    print(f"{best}: kept as {entry['file']} ({entry['label']}); commit it", flush=True)
    return entry


def train_peer(method: str, seed: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """Peer rows: ultralytics' own trainer, YOLOv8n from its yaml, with ``distill_model`` = :func:`peer_teacher`
    for ``ultralytics_kd`` (ultralytics' default ``dis`` weight); the student with ultralytics' ``seed``.
    Returns (checkpoint, teacher checkpoint)."""
    from detkd.models.ultralytics_adapter import train_ultralytics

    common = peer_setup(args)
    teacher = peer_teacher(args)
    suffix = f"_seed{seed}"
    if method == "ultralytics_labels_only":
        return train_ultralytics("yolov8n.yaml", name=f"yolov8n_labels_only{suffix}", seed=seed, **common), teacher
    return (train_ultralytics("yolov8n.yaml", name=f"yolov8n_kd{suffix}", distill_model=str(teacher), seed=seed, **common),
            teacher)


def _checkpoint_epochs(path: Path) -> int | None:
    """The epochs a teacher's checkpoint records (an ultralytics run: its ``args.yaml``'s)."""
    from detkd.engine.checkpoint import load_checkpoint_file

    if is_ultralytics_file(path):
        return ultralytics_run_args(path).get("epochs")
    return load_checkpoint_file(path).get("meta", {}).get("epoch")


def time_beside_teacher(row: dict[str, Any], teacher: Path, index: Any, threads: int) -> None:
    """Time a distilled row's student (its ONNX file, ``WORK/onnx/<name>.onnx``) and its ``teacher`` in alternation
    (:func:`~detkd.engine.benchmark.paired_onnx_latency`, :data:`PAIR_ROUNDS` rounds), on a real ``index`` image at
    each one's input size: the row's ``onnx_latency_ms`` and ``teacher_latency_ms`` then come from one machine state
    and its speedup divides the two (``paired_speedups``: the ratio of each round). The teacher's graph is exported
    once per file and size (``WORK/onnx/teacher_<sha8>_<size>.onnx``)."""
    from detkd.export.onnx import export_onnx, sample_images

    size = teacher_imgsz(teacher)
    teacher_onnx = WORK / "onnx" / f"teacher_{file_sha256(teacher)[:8]}_{size}.onnx"
    teacher_images = sample_images(index, size, count=4)
    if not teacher_onnx.is_file():
        export_onnx(load_row_model(teacher, "teacher", size, index.class_names), teacher_onnx, size, check_images=teacher_images)
    student = sample_images(index, int(row["imgsz"]), count=1)
    pair = paired_onnx_latency((WORK / "onnx" / f"{row['name']}.onnx", student), (teacher_onnx, teacher_images[:1]), threads,
                               rounds=PAIR_ROUNDS)
    row.update(onnx_latency_ms=pair["first_ms"], teacher_latency_ms=pair["second_ms"], paired_speedups=pair["ratios"])


def retime(results: ResultsFile, args: argparse.Namespace) -> None:
    """Re-measure params/FLOPs/latency of every current row of ``--dataset`` from its checkpoint and ONNX file, one
    after the other, so all rows share one machine state (accuracy columns are kept). Rows of another series keep
    their timings: their checkpoint paths may now hold another run's file (a retired teacher's rows share the
    paths of the rows that replaced them). A teacher row is retimed only when every current row distilled from it
    can be: its speedups divide their latency by the teacher's, and both must come from one phase. A distilled row
    whose teacher file is here is also timed beside it (:func:`time_beside_teacher`): its speedup is then its own pair's."""
    from detkd.engine.benchmark import benchmark_detector
    from detkd.export.onnx import export_onnx, sample_images

    def local(path: str) -> Path:  # a row's recorded file (relative to the repository, or absolute)
        return Path(path) if Path(path).is_absolute() else REPO / path

    current = [r for r in results.rows if r["dataset"] == args.dataset and r.get("series") is None]
    absent = {r["teacher_model"] for r in current if r["method"] != "teacher" and r.get("teacher_model")
              and not local(r["checkpoint"]).is_file()}
    for row in current:
        ckpt = local(row["checkpoint"])
        if not ckpt.is_file():
            print(f"{row['name']}: skipped, its checkpoint {ckpt} is not on this machine", flush=True)
            continue
        if row["method"] == "teacher" and row.get("teacher_model") in absent:
            print(f"{row['name']}: skipped, rows distilled from it are not on this machine to retime with it", flush=True)
            continue
        detector = load_row_model(ckpt, row["method"], int(row["imgsz"]))
        spec = DATASETS[row["dataset"]]
        cfg = student_config(row["dataset"], args.data or spec["data"] or str(WORK / row["dataset"] / "data"))
        val = read_split(dict(cfg.data), "val")
        images = sample_images(val, int(row["imgsz"]), count=4)
        onnx_path = WORK / "onnx" / f"{row['name']}.onnx"
        if not onnx_path.is_file():  # work folders do not outlive a machine: export again
            export_onnx(detector, onnx_path, int(row["imgsz"]), check_images=images)
        row.update(benchmark_detector(detector, int(row["imgsz"]), args.threads, onnx_path, image=images[:1]))
        teacher = local(row["teacher"]) if row["method"] in STUDENT_KD and row.get("teacher") else None
        if teacher is not None and teacher.is_file():
            time_beside_teacher(row, teacher, val, args.threads)
        results.add(row, key=KEY)
        paired = f", its teacher {row['teacher_latency_ms']:.2f} ms beside it" if row.get("paired_speedups") else ""
        print(f"{row['name']}: onnx {row['onnx_latency_ms']:.2f} ms{paired}", flush=True)


def retire_teacher(results: ResultsFile, label: str, dataset: str) -> int:
    """Move the current-protocol rows of ``dataset`` whose ``teacher_model`` is ``label`` (its teacher row, the rows
    distilled from it, ``ultralytics_kd`` rows) to the series ``taught by <label> (file lost)``; returns how many."""
    moved = results.update(lambda r: r["dataset"] == dataset and r.get("series") is None and r.get("teacher_model") == label,
                           series=f"taught by {label} (file lost)")
    if not moved:
        raise SystemExit(f"{RESULTS / 'distill_ablation.json'}: no current {dataset} rows name the teacher {label}")
    print(f"{moved} rows taught by {label} moved to a series of their own", flush=True)
    return moved


def main() -> int:
    args = parse_args()
    command = "python benchmarks/distill_ablation.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "distill_ablation.json", machine_info(args.threads), command.strip())
    if args.retime:
        retime(results, args)
        write_report(results)
        return 0
    if args.retire_teacher:
        retire_teacher(results, args.retire_teacher, args.dataset)
        write_report(results)
        return 0
    wanted = args.only or METHODS
    if args.ultralytics_teacher and args.teacher_ckpt:
        raise SystemExit("--ultralytics-teacher and --teacher-ckpt both name the teacher: pass one")
    if args.ultralytics_teacher:  # the cross-family teacher: the peers' YOLOv8s, a file this benchmark trains
        args.teacher_ckpt, args.trust_teacher = str(peer_teacher(args)), True
    if is_ultralytics_file(args.teacher_ckpt) and not args.trust_teacher:
        raise SystemExit(f"{args.teacher_ckpt}: an ultralytics .pt file is a Python pickle, and loading it can run "
                         "arbitrary code; if you trust this file, pass --trust-teacher")
    teacher = Path(args.teacher_ckpt) if args.teacher_ckpt else None
    label = teacher_label(args)
    width = student_width(args)
    imgsz = int(student_imgsz(args) or student_config(args.dataset).imgsz)

    peer_label = peer_teacher_label(args) if set(wanted) & set(PEERS) else None  # hashes the YOLOv8s: only for peers

    def done(method: str, seed: int) -> bool:  # rows of the current protocol only (series None)
        if method == "teacher":
            return results.has(method=method, dataset=args.dataset, teacher_model=label, series=None)
        size = {} if method in PEERS else {"imgsz": imgsz}
        return results.has(method=method, dataset=args.dataset, seed=seed, epochs=args.epochs,
                           teacher_cache=cached(method, args), teacher_model=row_teacher_model(method, label, peer_label),
                           series=None,
                           student_width=width if method not in PEERS else None, kd_options=kd_options(method, args), **size)

    todo = [(m, s) for s in args.seeds for m in wanted if not done(m, s) and not (m == "teacher" and s != args.seeds[0])]
    if teacher is None and [m for m, _ in todo if m != "labels_only" and m not in PEERS]:
        refuse_new_default_teacher(results, label, args)
        teacher = train_row("teacher", 0, None, args)
    spec = DATASETS[args.dataset]
    cfg = student_config(args.dataset, args.data or spec["data"] or str(WORK / args.dataset / "data"))
    val = read_split(dict(cfg.data), "val")
    for method, seed in todo:  # seed-major: every seed's rows finish before the next seed starts
        if method in PEERS:
            if method == "ultralytics_kd":
                refuse_mixed_peer_teachers(results, peer_label, args)
            ckpt, row_teacher = train_peer(method, seed, args)
            peer_label = ultralytics_label(row_teacher)  # trained just now, if it was not here
        else:
            ckpt = teacher if method == "teacher" else train_row(method, seed, teacher, args)
            row_teacher = teacher
            assert ckpt is not None
        size = teacher_imgsz(ckpt) if method == "teacher" and is_ultralytics_file(ckpt) else int(cfg.imgsz)
        detector = load_row_model(ckpt, method, size, val.class_names)
        step = train_step_ms(ckpt.parent)  # None for ultralytics runs: their steps are not logged the same way
        curve = validation_curve(ckpt.parent)
        name = f"{args.dataset}_{method}{row_suffix(method, args)}" + (f"_s{seed}" if method != "teacher" else "")
        row = evaluate_and_time(name, detector, val, WORK / "onnx", args.threads, dataset=args.dataset)
        if method in STUDENT_KD and row_teacher is not None:  # its speedup from one machine state
            time_beside_teacher(row, row_teacher, val, args.threads)
        epochs = args.epochs
        if method == "teacher":  # the epochs its checkpoint records
            epochs = _checkpoint_epochs(ckpt) or args.teacher_epochs
        row.update(method=method, seed=0 if method == "teacher" else seed, epochs=epochs,
                   teacher_cache=cached(method, args), train_step_ms=step, val_curve=curve, command=command.strip(),
                   checkpoint=relative_path(ckpt, REPO), teacher=relative_path(row_teacher, REPO), split="val",
                   teacher_model=row_teacher_model(method, label, peer_label),
                   student_width=width if method not in ("teacher", *PEERS) else None, kd_options=kd_options(method, args))
        results.add(row, key=KEY)
        print(f"{name}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f} onnx {row['onnx_latency_ms']:.1f} ms", flush=True)
        write_report(results)
    write_report(results)
    return 0


def row_teacher_model(method: str, label: str, peer_label: str | None = None) -> str | None:
    """What a row records as ``teacher_model``: the teacher's label for distilled rows and the teacher
    itself, the peers' YOLOv8s (``peer_label``, with its file's hash) for ``ultralytics_kd``, None for
    labels-only rows of either family."""
    if method == "ultralytics_kd":
        return peer_label
    return None if method in ("labels_only", "ultralytics_labels_only") else label


def group_name(row: dict[str, Any], by_teacher: bool = False, imgsz: int | None = None) -> str:
    """Runs that differ only in their seed share a group: method, epochs, teacher route (and, when a
    table holds several teachers, the teacher; the student's width and, when it is not ``imgsz``, its input size)."""
    route = {True: ", cached", False: ", online", None: ""}[row.get("teacher_cache")]
    source = f", from {row['teacher_model']}" if by_teacher and row["method"] in STUDENT_KD else ""
    name = f"teacher {row['teacher_model']}" if by_teacher and row["method"] == "teacher" else row["method"]
    width = f", student w{row['student_width']:g}" if row.get("student_width") is not None else ""
    size = f", {row['imgsz']} px" if imgsz and row["method"] != "teacher" and row.get("imgsz") != imgsz else ""
    options = f", {row['kd_options']}" if row.get("kd_options") else ""
    return f"{name} ({row['epochs']} ep{route}{source}{width}{size}{options})"


def targets(rows: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, computed from the means over seeds, one line per student schedule."""
    teachers = {s["teacher_model"]: s for s in summaries if s["method"] == "teacher"}
    lines = []
    for epochs, source, width, size, options in sorted({(r["epochs"], r["teacher_model"], r.get("student_width") or 0.0,
                                                         r.get("imgsz") or 0, r.get("kd_options") or "")
                                                        for r in rows if r["method"] in STUDENT_KD}):
        def same(s: dict[str, Any]) -> bool:  # the same student schedule, width and input size
            return s["epochs"] == epochs and (s.get("student_width") or 0.0) == width and (s.get("imgsz") or 0) == size

        base = next((s for s in summaries if s["method"] == "labels_only" and same(s)), None)
        kd = [s for s in summaries if s["method"] in STUDENT_KD and same(s) and s["teacher_model"] == source
              and (s.get("kd_options") or "") == options]
        teacher = teachers.get(source)
        if not kd:
            continue
        full = [s for s in kd if s["method"] == "kd_full_unlabeled"]
        picks = [("full distillation", max(full, key=lambda s: s["n"]))] if full else []
        best = max(kd, key=lambda s: s["mAP50"])  # an option set without a full row still gets its line, named as it is
        if not picks or best is not picks[0][1]:
            picks.append(("best distilled row", best))
        # --kd-options that change the student's own network (model.*) leave the labels-only row on the config's
        model_options = [o for o in options.split() if o.startswith("model.")]
        unlike = (f", a labels-only row of the config's network, not of this row's {' '.join(model_options)}"
                  if model_options else "")
        for label, pick in picks:
            shown = f", student {size} px" if teacher and size and size != teacher.get("imgsz") else ""
            line = (f"- **{epochs} epochs**{f', student width {width:g}' if width else ''}{shown}, {label} {pick['group']} (n={pick['n']}): {pick['mAP50']:.3f} mAP50 / {pick['AP']:.3f} AP "
                    + (f"against labels-only (n={base['n']}) {base['mAP50']:.3f} / {base['AP']:.3f}: "
                       f"**{100 * (pick['mAP50'] - base['mAP50']):+.1f} mAP50, {100 * (pick['AP'] - base['AP']):+.1f} AP** (target +3 / +3{unlike})"
                       if base else "(no labels-only row of this width and input size to compare with)"))
            if teacher:
                beside = (f", timed beside it ({pick['paired']} of {pick['n']} runs)" if pick.get("paired") else "")
                line += (f"; keeps **{100 * pick['mAP50'] / teacher['mAP50']:.0f} %** of its teacher's ({source}) mAP50 at "
                         f"**{pick['speedup']:.1f}x** lower ONNX latency{beside} (target 95 % at 5x)")
            if base and base.get("train_step_ms") and pick.get("train_step_ms"):
                line += f"; its training step costs {pick['train_step_ms'] / base['train_step_ms']:.2f}x a labels-only step"
            lines.append(line + ".")
    peers = {s["method"]: s for s in summaries if s["method"] in PEERS}
    if len(peers) == 2:
        lo, kd = peers["ultralytics_labels_only"], peers["ultralytics_kd"]
        lines.append(f"- **ultralytics** ({lo['epochs']} epochs, n={lo['n']}/{kd['n']}): its KD gain "
                     f"{100 * (kd['mAP50'] - lo['mAP50']):+.1f} mAP50, {100 * (kd['AP'] - lo['AP']):+.1f} AP.")
    return lines


def write_report(results: ResultsFile) -> None:
    parts = []
    plotted = []
    m = results.data["machine"]
    panels = sorted(dict.fromkeys((r["dataset"], r.get("series")) for r in results.rows if r["dataset"] in DATASETS),
                    key=lambda p: (list(DATASETS).index(p[0]), p[1] is not None, str(p[1])))
    for dataset, series in panels:
        rows = [r for m_ in METHODS + PEERS for r in results.rows
                if r["method"] == m_ and r["dataset"] == dataset and r.get("series") == series]
        if not rows:
            continue
        rows.sort(key=lambda r: (r["method"] == "teacher", r["epochs"], (METHODS + PEERS).index(r["method"]),
                                 str(r.get("teacher_model")), str(r.get("teacher_cache")), r["seed"]))
        teachers = {r["teacher_model"]: r for r in rows if r["method"] == "teacher"}
        # labels-only and peer rows: against the dataset's default teacher (the one this benchmark trains), else the first
        teacher = teachers.get(default_teacher(dataset), next(iter(teachers.values()), None))
        sizes = [r.get("imgsz") for r in rows if r["method"] != "teacher"]
        common = teacher.get("imgsz") if teacher else max(set(sizes), key=sizes.count, default=None)
        for r in rows:  # distilled rows and each teacher: against their own teacher (timed beside it, where it was)
            own = teachers.get(r.get("teacher_model")) if r["method"] in (*STUDENT_KD, "teacher") else teacher
            r["speedup"] = own["onnx_latency_ms"] / r["onnx_latency_ms"] if own else None
            if r["method"] in STUDENT_KD and r.get("teacher_latency_ms"):
                r["speedup"] = r["teacher_latency_ms"] / r["onnx_latency_ms"]
            r["group"] = group_name(r, by_teacher=len(teachers) > 1, imgsz=common)
        summaries = seed_summary(rows, "group", ["mAP50", "AP", "onnx_latency_ms", "train_step_ms"])
        for s in summaries:
            first = next(r for r in rows if r["group"] == s["group"])
            s.update(method=first["method"], epochs=first["epochs"], name=s["group"], teacher_model=first.get("teacher_model"),
                     student_width=first.get("student_width"), imgsz=first.get("imgsz"), kd_options=first.get("kd_options"),
                     dataset=dataset if series is None else f"{dataset}: {series}")
        table = ["| method (epochs, teacher route) | seeds | mAP50 | AP | ONNX ms | speedup | step ms | val mAP50 gain, last validations |",
                 "|---|---|---|---|---|---|---|---|"]
        for s in summaries:
            members = [r for r in rows if r["group"] == s["group"]]
            steps = [r["train_step_ms"] for r in members if r.get("train_step_ms")]
            own = teachers.get(s["teacher_model"]) if s["method"] in (*STUDENT_KD, "teacher") else teacher
            paired = [r["speedup"] for r in members if r.get("teacher_latency_ms")]
            s["speedup"] = statistics.mean(paired) if paired else own["onnx_latency_ms"] / s["onnx_latency_ms"] if own else None
            s["paired"] = len(paired)
            speedup = "-" if s["speedup"] is None else f"{s['speedup']:.2f}x" + (
                "" if not paired else " (paired)" if len(paired) == len(members) else f" (paired {len(paired)}/{len(members)})")
            step = f"{statistics.median(steps):.0f} ({min(steps):.0f}-{max(steps):.0f})" if steps else "-"
            s["train_step_ms"] = statistics.median(steps) if steps else None  # median: robust to one disturbed run
            table.append(f"| {s['group']} | {s['n']} | {mean_sd([r['mAP50'] for r in members])} | "
                         f"{mean_sd([r['AP'] for r in members])} | {s['onnx_latency_ms']:.1f} | {speedup} | "
                         f"{step} | {last_validation_gain(members)} |")
        plotted += summaries
        parts.append(
            f"**{dataset}{': ' + series if series else ''}** (val split; every student row is the same F-YOLO; mean ± sample standard deviation over "
            f"the seeds; ONNX Runtime latency batch 1, median of 30 runs, {m['threads']} threads, {m['cpu']}, torch "
            f"{m['torch']}, onnxruntime {m['onnxruntime']}; step: median training step, batch 16, data loading included, "
            "median over the seeds (min-max))."
            "\n\n" + "\n".join(table) + "\n\n" + "\n".join(targets(rows, summaries)) + "\n\nEvery run:\n\n"
            + markdown_table(rows, COLUMNS))
    write_markdown(RESULTS / "distill_ablation.md", "\n\n".join(parts) + "\n")
    plot_map_vs_fps(plotted, RESULTS / "distill_ablation.png",
                    "Distillation ablation: mAP50 (mean ± sd over seeds) vs ONNX Runtime FPS")


if __name__ == "__main__":
    sys.exit(main())
