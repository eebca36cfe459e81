"""BBMP: black-box meaningful perturbation (Fong & Vedaldi 2017, "Interpretable Explanations of Black Boxes by
Meaningful Perturbation"), method.md §4.

Per image, a low-resolution mask ``m ∈ [0, 1]`` (1 keeps the pixel) is optimised so that blurring the deleted
region ``1 − m`` removes the evidence for the class while deleting as little as possible, smoothly::

    x̃ = x ⊙ up(m) + blur(x) ⊙ (1 − up(m))
    min_m  λ1 · mean|1 − m| + λtv · TV_β(m) + softmax(f_c(x̃))[ŷ]

The explanation is the deletion region ``1 − up(m)``. Hyper-parameters follow the reference re-implementation
(mask 28², Adam lr 0.1, λ1 0.01, λtv 0.2, β 3, mask initialised to 1, clamped to [0, 1] after every step); the
stochastic jitter/noise of the original paper is left out so the result is deterministic. Slow by design: each
image costs ``iterations`` forward and backward passes of the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.utils import ensure_tuple_rep
from monai.visualize.visualizer import default_upsampler
from torch import nn

from ..losses import total_variation
from .base import Explainer

__all__ = ["BBMPExplainer"]


class BBMPExplainer(Explainer):
    """Fong & Vedaldi 2017 meaningful-perturbation mask, optimised for the whole batch at once.

    All images of a batch share one Adam optimiser over a ``(B, 1, *mask_size)`` tensor; the per-image losses are
    summed and Adam is element-wise, so each image's mask evolves exactly as if it were optimised alone (the
    classifier runs in eval mode, so samples do not interact). Only the mask gets gradients
    (``torch.autograd.grad``): classifier parameters may be frozen and their ``.grad`` is never touched.

    Args:
        classifier: ``f_c``.
        mask_size: the mask's resolution, an int for every spatial dim or one per dim (clipped to the image size);
            upsampled (bi/trilinear) to the image. 28 suits images of ~128-224 pixels.
        iterations: Adam steps (100-300 is reasonable; tests use a handful).
        lr: Adam learning rate.
        l1_coeff: λ1, weight of the deletion area ``mean|1 − m|``.
        tv_coeff: λtv, weight of ``TV_β(m)``.
        tv_beta: β of the total variation.
        blur_sigma: σ (pixels) of the Gaussian blur that plays the "deleted" image; ~5 for a 128² image.

    Examples::

        # 2D
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        e = BBMPExplainer(net, iterations=300)(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 1, 0]))
        # 3D (mask 8³ on a 64³ volume)
        net3d = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
        e3d = BBMPExplainer(net3d, mask_size=8, iterations=100, blur_sigma=3.0)(torch.rand(1, 1, 64, 64, 64))
    """

    needs_grad = True

    def __init__(
        self,
        classifier: nn.Module,
        mask_size: int | Sequence[int] = 28,
        iterations: int = 300,
        lr: float = 0.1,
        l1_coeff: float = 0.01,
        tv_coeff: float = 0.2,
        tv_beta: float = 3.0,
        blur_sigma: float = 5.0,
    ) -> None:
        super().__init__(classifier)
        if iterations < 1 or lr <= 0 or blur_sigma <= 0:
            raise ValueError("iterations must be >= 1, lr and blur_sigma > 0")
        self.mask_size = mask_size
        self.iterations = iterations
        self.lr = lr
        self.l1_coeff = l1_coeff
        self.tv_coeff = tv_coeff
        self.tv_beta = tv_beta
        self.blur_sigma = blur_sigma

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur, the same kernels and separable filtering as :class:`monai.networks.layers.GaussianFilter`
        (truncated at 4σ) but with replicate padding: ``GaussianFilter`` pads with zeros, which would darken the
        border so that "deleting" a border pixel also changed its intensity; replicate padding keeps the
        perturbation a pure loss of detail.
        """
        kernel = gaussian_1d(torch.tensor(self.blur_sigma, dtype=x.dtype, device=x.device), 4.0, normalize=True)
        return separable_filtering(x, [kernel] * (x.ndim - 2), mode="replicate")

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        b, _, *spatial = x.shape
        x = x.detach()
        blurred = self.blur(x)
        size = [min(m, s) for m, s in zip(ensure_tuple_rep(self.mask_size, len(spatial)), spatial)]
        up = default_upsampler(spatial)
        mask = x.new_ones(b, 1, *size).requires_grad_(True)
        opt = torch.optim.Adam([mask], lr=self.lr)
        target = class_idx.reshape(-1, 1)  # type: ignore[union-attr]
        for _ in range(self.iterations):
            m = up(mask)
            prob = F.softmax(self.classifier(x * m + blurred * (1 - m)), dim=1).gather(1, target).squeeze(1)
            loss = (
                self.l1_coeff * (1 - mask).abs().flatten(1).mean(1)
                + self.tv_coeff * total_variation(mask, self.tv_beta, per_sample=True)
                + prob
            )
            (mask.grad,) = torch.autograd.grad(loss.sum(), mask)
            opt.step()
            with torch.no_grad():
                mask.clamp_(0.0, 1.0)
        return 1.0 - up(mask.detach())
