"""FitNets hints (Romero et al. 2015): a teacher's middle layer guides a student's middle layer.

The student's *guided* map ``v`` (``O_g`` channels) goes through a small conv regressor ``r`` to
the teacher's *hint* map ``u`` (``O_h`` channels), and ``L_HT = ½ ||u − r(v)||²``. A conv regressor
has ``k x k x O_h x O_g`` weights, far fewer than a fully connected one between flattened maps.

FitNets chose the regressor's kernel so that a valid convolution lands exactly on the hint's
spatial size; here the conv keeps the student's size (``padding = k // 2``) and a bilinear resize
(``align_corners=False``) maps it to the hint's size when the two differ, so any pair of layers
can be tapped without working out kernel sizes. The conv runs before the resize: it sees the
student's features at their own resolution, and for a 1x1 conv the order does not matter (both
are linear and bilinear weights sum to 1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HintRegressor", "hint_loss"]


class HintRegressor(nn.Module):
    """``r``: ``Float[B, O_g, H_s, W_s]`` student map -> ``Float[B, O_h, H_t, W_t]``.

    Args:
        student_channels: ``O_g``, channels of the guided layer.
        teacher_channels: ``O_h``, channels of the hint layer.
        kernel_size: odd ``k`` of the ``k x k`` conv (default 1).
        bias: whether the conv has a bias.
    """

    def __init__(self, student_channels: int, teacher_channels: int, kernel_size: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            # an even kernel with padding k // 2 would grow the map by one cell
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, student_feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Regress ``student_feat``; resize bilinearly to ``size`` = (H_t, W_t) when given and different."""
        out = self.conv(student_feat)
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
        return out


def hint_loss(teacher_feat: torch.Tensor, regressed_student_feat: torch.Tensor) -> torch.Tensor:
    """``½ ||u − r(v)||²`` summed over channels and positions, averaged over the batch.

    The per-image sum (not a per-value mean) is the paper's norm; dividing by B keeps it
    independent of the batch size. It grows with the map's size, so its weight has to be set per
    tapped layer pair.

    Args:
        teacher_feat: ``u``, Float[B, O_h, H, W]; detached (the teacher does not learn).
        regressed_student_feat: ``r(v)``, Float[B, O_h, H, W] from :class:`HintRegressor`.

    Returns:
        A scalar.
    """
    if teacher_feat.shape != regressed_student_feat.shape:
        shapes = f"{tuple(teacher_feat.shape)} vs {tuple(regressed_student_feat.shape)}"
        raise ValueError(f"hint and regressed maps differ in shape: {shapes}")
    diff = regressed_student_feat - teacher_feat.detach().to(regressed_student_feat.dtype)
    return 0.5 * diff.pow(2).sum() / max(diff.shape[0], 1)
