"""Which layers of an SSD can be pruned, and who consumes each one's output channels.

A *layer set* is an ordered list of ``Conv2d`` module names (relative to the detector) whose output
channels may be removed: Singh et al. prune "a set of consecutive layers". The sets per architecture:

================================ ========== ========================================================
detector                         set        convs
================================ ========== ========================================================
``ssd_cpu``, ``ssd300_vgg16``    ``vgg``    ``backbone.features``: conv1_1 .. conv4_3
(VGG backbone: ``features`` +    ``stage5`` ``backbone.extra.0``: conv5_1 .. conv5_3, fc6, fc7
``extra``)                       ``extra``  ``backbone.extra.1..``: every 1x1 reduce and 3x3 conv
                                 ``all``    the three above, in network order
``ssdlite320_mobilenet_v3_large`` ``expand`` the 1x1 expansion conv of every inverted residual block
                                 ``extra``  the 1x1 reduce conv of every extra block
                                 ``all``    both
================================ ========== ========================================================

Head convs never lose output channels (they are the predictions), but they do lose input channels
when the map they read is pruned. Depthwise convs, squeeze-excitation layers and residual
projections follow their group through torch-pruning's dependency graph and are never roots.

:class:`PruningGraph` wraps ``torch_pruning.DependencyGraph``: for each root conv it lists every
*consumer* of its output channels (the next conv, L2Norm's scale vector, BatchNorm, the box and
class head convs) and removes channels from all of them at once. 1-D parameters used by plain
tensor arithmetic (SSD's L2Norm scale: detkd's ``L2Norm.weight``, torchvision's ``scale_weight``)
are registered as channel-wise ("unwrapped") parameters, so they shrink with their conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from detkd.errors import ConfigError

__all__ = ["Consumer", "PruningGraph", "followers", "layer_sets", "resolve_layer_set"]

_PLAIN = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.LayerNorm, nn.GroupNorm)


def _convs(module: nn.Module, prefix: str) -> list[str]:
    """Names (with ``prefix``) of the dense (``groups == 1``) convs under ``module``, in module order."""
    return [f"{prefix}.{name}" for name, m in module.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]


def _vgg_sets(backbone: nn.Module) -> dict[str, list[str]]:
    vgg = _convs(backbone.features, "backbone.features")
    stage5 = _convs(backbone.extra[0], "backbone.extra.0")
    extra = [name for i in range(1, len(backbone.extra)) for name in _convs(backbone.extra[i], f"backbone.extra.{i}")]
    return {"vgg": vgg, "stage5": stage5, "extra": extra, "all": vgg + stage5 + extra}


def _mobilenet_sets(backbone: nn.Module) -> dict[str, list[str]]:
    from torchvision.models.mobilenetv3 import InvertedResidual

    expand = []
    for name, m in backbone.named_modules():
        if isinstance(m, InvertedResidual):
            first = m.block[0][0]
            if isinstance(first, nn.Conv2d) and first.groups == 1 and first.kernel_size == (1, 1):
                expand.append(f"backbone.{name}.block.0.0")
    extra = [f"backbone.extra.{i}.0.0" for i in range(len(backbone.extra))]
    return {"expand": expand, "extra": extra, "all": expand + extra}


def layer_sets(detector: nn.Module) -> dict[str, list[str]]:
    """The named layer sets of an SSD detector (see the module docstring).

    Raises:
        ValueError: the detector's backbone is not one detkd knows how to prune.
    """
    backbone = getattr(detector, "backbone", None)
    if backbone is not None and hasattr(backbone, "features") and hasattr(backbone, "extra"):
        if type(backbone).__name__ == "SSDLiteFeatureExtractorMobileNet":
            return _mobilenet_sets(backbone)
        return _vgg_sets(backbone)
    raise ConfigError(f"{type(detector).__name__} with backbone {type(backbone).__name__}: no layer sets known "
                     "(pruning supports ssd_cpu, ssd300_vgg16 and ssdlite320_mobilenet_v3_large)")


def resolve_layer_set(detector: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """A set name (``"all"``, ``"vgg"``, ...) or an explicit list of conv names -> checked conv names."""
    sets = layer_sets(detector)
    if isinstance(layers, str):
        if layers not in sets:
            raise ConfigError(f"config key prune.layers: unknown layer set {layers!r}; this detector has {', '.join(sets)}")
        return list(sets[layers])
    modules = dict(detector.named_modules())
    allowed = set(sets["all"])
    bad = [name for name in layers if name not in allowed]
    if bad:
        what = [f"{n} ({'not a prunable conv' if n in modules else 'no such module'})" for n in bad[:3]]
        raise ConfigError(f"config key prune.layers: cannot prune {', '.join(what)}; prunable convs are those of the sets {', '.join(sets)}")
    return list(layers)


def followers(detector: nn.Module, conv_name: str) -> list[nn.Module]:
    """The modules after conv ``conv_name`` in its parent ``Sequential`` (``Conv2dNormActivation``:
    BatchNorm, activation; torchvision's VGG: ReLU, the next conv, ...); empty if the parent is not one."""
    parent_name, _, child = conv_name.rpartition(".")
    parent = detector.get_submodule(parent_name) if parent_name else detector
    if not isinstance(parent, nn.Sequential):
        return []
    names = [n for n, _ in parent.named_children()]
    return list(parent.children())[names.index(child) + 1:]


@dataclass(frozen=True)
class Consumer:
    """A layer that changes when a root conv loses output channels.

    ``kind`` is ``"in"`` (loses input channels: the next conv, a head conv) or ``"out"`` (loses
    output channels/features: the conv itself, its BatchNorm, L2Norm's scale vector).
    """

    name: str
    kind: str


class PruningGraph:
    """torch-pruning's dependency graph of a detector, traced once at its input size.

    Args:
        detector: the model (traced in eval mode on a ``Float[1, 3, imgsz, imgsz]`` zero image; its
            train/eval mode is restored afterwards).
        imgsz: input side; defaults to ``detector.imgsz``.
    """

    def __init__(self, detector: nn.Module, imgsz: int | None = None) -> None:
        self.detector = detector
        size = int(imgsz or detector.imgsz)
        unwrapped = [(p, 0) for n, p in detector.named_parameters() if p.dim() == 1 and not isinstance(self._owner(n), _PLAIN)]
        training = detector.training
        detector.eval()
        try:
            example = torch.zeros(1, 3, size, size, device=next(detector.parameters()).device)
            self.graph = tp.DependencyGraph().build_dependency(detector, example_inputs=example, unwrapped_parameters=unwrapped)
        finally:
            detector.train(training)

    def _owner(self, param_name: str) -> nn.Module:
        module_name = param_name.rsplit(".", 1)[0] if "." in param_name else ""
        return self.detector.get_submodule(module_name)

    def conv(self, name: str) -> nn.Conv2d:
        module = self.detector.get_submodule(name)
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"{name} is a {type(module).__name__}, not a Conv2d")
        return module

    def group(self, name: str, idxs: Sequence[int]) -> tp.dependency.Group:
        """torch-pruning's group for removing output channels ``idxs`` of conv ``name``."""
        return self.graph.get_pruning_group(self.conv(name), tp.prune_conv_out_channels, idxs=list(idxs))

    def consumers(self, name: str) -> list[Consumer]:
        """Every layer (module or channel-wise parameter) that shrinks with conv ``name``'s outputs."""
        names = {id(m): n for n, m in self.detector.named_modules()}
        names.update({id(p): n for n, p in self.detector.named_parameters()})
        out: list[Consumer] = []
        for dep, _ in self.group(name, [0]):
            label = names.get(id(dep.target.module))
            if label is None:  # torch-pruning's internal nodes for element-wise ops, reshapes, ...
                continue
            handler = getattr(dep.handler, "__name__", str(dep.handler))
            out.append(Consumer(label, "in" if "in_channels" in handler else "out"))
        return out

    def consumer_convs(self, name: str) -> list[str]:
        """Convs that read conv ``name``'s output channels as their inputs (next conv, head convs)."""
        return [c.name for c in self.consumers(name) if c.kind == "in" and isinstance(self.detector.get_submodule(c.name), nn.Conv2d)]

    def prune(self, name: str, idxs: Sequence[int]) -> None:
        """Remove output channels ``idxs`` of conv ``name`` and the matching channels of every consumer."""
        conv = self.conv(name)
        if not idxs:
            return
        if len(set(idxs)) >= conv.out_channels:
            raise ValueError(f"{name}: cannot remove all {conv.out_channels} output channels")
        group = self.group(name, sorted(set(int(i) for i in idxs)))
        if not self.graph.check_pruning_group(group):
            raise ValueError(f"{name}: torch-pruning refuses to remove channels {list(idxs)[:5]}...")
        group.prune()
