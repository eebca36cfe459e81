"""Gradient saliency (Simonyan et al. 2014, "Deep Inside Convolutional Networks"), method.md §4.

``E(x) = max_c |∂ f_c(x)_ŷ / ∂x_c|``: the magnitude of the class logit's gradient w.r.t. the input, reduced over
input channels.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.visualize import VanillaGrad
from torch import nn

from .base import Explainer

__all__ = ["GradientExplainer", "PerSampleVanillaGrad"]


class PerSampleVanillaGrad(VanillaGrad):
    """:class:`monai.visualize.VanillaGrad` for a batch with one target class per sample.

    MONAI 1.6's ``VanillaGrad.get_grad`` refuses batches larger than one, scores ``logits[:, index]`` (which, for a
    ``(B,)`` index, sums every sample's logits of every class in the batch), calls ``.backward()`` (accumulating
    into the classifier parameters' ``.grad``) and sets ``requires_grad`` on the caller's tensor. This override
    does one pass instead: gather each sample's own logit, sum them and take ``torch.autograd.grad`` w.r.t. a
    detached copy of the input. With the classifier in eval mode the samples do not interact, so
    ``∂ Σ_i f(x_i)[y_i] / ∂x_j = ∂ f(x_j)[y_j] / ∂x_j``; parameter gradients are neither computed nor touched, and
    frozen parameters (``requires_grad=False``) are fine.

    Example::

        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3)
        grad = PerSampleVanillaGrad(net.eval())(torch.rand(4, 1, 64, 64), torch.tensor([0, 2, 1, 0]))
    """

    def get_grad(  # type: ignore[override]
        self, x: torch.Tensor, index: torch.Tensor | int | None, retain_graph: bool = False, **kwargs: Any
    ) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        logits = self.model(x, **kwargs)
        if index is None:
            index = logits.argmax(dim=1)
        index = torch.as_tensor(index, device=logits.device).long().reshape(-1, 1).expand(logits.shape[0], 1)
        score = logits.gather(1, index).sum()
        (grad,) = torch.autograd.grad(score, x, retain_graph=retain_graph)
        return grad


class GradientExplainer(Explainer):
    """Simonyan et al. 2014 gradient saliency: ``|∂ f_c(x)_ŷ / ∂x|`` reduced over channels.

    Args:
        classifier: ``f_c``, ``(B, C, *spatial) -> (B, K)`` logits; may be frozen (``requires_grad=False``).
        reduction: ``"max"`` (Simonyan et al.: max of the magnitude over input channels) or ``"sum"``.
            Identical for the single-channel images of this bundle.

    Examples::

        # 2D
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        sal = GradientExplainer(net)(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 1, 0]))  # (4, 1, 128, 128)
        # 3D
        net3d = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
        sal3d = GradientExplainer(net3d)(torch.rand(2, 1, 32, 32, 32))  # (2, 1, 32, 32, 32)
    """

    needs_grad = True

    def __init__(self, classifier: nn.Module, reduction: str = "max") -> None:
        super().__init__(classifier)
        if reduction not in ("max", "sum"):
            raise ValueError(f"reduction must be 'max' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.saliency = PerSampleVanillaGrad(classifier)

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        mag = self.saliency(x, class_idx).abs()
        return mag.amax(dim=1, keepdim=True) if self.reduction == "max" else mag.sum(dim=1, keepdim=True)
