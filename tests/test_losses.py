"""Golden values for every loss term of method.md §2 and the Dabkowski & Gal masker loss (scripts/losses.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.losses import (  # noqa: E402
    MASK_TERMS,
    SIMADV_TERMS,
    MaskGeneratorLoss,
    SimAdvLoss,
    adversarial_classification_loss,
    closeness_loss,
    distance_loss,
    parameter_distance,
    regularization_loss,
    regularization_terms,
    similar_classification_loss,
    similarity_loss,
    total_variation,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def img(values) -> torch.Tensor:
    """A (1, 1, H, W) image from nested lists."""
    return torch.tensor(values, dtype=torch.float32)[None, None]


X4 = img([[0.0, 1.0], [3.0, 5.0]])
ZERO = torch.zeros(1, 1, 2, 2)


def test_distance_loss_golden():
    # |X4 - 0|: 0,1,3,5 -> L1 mean 9/4 = 2.25; squares 0,1,9,25 -> L2 mean 35/4 = 8.75; d = 11.0
    assert distance_loss(X4, ZERO).item() == pytest.approx(11.0)
    # weights 2 and 0.5: 4.5 + 4.375 = 8.875
    assert distance_loss(X4, ZERO, l1_weight=2.0, l2_weight=0.5).item() == pytest.approx(8.875)
    assert distance_loss(X4, X4).item() == 0.0


def test_distance_loss_ssim_part():
    x = torch.rand(2, 1, 16, 16)
    # SSIM(x, x) = 1 -> the SSIM part adds 0
    assert distance_loss(x, x, ssim_weight=1.0).item() == pytest.approx(0.0, abs=1e-5)
    assert distance_loss(x, torch.rand(2, 1, 16, 16), l1_weight=0, l2_weight=0, ssim_weight=1.0).item() > 0.1


def test_similarity_loss_golden():
    # d(x, x_s) with x_s = x is 0; d(x, x_a) with x_a = 0 is 11.0 (above)
    assert similarity_loss(X4, X4, ZERO).item() == pytest.approx(11.0)
    assert similarity_loss(X4, ZERO, ZERO).item() == pytest.approx(22.0)


def test_similar_classification_loss_golden():
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    y_hat = torch.tensor([0, 0])
    # sample 1: p = 1/2 -> ln 2; sample 2: p = 3/4 -> -ln(3/4); mean of the two
    expected = (LN2 - math.log(0.75)) / 2
    assert similar_classification_loss(logits, y_hat).item() == pytest.approx(expected)


def test_adversarial_classification_loss_golden():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    y_hat = torch.tensor([1, 0])
    # sample 1: p_ŷ = 1/3 -> -log(2/3); sample 2: softmax = (1/2, 1/4, 1/4), p_ŷ = 1/2 -> -log(1/2)
    expected = (-math.log(2 / 3) + LN2) / 2
    assert adversarial_classification_loss(logits, y_hat).item() == pytest.approx(expected, rel=1e-6)


def test_adversarial_equals_flipped_ce_for_two_classes():
    torch.manual_seed(0)
    logits = torch.randn(8, 2) * 3
    y_hat = torch.randint(0, 2, (8,))
    flipped = similar_classification_loss(logits, 1 - y_hat)
    assert adversarial_classification_loss(logits, y_hat).item() == pytest.approx(flipped.item(), rel=1e-6)


def test_adversarial_loss_is_stable():
    # p_ŷ = 1 - e^-200 in float32 is exactly 1, so log(1 - p) would be -inf; the log-sum-exp form gives 200
    logits = torch.tensor([[100.0, -100.0]], requires_grad=True)
    loss = adversarial_classification_loss(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(200.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_total_variation_golden():
    # X4 = [[0, 1], [3, 5]]: along H |3-0|, |5-1| -> mean 3.5; along W |1-0|, |5-3| -> mean 1.5; TV = 5.0
    assert total_variation(X4).item() == pytest.approx(5.0)
    # squared: (9 + 16)/2 + (1 + 4)/2 = 12.5 + 2.5 = 15.0
    assert total_variation(X4, power=2.0).item() == pytest.approx(15.0)
    assert total_variation(torch.ones(2, 1, 4, 4)).item() == 0.0


def test_total_variation_3d_and_length_one_axes():
    t = torch.tensor([0.0, 2.0]).reshape(1, 1, 2, 1, 1)
    # only the first spatial axis has neighbours: |2 - 0| = 2; the length-1 axes add nothing
    assert total_variation(t).item() == pytest.approx(2.0)


def test_regularization_loss_golden():
    # x_s - x_a = X4: closeness mean|.| = 9/4 = 2.25, TV = 5.0
    assert regularization_loss(X4, ZERO).item() == pytest.approx(7.25)
    # 2 * 2.25 + 0.1 * 5.0 = 5.0
    assert regularization_loss(X4, ZERO, closeness_weight=2.0, tv_weight=0.1).item() == pytest.approx(5.0)


def test_parameter_distance_golden():
    pairs = [(torch.tensor([1.0, 2.0]), torch.zeros(2)), (torch.tensor([[3.0]]), torch.tensor([[1.0]]))]
    # (1 + 4) + (3 - 1)^2 = 9
    assert parameter_distance(pairs).item() == pytest.approx(9.0)
    assert parameter_distance([]).item() == 0.0
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert parameter_distance(zip(a.parameters(), b.parameters())).item() == 0.0


class _StubGenerator(nn.Module):
    """Stands in for SimAdvGenerator: one parameter pair at distance 9."""

    def __init__(self, mode: str = "single") -> None:
        super().__init__()
        self.mode = mode
        self.p_s = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
        self.p_a = nn.Parameter(torch.tensor([0.0, 0.0, 1.0]))

    def paired_parameters(self):
        return [(self.p_s, self.p_a)]


def test_simadv_loss_golden_total():
    loss = SimAdvLoss(alpha=2.0, lambda_s=3.0, lambda_a=5.0, closeness_weight=7.0, tv_weight=11.0, w_weight=13.0)
    x, x_s, x_a = ZERO.clone(), ZERO.clone(), X4
    logits = torch.zeros(1, 2)
    out = loss(x, x_s, x_a, logits, logits, torch.tensor([0]), _StubGenerator())
    assert set(out) == {*SIMADV_TERMS, "loss"}
    # L_d = d(0, 0) + d(0, X4) = 0 + 11.0; CE_s = CE_a = ln 2 (uniform logits);
    # closeness = 2.25, TV = 5.0, L_sa = 1 + 4 + 4 = 9
    expected = {"loss_d": 11.0, "loss_s": LN2, "loss_a": LN2, "loss_close": 2.25, "loss_tv": 5.0, "loss_sa": 9.0}
    for k, v in expected.items():
        assert out[k].item() == pytest.approx(v, rel=1e-6), k
    # 2*11 + 3 ln2 + 5 ln2 + 7*2.25 + 11*5 + 13*9 = 209.75 + 8 ln2
    assert out["loss"].item() == pytest.approx(209.75 + 8 * LN2, rel=1e-6)


def test_simadv_loss_naive_skips_similar_terms():
    loss = SimAdvLoss(w_weight=1.0)
    x = ZERO.clone()
    out = loss(x, x, X4, None, torch.zeros(1, 2), torch.tensor([0]), _StubGenerator(mode="naive"))
    # only d(x, x_a) = 11.0; similar CE skipped; the stub's pair is still counted when present
    assert out["loss_d"].item() == pytest.approx(11.0)
    assert out["loss_s"].item() == 0.0
    # 11 + 0 + ln2 + 2.25 + 5.0 + 9.0
    assert out["loss"].item() == pytest.approx(27.25 + LN2, rel=1e-6)


def test_simadv_loss_without_w_ignores_parameters():
    out = SimAdvLoss(w_weight=0.0)(ZERO, ZERO.clone(), ZERO.clone(), torch.zeros(1, 2), torch.zeros(1, 2),
                                   torch.tensor([0]), _StubGenerator())
    assert out["loss_sa"].item() == 0.0
    # only the two CE terms (ln 2 each) remain
    assert out["loss"].item() == pytest.approx(2 * LN2, rel=1e-6)


def test_simadv_loss_gradient_reaches_generator_params():
    gen = _StubGenerator()
    out = SimAdvLoss(w_weight=1.0)(ZERO, ZERO.clone(), ZERO.clone(), torch.zeros(1, 2), torch.zeros(1, 2),
                                   torch.tensor([0]), gen)
    out["loss"].backward()
    # d/dθ_s ||θ_s - θ_a||^2 = 2 (θ_s - θ_a) = (2, 4, 4)
    assert torch.allclose(gen.p_s.grad, torch.tensor([2.0, 4.0, 4.0]))


def test_simadv_loss_terms_are_the_term_functions():
    """SimAdvLoss's terms are similarity_loss, the parts of regularization_loss and the two CEs, to the bit; the
    weighted total is the weighted sum of those terms (so a change of a term function changes the objective)."""
    g = torch.Generator().manual_seed(0)
    x, x_s, x_a = (torch.rand(3, 1, 8, 8, generator=g) for _ in range(3))
    logits_s, logits_a, y_hat = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), torch.tensor([0, 1, 1])
    loss = SimAdvLoss(alpha=1.0, lambda_s=1.0, lambda_a=2.0, closeness_weight=0.3, tv_weight=2.0)
    out = loss(x, x_s, x_a, logits_s, logits_a, y_hat)
    assert torch.equal(out["loss_d"], similarity_loss(x, x_s, x_a))
    reg = regularization_terms(x_s, x_a)
    assert torch.equal(out["loss_close"], reg["loss_close"]) and torch.equal(out["loss_close"], closeness_loss(x_s, x_a))
    assert torch.equal(out["loss_tv"], reg["loss_tv"])
    assert torch.equal(out["loss_s"], similar_classification_loss(logits_s, y_hat))
    assert torch.equal(out["loss_a"], adversarial_classification_loss(logits_a, y_hat))
    reg_total = regularization_loss(x_s, x_a, closeness_weight=0.3, tv_weight=2.0)
    assert out["loss"].item() == pytest.approx((out["loss_d"] + out["loss_s"] + 2 * out["loss_a"] + reg_total).item())
    naive = loss(x, x, x_a, None, logits_a, y_hat)
    assert torch.equal(naive["loss_d"], similarity_loss(x, None, x_a)) and naive["loss_s"].item() == 0.0


def test_total_variation_per_sample():
    t = torch.stack([X4[0], ZERO[0], 2 * X4[0]])  # (3, 1, 2, 2)
    torch.testing.assert_close(total_variation(t, per_sample=True), torch.tensor([5.0, 0.0, 10.0]))
    torch.testing.assert_close(total_variation(t), torch.tensor(5.0))  # the mean over the batch
    assert total_variation(torch.zeros(2, 1, 1, 1), per_sample=True).shape == (2,)


def test_mask_generator_loss_golden():
    mask = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
    loss = MaskGeneratorLoss(area_weight=1.0, area_power=1.0, smooth_weight=2.0, preserve_weight=3.0,
                             destroy_weight=4.0, destroy_power=2.0)
    out = loss(mask, torch.zeros(1, 2), torch.tensor([[LN3, 0.0]]), torch.tensor([0]))
    assert set(out) == {*MASK_TERMS, "loss"}
    # area: mean(m + 5e-4) = 0.5005; smooth: |1 - 0| = 1 along W (H has length 1);
    # preserve: CE of uniform logits = ln 2; destroy: p = 3/4 -> (3/4)^2 = 0.5625
    assert out["loss_area"].item() == pytest.approx(0.5005)
    assert out["loss_smooth"].item() == pytest.approx(1.0)
    assert out["loss_preserve"].item() == pytest.approx(LN2)
    assert out["loss_destroy"].item() == pytest.approx(0.5625)
    # 0.5005 + 2*1 + 3 ln2 + 4*0.5625 = 4.7505 + 3 ln2
    assert out["loss"].item() == pytest.approx(4.7505 + 3 * LN2, rel=1e-6)


def test_adversarial_tv_golden_and_weight():
    from scripts.losses import adversarial_tv

    x = ZERO.clone()
    # TV(X4 - 0) = TV(X4) = 5.0 (test_simadv_loss_golden_total)
    assert adversarial_tv(x, X4).item() == pytest.approx(5.0)
    logits = torch.zeros(1, 2)
    off = SimAdvLoss()(x, x.clone(), X4, logits, logits, torch.tensor([0]))
    on = SimAdvLoss(adv_tv_weight=3.0)(x, x.clone(), X4, logits, logits, torch.tensor([0]))
    assert off["loss_tv_a"].item() == on["loss_tv_a"].item() == pytest.approx(5.0)
    assert on["loss"].item() == pytest.approx(off["loss"].item() + 15.0, rel=1e-6)
    # weight 0: the term is reported but carries no gradient
    x_a = X4.clone().requires_grad_(True)
    assert not SimAdvLoss()(x, x.clone(), x_a, logits, logits, torch.tensor([0]))["loss_tv_a"].requires_grad
