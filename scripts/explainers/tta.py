"""Test-time geometric augmentation of any explainer (method.md §3, the paper's "Summary of Contribution")::

    Ē(x) = 1/(N+1) [ E(x) + Σ_{i=1..N} ψ_i⁻¹( E(ψ_i(x)) ) ]

``ψ_i`` are random small rotations, isotropic scalings and translations, applied with
``torch.nn.functional.affine_grid``/``grid_sample`` (2D and 3D) and undone exactly with the inverse matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale, create_translate
from torch import nn

from .base import Explainer, eval_mode

__all__ = ["TTAExplainer", "random_affines", "warp"]

#: coverage below this counts as "not seen by this augmentation" (keeps the per-pixel std well defined).
_MIN_COVERAGE = 1e-3


def random_affines(
    num: int,
    spatial: Sequence[int],
    rotate_range: float,
    scale_range: tuple[float, float],
    translate_range: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``num`` random homogeneous affines ``(num, d+1, d+1)`` (float64) in ``affine_grid``'s normalised coordinates.

    Each is built in pixel units about the image centre (so a rotation stays rigid on non-square images) with
    MONAI's ``create_rotate``/``create_scale``/``create_translate``: angles ``U(−r, r)`` degrees about every axis
    (one in 2D, three in 3D), one isotropic scale ``U(*scale_range)``, a shift ``U(−t, t)`` × the size per axis;
    then conjugated by the half-size scaling that maps pixels to ``[−1, 1]`` (``align_corners=False``).
    """
    d = len(spatial)
    if d not in (2, 3):
        raise ValueError(f"test-time augmentation supports 2D and 3D images, got {d} spatial dims")
    half = np.diag([*(s / 2.0 for s in reversed(spatial)), 1.0])  # affine_grid orders coordinates x, y, z
    n_angles = 1 if d == 2 else 3
    out = []
    for _ in range(num):
        u = torch.rand(n_angles + 1 + d, generator=generator, dtype=torch.float64).numpy()
        angles = [math.radians(rotate_range * (2 * a - 1)) for a in u[:n_angles]]
        scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u[n_angles]
        shift = [translate_range * (2 * t - 1) * s for t, s in zip(u[n_angles + 1 :], reversed(spatial))]
        rot = create_rotate(d, angles if d == 3 else angles[0])
        pix = create_translate(d, shift) @ rot @ create_scale(d, [scale] * d)
        out.append(np.linalg.inv(half) @ pix @ half)
    return torch.as_tensor(np.stack(out)) if out else torch.zeros(0, d + 1, d + 1, dtype=torch.float64)


def warp(img: torch.Tensor, affine: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Resample ``img`` (B, C, *spatial) with one homogeneous affine (d+1, d+1): ``out(p) = img(A p)``."""
    b, _, *spatial = img.shape
    d = len(spatial)
    theta = affine[:d].to(img).unsqueeze(0).expand(b, d, d + 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class TTAExplainer(Explainer):
    """Average an explainer's maps over random geometric augmentations mapped back onto the input grid.

    ``ψ_i`` are drawn from a ``torch.Generator`` seeded with ``seed`` at every call, so the result is deterministic
    and the same ``ψ_i`` apply to every image of a batch (a batch gives the same maps as its images one by one).
    The classes to explain are resolved once on ``x`` (the decision on the un-augmented image when none are given)
    and passed unchanged to every augmented call.

    Coverage: a pixel that ``ψ_i`` moves outside the image has no value in ``E(ψ_i(x))``. Each back-warped map is
    therefore weighted by the coverage ``w_i = ψ_i⁻¹(ψ_i(1))`` (a ones image warped there and back, zero padding),
    and ``Ē = (E(x) + Σ ψ_i⁻¹(v_i E(ψ_i(x)))) / (1 + Σ w_i)`` with ``v_i = ψ_i(1)``: each pixel is averaged over the
    augmentations that cover it (the identity always does); with full coverage this is the formula above. The
    augmented image itself is padded with ``padding_mode`` (reflection by default, so the wrapped method sees no
    artificial black border). :meth:`explain_with_uncertainty` also returns the coverage-weighted per-pixel
    standard deviation over the ``N + 1`` maps. ``num_augmentations=0`` returns ``E(x)`` unchanged. The wrapped
    explainer sets its own autograd mode, so the warps themselves run without building a graph.

    Args:
        explainer: any :class:`Explainer` (ours or a baseline).
        num_augmentations: ``N``, the number of random transforms besides the identity.
        rotate_range: maximal rotation in degrees (about each axis in 3D).
        scale_range: range of the isotropic scale factor.
        translate_range: maximal shift as a fraction of the size along each axis.
        seed: seed of the transforms.
        padding_mode: ``grid_sample`` padding of the augmented image (``"reflection"``, ``"border"``, ``"zeros"``).

    Examples::

        # 2D
        tta = TTAExplainer(GradCAMExplainer(net), num_augmentations=8)
        e = tta(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 1, 0]))  # (4, 1, 128, 128)
        mean, std = tta.explain_with_uncertainty(torch.rand(4, 1, 128, 128))
        # 3D
        e3d = TTAExplainer(GradientExplainer(net3d), num_augmentations=4)(torch.rand(2, 1, 32, 32, 32))
    """

    def __init__(
        self,
        explainer: Explainer,
        num_augmentations: int = 8,
        rotate_range: float = 10.0,
        scale_range: tuple[float, float] = (0.9, 1.1),
        translate_range: float = 0.05,
        seed: int = 0,
        padding_mode: str = "reflection",
    ) -> None:
        super().__init__(explainer.classifier)
        if num_augmentations < 0:
            raise ValueError(f"num_augmentations must be >= 0, got {num_augmentations}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
        self.explainer = explainer
        self.num_augmentations = num_augmentations
        self.rotate_range = float(rotate_range)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.translate_range = float(translate_range)
        self.seed = seed
        self.padding_mode = padding_mode
        self.uses_class_idx = explainer.uses_class_idx

    def networks(self) -> tuple[nn.Module, ...]:
        return self.explainer.networks()

    def sample_affines(self, spatial: Sequence[int]) -> torch.Tensor:
        """The ``N`` transforms ``ψ_i`` of every call, ``(N, d+1, d+1)``."""
        gen = torch.Generator().manual_seed(self.seed)
        return random_affines(
            self.num_augmentations, spatial, self.rotate_range, self.scale_range, self.translate_range, gen
        )

    def aggregate(
        self, x: torch.Tensor, class_idx: torch.Tensor | None, affines: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coverage-weighted mean and std of ``E(x)`` and ``ψ⁻¹(E(ψ(x)))`` for the given ``affines``."""
        mean = self.explainer(x, class_idx)
        total, m2 = torch.ones_like(mean), torch.zeros_like(mean)
        ones = torch.ones_like(mean)
        for affine, inverse in zip(affines, torch.linalg.inv(affines)):  # warp moves them to x's device and dtype
            e = self.explainer(warp(x, affine, self.padding_mode), class_idx)
            valid = warp(ones, affine)
            w = warp(valid, inverse)
            w = torch.where(w >= _MIN_COVERAGE, w, 0.0)
            value = warp(e * valid, inverse) / w.clamp_min(_MIN_COVERAGE)
            # weighted Welford update (stable, unlike E[e²] − E[e]², which loses the std to cancellation)
            total = total + w
            delta = value - mean
            mean = mean + w / total * delta
            m2 = m2 + w * delta * (value - mean)
        return mean, (m2 / total).clamp_min(0.0).sqrt()

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        if self.num_augmentations == 0:
            return self.explainer(x, class_idx)
        return self.aggregate(x, class_idx, self.sample_affines(x.shape[2:]))[0]

    def explain_with_uncertainty(
        self, x: torch.Tensor, class_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ē(x), std)``: the TTA map and the per-pixel standard deviation over the ``N + 1`` maps."""
        with eval_mode(*self.networks()):
            class_idx = self.resolve_class_idx(x, class_idx)
            mean, std = self.aggregate(x, class_idx, self.sample_affines(x.shape[2:]))
        return mean.detach(), std.detach()
