"""Which convs to binarize, decided before training from the measured layer table.

The packed XNOR kernel is not faster everywhere: ``benchmarks/binary_layers.py`` times each of the
student's conv shapes as deployed (sign + pack + XNOR/popcount + ``K * alpha``) against float. Few
input channels leave little work per packed word (the stem-side 3x3 convs run 0.3-0.7x), and 1x1
squeezes with few outputs lose to the fixed cost of signing and packing their input. A
:class:`LayerRule` turns such a table into thresholds on a conv's shape, and
:func:`select_binary_convs` applies it to a model (``model.binary.policy="speed"``); names in
``model.binary.keep`` stay float whatever the rule says.

:func:`rule_from_table` derives the thresholds: for 3x3 convs, the smallest input channel count from
which every measured row with at least that many input channels reached ``min_speedup``; for 1x1
convs the same on input channels, together with the smallest output channel count seen among those
fast rows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

__all__ = ["DEFAULT_RULE", "LayerRule", "rule_from_table", "select_binary_convs"]


@dataclass(frozen=True)
class LayerRule:
    """Binarize a dense conv when it has a 3x3 (or larger) kernel and ``>= min_in_3x3`` input
    channels, or a 1x1 kernel with ``>= min_in_1x1`` inputs and ``>= min_out_1x1`` outputs."""

    min_in_3x3: int = 32
    min_in_1x1: int = 256
    min_out_1x1: int = 256

    def allows(self, conv: nn.Conv2d) -> bool:
        if conv.groups != 1:
            return False
        if tuple(conv.kernel_size) == (1, 1):
            return conv.in_channels >= self.min_in_1x1 and conv.out_channels >= self.min_out_1x1
        return conv.in_channels >= self.min_in_3x3


# rule_from_table(benchmarks/results/binary_layers.json rows, 1.5) (2 threads, whole deployed layer): 3x3
# convs with 32+ input channels ran 1.98-12.3x faster, those with 8-16 inputs 0.32-1.33x; among 1x1
# convs only 512 -> 512 passed at every size from its input count up (3.54x; 256 -> 32 ran 0.99x).
DEFAULT_RULE = LayerRule(min_in_3x3=32, min_in_1x1=512, min_out_1x1=512)


def _threshold(rows: list[Mapping[str, Any]], min_speedup: float) -> int | None:
    """The smallest ``c_in`` from which every row with at least that many inputs reached ``min_speedup``."""
    for c in sorted({int(r["c_in"]) for r in rows}):
        if all(float(r["speedup"]) >= min_speedup for r in rows if int(r["c_in"]) >= c):
            return c
    return None


def rule_from_table(rows: Iterable[Mapping[str, Any]], min_speedup: float = 1.5) -> LayerRule:
    """A :class:`LayerRule` from measured rows (``c_in``, ``c_out``, ``kernel``, ``speedup`` = float ms /
    deployed binary ms, as ``benchmarks/binary_layers.py`` writes them). A kind of conv where no
    threshold works (no rows, or even the widest loses) is never binarized."""
    rows = list(rows)
    never = 1 << 30
    square = [r for r in rows if int(r["kernel"]) > 1]
    point = [r for r in rows if int(r["kernel"]) == 1]
    min_in_3x3 = _threshold(square, min_speedup)
    min_in_1x1 = _threshold(point, min_speedup)
    fast_point = [r for r in point if min_in_1x1 is not None and int(r["c_in"]) >= min_in_1x1]
    min_out_1x1 = min((int(r["c_out"]) for r in fast_point), default=never)
    return LayerRule(min_in_3x3 if min_in_3x3 is not None else never,
                     min_in_1x1 if min_in_1x1 is not None else never, min_out_1x1)


def select_binary_convs(model: nn.Module, rule: LayerRule | None = DEFAULT_RULE, keep: Collection[str] = (),
                        skip: Collection[str] = ()) -> list[str]:
    """Names of the dense convs of ``model`` to binarize: never the first conv (it reads the image),
    ``skip`` (e.g. the prediction conv) or ``keep`` (the user's float layers); with a ``rule``, only
    the convs it allows (``None``: every other dense conv).

    Raises:
        ValueError: a name in ``keep`` that is not a conv of the model (a typo would silently
            binarize the layer the user meant to keep).
    """
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]
    names = {n for n, _ in convs}
    unknown = sorted(set(keep) - names)
    if unknown:
        raise ValueError(f"model.binary.keep names {unknown[:3]}, not convs of this model (e.g. {sorted(names)[:3]})")
    first = convs[0][0] if convs else None
    return [n for n, m in convs if n != first and n not in skip and n not in keep and m.groups == 1
            and (rule is None or rule.allows(m))]
