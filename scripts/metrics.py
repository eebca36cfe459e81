"""Weak-localization metrics of the paper's evaluation protocol (method.md §5, Charachon et al., ICPR 2020).

An explanation map ``E`` (``(B, 1, *spatial)``, any real values) is compared with a binary ground-truth lesion mask
``M_GT`` of the same shape. Three families of scores, each as a pure function, a MONAI
:class:`~monai.metrics.CumulativeIterationMetric` and (for the first two) a thin Ignite handler, in the style of
``monai/metrics/meaniou.py`` + ``monai/handlers/mean_iou.py``:

- **IoU at binarization percentiles** (:func:`compute_percentile_iou`, :class:`PercentileIoUMetric`,
  :class:`PercentileIoU`): keep the pixels of ``E`` at or above the image's own p-th percentile.
- **AUC_Loc** ``= Σ_i P_i (R_i − R_{i−1})`` over the 101 per-image percentiles 100 → 0, total and partial
  (p ≥ 80) (:func:`compute_localization_auc`, :class:`LocalizationAUCMetric`, :class:`LocalizationAUC`).
- **Pooled average precision** over all pixels of all images with a lesion (:func:`compute_pooled_average_precision`,
  :class:`PooledAveragePrecisionMetric`, :class:`PooledAveragePrecision`), reusing
  :func:`monai.metrics.compute_average_precision`.

Conventions shared by every function here (decisions where method.md is silent):

- **Percentile = ``torch.quantile(..., interpolation="linear")`` per image**, over the flattened pixels. It is
  computed by one sort per image plus indexing (exactly numpy/torch "linear": ``pos = p·(N−1)/100``,
  ``t = v[⌊pos⌋] + frac·(v[⌈pos⌉] − v[⌊pos⌋])`` on the ascending sorted values ``v``), because ``torch.quantile``
  refuses inputs above 2^24 elements (a batch of a few 1024² X-rays) and would re-sort for every percentile.
- **Keep ``E >= t``** (ties kept). A constant map therefore keeps every pixel at every percentile and scores the
  random level ``|M|/N``, never a perfect score; ``p = 100`` keeps the maximum (and its ties), ``p = 0`` keeps all.
- **Masks are binarised with ``mask > 0.5``** (robust to masks that went through interpolation).
- **Empty mask → NaN** for that image; every average here is a NaN-mean over images, so such images are excluded
  (an all-NaN average stays NaN, unlike MONAI's ``do_metric_reduction`` which returns 0: a 0 would read as a score).
- Everything is batched over images (no Python loop over images) and stays on the input's device (no ``.cpu()``
  and no host synchronisation), except pooled AP, which hands the pooled pixels to MONAI's CPU implementation.
- Maps must be finite (not checked in the hot path, a check would synchronise the device).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric, compute_average_precision

from .errors import BundleInputError

__all__ = [
    "DEFAULT_PERCENTILES",
    "LOC_PERCENTILES",
    "percentile_thresholds",
    "compute_percentile_iou",
    "compute_precision_recall_curves",
    "compute_localization_auc",
    "compute_pooled_average_precision",
    "PercentileIoUMetric",
    "LocalizationAUCMetric",
    "PrecisionRecallCurveMetric",
    "PooledAveragePrecisionMetric",
    "PercentileIoU",
    "LocalizationAUC",
    "PooledAveragePrecision",
]

#: binarization percentiles of the paper's IoU table (method.md §5/§6).
DEFAULT_PERCENTILES: tuple[int, ...] = (80, 85, 90, 95, 98)
#: the AUC_Loc threshold sweep, decision of method.md §5: the 101 per-image percentiles 100, 99, ..., 0.
LOC_PERCENTILES: tuple[int, ...] = tuple(range(100, -1, -1))

#: default Ignite ``output_transform``: ``engine.state.output`` dicts (or decollated lists of dicts) with the keys
#: ``"explanation"`` and ``"mask"``.
_DEFAULT_OUTPUT_TRANSFORM: Callable = from_engine(["explanation", "mask"])


# ----------------------------------------------------------------------------------------------------- helpers
def _flatten(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(B, 1, *spatial)`` maps/masks; return ``(B, N)`` float scores and ``(B, N)`` bool labels."""
    if not isinstance(maps, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise BundleInputError(f"explanation maps and masks must be tensors, got {type(maps)} and {type(masks)}")
    if maps.ndim < 3 or maps.shape[1] != 1:
        raise BundleInputError(f"explanation maps must have shape (B, 1, *spatial), got {tuple(maps.shape)}")
    if masks.shape != maps.shape:
        raise BundleInputError(
            f"mask shape {tuple(masks.shape)} does not match explanation map shape {tuple(maps.shape)}"
        )
    b = maps.shape[0]
    scores = maps.reshape(b, -1)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    labels = masks.reshape(b, -1).to(device=scores.device) > 0.5
    return scores, labels


def _check_percentiles(percentiles: Sequence[float] | range, field: str = "percentiles") -> list[float]:
    pct = [float(p) for p in percentiles]
    if not pct or any(not (0.0 <= p <= 100.0) for p in pct):
        raise BundleInputError(f"'{field}' must be a non-empty list of numbers in [0, 100], got {list(percentiles)}")
    return pct


def _sorted_percentiles(sorted_scores: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """``(B, P)`` linear-interpolated percentiles of each row of the ascending ``(B, N)`` ``sorted_scores``."""
    n = sorted_scores.shape[1]
    # linear-interpolated percentile, exactly torch.quantile's definition; p*(N-1) is exact in float64 for the
    # usual integer p, so positions that should be integers are integers (no off-by-one pixel from rounding).
    # (computed on the host in float64, then copied: a few numbers, no device sync).
    pos = torch.tensor(percentiles, dtype=torch.float64) * (n - 1) / 100.0
    lo, hi = pos.floor(), pos.ceil()
    frac = (pos - lo).to(device=sorted_scores.device, dtype=sorted_scores.dtype)
    v_lo = sorted_scores[:, lo.long().to(sorted_scores.device)]
    v_hi = sorted_scores[:, hi.long().to(sorted_scores.device)]
    return torch.minimum(torch.maximum(v_lo + frac * (v_hi - v_lo), v_lo), v_hi).contiguous()


def percentile_thresholds(maps: torch.Tensor, percentiles: Sequence[float] | range) -> torch.Tensor:
    """``(B, P)``: each image's own p-th percentile of its map (the binarization thresholds of this module).

    Linear interpolation, as ``torch.quantile`` / ``numpy.percentile`` (see the module docstring), over the
    flattened pixels of each ``(B, ...)`` map; float32 or wider. Keeping ``E >= t`` keeps the top ``100 - p`` %.
    """
    pct = _check_percentiles(percentiles)
    scores = maps.reshape(maps.shape[0], -1)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    return _sorted_percentiles(torch.sort(scores, dim=1)[0], pct)


def _threshold_counts(
    scores: torch.Tensor, labels: torch.Tensor, percentiles: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and percentile: how many pixels are kept (``E >= t_p``) and how many of those are in the mask.

    One ascending sort per image; the mask travels with the sort, its cumulative sum gives the hits above any
    index, and ``searchsorted(side="left")`` gives the first index with value ``>= t_p`` (so ties are all kept).

    Returns:
        ``kept`` ``(B, P)``, ``hits`` ``(B, P)`` (int64) and ``n_mask`` ``(B,)`` (int64).
    """
    n = scores.shape[1]
    sorted_scores, order = torch.sort(scores, dim=1)
    csum = torch.gather(labels, 1, order).to(torch.int64).cumsum(dim=1)  # mask pixels among sorted[0..k]
    n_mask = csum[:, -1]
    thr = _sorted_percentiles(sorted_scores, percentiles)
    first = torch.searchsorted(sorted_scores, thr, side="left")  # (B, P): first sorted index with value >= thr
    kept = n - first
    below = torch.gather(csum, 1, (first - 1).clamp(min=0))
    hits = n_mask[:, None] - torch.where(first > 0, below, torch.zeros_like(below))
    return kept, hits, n_mask


# -------------------------------------------------------------------------------------------- pure functions
def compute_percentile_iou(
    maps: torch.Tensor, masks: torch.Tensor, percentiles: Sequence[float] | range = DEFAULT_PERCENTILES
) -> torch.Tensor:
    """IoU of the mask with the map binarised at each image's own p-th percentile (method.md §5, paper's IoU table).

    ``M_E = {E >= percentile_p(E)}`` per image (linear-interpolated percentile, ties kept, see module docstring),
    ``IoU = |M ∩ M_E| / |M ∪ M_E|``. ``percentiles=range(101)`` gives the full 0..100 curve.

    Args:
        maps: ``(B, 1, *spatial)`` explanation maps.
        masks: ``(B, 1, *spatial)`` binary ground-truth masks.
        percentiles: the P binarization percentiles, each in [0, 100].

    Returns:
        ``(B, P)`` float tensor on the maps' device; rows of images with an empty mask are NaN.
    """
    pct = _check_percentiles(percentiles)
    scores, labels = _flatten(maps, masks)
    kept, hits, n_mask = _threshold_counts(scores, labels, pct)
    iou = hits.to(scores.dtype) / (n_mask[:, None] + kept - hits).to(scores.dtype)  # union >= kept >= 1
    return torch.where(n_mask[:, None] > 0, iou, torch.full_like(iou, math.nan))


def compute_precision_recall_curves(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image pixel precision and recall of the thresholded map over the AUC_Loc sweep (method.md §5).

    Thresholds are the image's own percentiles :data:`LOC_PERCENTILES` = 100, 99, ..., 0 (column ``i`` is
    percentile ``100 − i``); pixels ``>= threshold`` are predicted positive.

    Returns:
        ``(precision, recall)``, each ``(B, 101)``; rows of images with an empty mask are NaN.
    """
    scores, labels = _flatten(maps, masks)
    kept, hits, n_mask = _threshold_counts(scores, labels, LOC_PERCENTILES)
    hits_f = hits.to(scores.dtype)
    empty = (n_mask == 0)[:, None]
    precision = torch.where(empty, torch.full_like(hits_f, math.nan), hits_f / kept.to(scores.dtype))
    recall = torch.where(empty, torch.full_like(hits_f, math.nan), hits_f / n_mask[:, None].clamp(min=1))
    return precision, recall


def compute_localization_auc(
    maps: torch.Tensor, masks: torch.Tensor, partial_from: float = 80
) -> tuple[torch.Tensor, torch.Tensor]:
    """AUC_Loc ``= Σ_i P_i (R_i − R_{i−1})``, ``R_{−1} = 0``, over the sweep of :func:`compute_precision_recall_curves`.

    "Total AUC" sums over the whole sweep (percentiles 100 → 0). "Partial AUC" (decision of method.md §5) is the
    same sum restricted to thresholds at or above the ``partial_from``-th percentile (100 → 80 by default, the top
    20 % of pixels, where a reader looks); it is not renormalised, so it is at most the recall reached at
    ``partial_from`` (the paper's partial values are below its total ones). Golden values: a perfect map scores
    1.0; a constant map keeps every pixel at once and scores the random level ``|M|/N`` (both sums).

    Returns:
        ``(total, partial)``, each ``(B,)``; NaN for images with an empty mask.
    """
    if not (0.0 <= float(partial_from) <= 100.0):
        raise BundleInputError(f"'partial_from' must be a percentile in [0, 100], got {partial_from}")
    precision, recall = compute_precision_recall_curves(maps, masks)
    d_recall = recall - torch.nn.functional.pad(recall[:, :-1], (1, 0))  # R_i - R_{i-1}, R_{-1} = 0
    terms = precision * d_recall
    n_partial = sum(1 for p in LOC_PERCENTILES if p >= partial_from)  # thresholds are descending: a prefix
    return terms.sum(dim=1), terms[:, :n_partial].sum(dim=1)


def _pooled_pixels(
    maps: torch.Tensor, masks: torch.Tensor, subsample: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image min-max normalised scores, labels and a lesion flag, optionally subsampled (see pooled AP)."""
    scores, labels = _flatten(maps, masks)
    valid = labels.any(dim=1)  # decided on the full mask, before any subsampling
    lo, hi = scores.amin(dim=1, keepdim=True), scores.amax(dim=1, keepdim=True)
    scores = (scores - lo) / (hi - lo).clamp(min=torch.finfo(scores.dtype).tiny)  # constant map -> all zeros
    n = scores.shape[1]
    if subsample is not None:
        if int(subsample) < 1:
            raise BundleInputError(f"'subsample' must be a positive number of pixels per image, got {subsample}")
        if int(subsample) < n:
            gen = torch.Generator().manual_seed(int(seed))
            idx = torch.randperm(n, generator=gen)[: int(subsample)].to(scores.device)
            scores, labels = scores[:, idx], labels[:, idx]
    return scores, labels, valid


def compute_pooled_average_precision(
    maps: torch.Tensor, masks: torch.Tensor, subsample: int | None = None, seed: int = 0
) -> float:
    """Pooled pixel average precision over all images with a non-empty mask (method.md §5, "pooled AP").

    Each map is **min-max normalised per image** to [0, 1] first (decision): explanation maps have an arbitrary
    per-image scale (a gradient's magnitude depends on the image), and raw pooling would rank whole images against
    each other instead of pixels within an image. A constant map normalises to all zeros. Images with an empty mask
    are dropped. The AP itself is :func:`monai.metrics.compute_average_precision` (sklearn-equivalent, ties grouped);
    it runs a Python loop over pixels on the CPU, so for many large images pass ``subsample``.

    Args:
        maps: ``(B, 1, *spatial)`` explanation maps.
        masks: ``(B, 1, *spatial)`` binary masks.
        subsample: if set, keep at most this many pixels per image, at positions drawn once by
            ``torch.randperm(N, generator=seed)`` (deterministic, the same positions for every image of a size);
            the lesion/no-lesion decision still uses the full mask.
        seed: seed of that draw.

    Returns:
        The AP as a float; NaN if no image has a lesion (or if every pooled pixel is a lesion pixel).
    """
    scores, labels, valid = _pooled_pixels(maps, masks, subsample, seed)
    return _pooled_ap(scores, labels, valid)


def _pooled_ap(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> float:
    if not bool(valid.any()):
        return math.nan
    return float(compute_average_precision(scores[valid].reshape(-1), labels[valid].reshape(-1).long()))


# ------------------------------------------------------------------------------------------ cumulative metrics
class _PerImageScoreMetric(CumulativeIterationMetric):
    """Buffers a ``(B, K)`` score per image and column; ``aggregate`` is a NaN-mean over images per column."""

    def __init__(self, reduction: str = "mean", get_not_nans: bool = False) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise BundleInputError(f"'reduction' must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def aggregate(self, reduction: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``"mean"``: ``(K,)`` NaN-mean over the buffered images (all-NaN column -> NaN); ``"none"``: ``(N, K)``.

        With ``get_not_nans`` returns ``(value, not_nans)`` like MONAI's metrics (the Ignite handler logs the first).
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor (did the metric see any batch?).")
        not_nans = (~torch.isnan(data)).sum(dim=0).float()
        red = reduction or self.reduction
        if red == "none":
            return (data, (~torch.isnan(data)).float()) if self.get_not_nans else data
        if red != "mean":
            raise BundleInputError(f"'reduction' must be 'mean' or 'none', got {red!r}")
        f = torch.nanmean(data.float(), dim=0)
        return (f, not_nans) if self.get_not_nans else f


class PercentileIoUMetric(_PerImageScoreMetric):
    """Cumulative IoU at binarization percentiles (method.md §5), see :func:`compute_percentile_iou`.

    ``__call__(y_pred=maps, y=masks)`` with batch-first ``(B, 1, *spatial)`` tensors or lists of channel-first
    ``(1, *spatial)`` tensors buffers a ``(B, P)`` IoU per image; ``aggregate()`` returns the ``(P,)`` mean over
    images per percentile (images with an empty mask excluded), the paper's table row. The Ignite handler
    :class:`PercentileIoU` uses one percentile, so its value is a plain float.

    Args:
        percentiles: binarization percentiles (default: the paper's 80, 85, 90, 95, 98).
        reduction: ``"mean"`` (``(P,)`` NaN-mean over images) or ``"none"`` (the ``(N, P)`` buffer).
        get_not_nans: whether ``aggregate`` also returns the count of non-NaN images per percentile.
    """

    def __init__(
        self,
        percentiles: Sequence[float] | range = DEFAULT_PERCENTILES,
        reduction: str = "mean",
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.percentiles = tuple(_check_percentiles(percentiles))

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_percentile_iou(y_pred, y, self.percentiles)


class LocalizationAUCMetric(_PerImageScoreMetric):
    """Cumulative AUC_Loc (method.md §5), see :func:`compute_localization_auc`.

    Args:
        partial_from: lowest percentile of the partial AUC (default 80).
        kind: ``"both"`` buffers ``(B, 2)`` = ``[total, partial]`` and ``aggregate()`` returns ``(2,)``;
            ``"total"`` or ``"partial"`` buffers ``(B, 1)`` (what the Ignite handler uses).
        reduction, get_not_nans: as in :class:`PercentileIoUMetric`.
    """

    def __init__(
        self, partial_from: float = 80, kind: str = "both", reduction: str = "mean", get_not_nans: bool = False
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if kind not in ("both", "total", "partial"):
            raise BundleInputError(f"'kind' must be 'total', 'partial' or 'both', got {kind!r}")
        if not (0.0 <= float(partial_from) <= 100.0):
            raise BundleInputError(f"'partial_from' must be a percentile in [0, 100], got {partial_from}")
        self.partial_from = partial_from
        self.kind = kind

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total, partial = compute_localization_auc(y_pred, y, self.partial_from)
        if self.kind == "total":
            return total[:, None]
        if self.kind == "partial":
            return partial[:, None]
        return torch.stack([total, partial], dim=1)


class PrecisionRecallCurveMetric(_PerImageScoreMetric):
    """Cumulative mean per-image precision/recall curves (method.md §5), see :func:`compute_precision_recall_curves`.

    Buffers ``(B, 2, 101)`` = ``[precision, recall]`` per image over the thresholds at percentiles 100 → 0;
    ``aggregate()`` returns the ``(2, 101)`` mean over the images with a lesion (an image with an empty mask has
    NaN rows and is left out). Under ``torchrun`` MONAI's buffers gather every rank's images, so every rank gets the
    curves of the whole test set.

    Args:
        reduction, get_not_nans: as in :class:`PercentileIoUMetric`.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.stack(compute_precision_recall_curves(y_pred, y), dim=1)


class PooledAveragePrecisionMetric(CumulativeIterationMetric):
    """Cumulative pooled pixel AP (method.md §5), see :func:`compute_pooled_average_precision`.

    Each batch is normalised per image and buffered as ``(B, k)`` scores, ``(B, k)`` labels and a ``(B,)`` lesion
    flag (``k = N``, or ``min(N, subsample)``); ``aggregate()`` pools the flagged images and returns a float.
    Without ``subsample`` all images must have the same number of pixels (MONAI stacks the buffers) and the buffer
    holds every pixel: pass ``subsample`` for large validation sets.
    """

    def __init__(self, subsample: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if subsample is not None and int(subsample) < 1:
            raise BundleInputError(f"'subsample' must be a positive number of pixels per image, got {subsample}")
        self.subsample = subsample
        self.seed = seed

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _pooled_pixels(y_pred, y, self.subsample, self.seed)

    def aggregate(self) -> float:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, (list, tuple)) or len(data) != 3:
            raise ValueError("nothing to aggregate (did the metric see any batch?).")
        scores, labels, valid = data
        return _pooled_ap(scores, labels, valid.bool())


# ---------------------------------------------------------------------------------------------- ignite handlers
class PercentileIoU(IgniteMetricHandler):
    """Ignite handler: mean IoU over images at one binarization percentile (method.md §5), like MONAI's MeanIoUHandler.

    Attach one per percentile of the paper's table (``iou_p80``, ``iou_p85``, ...). The value in
    ``engine.state.metrics`` is a float; with ``save_details`` the ``(N, 1)`` per-image IoUs (NaN = empty mask) go to
    ``engine.state.metric_details[name]``.

    Args:
        percentile: the binarization percentile in [0, 100].
        output_transform: extracts ``(maps, masks)`` from ``engine.state.output``; default
            ``from_engine(["explanation", "mask"])`` (a dict of batch-first tensors or a decollated list of dicts).
        save_details: whether to save the per-image scores.
    """

    def __init__(
        self,
        percentile: float = 90,
        output_transform: Callable = _DEFAULT_OUTPUT_TRANSFORM,
        save_details: bool = True,
    ) -> None:
        metric_fn = PercentileIoUMetric(percentiles=(percentile,), reduction="mean")
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class LocalizationAUC(IgniteMetricHandler):
    """Ignite handler: mean total or partial AUC_Loc over images (method.md §5).

    Args:
        kind: ``"total"`` (percentiles 100 → 0) or ``"partial"`` (100 → ``partial_from``).
        partial_from: lowest percentile of the partial AUC.
        output_transform, save_details: as in :class:`PercentileIoU`.
    """

    def __init__(
        self,
        kind: str = "total",
        partial_from: float = 80,
        output_transform: Callable = _DEFAULT_OUTPUT_TRANSFORM,
        save_details: bool = True,
    ) -> None:
        if kind not in ("total", "partial"):
            raise BundleInputError(f"'kind' must be 'total' or 'partial', got {kind!r}")
        metric_fn = LocalizationAUCMetric(partial_from=partial_from, kind=kind, reduction="mean")
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PooledAveragePrecision(IgniteMetricHandler):
    """Ignite handler: pooled pixel AP (method.md §5). ``save_details`` defaults to False (the buffer is pixels)."""

    def __init__(
        self,
        subsample: int | None = None,
        seed: int = 0,
        output_transform: Callable = _DEFAULT_OUTPUT_TRANSFORM,
        save_details: bool = False,
    ) -> None:
        metric_fn = PooledAveragePrecisionMetric(subsample=subsample, seed=seed)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
