"""ultralytics YOLO detectors (v8, 11, 26, ...) behind detkd's Detector protocol.

This is the only detkd module that imports ``ultralytics`` (AGPL-3.0, kept an imported dependency),
and it imports it inside functions, so ``import detkd.models`` stays fast.

Raw outputs. ultralytics' ``Detect`` head returns a dict of raw tensors in training mode and
``(decoded, raw dict)`` in eval mode (``decoded`` alone in export mode; for end-to-end heads such as
YOLO26's the decoded part is already top-k filtered). Both modes carry the same raw dict
``{"boxes": Float[B, 4 * reg_max, N], "scores": Float[B, K, N], "feats": [maps]}`` (nested under
``"one2many"``/``"one2one"`` for heads with an NMS-free branch), so :class:`UltralyticsDetector`
takes that dict in either mode and decodes it itself: DFL expectation -> (l, t, r, b) distances ->
(cx, cy, w, h) around the anchor points, times the stride, and sigmoid class scores. The result is
``Float[B, 4 + K, N]``, the same layout as ultralytics' own non-end-to-end inference output.

Offline: ``import detkd`` sets ``YOLO_OFFLINE`` and friends (:mod:`detkd._env`); before the first use
we also switch off ultralytics' settings sync. Model yamls ship inside the package, so building
``yolov8n.yaml`` needs no network; ``.pt`` files must exist locally (ultralytics would otherwise try
to download a file it does not find).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from torchvision.ops import clip_boxes_to_image

from detkd.errors import CheckpointError, ConfigError
from detkd.models.detector import Candidates, DecodeConfig, Detections
from detkd.models.factory import register_model
from detkd.models.torch_file import check_torch_file
from detkd.ops.boxes import cxcywh_to_xyxy
from detkd.ops.nms import select_detections

__all__ = [
    "MissingCheckpointError",
    "UltralyticsDetector",
    "UntrustedCheckpointError",
    "build_ultralytics",
    "load_ultralytics",
    "model_yaml_problem",
    "restore_ultralytics_checkpoint",
    "save_ultralytics_weights",
    "train_ultralytics",
    "ultralytics_run_args",
]

Branch = Literal["auto", "one2many", "one2one"]


def _ultralytics_ready() -> None:
    """Import ultralytics with its settings sync (anonymous telemetry) off."""
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync") is not False:  # update() rewrites settings.json: only when needed
        SETTINGS.update({"sync": False})


class UltralyticsDetector(nn.Module):
    """An ultralytics ``DetectionModel`` with raw decoded outputs, detkd ``decode`` and no ``loss``.

    Args:
        model: ultralytics ``DetectionModel`` whose last layer is a ``Detect`` head.
        class_names: the ``K`` classes, index = label (must match the head's ``nc``).
        imgsz: square input size (a multiple of the largest stride, 32).
        branch: which head branch a dual-head (end-to-end, YOLO26/YOLOv10) model is read from:
            ``"one2one"`` (NMS-free), ``"one2many"`` (dense, needs NMS), or ``"auto"``: the one
            ultralytics itself would use for inference (``head.end2end``, off unless set).

    The wrapped network always runs in eval mode, whatever ``train()`` says: detkd never trains
    ultralytics models (they have their own trainer), so BatchNorm statistics stay frozen and the
    outputs of train and eval mode are identical -- what a distillation teacher needs.
    """

    def __init__(self, model: nn.Module, class_names: list[str], imgsz: int = 640, branch: Branch = "auto") -> None:
        super().__init__()
        from ultralytics.nn.modules.head import Detect

        head = model.model[-1]
        if not isinstance(head, Detect):
            raise TypeError(f"expected an ultralytics detection model with a Detect head, got {type(head).__name__}")
        if head.nc != len(class_names):
            raise ValueError(f"the model's head predicts {head.nc} classes, class_names has {len(class_names)}")
        if branch not in ("auto", "one2many", "one2one"):
            raise ValueError(f"branch must be 'auto', 'one2many' or 'one2one', got {branch!r}")
        max_stride = int(head.stride.max())
        if imgsz % max_stride:
            raise ValueError(f"imgsz must be a multiple of {max_stride}, got {imgsz}")
        self.model = model.eval()
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.imgsz = int(imgsz)
        self.branch = branch

    @property
    def head(self) -> nn.Module:
        """The ultralytics ``Detect`` module (a property, so it is not registered twice)."""
        return self.model.model[-1]

    def train(self, mode: bool = True) -> UltralyticsDetector:
        super().train(mode)
        self.model.eval()  # see the class docstring: never train-mode BatchNorm
        return self

    def _raw(self, out: Any) -> Mapping[str, Any]:
        """The raw prediction dict of the selected branch from ``Detect``'s train or eval output."""
        raw = out[1] if isinstance(out, tuple) else out
        if not isinstance(raw, Mapping):
            raise RuntimeError("the Detect head returned no raw predictions (is head.export set?)")
        if "one2many" in raw:
            key = self.branch
            if key == "auto":
                key = "one2one" if self.head.end2end else "one2many"
            raw = raw[key]
            if not raw:  # fuse() removed this branch
                raise RuntimeError(f"the {key} branch of this model was removed by fusing; use the other branch")
        return raw

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` Float[B, 3, imgsz, imgsz] in [0, 1] -> ``Float[B, 4 + K, N]``: rows 0..3 are
        (cx, cy, w, h) in input pixels, rows 4.. the per-class sigmoid scores of every anchor point
        (N = sum of h * w over the head's maps, ordered as :meth:`anchor_points`)."""
        from ultralytics.utils.tal import dist2bbox, make_anchors

        if not torch.jit.is_tracing() and tuple(images.shape[-2:]) != (self.imgsz, self.imgsz):
            size = tuple(images.shape[-2:])
            raise ValueError(f"expected images of {self.imgsz}x{self.imgsz} (letterboxed), got {size}")
        raw = self._raw(self.model(images))
        head = self.head
        points, strides = make_anchors(raw["feats"], head.stride, 0.5)  # [N, 2] grid units, [N, 1]
        distances = head.dfl(raw["boxes"])  # [B, 4, N] (l, t, r, b) in stride units
        boxes = dist2bbox(distances, points.transpose(0, 1).unsqueeze(0), xywh=True, dim=1) * strides.transpose(0, 1)
        return torch.cat((boxes, raw["scores"].sigmoid()), dim=1)

    def anchor_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor point centres ``Float[N, 2]`` (x, y) in input pixels and their strides ``Float[N]``,
        in the order of ``forward``'s N axis (map by map, row-major), for ``imgsz`` input."""
        points, strides = [], []
        for stride in self.head.stride.tolist():
            side = self.imgsz // int(stride)
            centres = (torch.arange(side, dtype=torch.float32) + 0.5) * stride
            ys, xs = torch.meshgrid(centres, centres, indexing="ij")
            points.append(torch.stack((xs.flatten(), ys.flatten()), dim=1))
            strides.append(torch.full((side * side,), float(stride)))
        return torch.cat(points), torch.cat(strides)

    def decode(self, outputs: torch.Tensor, cfg: DecodeConfig | None = None) -> Detections:
        """Per image ``boxes`` Float[M, 4] xyxy input pixels (clipped), ``scores`` Float[M],
        ``labels`` Int64[M] in ``0..K-1``, after per-class NMS. (ultralytics' own validation uses
        ``nms_iou=0.7, max_det=300``; pass those to reproduce its mAP.)"""
        cfg = cfg or DecodeConfig()
        outputs = torch.as_tensor(outputs)  # also accepts an ONNX runtime's numpy output
        results = []
        for pred in outputs:
            boxes = clip_boxes_to_image(cxcywh_to_xyxy(pred[:4].T), (self.imgsz, self.imgsz))
            results.append(select_detections(boxes, pred[4:].T, cfg))
        return results

    def candidates(self, outputs: torch.Tensor) -> Candidates:
        """Every anchor point (anchor-free head, per-class sigmoid scores, no objectness): objectness =
        the best class score, class distribution = the scores renormalised."""
        pred = torch.as_tensor(outputs).transpose(1, 2)  # [B, N, 4 + K]
        scores = pred[..., 4:]
        return Candidates(cxcywh_to_xyxy(pred[..., :4]), scores.max(dim=-1).values,
                          scores / scores.sum(dim=-1, keepdim=True).clamp(min=1e-6))

    def loss(self, outputs: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "ultralytics models are trained with ultralytics' own trainer (`yolo train ...`); "
            "detkd evaluates, times and distils from them"
        )


class UntrustedCheckpointError(CheckpointError, PermissionError):
    """A ``.pt`` (a pickle) loaded without ``trust=True``; also a ``PermissionError`` for older callers."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A ``.pt`` that does not exist (ultralytics would try to download it by name)."""


_DATASET_KEYS = ("train", "val", "test", "names", "path", "download")


def model_yaml_problem(path: str | Path) -> str | None:
    """Why a local ``.yaml`` file cannot be an ultralytics model description, or None when it can be
    one (it has ``backbone`` and ``head``; names ultralytics ships, not local files, are not read).
    The result completes a sentence that starts with the file's name."""
    path = Path(path)
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return f"cannot be read as YAML ({' '.join(str(exc).split())[:120]})"
    if isinstance(data, Mapping) and "backbone" in data and "head" in data:
        return None
    if isinstance(data, Mapping) and any(key in data for key in _DATASET_KEYS):
        return "is a dataset description (data.yaml), not a model"
    return "is not an ultralytics model description (it has no backbone and head)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def _load_checkpoint(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise UntrustedCheckpointError(
            f"{path} is an ultralytics .pt checkpoint, a Python pickle: loading it can run arbitrary code. "
            "Load it only if you trust where it came from, by passing trust=True "
            "(load_ultralytics(..., trust=True) or build_model('ultralytics', model=..., trust=True))."
        )
    if not path.is_file():  # ultralytics would try to download a missing file by name
        raise MissingCheckpointError(f"ultralytics checkpoint not found: {path}")
    from ultralytics.nn.tasks import load_checkpoint

    check_torch_file(path)  # empty, truncated, not a torch file: one line, before ultralytics' own messages
    try:
        model, _ = load_checkpoint(str(path))
    except (TypeError, AttributeError, KeyError) as exc:  # a torch file without an ultralytics model in it
        raise CheckpointError(f"{path}: not an ultralytics model checkpoint ({_one_line(exc)})") from exc
    return model.float()


def _checkpoint_names(model: nn.Module, class_names: list[str] | None, path: Path) -> list[str]:
    names = model.names
    stored = [names[i] for i in range(len(names))] if isinstance(names, Mapping) else list(names)
    if class_names is not None and list(class_names) != stored:
        raise ValueError(f"{path} was trained on classes {stored}, but class_names is {list(class_names)}")
    return stored


def load_ultralytics(
    path_or_yaml: str,
    class_names: list[str] | None = None,
    imgsz: int = 640,
    trust: bool = False,
    branch: Branch = "auto",
) -> UltralyticsDetector:
    """Build an ultralytics detector from a model yaml or load a trained ``.pt`` checkpoint.

    Args:
        path_or_yaml: a yaml name ultralytics ships (``"yolov8n.yaml"``, ``"yolo11n.yaml"``,
            ``"yolo26n.yaml"``) or a yaml path -- a fresh, randomly initialised network -- or a ``.pt`` path.
        class_names: required for a yaml (sets ``nc``); for a ``.pt`` the checkpoint's names are used
            and a different ``class_names`` is an error.
        imgsz: square input size (multiple of 32).
        trust: a ``.pt`` is a pickle that can run code when loaded; it is refused unless ``trust=True``.
        branch: see :class:`UltralyticsDetector`.

    Raises:
        ConfigError: a local yaml that is not a model description (a dataset ``data.yaml``, no
            ``backbone``/``head``). CheckpointError: a ``.pt`` without ``trust``
            (:class:`UntrustedCheckpointError`, also a ``PermissionError``), missing
            (:class:`MissingCheckpointError`, also a ``FileNotFoundError``), not a torch file, or
            without an ultralytics detection model in it.
    """
    path = Path(path_or_yaml)
    suffix = path.suffix.lower()
    _ultralytics_ready()
    if suffix in (".yaml", ".yml"):
        if not class_names:
            raise ValueError(f"building {path_or_yaml} needs class_names (they set the number of classes)")
        problem = model_yaml_problem(path)
        if problem:
            raise ConfigError(f"{path} {problem}")
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel(str(path_or_yaml), nc=len(class_names), verbose=False)
        model.names = dict(enumerate(class_names))
        names = list(class_names)
    elif suffix == ".pt":
        model = _load_checkpoint(path, trust)
        from ultralytics.nn.modules.head import Detect

        if not isinstance(getattr(model, "model", [None])[-1], Detect):
            raise CheckpointError(f"{path}: an ultralytics {type(model).__name__}, not a detection model (no Detect head)")
        names = _checkpoint_names(model, class_names, path)
    else:
        raise ValueError(f"expected an ultralytics model .yaml or .pt, got {path_or_yaml!r}")
    return UltralyticsDetector(model, names, imgsz, branch)


WEIGHTS_FORMAT = "detkd.ultralytics_weights/1"
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """``value`` when it is made of plain data (what ``torch.load(weights_only=True)`` accepts), else None."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, Mapping):
        items = {str(k): _plain(v) for k, v in value.items()}
        return items if all(items[str(k)] is not None or v is None for k, v in value.items()) else None
    return None


def save_ultralytics_weights(checkpoint: str | Path, out: str | Path, trust: bool = False) -> Path:
    """Keep a trained ultralytics ``.pt`` as data only: its model yaml, class names, fp16 ``state_dict`` and
    training arguments in a file ``torch.load(weights_only=True)`` reads (no pickled classes, so no code runs
    when it is loaded). :func:`restore_ultralytics_checkpoint` turns it back into a ``.pt`` ultralytics reads.

    Args:
        checkpoint: an ultralytics ``.pt`` (a pickle: loaded only with ``trust=True``).
        out: where to write the weights file (atomically).

    Raises:
        CheckpointError: as :func:`load_ultralytics` for ``checkpoint``; a model built from something other
            than a yaml description (no ``yaml`` dict).
    """
    path = Path(checkpoint)
    model = _load_checkpoint(path, trust)
    spec = _plain(getattr(model, "yaml", None))
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: its model records no yaml description, so it could not be built again")
    names = _checkpoint_names(model, None, path)
    args = {str(k): plain for k, v in dict(getattr(model, "args", None) or {}).items()
            if (plain := _plain(v)) is not None or v is None}  # arguments that are not plain data are left out
    record = {"format": WEIGHTS_FORMAT, "yaml": spec, "names": names, "train_args": args,
              "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}
    from detkd.fileio import atomic_write

    return atomic_write(out, lambda f: torch.save(record, f))


def restore_ultralytics_checkpoint(weights: str | Path, out: str | Path) -> Path:
    """Write the ``.pt`` that ultralytics (``YOLO(...)``, ``distill_model=``) and :func:`load_ultralytics` read,
    from a file of :func:`save_ultralytics_weights`: the model is built from its yaml and loaded strictly with
    the kept tensors (read with ``weights_only=True``). The same weights as the original checkpoint; the file's
    bytes differ (ultralytics' checkpoint metadata is not kept).

    Raises:
        CheckpointError: ``weights`` is not such a file, or its tensors do not fit its yaml.
    """
    path = Path(weights)
    check_torch_file(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises several types for foreign pickles)
        raise CheckpointError(f"{path}: not a file torch.load(weights_only=True) accepts ({_one_line(exc)})") from exc
    if not isinstance(record, Mapping) or record.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path}: not a kept ultralytics weights file (format {WEIGHTS_FORMAT})")
    _ultralytics_ready()
    from ultralytics.nn.tasks import DetectionModel

    names = list(record["names"])
    model = DetectionModel(dict(record["yaml"]), nc=len(names), verbose=False)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its tensors do not fit its model yaml ({_one_line(exc)})") from exc
    model.names = dict(enumerate(names))
    model.args = dict(record.get("train_args") or {})
    for parameter in model.parameters():
        parameter.requires_grad = False
    checkpoint = {"model": model.half().eval(), "ema": None, "epoch": -1, "train_args": model.args,
                  "source": f"restored by detkd from {path.name}"}
    from detkd.fileio import atomic_write

    return atomic_write(out, lambda f: torch.save(checkpoint, f))


@register_model("ultralytics")
def build_ultralytics(
    model: str, class_names: list[str] | None = None, imgsz: int = 640, trust: bool = False, branch: Branch = "auto"
) -> UltralyticsDetector:
    """Registry entry: ``build_model("ultralytics", model="yolov8n.yaml", class_names=[...], imgsz=640)``."""
    return load_ultralytics(model, class_names, imgsz, trust, branch)


def ultralytics_run_args(checkpoint: str | Path) -> dict[str, Any]:
    """The ``args.yaml`` ultralytics' trainer writes beside a run's ``weights/`` folder (plain YAML: model, imgsz,
    epochs, seed, ...), for ``checkpoint`` = ``<run>/weights/<name>.pt``; {} when there is none."""
    import yaml

    path = Path(checkpoint).parent.parent / "args.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _finished_epochs(run_dir: Path) -> int:
    results = run_dir / "results.csv"
    if not results.is_file():
        return 0
    return max(0, len(results.read_text().strip().splitlines()) - 1)


def train_ultralytics(
    model: str, data_yaml: str | Path, epochs: int, imgsz: int, batch: int, project: str | Path, name: str,
    workers: int = 2, seed: int = 0, device: str = "cpu", **overrides: Any,
) -> Path:
    """Train an ultralytics model with ultralytics' own trainer (the peer baseline); returns ``best.pt``.

    Offline-safe: no pretrained download (``pretrained=False``), no plots (they fetch a font), no
    AMP check (it downloads a model). Resumes an interrupted run from its ``last.pt``; a finished
    run is not trained again.
    """
    _ultralytics_ready()
    from ultralytics import YOLO

    run_dir = Path(project) / name
    best, last = run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"
    done = _finished_epochs(run_dir)
    if best.is_file() and done >= epochs:
        return best
    if last.is_file() and done > 0:
        YOLO(str(last)).train(resume=True)
        return best
    YOLO(model).train(
        data=str(Path(data_yaml).resolve()), epochs=epochs, imgsz=imgsz, batch=batch, workers=workers, device=device,
        project=str(Path(project).resolve()), name=name, exist_ok=True, seed=seed, deterministic=True,
        pretrained=False, plots=False, amp=False, verbose=False, **overrides,
    )
    return best
