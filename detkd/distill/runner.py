"""Distillation runs on mmengine's Runner: teacher loading, unlabeled data, FitNets stages, TAKD.

A distillation config is a training config (``model`` is the student) plus::

    teacher = dict(checkpoint="work_dirs/teacher/best.pth",  # .pth (detkd), .pt or .yaml (ultralytics)
                   trust=False,        # allow unpickling a .pt / legacy checkpoint (it can run code)
                   imgsz=None,         # the teacher's input size when it differs from the student's
                   class_map=None,     # {teacher_name: student_name} or "by_name" when classes differ
                   allow_untrained=False)  # accept an ultralytics model .yaml (random weights): smoke tests only
    distill = dict(...)                # terms: see DistillConfig.from_dict
    unlabeled = dict(folder=None, split=None, ratio=0.0)   # extra images without labels
    hints = dict(taps=[dict(student="neck...", teacher="backbone...", weight=0.0, kernel=1)], epochs=0)
    chain = [dict(name="assistant", model=dict(...), epochs=None)]   # TAKD assistants, in order

:func:`run_distill` runs the stages in order, each resumable: for every TAKD assistant a
distillation from the current teacher (in ``work_dir/assistants/<i>_<name>``, whose best checkpoint
becomes the next teacher), then the student in ``work_dir``; with hints, each of these is preceded
by a FitNets stage 1 (``<dir>/hint_stage``) whose weights start the distillation.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner

from detkd.data.dataset import DetectionDataset
from detkd.data.mixed import MixedDataset, as_unlabeled, shared_images
from detkd.data.records import DatasetIndex
from detkd.data.transforms import build_train_transform
from detkd.distill.cache import DROP_WARN, TeacherCache
from detkd.distill.distiller import DistillConfig, DistillModel, HintTap
from detkd.distill.teachers import build_teacher_adapter
from detkd.config import run_options
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.engine.runner import build_runner, is_finished, run_stage
from detkd.errors import ConfigError
from detkd.fileio import atomic_write_json
from detkd.options import ChainOptions, RunOptions, UnlabeledOptions

__all__ = ["DistillStage", "build_distill_runner", "load_teacher", "plan_stages", "read_unlabeled", "run_distill",
           "teacher_val_score"]

TEACHER_VAL = "teacher_val.json"  # in the work dir: the teacher's val mAP50 / AP, measured once per teacher file
# A student that ends within this many val mAP50 points of its teacher (or above it) had little to learn from it: on a
# held-out dataset, a teacher 0.6 points above the labels-only student left the distilled one 2.2 points below it.
WEAK_TEACHER_MARGIN = 0.01


def load_teacher(teacher_cfg: dict[str, Any], class_names: list[str], imgsz: int) -> nn.Module:
    """The teacher network named by ``teacher.checkpoint`` (weights loaded, eval mode).

    ``.pth``: a detkd checkpoint (its stored model spec rebuilds it). ``.pt``: an ultralytics
    checkpoint (needs ``trust=True``: it is a pickle). ``.yaml``: an untrained ultralytics model,
    refused unless ``allow_untrained=True`` (for tests and smoke runs only: it teaches noise).

    Raises:
        TeacherError: no teacher, a missing file, a ``.pt`` without ``trust``, a dataset yaml, or a
            model yaml without ``allow_untrained``. CheckpointError: a ``.pth``/``.pt`` that cannot be
            loaded (not a checkpoint, unsafe without ``--trust-teacher``, weights that do not fit).
    """
    from detkd.errors import TeacherError

    path = teacher_cfg.get("checkpoint")
    if not path:
        raise TeacherError("no teacher: set teacher.checkpoint in the config or pass --teacher-ckpt")
    suffix = Path(str(path)).suffix.lower()
    trust = bool(teacher_cfg.get("trust", False))
    trust_flag = "--trust-teacher (config: teacher.trust=True)"
    if suffix in (".pt", ".yaml", ".yml"):
        from detkd.models.ultralytics_adapter import load_ultralytics, model_yaml_problem

        if suffix == ".pt":
            if not Path(path).is_file():
                raise TeacherError(f"{path}: teacher checkpoint not found")
            if not trust:
                raise TeacherError(f"{path}: an ultralytics .pt file is a Python pickle, and loading it can run "
                                   f"arbitrary code; if you trust this file, pass {trust_flag}")
        else:
            problem = model_yaml_problem(path)
            if problem:
                raise TeacherError(f"{path} {problem}; pass a trained teacher checkpoint (.pth or .pt)")
            if not bool(teacher_cfg.get("allow_untrained", False)):
                raise TeacherError(f"{path} is a model description with random weights, not a trained teacher "
                                   "(distilling from it teaches noise); pass a trained teacher checkpoint (.pth or .pt), "
                                   "or set teacher.allow_untrained=True for a smoke test")
        size = int(teacher_cfg.get("imgsz") or imgsz)
        names = class_names if suffix != ".pt" else None
        try:
            return load_ultralytics(str(path), names, size, trust=trust).eval()
        except FileNotFoundError as exc:  # a yaml that is neither a local file nor one ultralytics ships
            raise TeacherError(f"{path}: teacher model description not found") from exc
    if not Path(path).is_file():
        raise TeacherError(f"{path}: teacher checkpoint not found")
    from detkd.engine.checkpoint import load_detector

    return load_detector(path, trust=trust, trust_flag=trust_flag).eval()


def read_unlabeled(data: dict[str, Any], unlabeled: UnlabeledOptions) -> DatasetIndex | None:
    """The unlabeled pool: an image ``folder`` (relative to ``data.root`` unless absolute) or a
    labeled ``split`` of the dataset with its labels dropped; None when neither is set."""
    from detkd.data.sources import read_split
    from detkd.data.folder import read_folder

    folder, split = unlabeled.folder, unlabeled.split
    if folder and split:
        raise ConfigError("config keys unlabeled.folder and unlabeled.split: set one, not both")
    if folder:
        path = Path(folder)
        pool = read_folder(path if path.is_absolute() else Path(data["root"]) / path)
    elif split:
        pool = as_unlabeled(read_split(data, split))
    else:
        return None
    refuse_reported_images(pool, data, folder or f"split {split}")
    return pool


REPORTED_SPLITS = ("val", "test")  # the splits a run is judged on: val chooses its checkpoint, test reports it


def refuse_reported_images(pool: DatasetIndex, data: dict[str, Any], what: str) -> None:
    """Stop before training on images the run is judged on: an unlabeled pool that shares an image (the same
    file or a byte-identical copy, :func:`~detkd.data.mixed.shared_images`) with the dataset's ``val`` or
    ``test`` split. The teacher's outputs on them would leak those images into the student.

    Raises:
        ConfigError: naming the split, how many images are shared and the first of them.
    """
    from detkd.data.sources import read_split

    splits = dict(data.get("splits") or {})
    for name in REPORTED_SPLITS:
        if name not in splits and not (name == "val" and data.get("holdout")):
            continue
        shared = shared_images(pool, read_split(data, name))
        if shared:
            raise ConfigError(f"config key unlabeled ({what}): {len(shared)} of its {len(pool.records)} images are in the "
                              f"{name} split, which reports this run (first: {shared[0]}); use images no split you "
                              "evaluate on holds")


def _hint_taps(opts: RunOptions) -> list[HintTap]:
    return [HintTap(t.student, t.teacher, t.weight, t.kernel) for t in opts.hints.taps]


def build_distill_runner(cfg: Config, work_dir: str | Path, resume: bool = False, launcher: str = "none",
                         stage: str = "distill", load_from: str | None = None, name: str | None = None) -> Runner:
    """A Runner that trains ``cfg.model`` (the student) against ``cfg.teacher``; ``stage`` is the
    kind (``hint`` / ``distill``), ``name`` what the console and the logs call the run."""
    opts = run_options(cfg)
    teacher_cfg = dict(cfg.get("teacher") or {})
    distill_cfg = DistillConfig.from_options(opts.distill)
    taps = _hint_taps(opts)
    imgsz, decode = opts.imgsz, opts.decode
    ratio = opts.unlabeled.ratio
    pool = read_unlabeled(dict(cfg.data), opts.unlabeled) if ratio > 0 else None
    if ratio > 0 and pool is None:
        raise ConfigError(f"config key unlabeled.ratio = {ratio}: needs unlabeled.folder or unlabeled.split")
    cached = opts.teacher.cache and stage == "distill"
    preloaded, cache = _cached_teacher(cfg, opts, teacher_cfg, pool) if cached else (None, None)

    def make_model(student: nn.Module) -> DistillModel:
        teacher = preloaded if preloaded is not None else load_teacher(teacher_cfg, list(student.class_names), imgsz)
        adapter = build_teacher_adapter(teacher, student, opts.teacher.imgsz, opts.teacher.class_map,
                                        direct=opts.teacher.direct and not cached)
        return DistillModel(student, adapter, distill_cfg, taps, decode, stage=stage, cached=cached)

    def make_train_set(labeled: DetectionDataset) -> Any:
        labeled.teacher_cache = cache
        if pool is None:
            return labeled
        seed = opts.train.seed
        extra = DetectionDataset(pool, build_train_transform(imgsz, opts.train.augment, seed=seed + 1), seed=seed + 1,
                                 teacher_cache=cache)
        return MixedDataset(labeled, extra, ratio, seed=seed)

    cfg = copy.deepcopy(cfg)
    if taps:
        cfg.find_unused_parameters = True  # regressors idle in stage 2 when their weight is 0
    return build_runner(cfg, work_dir, resume, launcher, make_model=make_model, make_train_set=make_train_set,
                        load_from=load_from, stage=name)


def _cached_teacher(cfg: Config, opts: RunOptions, teacher_cfg: dict[str, Any], pool: DatasetIndex | None) -> tuple[nn.Module, TeacherCache]:
    """The teacher, loaded once, and its candidates on every training image (labeled and unlabeled),
    from the cache or computed now (:mod:`detkd.distill.cache`)."""
    from detkd.data.sources import read_split

    train = read_split(dict(cfg.data), "train")
    teacher = load_teacher(teacher_cfg, list(train.class_names), opts.imgsz)
    records = [*train.records, *(pool.records if pool is not None else [])]
    cache = TeacherCache.load_or_build(teacher, str(teacher_cfg["checkpoint"]), records, opts.teacher.cache_top_n,
                                       opts.teacher.cache_dir)
    print(f"[teacher cache] {len(cache.index)} images, top {opts.teacher.cache_top_n} candidates each: {cache.path}", flush=True)
    if cache.dropped and cache.dropped["candidates"]:
        print(f"[teacher cache] warning: the top-{opts.teacher.cache_top_n} cut left out {cache.dropped['candidates']} candidates "
              f"with objectness >= {DROP_WARN} in {cache.dropped['images']} of {len(cache.index)} images (an online teacher "
              "projects them; small objects lose most); a larger teacher.cache_top_n keeps them", flush=True)
    return teacher, cache


class DistillStage:
    """One Runner run of the pipeline: its config, folder, kind (``hint`` / ``distill``) and the
    checkpoint that starts it (FitNets stage 1 -> stage 2)."""

    def __init__(self, name: str, cfg: Config, work_dir: Path, kind: str) -> None:
        self.name, self.cfg, self.work_dir, self.kind = name, cfg, work_dir, kind

    @property
    def epochs(self) -> int:
        return int(self.cfg.train.epochs)

    def finished(self, load_from: str | None = None) -> bool:
        """Whether this stage's folder holds a finished run with these settings."""
        return is_finished(self.cfg, self.work_dir, load_from)

    def __repr__(self) -> str:
        return f"DistillStage({self.name!r}, {self.kind}, {self.work_dir})"


def plan_stages(cfg: Config, work_dir: str | Path) -> list[DistillStage]:
    """The runs :func:`run_distill` makes, in order (teachers of later stages are filled in as
    earlier ones finish)."""
    work_dir = Path(work_dir)
    opts = run_options(cfg)
    hint_epochs = opts.hints.epochs if opts.hints.taps else 0
    stages: list[DistillStage] = []
    nets: list[tuple[str, ChainOptions | None, Path]] = [
        (f"{i}_{a.name}", a, work_dir / "assistants" / f"{i}_{a.name}") for i, a in enumerate(opts.chain, start=1)]
    nets.append(("student", None, work_dir))
    for name, assistant, folder in nets:
        net_cfg = copy.deepcopy(cfg)
        if assistant is not None:
            net_cfg.model = dict(assistant.model)
            if assistant.epochs:
                net_cfg.train.epochs = assistant.epochs
        if hint_epochs:
            hint_cfg = copy.deepcopy(net_cfg)
            hint_cfg.train.epochs = hint_epochs
            hint_cfg.train.val_interval = hint_epochs + 1  # the head is untrained: nothing to validate
            hint_cfg.checkpoint = dict(hint_cfg.get("checkpoint", {}), save_best=None)
            stages.append(DistillStage(f"{name}/hint", hint_cfg, folder / "hint_stage", "hint"))
        stages.append(DistillStage(name, net_cfg, folder, "distill"))
    return stages


def teacher_val_score(cfg: Config, work_dir: str | Path) -> dict[str, Any] | None:
    """The teacher's COCO mAP50 / AP on the val split the student is chosen on, measured once per teacher file
    (read from ``<work_dir>/teacher_val.json`` when a finished run wrote it there); None, with the reason printed,
    when it cannot be measured (a teacher whose classes differ from the data's, a dataset without val)."""
    from detkd.data.sources import read_split
    from detkd.engine.evaluate import evaluate_model
    from detkd.errors import DetkdError
    from detkd.fileio import file_sha256

    teacher_cfg = dict(cfg.get("teacher") or {})
    path = teacher_cfg.get("checkpoint")
    if not path or not Path(str(path)).is_file():
        return None
    record, digest = Path(work_dir) / TEACHER_VAL, file_sha256(path)
    if record.is_file():
        kept = json.loads(record.read_text())
        if kept.get("sha256") == digest:
            return kept
    try:
        val = read_split(dict(cfg.data), "val")
        teacher = load_teacher(teacher_cfg, list(val.class_names), int(cfg.imgsz))
        metrics, _ = evaluate_model(teacher, val, progress=False)
    except DetkdError as exc:
        print(f"teacher: val mAP50 not measured ({exc})")
        return None
    return {"mAP50": metrics["AP50"], "AP": metrics["AP"], "checkpoint": str(path), "sha256": digest}


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_distill(cfg: Config, work_dir: str | Path, resume: bool = False, launcher: str = "none",
                name: str | None = None) -> Path:
    """Run every stage of :func:`plan_stages` (finished stages are skipped; with ``resume`` an
    interrupted one continues from its last checkpoint; :mod:`detkd.engine.run_state` refuses a
    stage folder whose run had other settings). Returns the student's best checkpoint.
    ``name`` prefixes the stage names on the console (``distilled/student/hint``).

    Before training, the teacher's val mAP50 is printed (:func:`teacher_val_score`); after, the student's best
    val mAP50 as a share of it, with a warning when the student ends within :data:`WEAK_TEACHER_MARGIN` of its
    teacher (a teacher that weak has little to teach)."""
    prefix = f"{name}/" if name else ""
    label = f"[{name}] " if name else ""
    teacher_score = teacher_val_score(cfg, work_dir) if _main_process() and not cfg.get("chain") else None
    if teacher_score is not None:
        print(f"{label}teacher: val mAP50 {teacher_score['mAP50']:.3f}, AP {teacher_score['AP']:.3f} ({teacher_score['checkpoint']})")
    teacher = dict(cfg.get("teacher") or {})
    hint_ckpt: str | None = None
    for stage in plan_stages(cfg, work_dir):
        stage.cfg.teacher = dict(teacher)
        start = None if stage.kind == "hint" else hint_ckpt
        final = run_stage(stage.cfg, stage.work_dir,
                          lambda stage=stage, start=start: build_distill_runner(  # type: ignore[misc]
                              stage.cfg, stage.work_dir, resume, launcher, stage.kind, load_from=start,
                              name=f"{prefix}{stage.name}"),
                          load_from=start, pick="latest" if stage.kind == "hint" else "best")
        # what the finished stage hands on: hint weights to its distillation, an assistant to the next net
        hint_ckpt = str(final) if stage.kind == "hint" else None
        if stage.kind == "distill" and stage.name != "student":
            teacher["checkpoint"] = str(final)
    student = RunState(work_dir).best_score()
    if teacher_score is not None:  # kept once the run is done (nothing is written into a work dir a run refused)
        atomic_write_json(Path(work_dir) / TEACHER_VAL, teacher_score)
    if teacher_score is not None and student is not None:
        share = f"{100 * student / teacher_score['mAP50']:.0f} % of its teacher's" if teacher_score["mAP50"] > 0 else "against its teacher's"
        print(f"{label}student: best val mAP50 {student:.3f}, {share} {teacher_score['mAP50']:.3f}")
        if student >= teacher_score["mAP50"] - WEAK_TEACHER_MARGIN:
            print(f"{label}warning: the student ends within {100 * WEAK_TEACHER_MARGIN:.0f} val mAP50 point of its teacher "
                  "or above it: a teacher this weak has little to teach, and distilling from one can leave the student "
                  "below the same student trained on labels only; train a stronger teacher (wider, longer, or a "
                  "model you already have) and compare with a labels-only run (detkd train)")
    return best_checkpoint(work_dir)
