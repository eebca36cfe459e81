"""Load the classifier ``f_c`` to explain: ours (a state dict) or a user's own (TorchScript, or network + weights).

The explainer is model-agnostic (method.md §1): any module mapping ``(B, C, *spatial)`` to ``(B, K)`` logits works.
The number of classes is read from the classifier's output, and a TorchScript file exported by
``monai.bundle ckpt_export`` also gives the input size from its embedded ``metadata.json``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import load_net_with_metadata
from torch import nn

from .checkpoint import freeze, load_network
from .errors import TRAIN_HINTS, BundleInputError

__all__ = ["load_classifier", "classifier_num_classes", "classifier_input_size", "TRAIN_CLASSIFIER_HINT"]

TRAIN_CLASSIFIER_HINT = TRAIN_HINTS["classifier checkpoint"] + " (or pass your own with --classifier_path)."


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding ``constants.pkl``/``code/``; plain ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_classifier(
    path: str | os.PathLike,
    network_def: nn.Module | None = None,
    device: str | torch.device = "cpu",
    key: str | None = "network",
) -> nn.Module:
    """Return the frozen classifier (eval mode, no parameter gradients) on ``device``.

    Args:
        path: a TorchScript file, or a state dict (optionally under ``key``) for ``network_def``.
        network_def: the module to load a state dict into; unused for TorchScript.
        device: where the classifier runs.
        key: sub-key of the checkpoint dict holding the state dict (our checkpoints use ``"network"``).
    """
    path = Path(path)
    if not path.is_file():
        raise BundleInputError(f"classifier checkpoint not found: {path}. {TRAIN_CLASSIFIER_HINT}")
    if _is_torchscript(path):
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise BundleInputError(f"cannot load TorchScript classifier {path}: {e}") from e
    else:
        if network_def is None:
            raise BundleInputError(f"{path} is a state dict: set 'classifier_def' to the network it belongs to")
        net = load_network(network_def, path, key=key, what="classifier checkpoint", hint=TRAIN_CLASSIFIER_HINT)
    return freeze(net.to(device))


@torch.no_grad()
def classifier_num_classes(classifier: nn.Module, in_channels: int, image_size: Sequence[int]) -> int:
    """Number of logits ``K`` of ``classifier`` on a zero image of the given shape."""
    device = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    logits = classifier(torch.zeros(1, in_channels, *image_size, device=device))
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise BundleInputError(f"the classifier must return (B, K>=2) logits, got shape {tuple(logits.shape)}")
    return int(logits.shape[1])


def classifier_input_size(path: str | os.PathLike, default: Sequence[int]) -> list[int]:
    """Spatial input size from a MONAI TorchScript's embedded metadata, else ``default``."""
    path = Path(path)
    if path.is_file() and _is_torchscript(path):
        try:
            _, meta, _ = load_net_with_metadata(str(path), map_location="cpu")
            shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
            if all(isinstance(s, int) for s in shape):
                return [int(s) for s in shape]
        except Exception:  # no MONAI metadata in this TorchScript: keep the configured size
            pass
    return [int(s) for s in default]
