"""Typed options: each config section read once into a dataclass, with one default per setting.

:func:`parse_options` reads a whole config (an mmengine ``Config`` or any mapping) into
:class:`RunOptions`; :func:`parse_section` reads one section into its dataclass. Unknown keys are
refused with the closest known key suggested; every value is checked against the field's type
(and the ``choices`` / ``min`` / ``max`` in its metadata); nested dataclasses and lists of them
are parsed recursively. Each problem is a one-line :class:`~detkd.errors.ConfigError` naming the
key, the value and what is allowed, e.g. ``train.epochs = 'abc': expected an integer >= 1``.

The defaults here are the only ones: code reads settings from these objects, and the configs in
``configs/_base_`` spell the same values out for readers. This module is the lowest layer with
:mod:`detkd.errors`: every other layer may import it.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from detkd.errors import ConfigError

__all__ = [
    "AugmentConfig", "BinaryOptions", "ChainOptions", "CheckpointOptions", "DataOptions", "DecodeConfig",
    "DistillOptions", "GenerateOptions", "HintTapOptions", "HintsOptions", "METHODS", "PruneOptions", "RetrainOptions", "RunOptions",
    "SelectOptions", "SparsityOptions", "SweepOptions", "TeacherOptions", "TrainOptions", "UnlabeledOptions",
    "check_kwargs", "closest", "option", "options_dict", "parse_options", "parse_section",
]


def option(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, choices: Sequence[Any] | None = None,
           min: float | None = None, max: float | None = None, help: str = "") -> Any:  # noqa: A002
    """A dataclass field with the checks :func:`parse_section` applies (``min``/``max`` inclusive)."""
    meta = {"choices": tuple(choices) if choices else None, "min": min, "max": max, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---- sections ------------------------------------------------------------------------------------
@dataclass
class DecodeConfig:
    """Post-processing thresholds shared by all detectors (config section ``decode``).

    Attributes:
        score_thr: drop candidates below this score (0.001 for mAP evaluation, higher to deploy).
        nms_iou: IoU threshold of the per-class NMS.
        max_det: detections kept per image after NMS.
        pre_nms_topk: candidates per image considered by NMS.
    """

    score_thr: float = option(0.001, min=0.0, max=1.0)
    nms_iou: float = option(0.5, min=0.0, max=1.0)
    max_det: int = option(100, min=1)
    pre_nms_topk: int = option(1000, min=1)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation strengths (``train.augment``; probabilities are per image)."""

    scale: tuple[float, float] = option((0.6, 1.4), min=0.01)
    translate: float = option(0.1, min=0.0, max=1.0)
    affine_p: float = option(0.5, min=0.0, max=1.0)
    hflip_p: float = option(0.5, min=0.0, max=1.0)
    color_p: float = option(0.5, min=0.0, max=1.0)
    brightness: float = option(0.3, min=0.0)
    contrast: float = option(0.3, min=0.0)
    saturation: float = option(0.3, min=0.0)
    hue: float = option(0.02, min=0.0, max=0.5)
    min_visibility: float = option(0.3, min=0.0, max=1.0)
    min_size: float = option(2.0, min=0.0)


@dataclass
class TrainOptions:
    """``train``: the loop. ``amp``: float16 autocast on a GPU; ``cpu_amp``: bfloat16 autocast on a
    CPU with native bfloat16 (:mod:`detkd.engine.amp`). ``val_batch_size`` None: ``batch_size``."""

    epochs: int = option(30, min=1)
    batch_size: int = option(16, min=1)
    val_batch_size: int | None = option(None, min=1)
    num_workers: int = option(2, min=0)
    seed: int = option(0, min=0)
    val_interval: int = option(1, min=1)
    log_interval: int = option(10, min=1)
    ema: bool = False
    ema_momentum: float = option(0.0002, min=0.0, max=1.0)
    amp: bool = True
    cpu_amp: bool = False
    augment: AugmentConfig = option(factory=AugmentConfig)


@dataclass
class CheckpointOptions:
    """``checkpoint``: save every ``interval`` epochs, keep ``max_keep`` epoch files (-1: all), and the
    best by ``save_best`` (a metric name; None: no best checkpoint)."""

    interval: int = option(1, min=1)
    max_keep: int = option(2, min=-1)
    save_best: str | None = "coco/AP50"


@dataclass
class GenerateOptions:
    """``data.generate``: the built-in synthetic dataset, generated into ``data.root`` (a new folder
    or one the generator made) when missing."""

    preset: str = "standard"
    seed: int = option(0, min=0)
    size: int = option(320, min=32)
    train: int = option(600, min=0)
    val: int = option(150, min=0)
    test: int = option(150, min=0)
    unlabeled: int = option(0, min=0)


@dataclass
class DataOptions:
    """``data``: ``format`` (voc, coco, yolo, labelimg), ``root``, ``splits`` (``{"train": ..., "val": ...}``:
    a VOC split name, a YOLO split key, a labelImg folder, or for COCO ``{"ann": file, "img_dir": folder}``),
    ``classes`` (None: from the data), ``generate`` (the built-in dataset), ``holdout`` (without a ``val``
    split: this fraction of train, seeded, validates; ``--data`` sets 0.1 for such datasets)."""

    root: str = option(help="dataset folder, or pass --data PATH")
    format: str = option("voc", choices=("voc", "coco", "yolo", "labelimg"))
    splits: dict[str, Any] = option(factory=lambda: {"train": "train", "val": "val", "test": "test"})
    classes: list[str] | None = None
    generate: GenerateOptions | None = None
    holdout: float = option(0.0, min=0.0, max=0.5)


@dataclass
class TeacherOptions:
    """``teacher``: ``checkpoint`` (a detkd .pth, an ultralytics .pt or model .yaml), ``trust`` (unpickle
    it: only for files you trust), ``imgsz`` (None: the student's), ``class_map`` (``{teacher: student}``
    names or ``"by_name"``), ``allow_untrained`` (accept a model .yaml without weights: smoke tests only),
    ``direct`` (a YOLO teacher in the student's very output space is read directly; False projects its
    candidates like any other teacher's), ``cache`` (run the teacher once per training image and reuse its top ``cache_top_n`` candidates,
    moved by each sample's augmentation: :mod:`detkd.distill.cache`; ``cache_dir`` None: ``$DETKD_CACHE``)."""

    checkpoint: str | None = None
    trust: bool = False
    imgsz: int | None = option(None, min=32)
    class_map: dict[str, str] | str | None = None
    allow_untrained: bool = False
    direct: bool = True
    cache: bool = False
    cache_top_n: int = option(100, min=1)
    cache_dir: str | None = None


@dataclass
class FmNmsOptions:
    enabled: bool = True
    kernel: int = option(3, min=1)
    mode: str = option("class", choices=("class", "class_box", "all"))


@dataclass
class HintonOptions:
    weight: float = option(0.0, min=0.0)
    tau: float = option(4.0, min=1e-6)


@dataclass
class WeightOptions:
    weight: float = option(0.0, min=0.0)


@dataclass
class NoisyOptions:
    sigma: float = option(0.0, min=0.0)


@dataclass
class DistillOptions:
    """``distill``: the terms (see :class:`detkd.distill.distiller.DistillConfig` for their meaning)."""

    lambda_d: float = option(1.0, min=0.0)
    scale_by_objectness: bool = True
    objectness_kd: bool = True
    gt_weight: float = option(1.0, min=0.0)
    fm_nms: FmNmsOptions = option(factory=FmNmsOptions)
    hinton: HintonOptions = option(factory=HintonOptions)
    logit_l2: WeightOptions = option(factory=WeightOptions)
    noisy: NoisyOptions = option(factory=NoisyOptions)


@dataclass
class UnlabeledOptions:
    """``unlabeled``: extra images without labels, from an image ``folder`` (relative to ``data.root``
    unless absolute) or a labeled ``split`` with its labels dropped, mixed in at ``ratio``."""

    folder: str | None = None
    split: str | None = None
    ratio: float = option(0.0, min=0.0)


@dataclass
class HintTapOptions:
    """One FitNets pair (module names of the student's guided and the teacher's hint layer)."""

    student: str = option(help="student module name")
    teacher: str = option(help="teacher module name")
    weight: float = option(0.0, min=0.0)
    kernel: int = option(1, min=1)


@dataclass
class HintsOptions:
    """``hints``: FitNets taps and the epochs of stage 1 (0: no hint stage)."""

    taps: list[HintTapOptions] = option(factory=list)
    epochs: int = option(0, min=0)


@dataclass
class ChainOptions:
    """One TAKD assistant of ``chain``: its ``model`` (like the top-level ``model``) and epochs (None:
    ``train.epochs``)."""

    model: dict[str, Any] = option(help="model builder name and arguments")
    name: str = "assistant"
    epochs: int | None = option(None, min=1)


@dataclass
class BinaryOptions:
    """``model.binary``: binarize the model's convs (:func:`detkd.binary.layers.binarize_convs`).
    ``policy``: ``all`` (every conv but the first and the prediction conv) or ``speed`` (only those
    where the packed kernel measured faster than float: :data:`detkd.binary.policy.DEFAULT_RULE`);
    ``keep``: conv names that stay float whatever the policy."""

    mode: str = option("xnor", choices=("bnn", "xnor"))
    keep_1x1: bool = False
    stochastic: bool = False
    policy: str = option("all", choices=("all", "speed"))
    keep: list[str] = option(factory=list)


METHODS = ("singh", "l1", "taylor")


@dataclass
class SparsityOptions:
    """Stage 1 (Singh): train ``epochs`` with ``loss + weight * growth ** epoch * penalty`` at learning
    rate ``lr`` (``None``: the config's). ``kind``: the penalty, ``l1`` (every weight, the paper's),
    ``group`` (each filter's L2 norm) or ``bn_scale`` (BatchNorm scales, network slimming); see
    :mod:`detkd.prune.sparsity`. ``fold_bn``: magnitudes of BN-folded weights. ``proximal``: apply the
    penalty as a proximal step of ``lr * weight`` after every optimizer step (exact zeros, outside
    Adam's normalisation) instead of adding it to the loss. ``cost``: weight each conv's term by what
    one of its filters costs, ``flops`` (multiply-adds it accounts for) or ``latency`` (ms saved per
    filter in the layer latency table, ``W/latency.json``), normalised to mean 1 over the filters;
    ``none``: one lambda for every filter (the paper's). ``cost_power``: the costs are raised to this
    power before normalising (1: as they are, 0.5: square roots, a range of about 30x instead of
    1000x for FLOPs on an SSD)."""

    epochs: int = option(10, min=1)
    weight: float = option(1e-4, min=0.0)
    lr: float | None = option(None, min=0.0)
    fold_bn: bool = True
    kind: str = option("l1", choices=("l1", "group", "bn_scale"))
    growth: float = option(1.0, min=1e-6)
    proximal: bool = False
    cost: str = option("none", choices=("none", "flops", "latency"))
    cost_power: float = option(1.0, min=0.0, max=1.0)


@dataclass
class SweepOptions:
    """Thresholds to try: absolute ``thresholds``, or else ``quantiles`` of the layer set's |w|
    (scale-free); the largest whose val mAP50 is at most ``max_drop`` below threshold 0 wins.

    ``target_param_ratio`` / ``target_flop_ratio`` (a budget instead of a validation drop): the smallest
    threshold whose Singh selection (``select``, ``min_keep``, ``round_to``) leaves at most ``1 / target``
    of the detector's parameters / FLOPs (each one set), found by bisection over the quantiles of |w|;
    ``thresholds``, ``quantiles`` and ``max_drop`` are then unused, and the sweep evaluates threshold 0
    and the chosen one.

    ``scope``: ``global`` (the paper) compares every weight of the layer set with one magnitude; ``layer``
    reads each threshold as a quantile and zeroes every conv's own smallest fraction of weights
    (:func:`detkd.prune.sparsity.layer_thresholds`), so Singh's selection thins every layer instead of
    the deep parameter-heavy ones only (``thresholds`` are magnitudes: use ``quantiles`` with it)."""

    scope: str = option("global", choices=("global", "layer"))
    thresholds: list[float] = option(factory=list)
    quantiles: list[float] = option(factory=lambda: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95], min=1e-9, max=1 - 1e-9)
    max_drop: float = option(0.01, min=0.0)
    target_param_ratio: float | None = option(None, min=1.0)
    target_flop_ratio: float | None = option(None, min=1.0)


@dataclass
class SelectOptions:
    """Singh filter selection (:func:`detkd.prune.importance.singh_selection`)."""

    out_fraction: float = option(0.9, min=0.0, max=1.0)
    in_fraction: float = option(0.9, min=0.0, max=1.0)
    combine: str = option("or", choices=("or", "and"))


@dataclass
class RetrainOptions:
    """The final retraining. ``distill``: add output distillation from the unpruned model
    (:mod:`detkd.losses.ssd_distill`: KD on every default box's classes at temperature ``tau``,
    box regression weighted by the teacher's foreground probability) to the original loss."""

    distill: bool = False
    tau: float = option(2.0, min=1e-3)
    cls_weight: float = option(1.0, min=0.0)
    box_weight: float = option(1.0, min=0.0)


@dataclass
class PruneOptions:
    """``prune``: everything :mod:`detkd.prune.pipeline` reads.

    ``method``: ``singh`` (sparsity -> sweep -> plan -> apply -> retrain), ``l1`` or ``taylor``
    (plan -> apply -> retrain; ``ratio`` of the filters of every conv in ``layers``, ranked per
    layer or globally by ``scope``, ``iterations`` steps with ``finetune_epochs`` between them).
    ``min_keep``: filters every conv keeps at least. ``taylor_batches``: training batches the
    Taylor statistics average over. ``retrain_epochs``/``retrain_lr``: the final retraining with the
    original loss (``retrain``: with distillation from the unpruned model). ``eval_split``: where the
    sweep and the report measure mAP. ``threads``: for the latency measurements of the report and the
    latency table. ``round_to``: every pruned conv keeps a multiple of this many filters (fewer are
    removed; 1 = off), so its channels suit the CPU's vector kernels. ``latency_aware`` (l1 / taylor):
    rank filters by importance per millisecond of measured latency they save (the layer latency
    table, ``W/latency.json``, :mod:`detkd.prune.latency`) across all layers, instead of per layer.
    """

    method: str = option("singh", choices=METHODS)
    layers: str | list[str] = "all"
    ratio: float = option(0.5, min=0.0, max=0.999)
    scope: str = option("layer", choices=("layer", "global"))
    min_keep: int = option(8, min=1)
    iterations: int = option(1, min=1)
    finetune_epochs: int = option(1, min=1)
    taylor_batches: int = option(8, min=1)
    retrain_epochs: int = option(10, min=1)
    retrain_lr: float | None = option(None, min=0.0)
    eval_split: str = "val"
    threads: int = option(2, min=1)
    round_to: int = option(8, min=1)
    latency_aware: bool = False
    retrain: RetrainOptions = option(factory=RetrainOptions)
    sparsity: SparsityOptions = option(factory=SparsityOptions)
    sweep: SweepOptions = option(factory=SweepOptions)
    select: SelectOptions = option(factory=SelectOptions)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PruneOptions:
        return parse_section(cls, cfg, "prune")

    @property
    def stages(self) -> tuple[str, ...]:
        """The pipeline's stages for this method, in order."""
        first = ("sparsity", "sweep") if self.method == "singh" else ()
        return (*first, "plan", "apply", "retrain", "report")


@dataclass
class RunOptions:
    """A whole config: every section parsed (absent sections get their defaults). ``model``,
    ``optim_wrapper`` and ``param_scheduler`` are passed on to their builders (mmengine, the model
    registry), which check them."""

    data: DataOptions | None = None
    imgsz: int = option(320, min=32)
    model: dict[str, Any] = option(factory=dict)
    train: TrainOptions = option(factory=TrainOptions)
    decode: DecodeConfig = option(factory=DecodeConfig)
    checkpoint: CheckpointOptions = option(factory=CheckpointOptions)
    teacher: TeacherOptions = option(factory=TeacherOptions)
    distill: DistillOptions = option(factory=DistillOptions)
    unlabeled: UnlabeledOptions = option(factory=UnlabeledOptions)
    hints: HintsOptions = option(factory=HintsOptions)
    chain: list[ChainOptions] = option(factory=list)
    prune: PruneOptions = option(factory=PruneOptions)
    optim_wrapper: dict[str, Any] = option(factory=dict)
    param_scheduler: list[Any] = option(factory=list)
    find_unused_parameters: bool = False


# ---- parsing -------------------------------------------------------------------------------------
def closest(name: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest known name, or an empty string."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _unknown(where: str, key: str, known: Sequence[str]) -> ConfigError:
    hint = closest(key, known).replace("mean ", f"mean {where}")
    listing = "" if hint else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key {where}{key}{hint}{listing}")


def _describe(tp: Any, meta: Mapping[str, Any]) -> str:
    """What a value of type ``tp`` must be, in words."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_describe(a, meta) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or None" if type(None) in args else "")
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("min"), meta.get("max")
    bounds = (f" from {low:g} to {high:g}" if low is not None and high is not None
              else f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else "")
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp] + (bounds if tp in (int, float) else "")
    if origin in (list, tuple):
        return f"a list of {_describe(args[0], meta).removeprefix('a ').removeprefix('an ')}" if args else "a list"
    if origin is dict or tp is dict:
        return "a dict"
    if is_dataclass(tp):
        return f"a dict with keys {', '.join(f.name for f in fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any, meta: Mapping[str, Any], key: str) -> Any:
    """``value`` converted to ``tp`` (lists to tuples, dicts to dataclasses), or a ConfigError."""
    bad = ConfigError(f"config key {key} = {value!r}: expected {_describe(tp, meta)}")
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad
        candidates = [a for a in args if a is not type(None)]
        for arg in candidates:
            try:
                return _check(value, arg, meta, key)
            except ConfigError as exc:
                if len(candidates) == 1 and is_dataclass(arg) and isinstance(value, Mapping):
                    raise  # the nested section's own, more precise message
        raise bad
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad
        return parse_section(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (tp is float and value != value):
            raise bad
        value = tp(value)
        if (meta.get("min") is not None and value < meta["min"]) or (meta.get("max") is not None and value > meta["max"]):
            raise bad
    elif tp is str:
        if not isinstance(value, str):
            raise bad
    elif origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config key {key} = {value!r}: expected {len(args)} values")
            return tuple(_check(v, a, meta, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        checked = [_check(v, item, meta, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    elif origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {k: (_check(v, args[1], {}, f"{key}.{k}") if args else v) for k, v in value.items()}
    if meta.get("choices") and value not in meta["choices"]:
        raise bad
    return value


def parse_section(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """``data`` (a config section; None: all defaults) read into dataclass ``cls``.

    Raises:
        ConfigError: an unknown key (closest known one suggested), a missing required key, or a
            value of the wrong type or out of range; the message names ``where.key``.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"config key {where} = {data!r}: expected {_describe(cls, {})}")
    data = dict(data or {})
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in known:
            raise _unknown(prefix, str(key), known)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _check(data[f.name], hints[f.name], f.metadata, prefix + f.name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"config key {prefix}{f.name} is missing ({f.metadata.get('help') or _describe(hints[f.name], f.metadata)})")
    return cls(**kwargs)


def _is_import(value: Any) -> bool:
    """Names a pure-Python config imports (``from torch.optim import SGD``) are not settings."""
    return inspect.isclass(value) or inspect.isfunction(value) or inspect.ismodule(value) or inspect.isbuiltin(value)


def parse_options(cfg: Mapping[str, Any], source: str = "") -> RunOptions:
    """A whole config read into :class:`RunOptions`; ``source`` (the config file) prefixes errors.

    Raises:
        ConfigError: the first unknown key or bad value, as ``<source>: <problem>``.
    """
    data = {k: v for k, v in cfg.items() if not _is_import(v)}
    try:
        opts = parse_section(RunOptions, data, "")
        if opts.model.get("binary"):
            parse_section(BinaryOptions, opts.model["binary"], "model.binary")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return opts


def options_dict(opts: Any) -> Any:
    """An options object as plain dicts and lists (tuples become lists), e.g. to record it in JSON."""
    if is_dataclass(opts):
        return {f.name: options_dict(getattr(opts, f.name)) for f in fields(opts)}
    if isinstance(opts, (list, tuple)):
        return [options_dict(v) for v in opts]
    if isinstance(opts, Mapping):
        return {k: options_dict(v) for k, v in opts.items()}
    return opts


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse keyword arguments ``fn`` does not take (closest name suggested), before calling it."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in known:
            raise _unknown(f"{where}.", key, known)
