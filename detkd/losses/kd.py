"""Classic distillation terms on class logits: Hinton KD, logit regression, noisy teacher.

Every function takes logits ``Float[..., K]`` (any leading shape: ``[N]`` samples for a
classifier, ``[B, A, S_h, S_w]`` candidates for a detector) and an optional per-element
``weight`` ``Float[...]`` broadcastable to the leading shape (e.g. an FM-NMS ``cls_weight``).

Reductions: ``"none"`` returns the weighted per-element loss ``Float[...]``; ``"sum"`` its sum;
``"mean"`` (default) its sum divided by the *number of elements* (the leading shape's numel), not
by the sum of the weights, so a weight of 0 means "this element contributes 0", the result is
linear in the weights, and no empty mask divides by zero. Without weights, ``"mean"`` over
``[N]`` samples is the usual batch mean.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Reduction", "hinton_kd", "logit_l2", "noisy_teacher"]

Reduction = Literal["mean", "sum", "none"]


def _reduce(per_element: torch.Tensor, weight: torch.Tensor | None, reduction: Reduction) -> torch.Tensor:
    """Weight ``Float[...]`` per-element losses and reduce them (see the module docstring)."""
    if weight is not None:
        per_element = per_element * weight.to(per_element.dtype)
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return per_element.sum()
    if reduction == "mean":
        return per_element.sum() / max(per_element.numel(), 1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        shapes = f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        raise ValueError(f"student and teacher logits differ in shape: {shapes}")


def hinton_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tau: float = 4.0,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Hinton et al. (2015): ``τ² · KL(softmax(t/τ) || softmax(s/τ))`` per element.

    The ``τ²`` keeps the gradient's size independent of ``τ`` (soft-target gradients scale as
    ``1/τ²``), so the term can be mixed with a hard-label loss at a fixed weight. The teacher is
    detached: only the student learns.

    Args:
        student_logits, teacher_logits: Float[..., K].
        tau: temperature τ > 0 (2–5 in the paper's experiments).
        weight: optional Float[...] per-element multiplier.
        reduction: see the module docstring.

    Returns:
        A scalar, or Float[...] for ``reduction="none"``; the KL is summed over the K classes.
    """
    _check_pair(student_logits, teacher_logits)
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(log_p_s.dtype) / tau, dim=-1)
    p_t = log_p_t.exp()
    # 0 · log 0 = 0: a class the teacher rules out entirely (logit -inf) must not give NaN
    kl = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t)).sum(dim=-1)
    return _reduce(tau * tau * kl, weight, reduction)


def logit_l2(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Ba & Caruana (2014): regress the teacher's logits, ``½ · ||s − t||²`` per element.

    The ½ and the mean over elements follow their ``1/(2T) Σ_t ||g(x_t) − z_t||²``. Raw logits
    are compared, not centred ones: the softmax ignores a common shift, but regressing the
    teacher's logits as they are is the method.

    Args:
        student_logits, teacher_logits: Float[..., K]; the teacher is detached.
        weight: optional Float[...] per-element multiplier.
        reduction: see the module docstring.

    Returns:
        A scalar, or Float[...] for ``reduction="none"`` (squared error summed over K).
    """
    _check_pair(student_logits, teacher_logits)
    diff = student_logits - teacher_logits.detach().to(student_logits.dtype)
    return _reduce(0.5 * diff.pow(2).sum(dim=-1), weight, reduction)


def noisy_teacher(
    teacher_logits: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
    relative: bool = False,
) -> torch.Tensor:
    """Sau & Balasubramanian (2016): perturb the teacher's logits with Gaussian noise.

    Default (METHODS.md): ``t + σ·ξ``, ``ξ ~ N(0, 1)`` per logit. ``relative=True`` gives the
    multiplicative form ``t · (1 + σ·ξ)``, which is how we recall the paper perturbs logits (not
    checked against the paper here). The result is a new tensor, detached like any target.

    Args:
        teacher_logits: Float[..., K].
        sigma: noise standard deviation; 0 returns ``teacher_logits`` itself (identity).
        generator: optional RNG on the logits' device, for reproducible noise.
        weight: optional Float[...] per-element multiplier of the noise; a Bernoulli(α) mask
            perturbs only a fraction α of the elements, as the paper does per mini-batch.
        relative: multiplicative instead of additive noise.

    Returns:
        Float[..., K] perturbed logits.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return teacher_logits
    logits = teacher_logits.detach()
    noise = sigma * torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    if weight is not None:
        noise = noise * weight.to(logits.dtype).unsqueeze(-1)
    return logits + (logits * noise if relative else noise)
