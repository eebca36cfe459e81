"""scripts/faithfulness.py: golden values on hand-made maps, batched = per image, and agreement with Quantus 0.6.0.

Quantus is a test extra (requirements-test.txt, installed by ./run.sh test), imported here, never by the bundle.
Tolerances: pointing game, mass and rank accuracy agree with Quantus to 1e-6 (float64, tie-free maps); the ROAD
imputation agrees with Quantus' sparse direct solve to 1e-8 in float64 with a tight CG tolerance and to 1e-3 with the
float32 defaults (CG stops at a relative residual of 1e-5); ROAD curves are compared with noise 0 on both sides.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from scripts.errors import BundleInputError
from scripts.faithfulness import (
    ROAD,
    ROAD_PERCENTAGES,
    PointingGame,
    PointingGameMetric,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    RelevanceRankAccuracyMetric,
    ROADMetric,
    compute_pointing_game,
    compute_relevance_mass,
    compute_relevance_rank,
    compute_road,
    noisy_linear_imputation,
    road_areas,
)



@pytest.fixture(scope="module")
def quantus():
    """Quantus 0.6.0, the reference; ./run.sh test installs it (requirements-test.txt), the other tests run without."""
    return pytest.importorskip("quantus", reason="install requirements-test.txt (./run.sh test does)")


def quantus_imputation(arr: np.ndarray, indices: np.ndarray, noise: float) -> np.ndarray:
    from quantus.functions.perturb_func import noisy_linear_imputation as reference

    return reference(arr=arr, indices=indices, noise=noise)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]


class LinearClassifier(torch.nn.Module):
    """Two logits ``[0, Σ w·x − bias]``: a deterministic classifier whose decision depends on a blob of pixels."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.register_buffer("w", torch.exp(-((yy - 5.0) ** 2 + (xx - 9.0) ** 2) / 8.0)[None, None].float())
        # images 0.3 * U(0, 1) + (0 or 1) * w: the bias lies halfway between the two classes' mean scores
        self.bias = float(self.w.sum() * 0.15 + (self.w**2).sum() * 0.5) * 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() * self.w).sum(dim=(1, 2, 3)) * 2.0 - self.bias
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _road_batch(b: int = 4, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = LinearClassifier(size).eval()
    lesion = (torch.arange(b) % 2).float()[:, None, None, None]  # every second image carries the blob: class 1
    images = 0.3 * torch.rand(b, 1, size, size, generator=g) + lesion * model.w
    maps = model.w.expand(b, 1, size, size) + 0.05 * torch.rand(b, 1, size, size, generator=g)  # tie-free
    return model, images, maps, model(images).argmax(dim=1)


# ------------------------------------------------------------------------------------------ golden: localisation
def test_pointing_game_golden_and_ties():
    mask = _t([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    inside = _t([[0, 0, 0, 0], [0, 3, 1, 0], [0, 1, 1, 0], [0, 0, 2, 0]])
    outside = _t([[5, 0, 0, 0], [0, 3, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    tie = _t([[3, 0, 0, 3], [0, 3, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0]])  # 4 maxima, 1 inside
    maps = torch.cat([inside, outside, tie, torch.full_like(inside, 0.7)])
    masks = mask.expand(4, 1, 4, 4)
    assert compute_pointing_game(maps, masks).tolist() == [1.0, 0.0, 1.0, 1.0]  # any max inside; constant map: 1
    assert compute_pointing_game(maps, masks, ties="share").tolist() == [1.0, 0.0, 0.25, 4 / 16]
    empty = compute_pointing_game(inside, torch.zeros_like(mask))
    assert math.isnan(empty.item())


def test_relevance_mass_golden():
    mask = _t([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    m = _t([[1, 0, 0, 0], [0, 2, 1, 0], [0, 1, 0, 0], [0, 0, 0, 3]])  # 4 of 8 inside
    out = compute_relevance_mass(torch.cat([m, torch.full_like(m, 2.0), torch.zeros_like(m)]), mask.expand(3, 1, 4, 4))
    assert out.tolist() == [0.5, 0.25, 0.25]  # constant and all-zero maps: |M| / N
    assert math.isnan(compute_relevance_mass(m, torch.zeros_like(mask)).item())


def test_relevance_rank_golden_with_ties():
    # 5x5, |M| = 3; top-3 = {9 (in), 8 (out), 7 (in)} -> 2/3
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    mask[0, 0, 0, 0] = mask[0, 0, 2, 2] = mask[0, 0, 4, 4] = 1
    m = torch.zeros_like(mask)
    m[0, 0, 0, 0], m[0, 0, 1, 1], m[0, 0, 2, 2] = 9, 8, 7
    # ties: 9 (in) takes one slot; the 2 remaining slots go to three pixels tied at 5 (2 in, 1 out): 2 * 2/3 = 4/3
    t = torch.zeros_like(mask)
    t[0, 0, 0, 0], t[0, 0, 2, 2], t[0, 0, 4, 4], t[0, 0, 3, 0] = 9, 5, 5, 5
    out = compute_relevance_rank(torch.cat([m, t, torch.full_like(m, 1.0)]), mask.expand(3, 1, 5, 5))
    assert out.tolist() == pytest.approx([2 / 3, (1 + 4 / 3) / 3, 3 / 25], abs=1e-12)  # constant map: |M| / N
    assert math.isnan(compute_relevance_rank(m, torch.zeros_like(mask)).item())


def test_localisation_3d_and_bad_shape():
    g = torch.Generator().manual_seed(1)
    maps, masks = torch.rand(2, 1, 4, 5, 6, generator=g), (torch.rand(2, 1, 4, 5, 6, generator=g) > 0.7).float()
    for fn in (compute_pointing_game, compute_relevance_mass, compute_relevance_rank):
        assert fn(maps, masks).shape == (2,)
        with pytest.raises(BundleInputError, match="does not match"):
            fn(maps, masks[:, :, :3])


# ------------------------------------------------------------------------------------------------ golden: ROAD
def test_imputation_golden_3x3():
    img = _t([[1, 2, 3], [4, 50, 6], [7, 8, 9]])
    centre = torch.zeros_like(img, dtype=torch.bool)
    centre[..., 1, 1] = True
    out = noisy_linear_imputation(img, centre, noise=0.0, tol=1e-12)
    expected = (2 + 4 + 6 + 8) / 6 + (1 + 3 + 7 + 9) / 12  # the 8 neighbours' weights sum to 1
    assert out[0, 0, 1, 1].item() == pytest.approx(expected, abs=1e-9)
    corner = torch.zeros_like(centre)
    corner[..., 0, 0] = True  # in-image neighbours: 2 direct (1/6), 1 diagonal (1/12), weight 5/12
    out = noisy_linear_imputation(img, corner, noise=0.0, tol=1e-12)
    assert out[0, 0, 0, 0].item() == pytest.approx((2 / 6 + 4 / 6 + 50 / 12) / (5 / 12), abs=1e-9)
    assert torch.equal(out[~corner], img[~corner])  # kept pixels untouched


def test_road_areas_golden():
    morf = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])
    lerf = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.2, 0.2]])
    auc_m, auc_l, gap = road_areas(morf, lerf, (10, 50, 90))
    # trapezoid over fractions 0.1..0.9, / 0.8: (0.4 * 0.75 + 0.4 * 0.25) / 0.8 = 0.5
    assert auc_m.tolist() == pytest.approx([0.5, 0.2])
    assert auc_l.tolist() == pytest.approx([1.0, 0.2])
    assert gap.tolist() == pytest.approx([0.25, 0.0])


def test_road_constant_map_gap_is_zero_and_faithful_map_wins():
    model, images, maps, y = _road_batch()
    const = torch.full_like(maps, 0.3)
    morf, lerf = compute_road(model, images, const, y, noise=0.01, seed=3)
    assert torch.equal(morf, lerf)  # the same removal order (ties broken by one shared permutation)
    assert torch.equal(road_areas(morf, lerf)[2], torch.zeros(4))
    gap_good = road_areas(*compute_road(model, images, maps, y, noise=0.01))[2]
    gap_bad = road_areas(*compute_road(model, images, -maps, y, noise=0.01))[2]
    # the blob images (class 1): removing the blob first destroys the decision, removing it last keeps it
    assert (gap_good[1::2] > 0.3).all() and (gap_bad[1::2] < -0.3).all()


def test_road_bad_input():
    model, images, maps, y = _road_batch(b=2)
    with pytest.raises(BundleInputError, match="2D"):
        compute_road(model, images[..., None], maps[..., None], y)
    with pytest.raises(BundleInputError, match="targets"):
        compute_road(model, images, maps, y[:1])
    with pytest.raises(BundleInputError, match="percentages"):
        compute_road(model, images, maps, y, percentages=(10, 100))


# ------------------------------------------------------------------------------------------- batched = per image
def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(5, 1, 6, 7, generator=g, dtype=torch.float64)
    maps[3] = 0.5  # a constant map
    masks = (torch.rand(5, 1, 6, 7, generator=g) > 0.6).float()
    masks[1] = 0  # an empty mask
    for fn in (compute_pointing_game, compute_relevance_mass, compute_relevance_rank):
        batched = fn(maps, masks)
        single = torch.cat([fn(maps[i : i + 1], masks[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(batched, single, equal_nan=True, rtol=0, atol=1e-12)
    model, images, rmaps, y = _road_batch()
    morf, lerf = compute_road(model, images, rmaps, y, noise=0.0)
    for i in range(4):
        m_i, l_i = compute_road(model, images[i : i + 1], rmaps[i : i + 1], y[i : i + 1], noise=0.0)
        torch.testing.assert_close(m_i, morf[i : i + 1], rtol=0, atol=1e-4)
        torch.testing.assert_close(l_i, lerf[i : i + 1], rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------- agreement with Quantus
def test_localisation_agrees_with_quantus(quantus):
    rng = np.random.default_rng(0)
    maps = rng.random((8, 1, 12, 12))  # tie-free
    masks = np.zeros_like(maps)
    for i in range(7):  # image 7 keeps an empty mask
        r, c, h, w = rng.integers(0, 8, 4)
        masks[i, 0, r : r + h + 1, c : c + w + 1] = 1
    masks[0, 0, np.unravel_index(maps[0, 0].argmax(), (12, 12))] = 1  # at least one pointing-game hit
    x, y = rng.random(maps.shape), np.zeros(8, dtype=int)
    tm, ts = torch.from_numpy(maps), torch.from_numpy(masks)
    for metric, ours in (
        (quantus.PointingGame, compute_pointing_game),
        (quantus.RelevanceMassAccuracy, compute_relevance_mass),
        (quantus.RelevanceRankAccuracy, compute_relevance_rank),
    ):
        ref = np.asarray(
            metric(normalise=False, abs=False, disable_warnings=True)(
                model=None, x_batch=x, y_batch=y, a_batch=maps, s_batch=masks
            ),
            dtype=float,
        )
        got = ours(tm, ts).numpy()
        np.testing.assert_allclose(got[:7], ref[:7], rtol=0, atol=1e-6, err_msg=metric.__name__)
        assert np.isnan(got[7])  # empty mask (Quantus: NaN, but True for its pointing game)


def test_imputation_agrees_with_quantus(quantus):
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 2, 14, 11, generator=g, dtype=torch.float64)  # two channels, non-square
    order = torch.rand(3, 14 * 11, generator=g).argsort(dim=1)
    for frac in (0.1, 0.5, 0.9):
        k = int(14 * 11 * frac)
        removed = torch.zeros(3, 14 * 11, dtype=torch.bool)
        removed.scatter_(1, order[:, :k], True)
        removed = removed.reshape(3, 1, 14, 11)
        ref = np.stack(
            [quantus_imputation(images[i].numpy(), np.flatnonzero(removed[i].numpy()), noise=0.0) for i in range(3)]
        )
        exact = noisy_linear_imputation(images, removed, noise=0.0, tol=1e-12)
        np.testing.assert_allclose(exact.numpy(), ref, rtol=0, atol=1e-8)
        fast = noisy_linear_imputation(images.float(), removed, noise=0.0)
        np.testing.assert_allclose(fast.numpy(), ref, rtol=0, atol=1e-3)


def test_road_agrees_with_quantus(quantus):
    model, images, maps, y = _road_batch(b=6, seed=5)
    pct = list(ROAD_PERCENTAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        road = quantus.ROAD(percentages=pct, noise=0.0, normalise=False, abs=False, disable_warnings=True)
        ref = {}
        # Quantus scores MoRF only; LeRF = MoRF of a reversed map (Quantus refuses an all-negative one)
        for order, a in (("morf", maps), ("lerf", maps.amax() + 0.1 - maps)):
            road(model=model, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
            ref[order] = np.array([road.evaluation_scores[p] for p in pct])
    morf, lerf = compute_road(model, images, maps, y, pct, noise=0.0, score="accuracy")
    # Quantus' ROAD gives the accuracy over the batch per percentage (argmax == label)
    np.testing.assert_allclose(morf.mean(dim=0).numpy(), ref["morf"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lerf.mean(dim=0).numpy(), ref["lerf"], rtol=0, atol=1e-6)
    assert ref["morf"].min() < 1.0  # the comparison is not trivial: the decision flips under MoRF
    # probabilities: ours vs the classifier on Quantus' own imputation, same removal sets
    pm, _ = compute_road(model, images, maps, y, pct, noise=0.0)
    n = 16 * 16
    desc = np.argsort(-maps.reshape(6, -1).numpy(), axis=1)
    for j, p in enumerate(pct):
        k = int(n * p / 100)
        x_ref = np.stack([quantus_imputation(images[i].numpy(), desc[i, :k], noise=0.0) for i in range(6)])
        prob = torch.softmax(model(torch.from_numpy(x_ref)), dim=1).gather(1, y[:, None]).squeeze(1)
        np.testing.assert_allclose(pm[:, j].numpy(), prob.numpy(), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------- cumulative metrics, handlers
def _run_engine(batches, handlers):
    engine = Engine(lambda e, batch: batch)
    for name, h in handlers.items():
        h.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine


def test_localisation_handlers_nan_mean_over_batches():
    g = torch.Generator().manual_seed(6)
    batches = []
    for _ in range(2):
        masks = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
        masks[0] = 0  # one empty mask per batch: excluded
        batches.append({"explanation": torch.rand(3, 1, 8, 8, generator=g), "mask": masks, "image": None})
    engine = _run_engine(
        batches, {"pg": PointingGame(), "mass": RelevanceMassAccuracy(), "rank": RelevanceRankAccuracy()}
    )
    maps = torch.cat([b["explanation"] for b in batches])
    masks = torch.cat([b["mask"] for b in batches])
    for name, fn in (("pg", compute_pointing_game), ("mass", compute_relevance_mass), ("rank", compute_relevance_rank)):
        assert engine.state.metrics[name] == pytest.approx(torch.nanmean(fn(maps, masks)).item(), abs=1e-6)
        assert engine.state.metric_details[name].shape == (6, 1)
    metric = RelevanceRankAccuracyMetric()
    metric(maps[:1] * 0 + 1, torch.zeros_like(masks[:1]))  # only an empty mask: the aggregate stays NaN
    assert math.isnan(metric.aggregate().item())
    pg = PointingGameMetric(ties="share", reduction="none")
    pg(list(maps), list(masks))  # lists of channel-first tensors, as MONAI metrics take them
    assert pg.aggregate().shape == (6, 1)


def test_road_handler_and_metric_reproducible():
    model, images, maps, y = _road_batch(b=4)
    batches = [{"explanation": maps[:2], "image": images[:2], "y_hat": y[:2]},
               {"explanation": maps[2:], "image": images[2:], "y_hat": y[2:]}]
    pct = (20, 50, 80)
    engine = _run_engine(batches, {"road": ROAD(model, percentages=pct, noise=0.0)})
    morf, lerf = compute_road(model, images, maps, y, pct, noise=0.0)
    assert engine.state.metrics["road"] == pytest.approx(road_areas(morf, lerf, pct)[2].mean().item(), abs=1e-4)
    details = engine.state.metric_details["road"]
    assert details.shape == (4, 2 * 3 + 3)
    torch.testing.assert_close(details[:, :3], morf, rtol=0, atol=1e-4)
    metric = ROADMetric(model, percentages=pct, noise=0.05, seed=7, kind="all")
    metric(maps, images, targets=y)
    first = metric.aggregate()
    assert first.shape == (9,) and len(metric.columns) == 9
    metric.reset()
    metric(list(maps), list(images), targets=list(y))  # decollated lists, re-seeded by reset()
    torch.testing.assert_close(metric.aggregate(), first, rtol=0, atol=1e-5)


def test_road_handler_scores_only_the_first_images_of_each_run():
    """``max_images`` keeps the leading images over batch boundaries (3 of 2 + 2), again after a second run."""
    model, images, maps, y = _road_batch(b=4)
    batches = [{"explanation": maps[:2], "image": images[:2], "y_hat": y[:2]},
               {"explanation": maps[2:], "image": images[2:], "y_hat": y[2:]}]
    pct = (20, 50, 80)
    handler = ROAD(model, percentages=pct, noise=0.0, max_images=3, kind="all")
    engine = _run_engine(batches, {"road": handler})
    morf, lerf = compute_road(model, images[:3], maps[:3], y[:3], pct, noise=0.0)
    assert engine.state.metric_details["road"].shape == (3, 9)
    torch.testing.assert_close(engine.state.metrics["road"][:3], morf.mean(dim=0), rtol=0, atol=1e-4)
    engine.run(batches, max_epochs=1)  # the handler resets at each run's start: the same 3 images again
    assert engine.state.metric_details["road"].shape == (3, 9)
    with pytest.raises(BundleInputError, match="max_images"):
        ROAD(model, max_images=-1)
