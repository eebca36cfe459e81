"""What the classifier sees of the generated images during explainer training: a small random view of them.

A generator can flip a frozen classifier with a brittle pattern (a lattice at its upsampling period, a few pixels'
worth of high-frequency energy) instead of changing the evidence. If the classifier scores ``x_s`` and ``x_a`` only
through a random sub-pixel translation and a little Gaussian noise, a pattern that flips the decision at one exact
phase and noise level no longer pays, while a change of the evidence (a lesion or token removed, whose effect
survives a shift of a pixel) still does. This is expectation over transformation (Athalye et al., ICML 2018), used
here in the opposite direction: to make the counterfactual robust rather than the attack.

Batched torch operations on the device (``affine_grid`` + ``grid_sample``: each sample its own translation), so the
training step stays one classifier call. MONAI's ``RandAffine`` transforms one sample at a time on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BundleInputError

__all__ = ["RandomView"]


class RandomView(nn.Module):
    """``x -> shift(x, t) + n``: per-sample translation ``t ~ U[-max_shift, max_shift]`` pixels on every axis
    (bilinear, border padding) and Gaussian noise ``n ~ N(0, noise_std^2)``; identity in eval mode.

    Args:
        max_shift: the largest translation, in pixels (0: none).
        noise_std: the noise's standard deviation, in image units (0: none).
    """

    def __init__(self, max_shift: float = 1.0, noise_std: float = 0.02) -> None:
        super().__init__()
        for name, value in (("max_shift", max_shift), ("noise_std", noise_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise BundleInputError(f"classifier_view '{name}' must be a number >= 0, got {value!r}")
        self.max_shift = float(max_shift)
        self.noise_std = float(noise_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, _c, *spatial = x.shape
        if self.max_shift > 0:
            nd = len(spatial)
            theta = torch.zeros(b, nd, nd + 1, device=x.device, dtype=torch.float32)
            theta[:, :, :nd] = torch.eye(nd, device=x.device)
            # grid coordinates are in [-1, 1] with align_corners=False: one pixel is 2 / size; grid axes are (x, y, z)
            sizes = torch.tensor(spatial[::-1], device=x.device, dtype=torch.float32)
            shift = (torch.rand(b, nd, device=x.device) * 2 - 1) * self.max_shift
            theta[:, :, nd] = shift * 2 / sizes
            grid = F.affine_grid(theta, [b, 1, *spatial], align_corners=False)
            x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return x
