"""Explanation levels as contiguous regions a reviewer can keep or erase, rather than scattered pixels.

:func:`region_levels` cuts one map into levels the way the review app returns them (docs/review.md, "Regions"):

1. the map is smoothed with a Gaussian of ``sigma`` pixels (at the map's resolution; 0 = not smoothed);
2. levels are cut on the smoothed map at the image's own percentiles, as the benchmark cuts
   (:func:`scripts.metrics.percentile_thresholds`: linear interpolation, keep ``E >= t``): label ``K`` for the top
   percentile, down to ``1``;
3. connected regions (8-connectivity) of each level set ``{label >= k}`` smaller than ``min_region`` (a fraction of
   the image's pixels; 0 = keep all) are dropped, lowest level first, so a kept region of level ``k`` always lies in
   a kept region of level ``k - 1``.

With ``sigma = 0`` and ``min_region = 0`` it is exactly the benchmark's per-pixel cut. The number of regions per
level is returned with the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["region_levels", "count_regions"]

_EIGHT = np.ones((3, 3), dtype=bool)


def count_regions(mask: np.ndarray) -> int:
    """Connected regions (8-connectivity) of a 2D boolean mask."""
    from scipy import ndimage

    return int(ndimage.label(mask, structure=_EIGHT)[1])


def region_levels(explanation: np.ndarray, percentiles: Sequence[float], sigma: float = 0.0,
                  min_region: float = 0.0) -> tuple[np.ndarray, list[float], dict[int, int]]:
    """``(levels uint8, thresholds high to low, {level: regions})`` of a 2D map (module docstring)."""
    import torch
    from scipy import ndimage

    from .metrics import percentile_thresholds

    e = np.asarray(explanation, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"expected a 2D map, got shape {list(e.shape)}")
    if sigma < 0 or min_region < 0 or min_region >= 1:
        raise ValueError(f"sigma must be >= 0 and min_region in [0, 1), got {sigma}, {min_region}")
    smooth = ndimage.gaussian_filter(e, sigma=sigma, mode="nearest") if sigma > 0 else e
    thresholds = percentile_thresholds(torch.from_numpy(smooth)[None], list(percentiles))[0].tolist()
    min_pixels = int(np.ceil(min_region * e.size))
    levels = np.zeros(e.shape, dtype=np.uint8)
    kept = np.ones(e.shape, dtype=bool)
    regions: dict[int, int] = {}
    for k, t in enumerate(sorted(thresholds), start=1):  # lowest threshold = level 1
        mask = (smooth >= t) & kept
        labels, n = ndimage.label(mask, structure=_EIGHT)
        if min_pixels > 1 and n:
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            big = sizes >= min_pixels
            big[0] = False
            mask = big[labels]
            n = int(big.sum())
        regions[k] = int(n)
        levels += mask.astype(np.uint8)
        kept = mask
    return levels, thresholds, regions
