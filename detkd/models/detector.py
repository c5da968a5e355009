"""The detector protocol every detkd model follows.

Distillation needs the raw outputs of both networks, so ``forward`` never hides them: it returns
the same raw head outputs in train and eval mode, with no loss and no NMS. Decoding and the loss
are separate methods.

Input convention: ``images`` is ``float32 Tensor[B, 3, H, W]`` RGB scaled to ``[0, 1]`` (the data
preprocessor divides the dataset's uint8 by 255); any mean/std normalisation a backbone needs
happens inside the model, so exported ONNX files take the same input.
``candidates`` returns :class:`Candidates` (every slot, before thresholds and NMS: boxes xyxy in
input pixels, objectness, class distribution), what a teacher exposes to distillation.
Output convention of ``decode``: one dict per image with ``boxes`` Float[N, 4] xyxy in the pixels
of the network input (the letterboxed image), ``scores`` Float[N], ``labels`` Int64[N] in
``0..K-1``. Callers map boxes back to the original image with the dataset's ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from detkd.options import DecodeConfig  # re-exported: the detector protocol decodes with it

__all__ = ["Candidates", "Detections", "Detector", "DecodeConfig", "as_float32"]

Detections = list[dict[str, torch.Tensor]]


@dataclass
class Candidates:
    """Every prediction slot of a detector (anchor, default box or anchor point) before thresholds
    and NMS: what a teacher knows, read by distillation's teacher adapter and the teacher cache.

    Attributes:
        boxes: Float[B, N, 4] xyxy in the detector's input pixels.
        obj: Float[B, N] objectness probability ("something is here").
        cls: Float[B, N, K] class distribution over the detector's classes (rows sum to 1; a row
            whose class mass is below 1e-6, e.g. an SSD box sure of background, sums to less).
    """

    boxes: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor


@runtime_checkable
class Detector(Protocol):
    """What training, evaluation, export, distillation and pruning rely on.

    Attributes:
        class_names: the classes the model predicts, index = label.
        imgsz: square input size the model was built for (pixels).
    """

    class_names: list[str]
    imgsz: int

    def forward(self, images: torch.Tensor) -> Any:
        """Raw head outputs (tensors or a tuple/dict of tensors) for ``images`` Float[B, 3, H, W] in [0, 1]."""
        ...

    def decode(self, outputs: Any, cfg: DecodeConfig | None = None) -> Detections:
        """Scores, class and boxes per image (see module docstring), after per-class NMS."""
        ...

    def candidates(self, outputs: Any) -> Candidates:
        """Every slot's box, objectness and class distribution, before thresholds and NMS."""
        ...

    def loss(self, outputs: Any, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Named loss terms (each a scalar tensor); their sum is what training minimises.

        ``targets`` follow the dataset item convention: ``boxes`` Float[N, 4] xyxy in input
        pixels, ``labels`` Int64[N], ``difficult`` Bool[N].
        """
        ...


def as_float32(t: torch.Tensor) -> torch.Tensor:
    """A head output in float32 (unchanged when it already is, so ONNX export records no cast).

    Under bfloat16 autocast (``train.cpu_amp``) the convolutions return bfloat16; losses, decoding and
    a teacher's targets need the precision of float32, so detectors return their raw outputs through this.
    """
    return t if t.dtype == torch.float32 else t.float()
