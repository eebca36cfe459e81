"""Loss terms of the joint objective (method.md §2) and of the Dabkowski & Gal masker (method.md §4).

Joint objective of Charachon et al. (ICPR 2020), slide "Joint Optimization"::

    (g_s, g_a) = argmin E_x[ L_d + L_fc + L_reg ] + L_{s,a}

Every term is its own function on batches ``(B, C, *spatial)`` with ``(B,)`` class targets, averaged over the
batch. The total variation and the stable "push away from class ŷ" term have no MONAI/torch equivalent, so they are
written here; the optional SSIM part of ``d`` uses ``monai.losses.SSIMLoss``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

from .networks import is_naive

__all__ = [
    "SIMADV_TERMS",
    "MASK_TERMS",
    "distance_loss",
    "similarity_loss",
    "similar_classification_loss",
    "adversarial_classification_loss",
    "total_variation",
    "closeness_loss",
    "regularization_terms",
    "regularization_loss",
    "parameter_distance",
    "adversarial_tv",
    "SimAdvLoss",
    "MaskGeneratorLoss",
]

#: the unweighted terms returned by :class:`SimAdvLoss` (besides the weighted total ``"loss"``).
SIMADV_TERMS = ("loss_d", "loss_s", "loss_a", "loss_close", "loss_tv", "loss_sa", "loss_tv_a")
#: the unweighted terms returned by :class:`MaskGeneratorLoss`.
MASK_TERMS = ("loss_area", "loss_smooth", "loss_preserve", "loss_destroy")


def distance_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    l1_weight: float = 1.0,
    l2_weight: float = 1.0,
    ssim_weight: float = 0.0,
    data_range: float = 1.0,
) -> torch.Tensor:
    """The image distance ``d = l1_weight * mean|x - y| + l2_weight * mean (x - y)^2`` (method.md §2, decision).

    ``ssim_weight > 0`` adds ``ssim_weight * (1 - SSIM(x, y))`` (MONAI ``SSIMLoss``; spatial size >= 11).
    """
    diff = x - y
    out = l1_weight * diff.abs().mean() + l2_weight * diff.square().mean()
    if ssim_weight:
        out = out + ssim_weight * SSIMLoss(spatial_dims=x.ndim - 2, data_range=data_range)(x, y)
    return out


def similarity_loss(
    x: torch.Tensor, x_s: torch.Tensor | None, x_a: torch.Tensor, **distance_kwargs: float
) -> torch.Tensor:
    """``L_d = d(x, x_a) + d(x, x_s)``: both generated images stay close to ``x`` (method.md §2).

    ``x_s=None`` (the naive variant, where ``x_s = x`` and ``d(x, x_s) = 0``) gives ``d(x, x_a)`` alone.
    """
    out = distance_loss(x, x_a, **distance_kwargs)
    return out if x_s is None else out + distance_loss(x, x_s, **distance_kwargs)


def similar_classification_loss(logits_s: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """``CE(f_c(x_s), ŷ)``: the similar image keeps the classifier's decision (method.md §1, ``L_fc``)."""
    return F.cross_entropy(logits_s.float(), y_hat.long())


def adversarial_classification_loss(logits_a: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """``mean_i -log(1 - softmax(f_c(x_a))[ŷ_i])``: push probability away from ``ŷ`` (method.md §1, ``L_fc``).

    Computed stably as ``log(1 - p_ŷ) = logsumexp(logits without ŷ) - logsumexp(all logits)``. For ``K = 2`` this
    equals cross-entropy with the flipped target.
    """
    if logits_a.shape[1] < 2:
        raise ValueError(f"the adversarial loss needs >= 2 classes, got logits of shape {tuple(logits_a.shape)}")
    logits = logits_a.float()
    target = F.one_hot(y_hat.long(), logits.shape[1]).bool()
    log_not_target = torch.logsumexp(logits.masked_fill(target, float("-inf")), dim=1) - torch.logsumexp(logits, 1)
    return -log_not_target.mean()


def total_variation(t: torch.Tensor, power: float = 1.0, per_sample: bool = False) -> torch.Tensor:
    """Anisotropic total variation ``sum_d mean |t[i+1] - t[i]|^power`` over each spatial axis ``d``.

    Dimension-agnostic ``(B, C, *spatial)``; each axis term is a mean over all its neighbour pairs (and the batch),
    a scalar; with ``per_sample`` the means are per sample, shape ``(B,)``. ``power=1`` is the L1 TV of ``L_reg``
    (method.md §2); ``power=2`` the squared variant of Dabkowski & Gal; BBMP uses ``power=3`` per sample (Fong &
    Vedaldi eq. 3).
    """
    out = t.new_zeros(t.shape[0]) if per_sample else t.new_zeros(())
    for dim in range(2, t.ndim):
        if t.shape[dim] > 1:  # an axis of length 1 has no neighbour pairs
            d = torch.diff(t, dim=dim).abs().pow(power)
            out = out + (d.flatten(1).mean(1) if per_sample else d.mean())
    return out


def closeness_loss(x_s: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
    """``mean|x_s - x_a|``: the two generated images differ little (the L1 part of ``L_reg``, method.md §2)."""
    return (x_s - x_a).abs().mean()


def regularization_terms(x_s: torch.Tensor, x_a: torch.Tensor) -> dict[str, torch.Tensor]:
    """The unweighted parts of ``L_reg``: ``{"loss_close": mean|x_s - x_a|, "loss_tv": TV(x_s - x_a)}``."""
    return {"loss_close": closeness_loss(x_s, x_a), "loss_tv": total_variation(x_s - x_a)}


def regularization_loss(
    x_s: torch.Tensor, x_a: torch.Tensor, closeness_weight: float = 1.0, tv_weight: float = 1.0
) -> torch.Tensor:
    """``L_reg = closeness_weight * mean|x_s - x_a| + tv_weight * TV(x_s - x_a)`` (method.md §2)."""
    terms = regularization_terms(x_s, x_a)
    return closeness_weight * terms["loss_close"] + tv_weight * terms["loss_tv"]


def adversarial_tv(x: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
    """``TV(x_a - x)``: the adversarial change itself is piecewise smooth, so that ``g_a`` cannot flip the classifier
    with a high-frequency pattern spread over the image (a lattice at its upsampling period) instead of changing the
    evidence; ``L_reg``'s TV acts on ``x_s - x_a`` only. Our addition to the paper's objective (docs/method.md)."""
    return total_variation(x_a - x)


def parameter_distance(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``L_{s,a} = sum ||theta_s - theta_a||^2`` over paired parameters (method.md §2, "W"); 0 when none."""
    total: torch.Tensor | None = None
    for p_s, p_a in pairs:
        term = (p_s - p_a).square().sum()
        total = term if total is None else total + term
    return torch.zeros(()) if total is None else total


class SimAdvLoss(nn.Module):
    """The joint objective of method.md §2 with every weight exposed (Charachon et al. 2020).

    ``loss = alpha * L_d + lambda_s * CE_s + lambda_a * CE_adv + closeness_weight * L1(x_s, x_a)
    + tv_weight * TV(x_s - x_a) + w_weight * L_{s,a} + adv_tv_weight * TV(x_a - x)`` (the last is ours:
    :func:`adversarial_tv`; it enters the total only when its weight is non-zero).

    The TV and W columns of the paper's variant table are ``tv_weight > 0`` and ``w_weight > 0``. In the naive
    variant (``logits_s`` is ``None``, or :func:`scripts.networks.is_naive`) the terms on ``x_s`` (``d(x, x_s)`` and
    the similar CE) are constant and skipped (reported as 0). Each term is its function above.

    Returns a dict of the unweighted terms (:data:`SIMADV_TERMS`) and the weighted total ``"loss"``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        lambda_s: float = 1.0,
        lambda_a: float = 1.0,
        closeness_weight: float = 1.0,
        tv_weight: float = 1.0,
        w_weight: float = 0.0,
        adv_tv_weight: float = 0.0,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        ssim_weight: float = 0.0,
        data_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.lambda_s = lambda_s
        self.lambda_a = lambda_a
        self.closeness_weight = closeness_weight
        self.tv_weight = tv_weight
        self.w_weight = w_weight
        self.adv_tv_weight = adv_tv_weight
        self.distance_kwargs = {
            "l1_weight": l1_weight,
            "l2_weight": l2_weight,
            "ssim_weight": ssim_weight,
            "data_range": data_range,
        }

    def forward(
        self,
        x: torch.Tensor,
        x_s: torch.Tensor,
        x_a: torch.Tensor,
        logits_s: torch.Tensor | None,
        logits_a: torch.Tensor,
        y_hat: torch.Tensor,
        generator: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        naive = logits_s is None or is_naive(generator, x, x_s)
        x, x_s, x_a = x.float(), x_s.float(), x_a.float()
        zero = x.new_zeros(())
        # L_d = similarity_loss and L_reg's parts = regularization_terms, each term built in this order: the order
        # of the backward pass's gradient sums, so that a training run stays bit-identical (d(x, x_s) comes last).
        terms = {
            "loss_d": similarity_loss(x, None, x_a, **self.distance_kwargs),
            "loss_s": zero,
            "loss_a": adversarial_classification_loss(logits_a, y_hat),
            **regularization_terms(x_s, x_a),
            "loss_sa": zero,
            "loss_tv_a": adversarial_tv(x, x_a if self.adv_tv_weight else x_a.detach()),
        }
        if not naive:
            terms["loss_d"] = terms["loss_d"] + distance_loss(x, x_s, **self.distance_kwargs)
            terms["loss_s"] = similar_classification_loss(logits_s, y_hat)  # type: ignore[arg-type]
        if self.w_weight and generator is not None and hasattr(generator, "paired_parameters"):
            terms["loss_sa"] = parameter_distance(generator.paired_parameters()).to(x.device)
        terms["loss"] = (
            self.alpha * terms["loss_d"]
            + self.lambda_s * terms["loss_s"]
            + self.lambda_a * terms["loss_a"]
            + self.closeness_weight * terms["loss_close"]
            + self.tv_weight * terms["loss_tv"]
            + self.w_weight * terms["loss_sa"]
        )
        if self.adv_tv_weight:
            terms["loss"] = terms["loss"] + self.adv_tv_weight * terms["loss_tv_a"]
        return terms


class MaskGeneratorLoss(nn.Module):
    """Real-time saliency objective of Dabkowski & Gal (NeurIPS 2017), method.md §4::

        area_weight * mean((m + 5e-4)^area_power) + smooth_weight * TV_p(m)
        + preserve_weight * (-log softmax(f_c(x*m + blur(x)*(1-m)))[ŷ])
        + destroy_weight * softmax(f_c(x*(1-m) + blur(x)*m))[ŷ]^destroy_power

    The paper's form: the destroyer term is a probability raised to a power (not a log); the area term raises each
    pixel to ``area_power`` (the ``5e-4`` keeps its gradient finite at 0). Defaults follow the authors' public code
    (area 8, power 0.3, smoothness 0.5, preserver 0.3); the smoothness term here is our mean-normalised TV.

    Returns a dict of the unweighted terms (:data:`MASK_TERMS`) and the weighted total ``"loss"``.
    """

    def __init__(
        self,
        area_weight: float = 8.0,
        area_power: float = 0.3,
        smooth_weight: float = 0.5,
        smooth_power: float = 1.0,
        preserve_weight: float = 0.3,
        destroy_weight: float = 1.0,
        destroy_power: float = 1.0,
    ) -> None:
        super().__init__()
        self.area_weight = area_weight
        self.area_power = area_power
        self.smooth_weight = smooth_weight
        self.smooth_power = smooth_power
        self.preserve_weight = preserve_weight
        self.destroy_weight = destroy_weight
        self.destroy_power = destroy_power

    def forward(
        self, mask: torch.Tensor, logits_preserved: torch.Tensor, logits_destroyed: torch.Tensor, y_hat: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        mask = mask.float()
        y_hat = y_hat.long()
        p_destroyed = torch.softmax(logits_destroyed.float(), dim=1).gather(1, y_hat[:, None]).squeeze(1)
        terms = {
            "loss_area": (mask + 5e-4).pow(self.area_power).mean(),
            "loss_smooth": total_variation(mask, power=self.smooth_power),
            "loss_preserve": F.cross_entropy(logits_preserved.float(), y_hat),
            "loss_destroy": p_destroyed.pow(self.destroy_power).mean(),
        }
        terms["loss"] = (
            self.area_weight * terms["loss_area"]
            + self.smooth_weight * terms["loss_smooth"]
            + self.preserve_weight * terms["loss_preserve"]
            + self.destroy_weight * terms["loss_destroy"]
        )
        return terms
