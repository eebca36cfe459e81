"""Config values checked before a stage builds anything: one :class:`BundleInputError` naming the field.

A value given on the command line (``--max_epochs abc``, ``--image_size [100,100]``) would otherwise fail deep inside
PyTorch or Ignite, or, for an image size the generators cannot take, only at the explainer stage after the classifier
has trained. Each stage config calls :func:`check_config` first in its ``initialize`` list, and
``scripts.pipeline`` calls it for the whole chain before the first stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from ..errors import BundleInputError

__all__ = ["check_config", "POSITIVE_INTS", "NON_NEGATIVE_INTS", "POSITIVE_NUMBERS", "NON_NEGATIVE_NUMBERS"]

#: config keys that must be whole numbers >= 1.
POSITIVE_INTS = ("max_epochs", "batch_size", "val_interval", "num_classes", "in_channels", "lr_decay_epochs",
                 "bbmp_iterations", "spatial_dims")
#: whole numbers >= 0.
NON_NEGATIVE_INTS = ("num_workers", "tta_augmentations", "seed")
#: numbers > 0.
POSITIVE_NUMBERS = ("learning_rate",)
#: numbers >= 0.
NON_NEGATIVE_NUMBERS = ("timing_seconds",)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_number(name: str, value: Any) -> None:
    where = f"config value {name} = {value!r} (--{name})"
    if name in POSITIVE_INTS and not (_is_int(value) and value >= 1):
        raise BundleInputError(f"{where} must be a whole number >= 1")
    if name in NON_NEGATIVE_INTS and not (_is_int(value) and value >= 0):
        raise BundleInputError(f"{where} must be a whole number >= 0")
    if name in POSITIVE_NUMBERS and not (_is_number(value) and value > 0):
        raise BundleInputError(f"{where} must be a number > 0")
    if not _is_number(value):
        raise BundleInputError(f"{where} must be a number")
    if name in NON_NEGATIVE_NUMBERS and value < 0:
        raise BundleInputError(f"{where} must be a number >= 0")


def check_config(
    image_size: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    spatial_dims: int | None = None,
    size_name: str = "image_size",
    space_to_depth: int | None = None,
    **numbers: Any,
) -> bool:
    """Check config values up front; raise :class:`BundleInputError` naming the first bad field.

    Args:
        image_size: the network input size: one whole number >= 1 per spatial dimension.
        strides: the generators' U-Net strides; every entry of ``image_size`` must be a multiple of their product
            (the generators down-sample by it and add the skip connections back at each level).
        spatial_dims: the configured spatial rank; ``image_size`` must have that many entries.
        size_name: the config key ``image_size`` came from, for the message.
        space_to_depth: the generators' space-to-depth factor (``generator_space_to_depth``): a whole number >= 1
            that multiplies the total stride.
        numbers: other values by their config key; the keys in :data:`POSITIVE_INTS`, :data:`NON_NEGATIVE_INTS`,
            :data:`POSITIVE_NUMBERS` and :data:`NON_NEGATIVE_NUMBERS` are checked as such, any other must be a
            finite number.

    Returns:
        True (so that a config can call it as an expression).
    """
    for name, value in numbers.items():
        _check_number(name, value)
    if spatial_dims is not None:
        _check_number("spatial_dims", spatial_dims)
    if image_size is None:
        return True
    size = list(image_size) if isinstance(image_size, (list, tuple)) else None
    if not size or not all(_is_int(n) and n >= 1 for n in size):
        raise BundleInputError(
            f"config value {size_name} = {image_size!r} (--{size_name}) must be a list of whole numbers >= 1, "
            f"e.g. [128,128]"
        )
    if spatial_dims is not None and len(size) != spatial_dims:
        raise BundleInputError(
            f"config value {size_name} = {size} has {len(size)} entries; the bundle is configured for "
            f"{spatial_dims}D images (spatial_dims {spatial_dims})"
        )
    if space_to_depth is not None and not (_is_int(space_to_depth) and space_to_depth >= 1):
        raise BundleInputError(
            f"config value generator_space_to_depth = {space_to_depth!r} (--generator_space_to_depth) must be a whole "
            f"number >= 1"
        )
    if strides is not None:
        if not isinstance(strides, (list, tuple)) or not all(_is_int(s) and s >= 1 for s in strides):
            raise BundleInputError(f"config value generator_strides = {strides!r} must be a list of whole numbers >= 1")
        factor = space_to_depth or 1
        total = math.prod(strides) * factor
        if any(n % total for n in size):
            lower = [max(total, n // total * total) for n in size]
            upper = [-(-n // total) * total for n in size]
            stem = f" times generator_space_to_depth {factor}" if factor > 1 else ""
            raise BundleInputError(
                f"config value {size_name} = {size} (--{size_name}): every entry must be a multiple of {total}, the "
                f"generators' total stride (generator_strides {list(strides)}{stem}); e.g. {lower} or {upper}"
            )
    return True
