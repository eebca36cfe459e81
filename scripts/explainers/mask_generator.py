"""Real-time saliency (Dabkowski & Gal 2017, "Real Time Image Saliency for Black Box Classifiers"), method.md §4.

A trained masking network predicts the salient region for a class in one forward pass. The network and its
training (area, smoothness, preservation and destruction terms) live in ``scripts/networks.py`` and
``scripts/trainer.py``; this module only calls it.
"""

from __future__ import annotations

import inspect

import torch
from monai.visualize.visualizer import default_upsampler
from torch import nn

from ..errors import BundleInputError
from .base import Explainer

__all__ = ["MaskGeneratorExplainer"]


def _accepts_class_idx(net: nn.Module) -> bool:
    """Whether ``net``'s forward takes a second argument (the class to explain) besides ``x``."""
    try:
        params = list(inspect.signature(net.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


class MaskGeneratorExplainer(Explainer):
    """The saliency mask predicted by ``mask_net(x, class_idx)``: ``(B, 1, *spatial)`` in ``[0, 1]``, 1 = salient.

    Dabkowski & Gal's masking model is class-selective, so it is called as ``mask_net(x, class_idx)`` with the
    per-sample classes (the classifier's decision when none are given). A net whose ``forward`` takes only ``x``
    (detected from its signature, or forced with ``pass_class_idx``) is called as ``mask_net(x)``; it then explains
    whatever class it was trained on and the classifier is not run. A lower-resolution mask is upsampled
    (bi/trilinear) to the input size.

    Args:
        classifier: ``f_c``.
        mask_net: the trained masking network.
        pass_class_idx: call ``mask_net(x, class_idx)`` (True) or ``mask_net(x)`` (False); None: from the signature.

    Examples::

        # 2D
        e = MaskGeneratorExplainer(classifier, mask_net)(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 1, 0]))
        # 3D, with a masking network built for volumes
        e3d = MaskGeneratorExplainer(classifier3d, mask_net3d)(torch.rand(2, 1, 64, 64, 64))
    """

    def __init__(self, classifier: nn.Module, mask_net: nn.Module, pass_class_idx: bool | None = None) -> None:
        super().__init__(classifier)
        self.mask_net = mask_net
        self.pass_class_idx = _accepts_class_idx(mask_net) if pass_class_idx is None else pass_class_idx
        self.uses_class_idx = self.pass_class_idx

    def networks(self) -> tuple[nn.Module, ...]:
        return (self.classifier, self.mask_net)

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        b, _, *spatial = x.shape
        mask = self.mask_net(x, class_idx) if self.pass_class_idx else self.mask_net(x)
        if not isinstance(mask, torch.Tensor) or mask.ndim != x.ndim or mask.shape[:2] != (b, 1):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise BundleInputError(
                f"mask_net must return a (B, 1, *spatial) mask for input {tuple(x.shape)}, got {shape}"
            )
        if list(mask.shape[2:]) != spatial:
            mask = default_upsampler(spatial)(mask)
        return mask
