"""The training hook binarized models need: BNN latent-weight clipping after every optimizer step."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detkd.binary.layers import BinaryConv2d, clip_latent_weights_

__all__ = ["LatentWeightClipHook"]


def _detector(runner: Any) -> Any:
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model.detector


class LatentWeightClipHook(Hook):
    """BNN training: after every optimizer step, clip the latent weights of the detector's binary
    convs to [-1, 1] (outside it the straight-through gradient is zero). Does nothing for a model
    without binary layers."""

    priority = "LOW"

    def __init__(self) -> None:
        self._active = False

    def before_train(self, runner: Any) -> None:
        self._active = any(isinstance(m, BinaryConv2d) for m in _detector(runner).modules())

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self._active:
            clip_latent_weights_(_detector(runner))
