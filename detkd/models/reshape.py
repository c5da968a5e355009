"""Give a freshly built detector the layer shapes of a pruned model's stored weights.

A pruned checkpoint records the builder's name and arguments (see :mod:`detkd.models.factory`), which
build the *unpruned* model; :func:`reshape_like` then resizes its layers to the stored tensors so the
state dict loads. It lives in ``models`` (it needs only torch and the model) so that
:mod:`detkd.engine.checkpoint` can rebuild pruned models without importing :mod:`detkd.prune`, which sits
above the engine; :mod:`detkd.prune.pruner` re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

__all__ = ["reshape_like"]


def reshape_like(detector: nn.Module, state: Mapping[str, torch.Tensor], pruned: Mapping[str, Any] | None = None) -> nn.Module:
    """Give ``detector``'s layers the shapes of ``state`` (a pruned model's state dict), in place.

    Conv2d, BatchNorm2d, Linear and 1-D channel vectors (L2Norm) get new, uninitialised tensors of
    the checkpoint's shapes and matching ``in_channels``/``out_channels``/``num_features``; load the
    state dict afterwards. ``pruned`` (the checkpoint's record) is kept on the model.

    Raises:
        ValueError: a tensor whose shape differs in a layer type that cannot be resized.
    """
    for key, value in state.items():
        module_name, _, attr = key.rpartition(".")
        try:
            module = detector.get_submodule(module_name)
        except AttributeError:
            continue  # load_weights reports unexpected keys with the file name
        current = getattr(module, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == value.shape:
            continue
        if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and current.dim() != 1:
            raise ValueError(f"{key}: cannot resize a {type(module).__name__} from {tuple(current.shape)} to {tuple(value.shape)}")
        fresh = torch.empty(value.shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            setattr(module, attr, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            module._buffers[attr] = fresh
        if isinstance(module, nn.Conv2d) and attr == "weight":
            depthwise = module.groups > 1 and module.groups == module.in_channels
            module.out_channels = value.shape[0]
            module.groups = value.shape[0] if depthwise else module.groups
            module.in_channels = value.shape[1] * module.groups
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features = value.shape[0]
        elif isinstance(module, nn.Linear) and attr == "weight":
            module.out_features, module.in_features = value.shape
    if pruned is not None:
        detector.detkd_pruned = dict(pruned)  # type: ignore[assignment]
    return detector
