"""Grad-CAM (Selvaraju et al. 2017) on :class:`monai.visualize.GradCAM`, method.md §4.

The hook plumbing (:class:`ScopedModelWithHooks`) is kept apart from the method (:class:`GradCAMExplainer`), as in
``monai/visualize/class_activation_maps.py``; the Grad-CAM arithmetic itself is MONAI's ``GradCAM.compute_map``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from monai.visualize import GradCAM
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import BundleInputError
from .base import Explainer

__all__ = ["GradCAMExplainer", "ScopedModelWithHooks"]


def identity(x: torch.Tensor) -> torch.Tensor:
    """Post-processing that keeps the raw (ReLU'd, upsampled) Grad-CAM map."""
    return x


class ScopedModelWithHooks(ModelWithHooks):
    """:class:`monai.visualize.class_activation_maps.ModelWithHooks` with three fixes, used as a context manager.

    1. Per-sample targets: MONAI's ``class_score`` is ``logits[:, class_idx]``, which for a ``(B,)`` index scores
       every sample on every class present in the batch (the wrong target when a batch mixes classes). Here each
       sample's own logit is gathered.
    2. Gradients by ``torch.autograd.grad`` w.r.t. the cached activations instead of ``.backward()`` and layer
       backward hooks: the classifier parameters' ``.grad`` are neither zeroed nor filled, and frozen parameters
       (``requires_grad=False``) work because the input is made to require grad (a detached copy), which is what
       puts the activations in the autograd graph.
    3. Hooks are released: the forward hooks are registered on ``__enter__`` and removed on ``__exit__``, and a
       target layer's ``inplace`` flag is switched off only inside the block (MONAI registers for good).

    Example::

        with ScopedModelWithHooks(net, "class_layers.relu") as hooked:
            cam = GradCAM(hooked, "class_layers.relu")(x, class_idx=torch.tensor([0, 1]))
    """

    def __init__(self, nn_module: nn.Module, target_layer_names: str | tuple[str, ...]) -> None:
        names = (target_layer_names,) if isinstance(target_layer_names, str) else tuple(target_layer_names)
        layers = dict(nn_module.named_modules())
        missing = [n for n in names if n not in layers]
        if missing:
            raise BundleInputError(f"target_layer {missing} not found in the classifier (e.g. 'class_layers.relu')")
        super().__init__(nn_module, names, register_forward=False, register_backward=False)
        self._layers = {n: layers[n] for n in names}
        self._handles: list[RemovableHandle] = []
        self._inplace: dict[str, bool] = {}

    def __enter__(self) -> ScopedModelWithHooks:
        for name, mod in self._layers.items():
            self._handles.append(mod.register_forward_hook(self.forward_hook(name)))
            if getattr(mod, "inplace", False):  # an in-place layer's output could be overwritten downstream
                self._inplace[name] = True
                mod.inplace = False  # type: ignore[assignment]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Remove the hooks, restore ``inplace`` flags and drop the cached tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, flag in self._inplace.items():
            self._layers[name].inplace = flag  # type: ignore[assignment]
        self._inplace.clear()
        self.activations.clear()
        self.gradients.clear()

    def class_score(self, logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Logit of sample ``i`` for its own class ``class_idx[i]``, shape ``(B,)``."""
        idx = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1, 1).expand(logits.shape[0], 1)
        return logits.gather(1, idx).squeeze(1)

    def __call__(  # type: ignore[override]
        self, x: torch.Tensor, class_idx: Any = None, retain_graph: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        if not self._handles:
            raise RuntimeError("ScopedModelWithHooks must be used inside a `with` block")
        logits = self.model(x.detach().requires_grad_(True), **kwargs)
        self.class_idx = logits.argmax(dim=1) if class_idx is None else class_idx
        self.score = self.class_score(logits, self.class_idx)
        acti = tuple(self.activations[n] for n in self.target_layers)
        grad = torch.autograd.grad(self.score.sum(), acti, retain_graph=retain_graph)
        self.gradients.update(zip(self.target_layers, grad))
        return logits, acti, grad


class GradCAMExplainer(Explainer):
    """Grad-CAM: ``ReLU(Σ_k α_k A^k)``, ``α_k`` = spatial mean of ``∂ f_c(x)_ŷ / ∂A^k``, upsampled to the input.

    Built on :class:`monai.visualize.GradCAM` with two changes, both needed for correct maps with MONAI 1.6:
    per-sample targets (see :class:`ScopedModelWithHooks`) and *identity* post-processing. MONAI's default
    ``default_normalizer`` rescales each map to ``(min, max) -> (1, 0)``, i.e. returns the inverted map; the map
    here is the raw ReLU'd Grad-CAM, linearly upsampled to the input size by MONAI's ``default_upsampler``.
    Hooks live only during a call.

    Args:
        classifier: ``f_c``; may be frozen.
        target_layer: the layer whose output is ``A``: ``"class_layers.relu"`` is the last dense-block feature map
            of MONAI's ``DenseNet121`` (after the final norm and ReLU).

    Examples::

        # 2D
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        cam = GradCAMExplainer(net)(torch.rand(4, 1, 128, 128), torch.tensor([0, 1, 1, 0]))  # (4, 1, 128, 128)
        # 3D
        net3d = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
        cam3d = GradCAMExplainer(net3d)(torch.rand(2, 1, 64, 64, 64))  # (2, 1, 64, 64, 64)
    """

    needs_grad = True

    def __init__(self, classifier: nn.Module, target_layer: str = "class_layers.relu") -> None:
        super().__init__(classifier)
        if target_layer not in dict(classifier.named_modules()):
            raise BundleInputError(f"target_layer {target_layer!r} not found in the classifier")
        self.target_layer = target_layer

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        with ScopedModelWithHooks(self.classifier, self.target_layer) as hooked:
            cam = GradCAM(hooked, self.target_layer, upsampler=default_upsampler, postprocessing=identity)
            return cam(x, class_idx=class_idx)
