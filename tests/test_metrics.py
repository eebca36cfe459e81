"""Golden-value tests of the localization metrics (method.md §5), on hand-made 4x4 / 8x8 maps and masks.

Percentile convention used in the hand arithmetic below (torch.quantile, 'linear'): on the N ascending sorted
values v, the p-th percentile is at position pos = p·(N−1)/100, and the pixels kept are those >= that value.
For the 4x4 "ramp" map E = 0, 1, ..., 15 (N = 16, v[k] = k) the number of kept pixels is K(p) = 16 − ⌈0.15·p⌉:
  p = 100: pos 15 -> keep {15} (K=1);  p = 98: pos 14.7 -> t 14.7 -> {15} (K=1);  p = 95: pos 14.25 -> K=1;
  p = 94..99: pos in (14, 15) -> K=1;  p = 93..87: pos in (13, 14] -> K=2 ({14,15});
  p = 90: pos 13.5 -> K=2;  p = 85: pos 12.75 -> t 12.75 -> {13,14,15} (K=3);  p = 86..81: K=3;
  p = 80: pos 12 exactly -> t = 12 -> {12,..,15} (K=4);  p = 0: t = 0 -> all 16.
"""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from scripts.errors import BundleInputError
from scripts.metrics import (
    LOC_PERCENTILES,
    LocalizationAUC,
    LocalizationAUCMetric,
    PercentileIoU,
    PercentileIoUMetric,
    PooledAveragePrecision,
    PooledAveragePrecisionMetric,
    PrecisionRecallCurveMetric,
    compute_localization_auc,
    compute_percentile_iou,
    compute_pooled_average_precision,
    compute_precision_recall_curves,
    percentile_thresholds,
)

PCTS = (80, 85, 90, 95, 98)


def ramp() -> torch.Tensor:
    """(1, 1, 4, 4) map with the 16 distinct values 0..15 in raster order."""
    return torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)


def mask_of(values: list[int]) -> torch.Tensor:
    """(1, 1, 4, 4) mask selecting the ramp pixels holding these values."""
    m = torch.zeros(16)
    m[values] = 1
    return m.reshape(1, 1, 4, 4)


def square_mask() -> torch.Tensor:
    """(1, 1, 4, 4) mask: a 2x2 lesion in the top-left corner, |M| = 4 of N = 16."""
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2, :2] = 1
    return m


def brute_force_counts(maps: torch.Tensor, masks: torch.Tensor, pcts) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference with torch.quantile (per image, linear): kept and hit counts, shape (B, P)."""
    flat, lab = maps.flatten(1), masks.flatten(1) > 0.5
    q = torch.tensor([p / 100 for p in pcts], dtype=flat.dtype)
    thr = torch.quantile(flat, q, dim=1).T  # (B, P)
    keep = flat[:, None, :] >= thr[:, :, None]
    return keep.sum(-1), (keep & lab[:, None, :]).sum(-1)


# ------------------------------------------------------------------------------------------------ IoU
def test_iou_perfect_map():
    # map == mask: sorted values = 12 zeros then 4 ones; for p >= 80, pos >= 12 -> t = 1 -> keep exactly M -> IoU 1
    m = square_mask()
    assert torch.allclose(compute_percentile_iou(m.clone(), m), torch.ones(1, 5))


def test_iou_inverted_map():
    # map = 1 - mask: 4 zeros then 12 ones; pos >= 12 -> t = 1 -> keep the 12 background pixels -> |M∩M_E| = 0
    m = square_mask()
    assert torch.equal(compute_percentile_iou(1 - m, m), torch.zeros(1, 5))


def test_iou_constant_map_ties_keep_everything():
    # constant map: t = c at every p and all pixels are >= c -> M_E = whole image -> IoU = |M|/N = 4/16, never 1
    m = square_mask()
    iou = compute_percentile_iou(torch.full_like(m, 0.3), m, percentiles=range(101))
    assert torch.allclose(iou, torch.full((1, 101), 0.25))


def test_iou_ramp_golden():
    # mask = the 4 highest ramp pixels {12..15}, |M| = 4; K(p) from the module docstring:
    # p80: K=4 -> 4/4 = 1;  p85: K=3 -> 3/4;  p90: K=2 -> 2/4;  p95: K=1 -> 1/4;  p98: K=1 -> 1/4
    iou = compute_percentile_iou(ramp(), mask_of([12, 13, 14, 15]))
    assert torch.allclose(iou, torch.tensor([[1.0, 0.75, 0.5, 0.25, 0.25]]))
    # full curve: p = 0 keeps all 16 -> 4/16; p = 100 keeps {15} -> 1/4
    curve = compute_percentile_iou(ramp(), mask_of([12, 13, 14, 15]), percentiles=range(101))
    assert curve.shape == (1, 101)
    assert curve[0, 0].item() == pytest.approx(0.25) and curve[0, 100].item() == pytest.approx(0.25)


def test_iou_random_map_is_at_mask_size_level():
    # a random map keeps a random ~20 % at p80; E|M∩M_E| = m·k·N with m = 1/4, k ≈ 0.2 ->
    # IoU ≈ m·k / (m + k − m·k) = 0.05 / 0.40 = 0.125 (chance level), far from 1
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(1, 1, 64, 64, generator=g)
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., :32, :32] = 1
    iou = compute_percentile_iou(maps, masks, percentiles=(80,))
    assert iou.item() == pytest.approx(0.125, abs=0.02)


def test_iou_empty_mask_is_nan_and_excluded_from_mean():
    maps = torch.cat([ramp(), ramp()])
    masks = torch.cat([mask_of([12, 13, 14, 15]), torch.zeros(1, 1, 4, 4)])
    iou = compute_percentile_iou(maps, masks)
    assert torch.isnan(iou[1]).all() and not torch.isnan(iou[0]).any()
    metric = PercentileIoUMetric(percentiles=PCTS)
    metric(maps, masks)
    assert torch.allclose(metric.aggregate(), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.25]))  # the NaN row excluded


def test_iou_matches_torch_quantile_reference():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 1, 8, 8, generator=g)
    masks = (torch.rand(3, 1, 8, 8, generator=g) > 0.7).float()
    kept, hits = brute_force_counts(maps, masks, range(101))
    n_mask = masks.flatten(1).sum(1, keepdim=True)
    ref = hits / (n_mask + kept - hits)
    assert torch.allclose(compute_percentile_iou(maps, masks, percentiles=range(101)), ref)


def test_batch_equals_per_image_calls():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(4, 1, 8, 8, generator=g)
    masks = (torch.rand(4, 1, 8, 8, generator=g) > 0.6).float()
    masks[2] = 0  # one empty mask
    maps[3] = 0.5  # one constant map
    batched_iou = compute_percentile_iou(maps, masks)
    single_iou = torch.cat([compute_percentile_iou(maps[i : i + 1], masks[i : i + 1]) for i in range(4)])
    assert torch.allclose(batched_iou, single_iou, equal_nan=True)
    tot, part = compute_localization_auc(maps, masks)
    for i in range(4):
        t_i, p_i = compute_localization_auc(maps[i : i + 1], masks[i : i + 1])
        assert torch.allclose(tot[i : i + 1], t_i, equal_nan=True)
        assert torch.allclose(part[i : i + 1], p_i, equal_nan=True)


def test_3d_and_double_inputs():
    m = torch.zeros(2, 1, 4, 4, 4, dtype=torch.float64)
    m[:, :, :2] = 1  # half the volume
    iou = compute_percentile_iou(m.clone(), m, percentiles=(50, 90))
    assert iou.dtype == torch.float64 and torch.allclose(iou, torch.ones(2, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ AUC_Loc
def test_pr_curves_shapes_and_monotone_recall():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 1, 8, 8, generator=g)
    masks = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    prec, rec = compute_precision_recall_curves(maps, masks)
    assert prec.shape == rec.shape == (2, 101) and len(LOC_PERCENTILES) == 101
    assert (rec[:, 1:] >= rec[:, :-1]).all() and torch.allclose(rec[:, -1], torch.ones(2))
    # column i is percentile 100 - i: last column keeps all pixels -> precision = |M|/N
    assert torch.allclose(prec[:, -1], masks.flatten(1).mean(1))
    kept, hits = brute_force_counts(maps, masks, LOC_PERCENTILES)
    assert torch.allclose(prec, hits / kept) and torch.allclose(rec, hits / masks.flatten(1).sum(1, keepdim=True))


def test_auc_perfect_map_is_one():
    # map == mask: p = 100 already keeps exactly M -> P_0 = 1, R_0 = 1; recall never moves again -> AUC = 1·1 = 1
    m = square_mask()
    total, partial = compute_localization_auc(m.clone(), m)
    assert total.item() == pytest.approx(1.0) and partial.item() == pytest.approx(1.0)


def test_auc_constant_map_is_random_level():
    # constant map: every threshold keeps all N pixels -> P_i = |M|/N, R_0 = 1 -> AUC = P_0·R_0 = 4/16 (both sums)
    m = square_mask()
    total, partial = compute_localization_auc(torch.full_like(m, 7.0), m)
    assert total.item() == pytest.approx(0.25) and partial.item() == pytest.approx(0.25)


def test_auc_ramp_golden():
    # ramp map, mask = pixels {15, 13, 0}, |M| = 3.  Walking p = 100 -> 0 with K(p) from the module docstring:
    #   p 100..94: K=1 {15}        hits 1 -> P = 1,   R = 1/3   term 1·(1/3 − 0)      = 1/3
    #   p 93..87:  K=2 {14,15}     hits 1 -> P = 1/2, R = 1/3   term 0
    #   p 86..81:  K=3 {13,14,15}  hits 2 -> P = 2/3, R = 2/3   term (2/3)·(1/3)      = 2/9
    #   p 80..1:   K=4..15         hits 2 (pixel 0 is kept only at p=0)  term 0
    #   p 0:       K=16            hits 3 -> P = 3/16, R = 1    term (3/16)·(1/3)     = 1/16
    # total = 1/3 + 2/9 + 1/16 = (48 + 32 + 9)/144 = 89/144;  partial (p >= 80) = 1/3 + 2/9 = 5/9
    total, partial = compute_localization_auc(ramp(), mask_of([15, 13, 0]))
    assert total.item() == pytest.approx(89 / 144) and partial.item() == pytest.approx(5 / 9)
    # partial_from = 90 stops at p = 90: only the first term -> 1/3; partial_from = 0 equals the total
    assert compute_localization_auc(ramp(), mask_of([15, 13, 0]), partial_from=90)[1].item() == pytest.approx(1 / 3)
    assert compute_localization_auc(ramp(), mask_of([15, 13, 0]), partial_from=0)[1].item() == pytest.approx(89 / 144)


def test_auc_empty_mask_is_nan():
    total, partial = compute_localization_auc(ramp(), torch.zeros(1, 1, 4, 4))
    assert math.isnan(total.item()) and math.isnan(partial.item())


def test_localization_auc_metric_accumulates():
    metric = LocalizationAUCMetric(partial_from=80)
    metric(ramp(), mask_of([15, 13, 0]))  # (89/144, 5/9)
    metric([square_mask()[0], square_mask()[0]], [square_mask()[0], torch.zeros(1, 4, 4)])  # list input: (1, 1), NaN
    agg = metric.aggregate()
    assert torch.allclose(agg, torch.tensor([(89 / 144 + 1) / 2, (5 / 9 + 1) / 2]))
    assert metric.aggregate(reduction="none").shape == (3, 2)


# ------------------------------------------------------------------------------------------------ pooled AP
def test_pooled_ap_perfect_map_is_one():
    m = torch.cat([square_mask(), mask_of([3, 7]), torch.zeros(1, 1, 4, 4)])  # last image has no lesion: dropped
    assert compute_pooled_average_precision(m.clone(), m) == pytest.approx(1.0)


def test_pooled_ap_golden_and_per_image_normalisation():
    # one 2x2 image, scores 0.9, 0.8, 0.3, 0.1 with labels 1, 0, 1, 0: ranks 1 (hit), 2, 3 (hit)
    # AP = mean precision at the hits = (1/1 + 2/3)/2 = 5/6 (min-max normalising keeps the order)
    maps = torch.tensor([0.9, 0.8, 0.3, 0.1]).reshape(1, 1, 2, 2)
    masks = torch.tensor([1.0, 0, 1, 0]).reshape(1, 1, 2, 2)
    assert compute_pooled_average_precision(maps, masks) == pytest.approx(5 / 6)
    # two perfect maps on different scales (10/11 vs 0/1): raw pooling would rank image 1's background (10) above
    # image 2's lesion (1); after per-image min-max both become the mask itself -> AP = 1
    m = torch.cat([square_mask(), mask_of([15])])
    maps2 = torch.cat([10 + square_mask(), mask_of([15])])
    assert compute_pooled_average_precision(maps2, m) == pytest.approx(1.0)


def test_pooled_ap_subsample_is_deterministic():
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(3, 1, 8, 8, generator=g)
    masks = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    a = compute_pooled_average_precision(maps, masks, subsample=20, seed=3)
    assert a == compute_pooled_average_precision(maps, masks, subsample=20, seed=3)
    assert 0.0 < a < 1.0
    assert compute_pooled_average_precision(masks.clone(), masks, subsample=20) == pytest.approx(1.0)
    with pytest.raises(BundleInputError, match="subsample"):
        compute_pooled_average_precision(maps, masks, subsample=0)


def test_pooled_ap_metric_matches_function():
    g = torch.Generator().manual_seed(5)
    maps = torch.rand(4, 1, 8, 8, generator=g)
    masks = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    masks[1] = 0
    metric = PooledAveragePrecisionMetric()
    metric(maps[:2], masks[:2])
    metric(list(maps[2:]), list(masks[2:]))
    assert metric.aggregate() == pytest.approx(compute_pooled_average_precision(maps, masks))


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_bundle_input_error():
    with pytest.raises(BundleInputError, match="mask shape"):
        compute_percentile_iou(ramp(), torch.zeros(1, 1, 4, 5))
    with pytest.raises(BundleInputError, match="percentiles"):
        compute_percentile_iou(ramp(), ramp(), percentiles=(80, 101))
    with pytest.raises(BundleInputError, match="kind"):
        LocalizationAUC(kind="half")
    with pytest.raises(BundleInputError, match="partial_from"):
        compute_localization_auc(ramp(), ramp(), partial_from=120)


# ------------------------------------------------------------------------------------------------ ignite
def _engine() -> Engine:
    return Engine(lambda engine, batch: batch)  # the "explanation step" just emits the prepared output dict


def test_handlers_on_ignite_engine():
    # batch 1: ramp with top-4 mask (IoU p90 = 1/2, AUC computed below) + an empty-mask image (excluded)
    # batch 2: perfect square map (IoU 1, AUC 1)
    b1 = {
        "explanation": torch.cat([ramp(), ramp()]),
        "mask": torch.cat([mask_of([12, 13, 14, 15]), torch.zeros(1, 1, 4, 4)]),
    }
    b2 = {"explanation": square_mask(), "mask": square_mask()}
    # AUC of the ramp with mask {12..15}: p100..94 K=1: P=1, R=1/4 -> 1/4; p93..87 K=2: P=1, R=2/4 -> 1/4;
    # p86..81 K=3: P=1, R=3/4 -> 1/4; p80 K=4: P=1, R=1 -> 1/4; total = partial = 1
    engine = _engine()
    PercentileIoU(percentile=90).attach(engine, "iou_p90")
    PercentileIoU(percentile=85).attach(engine, "iou_p85")
    LocalizationAUC(kind="total").attach(engine, "auc_total")
    LocalizationAUC(kind="partial", partial_from=90).attach(engine, "auc_partial90")
    PooledAveragePrecision().attach(engine, "pooled_ap")
    engine.run([b1, b2], max_epochs=1)
    metrics = engine.state.metrics
    assert metrics["iou_p90"] == pytest.approx((0.5 + 1.0) / 2)  # the empty-mask image is excluded
    assert metrics["iou_p85"] == pytest.approx((0.75 + 1.0) / 2)
    assert metrics["auc_total"] == pytest.approx(1.0)
    # partial from p90 for the ramp: p100..94 -> 1/4, p93..90 -> 1/4 -> 1/2; perfect -> 1; mean 3/4
    assert metrics["auc_partial90"] == pytest.approx(0.75)
    assert metrics["pooled_ap"] == pytest.approx(1.0)  # both lesion images rank their lesion pixels first
    details = engine.state.metric_details["iou_p90"]
    assert details.shape == (3, 1) and torch.isnan(details[1, 0])


def test_handler_on_decollated_output():
    # MONAI evaluators with postprocessing emit a list of per-image dicts; from_engine turns it into lists
    out = [
        {"explanation": ramp()[0], "mask": mask_of([12, 13, 14, 15])[0]},
        {"explanation": square_mask()[0], "mask": square_mask()[0]},
    ]
    engine = _engine()
    PercentileIoU(percentile=95, save_details=False).attach(engine, "iou_p95")
    engine.run([out], max_epochs=1)
    assert engine.state.metrics["iou_p95"] == pytest.approx((0.25 + 1.0) / 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_agnostic():
    g = torch.Generator().manual_seed(6)
    maps = torch.rand(3, 1, 16, 16, generator=g)
    masks = (torch.rand(3, 1, 16, 16, generator=g) > 0.6).float()
    iou = compute_percentile_iou(maps.cuda(), masks.cuda(), percentiles=range(101))
    assert iou.is_cuda and torch.allclose(iou.cpu(), compute_percentile_iou(maps, masks, percentiles=range(101)))
    tot, part = compute_localization_auc(maps.cuda(), masks.cuda())
    tot_c, part_c = compute_localization_auc(maps, masks)
    assert tot.is_cuda and torch.allclose(tot.cpu(), tot_c) and torch.allclose(part.cpu(), part_c)
    assert compute_pooled_average_precision(maps.cuda(), masks.cuda(), subsample=100) == pytest.approx(
        compute_pooled_average_precision(maps, masks, subsample=100)
    )


def test_precision_recall_curve_metric_is_the_mean_over_images_with_a_lesion():
    """The Cumulative curve metric equals the benchmark's former collector on a hand-made case: per batch, the sums of
    the per-image curves over the images with a lesion, then their sum divided by the count (two batches, one image
    without a lesion, which is left out)."""
    maps = [ramp(), ramp().flip(-1), torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))]
    masks = [mask_of([15, 14, 11]), mask_of([0, 1]), torch.zeros(1, 1, 4, 4)]
    batches = [(torch.cat(maps[:2]), torch.cat(masks[:2])), (maps[2], masks[2]), (ramp(), mask_of([3]))]
    metric = PrecisionRecallCurveMetric()
    sum_p = sum_r = None
    count = 0
    for y_pred, y in batches:
        metric(y_pred=y_pred, y=y)
        p, r = compute_precision_recall_curves(y_pred, y)  # the former collector's update
        valid = ~torch.isnan(p).any(dim=1)
        if valid.any():
            sum_p = p[valid].sum(0) if sum_p is None else sum_p + p[valid].sum(0)
            sum_r = r[valid].sum(0) if sum_r is None else sum_r + r[valid].sum(0)
            count += int(valid.sum())
    curves = metric.aggregate()
    assert curves.shape == (2, len(LOC_PERCENTILES)) and count == 3
    torch.testing.assert_close(curves[0], sum_p / count)
    torch.testing.assert_close(curves[1], sum_r / count)
    # hand check at the first threshold (percentile 100: the maximum alone): precision 1, 0, 0; recall 1/3, 0, 0
    assert curves[0, 0].item() == pytest.approx(1 / 3) and curves[1, 0].item() == pytest.approx(1 / 9)
    assert torch.allclose(curves[1, -1], torch.tensor(1.0))  # percentile 0 keeps every pixel: recall 1
    empty = PrecisionRecallCurveMetric()
    empty(y_pred=ramp(), y=torch.zeros(1, 1, 4, 4))
    assert torch.isnan(empty.aggregate()).all()  # no image with a lesion: no curve (the benchmark reports [])


def test_percentile_thresholds_are_numpys_linear_percentiles():
    import numpy as np

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 1, 7, 5, generator=g, dtype=torch.float64)
    pct = (0, 12.5, 50, 90, 98, 100)
    out = percentile_thresholds(maps, pct)
    expected = np.stack([np.percentile(m.numpy().ravel(), pct) for m in maps])
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-15)
    assert out.shape == (2, 6) and out.dtype == torch.float64
    assert percentile_thresholds(ramp(), [50]).item() == pytest.approx(7.5)
    with pytest.raises(BundleInputError, match="percentiles"):
        percentile_thresholds(ramp(), [101])
