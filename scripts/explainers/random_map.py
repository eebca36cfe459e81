"""The random reference map: what a method that does not localize scores (the benchmark's "Random (reference)" row).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Explainer

__all__ = ["RandomExplainer"]


class RandomExplainer(Explainer):
    """A uniform random map, the same at every call (seeded, drawn on the CPU so that every device gets the same).

    Args:
        classifier: ``f_c`` (kept for the interface; the map does not use it).
        seed: seed of the draw.
    """

    uses_class_idx = False

    def __init__(self, classifier: nn.Module, seed: int = 0) -> None:
        super().__init__(classifier)
        self.seed = seed

    def networks(self) -> tuple[nn.Module, ...]:
        """None: the map runs no network."""
        return ()

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        b, _, *spatial = x.shape
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        return torch.rand((b, 1, *spatial), generator=gen).to(x.device)
