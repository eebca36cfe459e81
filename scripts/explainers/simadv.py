"""Ours and the Naive baseline: explanations as differences of generated images (Charachon et al., ICPR 2020),
method.md §1-§2.

A generator maps ``x`` to ``(x_s, x_a)``, a similar image (classified like ``x``) and an adversarial one
(classified otherwise); ``E = Σ_c |x_s − x_a|``. The Naive baseline is the same class on a generator in ``'naive'``
mode, whose ``x_s`` is ``x``: ``E = Σ_c |x − x_a|``. One forward pass, no gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BundleInputError
from ..networks import generator_map
from .base import Explainer

__all__ = ["SimAdvExplainer"]


class SimAdvExplainer(Explainer):
    """``E(x) = Σ_c |g_s(x) − g_a(x)|``: the similar and adversarial images differ only where the decision lives.

    The generators were trained to explain the classifier's *own* decision ``ŷ = argmax f_c(x)`` (method.md §1), so
    ``class_idx`` is accepted for the common interface but does not change the map, and without one the classifier
    is not run at all (``uses_class_idx = False``). A Naive-variant generator (whose ``x_s`` is ``x``) gives the
    Naive explanation through this class too.

    Args:
        classifier: ``f_c`` (kept for the interface; the map does not use it).
        generator: module mapping ``(B, C, *spatial)`` to the tuple ``(x_s, x_a)`` of the same shape.

    Examples::

        # 2D
        e = SimAdvExplainer(classifier, generator)(torch.rand(4, 1, 128, 128))  # (4, 1, 128, 128)
        # 3D, with a generator built for volumes
        e3d = SimAdvExplainer(classifier3d, generator3d)(torch.rand(2, 1, 64, 64, 64))  # (2, 1, 64, 64, 64)
    """

    uses_class_idx = False

    def __init__(self, classifier: nn.Module, generator: nn.Module) -> None:
        super().__init__(classifier)
        self.generator = generator

    def networks(self) -> tuple[nn.Module, ...]:
        """Only the generator: the map never runs the classifier (``uses_class_idx = False``), so putting its
        modules in eval mode at every call would only cost time (about 500 modules in the default DenseNet121)."""
        return (self.generator,)

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the generator and check it returned ``(x_s, x_a)`` shaped like ``x``."""
        out = self.generator(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise BundleInputError(f"generator must return a tuple (x_s, x_a), got {type(out).__name__}")
        x_s, x_a = out
        if x_s.shape != x.shape or x_a.shape != x.shape:
            raise BundleInputError(
                f"generator outputs {tuple(x_s.shape)}, {tuple(x_a.shape)} do not match the input {tuple(x.shape)}"
            )
        return x_s, x_a

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        return generator_map(self.generator, *self.generate(x))
