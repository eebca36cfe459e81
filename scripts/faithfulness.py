"""How well an explanation map agrees with the classifier (faithfulness) and with a lesion mask (localisation).

These complement the percentile IoU / AUC_Loc of :mod:`scripts.metrics` (plausibility only). Each score is a pure
function, a MONAI :class:`~monai.metrics.CumulativeIterationMetric` and a thin Ignite handler, in the style of
``monai/metrics/meaniou.py`` + ``monai/handlers/mean_iou.py``; Quantus 0.6.0 (Hedström et al., JMLR 2023) is the
reference implementation the tests compare with.

- **ROAD** (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022):
  remove the ``p`` % most (MoRF) or least (LeRF) relevant pixels, fill them by *noisy linear imputation* so that
  the classifier does not react to the removal pattern itself, and record the classifier's probability of the
  explained class (:func:`compute_road`, :class:`ROADMetric`, :class:`ROAD`). Areas under both curves and
  ``(LeRF − MoRF) / 2`` (:func:`road_areas`; higher = more faithful).
- **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 / IJCV 2018): is the
  map's maximum inside the mask (:func:`compute_pointing_game`, :class:`PointingGameMetric`, :class:`PointingGame`).
- **Relevance mass accuracy** and **relevance rank accuracy** (Arras et al., "CLEVR-XAI", Information Fusion 2022):
  the share of the map's mass inside the mask, and the share of the top-``|M|`` pixels inside it
  (:func:`compute_relevance_mass`, :func:`compute_relevance_rank` and their metrics/handlers).

Why ROAD is written here and not called from Quantus: ``quantus.ROAD`` solves one scipy sparse system per image and
per fraction on the CPU in numpy (plus a device round trip per fraction), scores only the MoRF order and only the
*accuracy* (argmax == label), not the probability; its localisation metrics are fine but numpy-only. Here the
imputation is the same linear system (same 8-neighbour weights 1/6 and 1/12, same border handling), solved
matrix-free by Jacobi-preconditioned conjugate gradients on the whole batch at once, on the input's device.
Measured on a shared 2-core CPU (16 images, percentages 10…90, the bundle's tiny DenseNet121; Quantus: MoRF
only, here MoRF and LeRF): 64×64 random maps 1.6 s vs 0.5 s, 128×128 random maps 7.8 s vs 1.6 s; 64×64 blob maps
(large removed regions, the slow case for CG) 2.0 s vs 1.2–1.4 s, 128×128 blob maps 10 s vs 9–26 s. Per curve on
the CPU the two are comparable; on a GPU the batched solve avoids the per-image host loop.

Conventions (decisions where the papers are silent), shared with :mod:`scripts.metrics`:

- Maps ``(B, 1, *spatial)``, masks the same shape, binarised with ``mask > 0.5``. The localisation scores are
  dimension-agnostic (2D or 3D); ROAD's imputation is **2D only** (the paper's weights are defined on the
  8-neighbourhood; a 3D map raises :class:`~scripts.errors.BundleInputError`).
- **Empty mask → NaN** for that image, and every ``aggregate`` is a NaN-mean over images, so such images are
  excluded (an all-NaN aggregate stays NaN). (Quantus also returns NaN, except its pointing game, which stores the
  NaN in a boolean array and so scores an empty mask as a hit.)
- **Ties.** Pointing game: a hit if *any* of the maxima is inside the mask (Quantus' rule); ``ties="share"`` gives
  the share of the maxima inside it instead (the expected hit under a random choice among them). Rank accuracy: the
  pixels tied at the ``|M|``-th largest value count fractionally (the expected hits under a random tie-break;
  Quantus takes numpy's unspecified ``argsort`` order). ROAD: ties in the removal order are broken by one seeded
  random permutation of the pixels per image, the same for MoRF and LeRF.
- **Constant maps**: pointing game 1 (every pixel is a maximum: the reason to read it beside mass and rank), mass
  and rank accuracy ``|M| / N`` (the random level), ROAD MoRF = LeRF (the same removal order), so the gap is 0.
  A map with zero total mass (all zeros) is scored as a constant map by mass accuracy (Quantus: NaN).
- Maps are used as given (no absolute value, no normalisation: every score here is invariant to a positive scale);
  maps are expected non-negative, a negative value counts as negative mass (as Quantus with ``abs=False``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import IgniteMetricHandler, from_engine

from .errors import BundleInputError
from .metrics import _flatten, _PerImageScoreMetric

__all__ = [
    "ROAD_PERCENTAGES",
    "noisy_linear_imputation",
    "compute_road",
    "road_areas",
    "compute_pointing_game",
    "compute_relevance_mass",
    "compute_relevance_rank",
    "ROADMetric",
    "PointingGameMetric",
    "RelevanceMassAccuracyMetric",
    "RelevanceRankAccuracyMetric",
    "ROAD",
    "PointingGame",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
]

#: the removal fractions of the ROAD curves, in percent of the pixels.
ROAD_PERCENTAGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)

#: ROAD's imputation weights (Rong et al. 2022; Quantus ``noisy_linear_imputation``): 1/6 for the 4 direct and
#: 1/12 for the 4 diagonal neighbours.
_NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))

_LOCALISATION_TRANSFORM: Callable = from_engine(["explanation", "mask"])
_ROAD_TRANSFORM: Callable = from_engine(["explanation", "image", "y_hat"])


# ----------------------------------------------------------------------------------------------- localisation
def compute_pointing_game(maps: torch.Tensor, masks: torch.Tensor, ties: str = "any") -> torch.Tensor:
    """Pointing game (Zhang et al. 2016): 1 if the map's maximum lies inside the mask, else 0.

    Args:
        maps: ``(B, 1, *spatial)`` explanation maps.
        masks: ``(B, 1, *spatial)`` binary masks.
        ties: ``"any"`` (default, Quantus 0.6.0's rule): a hit if any pixel at the maximum is in the mask;
            ``"share"``: the share of the pixels at the maximum that are in the mask.

    Returns:
        ``(B,)`` float; NaN for an empty mask.
    """
    if ties not in ("any", "share"):
        raise BundleInputError(f"'ties' must be 'any' or 'share', got {ties!r}")
    scores, labels = _flatten(maps, masks)
    at_max = scores == scores.amax(dim=1, keepdim=True)
    inside = (at_max & labels).sum(dim=1).to(scores.dtype)
    hit = (inside > 0).to(scores.dtype) if ties == "any" else inside / at_max.sum(dim=1).to(scores.dtype)
    return torch.where(labels.any(dim=1), hit, torch.full_like(hit, math.nan))


def compute_relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022): ``Σ_{p ∈ M} E_p / Σ_p E_p``.

    A map with zero total mass (all zeros) scores ``|M| / N``, like any constant map (decision; Quantus: NaN).

    Returns:
        ``(B,)`` float; NaN for an empty mask.
    """
    scores, labels = _flatten(maps, masks)
    total = scores.sum(dim=1)
    within = torch.where(labels, scores, torch.zeros_like(scores)).sum(dim=1)
    uniform = labels.sum(dim=1).to(scores.dtype) / scores.shape[1]
    mass = torch.where(total != 0, within / torch.where(total != 0, total, torch.ones_like(total)), uniform)
    return torch.where(labels.any(dim=1), mass, torch.full_like(mass, math.nan))


def compute_relevance_rank(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022): share of the ``K = |M|`` highest-ranked pixels inside the mask.

    With ``t`` the ``K``-th largest value, the pixels above ``t`` count fully and those equal to ``t`` count by the
    share of them needed to reach ``K`` (expected hits under a random tie-break): a constant map scores ``K / N``.

    Returns:
        ``(B,)`` float; NaN for an empty mask.
    """
    scores, labels = _flatten(maps, masks)
    k = labels.sum(dim=1)  # (B,)
    desc = torch.sort(scores, dim=1, descending=True).values
    t = torch.gather(desc, 1, (k - 1).clamp(min=0)[:, None])  # (B, 1)
    above, tied = scores > t, scores == t
    n_above = above.sum(dim=1)
    hits_above = (above & labels).sum(dim=1).to(scores.dtype)
    hits_tied = (tied & labels).sum(dim=1).to(scores.dtype)
    share_tied = (k - n_above).to(scores.dtype) / tied.sum(dim=1).clamp(min=1).to(scores.dtype)
    rank = (hits_above + share_tied * hits_tied) / k.clamp(min=1).to(scores.dtype)
    return torch.where(k > 0, rank, torch.full_like(rank, math.nan))


# ------------------------------------------------------------------------------------------------------- ROAD
def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_j x_{p+j}`` over the 8-neighbourhood of every pixel of ``(N, C, H, W)``, zero outside the image."""
    c = x.shape[1]
    kernel = torch.tensor(_NEIGHBOUR_WEIGHTS, dtype=x.dtype, device=x.device).expand(c, 1, 3, 3)
    return F.conv2d(x, kernel, padding=1, groups=c)


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-5,
    max_iter: int | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022), batched: each removed pixel becomes the weighted mean of
    its in-image 8-neighbours (weights 1/6 direct, 1/12 diagonal; removed neighbours are unknowns too), plus
    ``noise · N(0, 1)``.

    The linear system ``S_p x_p − Σ_{j removed} w_j x_{p+j} = Σ_{j kept} w_j a_{p+j}`` (``S_p`` = the weight of
    ``p``'s in-image neighbours) is the one Quantus assembles and solves with ``scipy.sparse.linalg.spsolve``; it is
    symmetric positive definite while at least one pixel is kept, and solved here by Jacobi-preconditioned conjugate
    gradients, matrix-free (one 3×3 convolution per iteration), for all images at once, on their device, in at least
    float32, until every image's relative residual is below ``tol`` (checked every 16 iterations).

    Args:
        images: ``(B, C, H, W)`` images.
        removed: ``(B, 1, H, W)`` or ``(B, C, H, W)`` boolean: the pixels to impute (shared by the channels if 1).
        noise: standard deviation of the added Gaussian noise (Quantus' default 0.01, images in [0, 1]).
        generator: random generator on the images' device for the noise (``None``: the global one).
        tol: relative residual at which CG stops.
        max_iter: CG iteration cap (default ``20 · max(H, W) + 100``); a warning is issued if it is reached.

    Returns:
        ``(B, C, H, W)``: ``images`` where not removed, the imputation where removed; the images' dtype.
    """
    if images.ndim != 4:
        raise BundleInputError(
            f"ROAD's noisy linear imputation is defined for 2D images (B, C, H, W), got shape {tuple(images.shape)}"
        )
    dtype = torch.promote_types(images.dtype, torch.float32)
    a = images.to(dtype)
    r = removed.to(device=a.device, dtype=torch.bool).expand_as(a)
    rf = r.to(dtype)
    s = _neighbour_sum(torch.ones_like(a[:1, :1])).expand_as(a)  # weight of in-image neighbours, > 0
    b = rf * _neighbour_sum((1 - rf) * a)

    def op(v: torch.Tensor) -> torch.Tensor:
        return rf * (s * v - _neighbour_sum(rf * v))

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum(dim=(2, 3), keepdim=True)  # one system per image and channel

    x = torch.zeros_like(a)
    res = b.clone()
    z = res / s
    p = z.clone()
    rz = dot(res, z)
    b_norm = dot(b, b).sqrt()
    tiny = torch.finfo(dtype).tiny
    limit = int(max_iter) if max_iter is not None else 20 * max(a.shape[-2:]) + 100
    converged = not bool(r.any())
    it = 0
    while not converged and it < limit:
        ap = op(p)
        alpha = rz / dot(p, ap).clamp(min=tiny)
        x = x + alpha * p
        res = res - alpha * ap
        it += 1
        if it % 16 == 0 or it == limit:
            converged = bool((dot(res, res).sqrt() <= tol * b_norm.clamp(min=tiny)).all())
            if converged:
                break
        z = res / s
        rz_new = dot(res, z)
        p = z + rz_new / rz.clamp(min=tiny) * p
        rz = rz_new
    if not converged:
        warnings.warn(f"ROAD imputation: conjugate gradients did not reach tol={tol} in {limit} iterations")
    if noise:
        x = x + noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype)
    return torch.where(r, x, a).to(images.dtype)


def _removal_ranks(maps: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, each pixel's position in the MoRF (descending) and LeRF (ascending) order, ``(B, N)`` each.

    Ties are broken by one random permutation per image, the same for both orders.
    """
    b, n = maps.shape
    perm = torch.argsort(torch.rand((b, n), generator=generator, device=maps.device), dim=1)
    shuffled = torch.gather(maps, 1, perm)
    ranks = []
    for descending in (True, False):
        order = torch.gather(perm, 1, torch.sort(shuffled, dim=1, descending=descending, stable=True).indices)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=maps.device).expand(b, n))
        ranks.append(rank)
    return ranks[0], ranks[1]


def _check_percentages(percentages: Sequence[float]) -> tuple[float, ...]:
    pct = tuple(float(p) for p in percentages)
    if not pct or any(not (0.0 <= p < 100.0) for p in pct):
        raise BundleInputError(f"ROAD 'percentages' must be a non-empty list of numbers in [0, 100), got {percentages}")
    return pct


def compute_road(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    generator: torch.Generator | None = None,
    score: str = "probability",
    batch_size: int | None = None,
    tol: float = 1e-5,
    max_iter: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ROAD MoRF and LeRF curves (Rong et al., ICML 2022) on the classifier's probability of the explained class.

    For each percentage ``p`` the ``⌊N·p/100⌋`` most (MoRF) / least (LeRF) relevant pixels of each image (``N`` =
    H·W, the count Quantus uses) are replaced by :func:`noisy_linear_imputation` and the classifier is run on the
    result; an image's MoRF and LeRF copies get the same noise field, so that they differ only by the removal order
    (a constant map gives MoRF = LeRF exactly). A faithful map makes MoRF fall fast and LeRF stay high. One Python
    loop over the percentages, none over images; the classifier is called under ``torch.no_grad`` as given (put it
    in eval mode; an autocast context of the caller applies).

    Args:
        classifier: ``(B, C, H, W) -> (B, K)`` logits; probabilities are ``softmax(logits)[target]``.
        images: ``(B, C, H, W)`` the explained images.
        maps: ``(B, 1, H, W)`` explanation maps.
        targets: ``(B,)`` the explained class of each image.
        percentages: removal fractions in percent (default 10, 20, ..., 90).
        noise: imputation noise standard deviation (0 for the noiseless imputation).
        seed: seeds the tie-break permutation and the noise when ``generator`` is None.
        generator: a generator on the images' device (advanced by the call), instead of ``seed``.
        score: ``"probability"`` (default) or ``"accuracy"`` (1 if the argmax is still the target: Quantus' ROAD).
        batch_size: most images per classifier call (default: all ``2B`` of a percentage at once).
        tol, max_iter: conjugate-gradient settings of the imputation.

    Returns:
        ``(morf, lerf)``, each ``(B, P)`` on the images' device.
    """
    if score not in ("probability", "accuracy"):
        raise BundleInputError(f"ROAD 'score' must be 'probability' or 'accuracy', got {score!r}")
    pct = _check_percentages(percentages)
    if images.ndim != 4 or maps.ndim != 4:
        raise BundleInputError(
            f"ROAD is implemented for 2D images only: got images {tuple(images.shape)} and maps {tuple(maps.shape)}, "
            "expected (B, C, H, W) and (B, 1, H, W)"
        )
    b, _, h, w = images.shape
    if maps.shape != (b, 1, h, w):
        raise BundleInputError(f"ROAD maps must have shape {(b, 1, h, w)} to match the images, got {tuple(maps.shape)}")
    targets = torch.as_tensor(targets, device=images.device).reshape(-1).long()
    if targets.shape[0] != b:
        raise BundleInputError(f"ROAD targets must have shape ({b},), got {tuple(targets.shape)}")
    if generator is None:
        generator = torch.Generator(device=images.device).manual_seed(int(seed))
    n = h * w
    flat = maps.reshape(b, n).to(device=images.device)
    rank_morf, rank_lerf = _removal_ranks(flat.to(torch.promote_types(flat.dtype, torch.float32)), generator)
    ranks = torch.cat([rank_morf, rank_lerf]).reshape(2 * b, 1, h, w)
    both = torch.cat([images, images])
    tgt = torch.cat([targets, targets])
    chunk = int(batch_size) if batch_size else 2 * b
    curves = []
    with torch.no_grad():
        for p in pct:
            k = int(n * p / 100)  # Quantus: int(a_size * p / 100)
            removed = ranks < k
            x = noisy_linear_imputation(both, removed, noise=0.0, tol=tol, max_iter=max_iter)
            if noise:  # one noise field per image, shared by its MoRF and LeRF copies (common random numbers)
                eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=x.dtype)
                x = torch.where(removed, x + noise * torch.cat([eps, eps]), x)
            logits = torch.cat([classifier(x[i : i + chunk]) for i in range(0, 2 * b, chunk)]).float()
            if score == "probability":
                curves.append(torch.softmax(logits, dim=1).gather(1, tgt[:, None]).squeeze(1))
            else:
                curves.append((logits.argmax(dim=1) == tgt).float())
    out = torch.stack(curves, dim=1)  # (2B, P)
    return out[:b], out[b:]


def road_areas(
    morf: torch.Tensor, lerf: torch.Tensor, percentages: Sequence[float] = ROAD_PERCENTAGES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Areas under the ROAD curves and the faithfulness gap ``(AUC_LeRF − AUC_MoRF) / 2``.

    Each area is the trapezoidal integral over the removal fraction, divided by the fraction's span (``0.1 … 0.9``
    by default), i.e. the curve's mean level in [0, 1]; one percentage: the value itself. The gap is in
    [−0.5, 0.5]; higher = more faithful; 0 for a constant map.

    Returns:
        ``(auc_morf, auc_lerf, gap)``, each ``(B,)``.
    """
    pct = _check_percentages(percentages)
    if morf.shape != lerf.shape or morf.shape[-1] != len(pct):
        raise BundleInputError(
            f"ROAD curves {tuple(morf.shape)} / {tuple(lerf.shape)} do not match {len(pct)} percentages"
        )

    def area(curve: torch.Tensor) -> torch.Tensor:
        if len(pct) == 1:
            return curve[:, 0]
        xs = torch.tensor(pct, dtype=curve.dtype, device=curve.device) / 100.0
        return torch.trapezoid(curve, xs, dim=1) / (xs[-1] - xs[0])

    auc_morf, auc_lerf = area(morf), area(lerf)
    return auc_morf, auc_lerf, (auc_lerf - auc_morf) / 2


# ------------------------------------------------------------------------------------------ cumulative metrics
class PointingGameMetric(_PerImageScoreMetric):
    """Cumulative pointing game, see :func:`compute_pointing_game`: buffers ``(B, 1)``; ``aggregate()`` → ``(1,)``
    NaN-mean over images (empty masks excluded). ``__call__(y_pred=maps, y=masks)``."""

    def __init__(self, ties: str = "any", reduction: str = "mean", get_not_nans: bool = False) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if ties not in ("any", "share"):
            raise BundleInputError(f"'ties' must be 'any' or 'share', got {ties!r}")
        self.ties = ties

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_pointing_game(y_pred, y, self.ties)[:, None]


class RelevanceMassAccuracyMetric(_PerImageScoreMetric):
    """Cumulative relevance mass accuracy, see :func:`compute_relevance_mass` (buffer and aggregate as
    :class:`PointingGameMetric`)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_relevance_mass(y_pred, y)[:, None]


class RelevanceRankAccuracyMetric(_PerImageScoreMetric):
    """Cumulative relevance rank accuracy, see :func:`compute_relevance_rank` (buffer and aggregate as
    :class:`PointingGameMetric`)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_relevance_rank(y_pred, y)[:, None]


class ROADMetric(_PerImageScoreMetric):
    """Cumulative ROAD, see :func:`compute_road` and :func:`road_areas`.

    ``__call__(maps, images, targets=targets)`` (batch-first tensors, or lists of channel-first maps/images and
    a list or tensor of targets) buffers one row per image: the MoRF curve (P values), the LeRF curve (P values),
    ``auc_morf``, ``auc_lerf``, ``gap`` (column names in :attr:`columns`). ``aggregate()`` is the NaN-mean over
    images of the column(s) chosen by ``kind``: ``"all"`` → ``(2P + 3,)``, ``"gap"`` / ``"auc_morf"`` /
    ``"auc_lerf"`` → ``(1,)``. The generator is seeded with ``seed`` on the first batch after each ``reset()``, so
    one evaluation run is reproducible.

    Args:
        classifier: the explained classifier (eval mode), ``(B, C, H, W) -> (B, K)`` logits.
        percentages, noise, score, batch_size, tol, max_iter: as in :func:`compute_road`.
        seed: seed of the tie-break permutations and the imputation noise.
        kind: the aggregated column(s), see above.
        reduction, get_not_nans: as in :class:`scripts.metrics.PercentileIoUMetric`.
    """

    KINDS = ("all", "gap", "auc_morf", "auc_lerf")

    def __init__(
        self,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        percentages: Sequence[float] = ROAD_PERCENTAGES,
        noise: float = 0.01,
        seed: int = 0,
        score: str = "probability",
        kind: str = "gap",
        batch_size: int | None = None,
        tol: float = 1e-5,
        max_iter: int | None = None,
        reduction: str = "mean",
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        if kind not in self.KINDS:
            raise BundleInputError(f"ROAD 'kind' must be one of {self.KINDS}, got {kind!r}")
        if score not in ("probability", "accuracy"):
            raise BundleInputError(f"ROAD 'score' must be 'probability' or 'accuracy', got {score!r}")
        self.classifier = classifier
        self.percentages = _check_percentages(percentages)
        self.noise, self.seed, self.score, self.kind = noise, int(seed), score, kind
        self.batch_size, self.tol, self.max_iter = batch_size, tol, max_iter
        p = len(self.percentages)
        self.columns = (
            tuple(f"morf_{q:g}" for q in self.percentages)
            + tuple(f"lerf_{q:g}" for q in self.percentages)
            + ("auc_morf", "auc_lerf", "gap")
        )
        self._column = {"all": slice(None), "gap": slice(2 * p + 2, None), "auc_lerf": slice(2 * p + 1, 2 * p + 2),
                        "auc_morf": slice(2 * p, 2 * p + 1)}[kind]
        self._generator: torch.Generator | None = None

    def reset(self) -> None:
        super().reset()
        self._generator = None

    def __call__(self, y_pred, y=None, targets=None):  # type: ignore[override]
        if isinstance(y_pred, (list, tuple)):
            y_pred = torch.stack(list(y_pred))
        if isinstance(y, (list, tuple)):
            y = torch.stack(list(y))
        if isinstance(targets, (list, tuple)):
            targets = torch.stack([torch.as_tensor(t).reshape(()) for t in targets])
        if targets is None or not isinstance(y, torch.Tensor):
            raise BundleInputError("ROADMetric needs maps, images and targets: metric(maps, images, targets=targets)")
        return super().__call__(y_pred, y, targets=targets)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self._generator is None or self._generator.device != y.device:
            self._generator = torch.Generator(device=y.device).manual_seed(self.seed)
        morf, lerf = compute_road(
            self.classifier, y, y_pred.to(y.device), targets, self.percentages, noise=self.noise,
            generator=self._generator, score=self.score, batch_size=self.batch_size, tol=self.tol,
            max_iter=self.max_iter,
        )
        auc_morf, auc_lerf, gap = road_areas(morf, lerf, self.percentages)
        return torch.cat([morf, lerf, auc_morf[:, None], auc_lerf[:, None], gap[:, None]], dim=1)

    def aggregate(self, reduction: str | None = None):  # type: ignore[override]
        out = super().aggregate(reduction)
        if isinstance(out, tuple):
            return tuple(o[..., self._column] for o in out)
        return out[..., self._column]


# ---------------------------------------------------------------------------------------------- ignite handlers
class PointingGame(IgniteMetricHandler):
    """Ignite handler: pointing-game hit rate over images with a lesion (float in ``engine.state.metrics``).

    Args:
        ties: see :func:`compute_pointing_game`.
        output_transform: extracts ``(maps, masks)``; default ``from_engine(["explanation", "mask"])``.
        save_details: whether to save the ``(N, 1)`` per-image scores to ``engine.state.metric_details[name]``.
    """

    def __init__(
        self, ties: str = "any", output_transform: Callable = _LOCALISATION_TRANSFORM, save_details: bool = True
    ) -> None:
        super().__init__(PointingGameMetric(ties=ties), output_transform=output_transform, save_details=save_details)


class RelevanceMassAccuracy(IgniteMetricHandler):
    """Ignite handler: mean relevance mass accuracy over images with a lesion (arguments as :class:`PointingGame`)."""

    def __init__(self, output_transform: Callable = _LOCALISATION_TRANSFORM, save_details: bool = True) -> None:
        super().__init__(RelevanceMassAccuracyMetric(), output_transform=output_transform, save_details=save_details)


class RelevanceRankAccuracy(IgniteMetricHandler):
    """Ignite handler: mean relevance rank accuracy over images with a lesion (arguments as :class:`PointingGame`)."""

    def __init__(self, output_transform: Callable = _LOCALISATION_TRANSFORM, save_details: bool = True) -> None:
        super().__init__(RelevanceRankAccuracyMetric(), output_transform=output_transform, save_details=save_details)


class ROAD(IgniteMetricHandler):
    """Ignite handler: mean ROAD score over images (``kind="gap"``: ``(LeRF − MoRF) / 2``, a float).

    ``engine.state.metric_details[name]`` (``save_details``) holds the ``(N, 2P + 3)`` per-image rows of
    :class:`ROADMetric` (curves, both areas, gap), so one handler gives the curves and every area.

    Args:
        classifier: the explained classifier (eval mode).
        output_transform: extracts ``(maps, images, targets)``; default
            ``from_engine(["explanation", "image", "y_hat"])`` (the evaluator's keys, scripts/evaluator.py).
        save_details: whether to save the per-image rows.
        max_images: score only the first ``max_images`` images the engine sees after each reset (the rest of the
            run's batches are skipped; ``None``: every image). ROAD costs two imputations and two classifier calls
            per image and percentage, so a benchmark scores it on a fixed leading subset of an unshuffled loader,
            reusing the maps the run computes anyway (no second pass of the explainer). Under ``torchrun`` the
            count is per process (each rank's first images of its shard).
        kwargs: the other arguments of :class:`ROADMetric` (percentages, noise, seed, score, kind, batch_size, ...).
    """

    def __init__(
        self,
        classifier: Callable[[torch.Tensor], torch.Tensor],
        output_transform: Callable = _ROAD_TRANSFORM,
        save_details: bool = True,
        max_images: int | None = None,
        **kwargs,
    ) -> None:
        if max_images is not None and int(max_images) < 0:
            raise BundleInputError(f"ROAD 'max_images' must be a non-negative integer or None, got {max_images!r}")
        self.max_images = None if max_images is None else int(max_images)
        self._seen = 0
        super().__init__(ROADMetric(classifier, **kwargs), output_transform=output_transform, save_details=save_details)

    @reinit__is_reduced
    def reset(self) -> None:
        self._seen = 0
        self.metric_fn.reset()

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        if len(output) != 3:
            raise ValueError(f"ROAD's output_transform must give (maps, images, targets), got {len(output)} items.")
        maps, images, targets = output
        if self.max_images is not None:
            take = min(self.max_images - self._seen, len(maps))
            if take <= 0:
                return
            maps, images, targets = maps[:take], images[:take], targets[:take]
        self._seen += len(maps)
        self.metric_fn(maps, images, targets=targets)
