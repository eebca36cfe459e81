"""The one interface every explanation method implements.

An explainer takes a batch ``x`` of shape ``(B, C, *spatial)`` and a ``(B,)`` tensor of class indices (one per
sample) and returns a non-negative relevance map of shape ``(B, 1, *spatial)``. ``class_idx=None`` explains the
classifier's own decision ``argmax f_c(x)`` (method.md §1). Subclasses fill one hook, :meth:`compute_map`.

While an explainer runs, every network it uses (:meth:`Explainer.networks`) is in eval mode; each one's previous
mode is restored afterwards, so an explainer never leaves a network in another mode than it found it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode and restore each submodule's own mode on exit.

    Unlike :func:`monai.networks.utils.eval_mode` this does not disable autograd (gradient methods need it)
    and restores a mixed train/eval state exactly, submodule by submodule.
    """
    saved = [(m, m.training) for net in modules for m in net.modules()]
    try:
        for net in modules:
            net.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


class Explainer(ABC):
    """Template: validate inputs, pick the classes to explain, then call :meth:`compute_map`.

    Args:
        classifier: the frozen classifier ``f_c`` mapping ``(B, C, *spatial)`` to ``(B, K)`` logits.
    """

    #: whether compute_map needs autograd enabled (gradient methods) or can run under ``torch.no_grad``.
    needs_grad: bool = False
    #: whether compute_map uses ``class_idx``. When False and no class is given, the classifier is not run to
    #: predict one and compute_map receives ``None`` (methods that always explain the classifier's own decision).
    uses_class_idx: bool = True

    def __init__(self, classifier: nn.Module) -> None:
        self.classifier = classifier

    def networks(self) -> tuple[nn.Module, ...]:
        """The networks the method runs; they are put in eval mode during a call."""
        return (self.classifier,)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's decision ``ŷ = argmax f_c(x)``, shape ``(B,)``."""
        with eval_mode(self.classifier):
            return self.classifier(x).argmax(dim=1)

    def resolve_class_idx(self, x: torch.Tensor, class_idx: torch.Tensor | int | None) -> torch.Tensor | None:
        """Check ``x`` and return the ``(B,)`` classes to explain (the prediction when None and the method uses it)."""
        if x.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(x.shape)}")
        b = x.shape[0]
        if class_idx is None:
            return self.predict(x) if self.uses_class_idx else None
        class_idx = torch.as_tensor(class_idx, device=x.device).long().reshape(-1)
        if class_idx.numel() == 1 and b > 1:
            class_idx = class_idx.expand(b)
        if class_idx.shape[0] != b:
            raise ValueError(f"class_idx has {class_idx.shape[0]} entries for a batch of {b}")
        return class_idx

    def __call__(self, x: torch.Tensor, class_idx: torch.Tensor | None = None) -> torch.Tensor:
        with eval_mode(*self.networks()):
            class_idx = self.resolve_class_idx(x, class_idx)
            with torch.set_grad_enabled(self.needs_grad):
                out = self.compute_map(x, class_idx)
        return out.detach()

    @abstractmethod
    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        """Return the ``(B, 1, *spatial)`` map explaining class ``class_idx[i]`` for sample ``i``.

        ``class_idx`` is ``None`` only for explainers with ``uses_class_idx = False`` called without classes.
        """
