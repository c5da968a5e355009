"""Forward hooks that keep the outputs of named modules (FitNets hint and guided layers)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["FeatureTaps", "probe_channels"]


class FeatureTaps:
    """Record the latest output of each named submodule of ``module`` on every forward.

    Args:
        module: the network to tap.
        names: submodule names as in ``module.named_modules()`` (e.g. ``"backbone.stages.3"``).

    Raises:
        KeyError: a name that is not a submodule (the message suggests close names).

    ``features[name]`` holds the last output (a tensor, kept with its graph so losses can
    backpropagate through it). Call :meth:`remove` to detach the hooks.
    """

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        modules = dict(module.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in names:
            if name not in modules or not name:
                close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise KeyError(f"{type(module).__name__} has no submodule {name!r}{hint}")
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):  # noqa: ANN202
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not torch.is_tensor(output):
                raise TypeError(f"tapped module {name!r} returns {type(output).__name__}, not a tensor map")
            self.features[name] = output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def probe_channels(module: nn.Module, names: Sequence[str], imgsz: int) -> dict[str, tuple[int, int, int]]:
    """``(channels, H, W)`` of each named module's output for one ``imgsz x imgsz`` input.

    Runs one forward on zeros in eval mode under no-grad (BatchNorm statistics are not touched)
    and restores every module's train/eval flag.
    """
    modes = {m: m.training for m in module.modules()}
    taps = FeatureTaps(module, names)
    try:
        module.eval()
        param = next(module.parameters())
        with torch.no_grad():
            module(torch.zeros(1, 3, imgsz, imgsz, device=param.device, dtype=param.dtype))
        return {n: tuple(int(d) for d in taps.features[n].shape[1:]) for n in names}  # type: ignore[misc]
    finally:
        taps.remove()
        for m, mode in modes.items():
            m.training = mode
