"""The distiller: a frozen teacher, a student and named loss terms, as one mmengine model.

``DistillModel(student, teacher_adapter, DistillConfig, hints)`` is a
:class:`~detkd.engine.model.DetectorModel` whose ``detector`` is the student, so validation,
checkpoints (``meta["detkd"]`` describes the student), ``tools/eval.py`` and ONNX export see the
student alone. In ``loss`` mode one batch gives:

1. the student's raw outputs ``Float[B, A, S_h, S_w, 5 + K]`` on the augmented images;
2. the teacher's map on the *same* images, computed once under no-grad by the adapter
   (:mod:`detkd.distill.teachers`), optionally with noisy logits (Sau 2016), then FM-NMS
   (:mod:`detkd.ops.fm_nms`) or not;
3. the terms, each logged under its name: ground truth ``loss_obj``, ``loss_noobj``, ``loss_cls``,
   ``loss_box`` (unlabeled images give none); objectness-scaled teacher terms ``loss_kd_obj``,
   ``loss_kd_cls``, ``loss_kd_box`` (:mod:`detkd.losses.objectness_kd`); optional ``loss_hinton``
   and ``loss_logit_l2`` on class logits, per slot weighted like the teacher's class term; optional
   ``loss_hint_<i>`` FitNets terms.

The teacher is *not* a registered submodule: it is never trained, never in the state dict (the
checkpoints hold the student and the hint regressors only) and never wrapped by DDP; it follows the
batch's device. The ``stage`` attribute selects FitNets stage 1 (``"hint"``: hint terms only, which
train the student up to its guided layers and the regressors) or the distillation (``"distill"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from detkd.distill.taps import FeatureTaps, probe_channels
from detkd.distill.teachers import TeacherAdapter
from detkd.engine.model import DetectorModel
from detkd.errors import ConfigError
from detkd.losses.hint import HintRegressor, hint_loss
from detkd.losses.kd import hinton_kd, logit_l2, noisy_teacher
from detkd.losses.objectness_kd import objectness_scaled_kd
from detkd.models.detector import DecodeConfig
from detkd.options import DistillOptions, parse_section
from detkd.ops.fm_nms import TeacherMap, TeacherTargets, fm_nms_targets

__all__ = ["DistillConfig", "DistillModel", "HintTap"]


@dataclass
class DistillConfig:
    """Which terms, with which weights (config key ``distill``; see :meth:`from_dict`).

    Attributes:
        lambda_d: ``λ_D``, weight of the objectness-scaled teacher terms (paper: 1).
        scale_by_objectness: multiply the teacher's class and box terms by its objectness (paper).
        objectness_kd: use the teacher terms at all (False: classic terms alone).
        fm_nms: run FM-NMS on the teacher map; ``fm_nms_kernel`` cells, ``fm_nms_mode`` what
            suppressed candidates lose (``class`` / ``class_box`` / ``all``).
        gt_weight: multiplier of the ground-truth terms (0: train on the teacher alone).
        hinton_weight, hinton_tau: Hinton KD on class logits (off at weight 0).
        logit_l2_weight: Ba & Caruana logit regression (off at 0).
        noise_sigma: Gaussian noise on the teacher's class logits (off at 0).
    """

    lambda_d: float = 1.0
    scale_by_objectness: bool = True
    objectness_kd: bool = True
    fm_nms: bool = True
    fm_nms_kernel: int = 3
    fm_nms_mode: str = "class"
    gt_weight: float = 1.0
    hinton_weight: float = 0.0
    hinton_tau: float = 4.0
    logit_l2_weight: float = 0.0
    noise_sigma: float = 0.0

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> DistillConfig:
        """From the config's nested form (checked by :class:`detkd.options.DistillOptions`)::

            distill = dict(lambda_d=1.0, scale_by_objectness=True, objectness_kd=True, gt_weight=1.0,
                           fm_nms=dict(enabled=True, kernel=3, mode="class"),
                           hinton=dict(weight=0.0, tau=4.0), logit_l2=dict(weight=0.0), noisy=dict(sigma=0.0))
        """
        return cls.from_options(parse_section(DistillOptions, cfg, "distill"))

    @classmethod
    def from_options(cls, opts: DistillOptions) -> DistillConfig:
        return cls(lambda_d=opts.lambda_d, scale_by_objectness=opts.scale_by_objectness, objectness_kd=opts.objectness_kd,
                   fm_nms=opts.fm_nms.enabled, fm_nms_kernel=opts.fm_nms.kernel, fm_nms_mode=opts.fm_nms.mode,
                   gt_weight=opts.gt_weight, hinton_weight=opts.hinton.weight, hinton_tau=opts.hinton.tau,
                   logit_l2_weight=opts.logit_l2.weight, noise_sigma=opts.noisy.sigma)


@dataclass
class HintTap:
    """One FitNets pair: the student's guided layer, the teacher's hint layer (module names), the
    term's weight in stage 2 (stage 1 uses weight 1), and the regressor's kernel size."""

    student: str
    teacher: str
    weight: float = 0.0
    kernel: int = 1


class DistillModel(DetectorModel):
    """Student + frozen teacher + named terms (see the module docstring).

    Args:
        student: the YOLOv2-family student (raw ``Float[B, A, S_h, S_w, 5 + K]``).
        teacher: its adapter (:func:`detkd.distill.teachers.build_teacher_adapter`).
        cfg: the terms.
        hints: FitNets pairs; regressors are sized by one probing forward of each network.
        decode_cfg: the student's decode thresholds for validation.
        stage: ``"distill"`` or ``"hint"`` (FitNets stage 1).
        cached: read the teacher's candidates from each target (``teacher.cache``), not online. Allowed
            with hints whose stage-2 weight is 0 (FitNets: the hint stage runs online, uncached, and the
            distillation stage keeps the regressors only so that stage 1's checkpoint loads).
    """

    def __init__(self, student: nn.Module, teacher: TeacherAdapter, cfg: DistillConfig | None = None,
                 hints: Sequence[HintTap] = (), decode_cfg: DecodeConfig | None = None, stage: str = "distill",
                 cached: bool = False) -> None:
        super().__init__(student, decode_cfg)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the module docstring
        self.cfg = cfg or DistillConfig()
        if cached and (stage == "hint" or any(h.weight != 0 for h in hints)):
            raise ConfigError("teacher.cache=True with a hint weight > 0 in the distillation stage (hints.taps[].weight): "
                              "those terms need the teacher's features; set the weights to 0 (FitNets stage 1 "
                              "always runs the teacher online) or teacher.cache=False")
        self.cached = cached
        if stage not in ("distill", "hint"):
            raise ValueError(f"stage must be 'distill' or 'hint', not {stage!r}")
        if stage == "hint" and not hints:
            raise ValueError("the FitNets hint stage needs at least one hint pair")
        self.stage = stage
        self.hints = list(hints)
        self.regressors = nn.ModuleList()
        self._student_taps = self._teacher_taps = None
        if self.hints:
            s_shapes = probe_channels(student, [h.student for h in self.hints], student.imgsz)
            t_shapes = probe_channels(teacher.teacher, [h.teacher for h in self.hints], teacher.imgsz)
            for h in self.hints:
                self.regressors.append(HintRegressor(s_shapes[h.student][0], t_shapes[h.teacher][0], h.kernel))
            self._student_taps = FeatureTaps(student, [h.student for h in self.hints])
            self._teacher_taps = FeatureTaps(teacher.teacher, [h.teacher for h in self.hints])

    def _teacher_map(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> TeacherMap:
        if self.cached:  # candidates computed once before training, moved by each sample's augmentation
            tmap = self.teacher.from_cache(targets)
        else:
            param = next(self.teacher.teacher.parameters(), None)
            if param is not None and param.device != images.device:
                self.teacher.to(images.device)
            tmap = self.teacher(images)
        if self.cfg.noise_sigma > 0:
            logits = tmap.logits()
            noisy = noisy_teacher(logits, self.cfg.noise_sigma)
            cls = torch.softmax(noisy, dim=-1)
            if tmap.valid is not None:
                cls = cls * tmap.valid.unsqueeze(-1).to(cls.dtype)
            tmap = TeacherMap(tmap.obj, cls, tmap.box, tmap.valid, noisy)
        return tmap

    def _targets(self, tmap: TeacherMap) -> TeacherTargets:
        if self.cfg.fm_nms:
            return fm_nms_targets(tmap, self.cfg.fm_nms_kernel, self.cfg.fm_nms_mode)  # type: ignore[arg-type]
        return TeacherTargets.from_map(tmap)

    def _hint_terms(self, weight_of: Any) -> dict[str, torch.Tensor]:
        assert self._student_taps is not None and self._teacher_taps is not None
        terms = {}
        for i, (h, reg) in enumerate(zip(self.hints, self.regressors, strict=True)):
            weight = weight_of(h)
            if weight == 0:
                continue
            t_feat = self._teacher_taps.features[h.teacher]
            s_feat = self._student_taps.features[h.student]
            terms[f"loss_hint_{i}"] = weight * hint_loss(t_feat, reg(s_feat, tuple(t_feat.shape[-2:])))
        return terms

    def distill_loss(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Every named term for one batch (``images`` Float[B, 3, S, S] in [0, 1])."""
        raw = self.detector(images)
        tmap = self._teacher_map(images, targets)
        if self.stage == "hint":
            return self._hint_terms(lambda h: 1.0)
        terms: dict[str, torch.Tensor] = {}
        cfg = self.cfg
        if cfg.gt_weight > 0:
            gt = self.detector.loss(raw, targets)
            terms.update({k: cfg.gt_weight * v for k, v in gt.items()})
        kd_targets = self._targets(tmap)
        if cfg.objectness_kd:
            terms.update(objectness_scaled_kd(raw, kd_targets, cfg.lambda_d, cfg.scale_by_objectness))
        if cfg.hinton_weight > 0 or cfg.logit_l2_weight > 0:
            t_logits = tmap.logits()
            scale = kd_targets.obj if cfg.scale_by_objectness else torch.ones_like(kd_targets.obj)
            weight = scale.detach() * kd_targets.cls_weight.detach()
            bsz = raw.shape[0]
            if cfg.hinton_weight > 0:
                kd = hinton_kd(raw[..., 5:], t_logits, cfg.hinton_tau, weight, reduction="sum")
                terms["loss_hinton"] = cfg.hinton_weight * kd / bsz
            if cfg.logit_l2_weight > 0:
                terms["loss_logit_l2"] = cfg.logit_l2_weight * logit_l2(raw[..., 5:], t_logits, weight, reduction="sum") / bsz
        if self.hints:
            terms.update(self._hint_terms(lambda h: h.weight))
        if not terms:
            raise ValueError("no loss term is switched on (distill.gt_weight, objectness_kd, hinton, logit_l2, hints)")
        return terms

    def forward(  # type: ignore[override]
        self, images: torch.Tensor, targets: list[dict[str, Any]] | None = None, mode: str = "tensor"
    ) -> Any:
        if mode == "loss":
            if targets is None:
                raise ValueError("mode='loss' needs targets")
            return self.distill_loss(images, targets)
        return super().forward(images, targets, mode)
