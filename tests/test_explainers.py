"""Behaviour of the explanation methods (method.md §1, §3, §4) on tiny networks and hand-made images.

The localization toy: ``BrightSquareNet`` is a hand-set conv net whose class 1 logit grows with the area where the
5x5 local mean exceeds 0.5, i.e. it fires on a bright square over a dark noisy background. A correct explanation of
class 1 puts its top pixels on the square; a random map (or MONAI's inverted default Grad-CAM) does not.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from torch import nn

from scripts.errors import BundleInputError
from scripts.explainers import (
    BBMPExplainer,
    Explainer,
    GradCAMExplainer,
    GradientExplainer,
    MaskGeneratorExplainer,
    RandomExplainer,
    SimAdvExplainer,
    TTAExplainer,
)
from scripts.losses import total_variation
from scripts.explainers.tta import warp

MIXED = torch.tensor([0, 1, 1, 0])


# ----------------------------------------------------------------------------------------------- stand-ins
def tiny_densenet(frozen: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = DenseNet121(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2, 2, 2)
    ).eval()
    for p in net.parameters():
        p.requires_grad_(not frozen)
    return net


class BrightSquareNet(nn.Module):
    """Class 1 fires where the 5x5 local mean exceeds 0.5 (a bright square), class 0 otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 25)
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.tensor([[-100.0], [100.0]]))
            self.fc.bias.copy_(torch.tensor([1.0, -1.0]))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def square_batch(n: int = 4, size: int = 32, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark noisy images with one bright ``side``² square each, and the square masks."""
    g = torch.Generator().manual_seed(1)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = torch.randint(2, size - side - 2, (2,), generator=g).tolist()
        x[i, :, r : r + side, c : c + side] = 1.0
        masks[i, :, r : r + side, c : c + side] = True
    return x, masks


def top_k_iou(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean IoU between each map's top-|mask| pixels and the mask."""
    ious = []
    for m, gt in zip(maps.flatten(1), masks.flatten(1)):
        top = torch.zeros_like(gt)
        top[m.topk(int(gt.sum())).indices] = True
        ious.append(((top & gt).sum() / (top | gt).sum()).item())
    return sum(ious) / len(ious)


class IdentityExplainer(Explainer):
    """Translation-equivariant stand-in: the map is the image itself (summed over channels)."""

    uses_class_idx = False

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        return x.abs().sum(1, keepdim=True)


class RecordingExplainer(IdentityExplainer):
    uses_class_idx = True

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__(classifier)
        self.seen: list[torch.Tensor] = []

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        self.seen.append(class_idx)
        return super().compute_map(x, class_idx)


class AffineGenerator(nn.Module):
    """x_s = x + 1, x_a = 2x: golden maps |1 - x| (ours) and |x| (naive), summed over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, self.scale * x


class NaiveAffineGenerator(AffineGenerator):
    """The naive layout of AffineGenerator: x_s = x itself, x_a = 2x (golden map |x|)."""

    mode = "naive"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.scale * x


class ClassMaskNet(nn.Module):
    """Class-conditioned stand-in: mask sigmoid(x) for class 1, 1 - sigmoid(x) for class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x[:, :1] + self.bias)
        c = class_idx.view(-1, *[1] * (x.ndim - 1)).to(x)
        return c * s + (1 - c) * (1 - s)


class LowResMaskNet(nn.Module):
    """x-only stand-in returning a half-resolution mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.avg_pool2d(x[:, :1], 2))


class CallCounter(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def assert_no_hooks(net: nn.Module) -> None:
    for m in net.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def assert_valid_map(m: torch.Tensor, x: torch.Tensor) -> None:
    assert m.shape == (x.shape[0], 1, *x.shape[2:])
    assert torch.isfinite(m).all() and (m >= 0).all()
    assert not m.requires_grad


def all_explainers(net: nn.Module) -> dict[str, Explainer]:
    return {
        "gradient": GradientExplainer(net),
        "gradcam": GradCAMExplainer(net),
        "bbmp": BBMPExplainer(net, mask_size=8, iterations=3, blur_sigma=2.0),
        "simadv": SimAdvExplainer(net, AffineGenerator()),
        "naive": SimAdvExplainer(net, NaiveAffineGenerator()),
        "maskgen": MaskGeneratorExplainer(net, ClassMaskNet()),
        "tta_gradcam": TTAExplainer(GradCAMExplainer(net), num_augmentations=2),
        "tta_simadv": TTAExplainer(SimAdvExplainer(net, AffineGenerator()), num_augmentations=2),
    }


# ----------------------------------------------------------------------------------------------- all methods
ALL = ["gradient", "gradcam", "bbmp", "simadv", "naive", "maskgen", "tta_gradcam", "tta_simadv"]


@pytest.mark.parametrize("name", ALL)
def test_every_explainer_shape_range_mixed_classes_and_cleanup(name: str) -> None:
    net = tiny_densenet()
    x = torch.rand(4, 1, 64, 64)
    out = all_explainers(net)[name](x, MIXED)
    assert_valid_map(out, x)
    assert not any(m.training for m in net.modules())
    assert_no_hooks(net)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name", ["gradient", "gradcam", "bbmp", "tta_gradcam", "maskgen"])
def test_train_mode_restored_and_eval_used(name: str) -> None:
    net = tiny_densenet()
    x = torch.rand(2, 1, 64, 64)
    expected = all_explainers(net)[name](x, MIXED[:2])
    net.train()
    out = all_explainers(net)[name](x, MIXED[:2])
    assert all(m.training for m in net.modules())  # the caller's mode is given back
    torch.testing.assert_close(out, expected)  # ... but the map was computed in eval mode (BatchNorm stats)


@pytest.mark.parametrize("name", ["gradient", "gradcam", "bbmp"])
def test_gradient_methods_leave_parameter_grads_alone(name: str) -> None:
    net = tiny_densenet(frozen=False)
    sentinels = [torch.full_like(p, 7.0) for p in net.parameters()]
    for p, s in zip(net.parameters(), sentinels):
        p.grad = s.clone()
    all_explainers(net)[name](torch.rand(2, 1, 64, 64), MIXED[:2])
    assert all(torch.equal(p.grad, s) for p, s in zip(net.parameters(), sentinels))


@pytest.mark.parametrize("name", ["gradient", "gradcam", "bbmp"])
def test_batch_equals_per_image_with_mixed_classes(name: str) -> None:
    net = tiny_densenet()
    explainer = all_explainers(net)[name]
    x = torch.rand(4, 1, 64, 64)
    batch = explainer(x, MIXED)
    single = torch.cat([explainer(x[i : i + 1], MIXED[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-6)
    other = explainer(x, 1 - MIXED)  # the class matters: not the same map for the other class
    assert not torch.allclose(batch, other)


def test_default_class_is_the_prediction() -> None:
    net = tiny_densenet()
    x = torch.rand(3, 1, 64, 64)
    explainer = GradCAMExplainer(net)
    torch.testing.assert_close(explainer(x), explainer(x, net(x).argmax(1)))


# ----------------------------------------------------------------------------------------------- localization toy
@pytest.mark.parametrize(
    "explainer",
    [
        lambda n: GradCAMExplainer(n, target_layer="relu"),
        lambda n: GradientExplainer(n),
        lambda n: BBMPExplainer(n, mask_size=16, iterations=40, lr=0.1, blur_sigma=3.0),
    ],
    ids=["gradcam", "gradient", "bbmp"],
)
def test_toy_localization_beats_random(explainer) -> None:
    net = BrightSquareNet()
    x, masks = square_batch()
    assert (net(x).argmax(1) == 1).all()
    maps = explainer(net)(x, torch.ones(4, dtype=torch.long))
    random_iou = top_k_iou(torch.rand(maps.shape, generator=torch.Generator().manual_seed(0)), masks)
    iou = top_k_iou(maps, masks)
    assert iou > 0.5 > random_iou + 0.3


def test_gradcam_is_the_raw_map_not_monai_inverted_default() -> None:
    net = BrightSquareNet()
    x, masks = square_batch()
    cam = GradCAMExplainer(net, target_layer="relu")(x, torch.ones(4, dtype=torch.long))
    # class 1 weights the ReLU'd conv response positively: Grad-CAM is proportional to it
    act = F.relu(net.conv(x))
    def unit(m: torch.Tensor) -> torch.Tensor:
        return m / m.flatten(1).amax(1).view(-1, 1, 1, 1)

    torch.testing.assert_close(unit(cam), unit(act))
    assert cam[masks].mean() > 10 * cam[~masks].mean()


def test_gradcam_upsamples_and_rejects_unknown_layer() -> None:
    net = tiny_densenet()
    x = torch.rand(2, 1, 64, 96)
    assert GradCAMExplainer(net)(x, MIXED[:2]).shape == (2, 1, 64, 96)
    with pytest.raises(BundleInputError, match="target_layer"):
        GradCAMExplainer(net, target_layer="features.nope")


def test_gradient_golden_on_linear_classifier() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, 2, bias=False)).requires_grad_(False)
    w = torch.arange(16.0).view(2, 8) - 8
    net[1].weight.copy_(w)
    x = torch.rand(2, 2, 2, 2)
    out = GradientExplainer(net)(x, torch.tensor([0, 1]))
    expected = w.abs().view(2, 2, 2, 2).amax(1, keepdim=True)  # sample i: |w[i]| maxed over the 2 channels
    torch.testing.assert_close(out, expected)
    summed = GradientExplainer(net, reduction="sum")(x, torch.tensor([0, 1]))
    torch.testing.assert_close(summed, w.abs().view(2, 2, 2, 2).sum(1, keepdim=True))


# ----------------------------------------------------------------------------------------------- BBMP
def test_bbmp_total_variation_golden_and_range() -> None:
    m = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # horizontal diffs: |1|, |0| -> mean of ^3 = 0.5; vertical diffs: |1|, |0| -> 0.5
    torch.testing.assert_close(total_variation(m, 3.0, per_sample=True), torch.tensor([1.0]))
    batch = torch.cat([m, torch.zeros_like(m)])  # per sample: [1, 0]; over the batch: the mean of the two
    torch.testing.assert_close(total_variation(batch, 3.0, per_sample=True), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(total_variation(batch, 3.0), torch.tensor(0.5))
    net = BrightSquareNet()
    x, _ = square_batch(2)
    out = BBMPExplainer(net, mask_size=8, iterations=5, blur_sigma=2.0)(x, torch.ones(2, dtype=torch.long))
    assert out.max() <= 1.0 and out.max() > 0  # 1 - mask, mask clamped to [0, 1]


def test_bbmp_blur_is_a_normalised_gaussian() -> None:
    bbmp = BBMPExplainer(nn.Identity(), blur_sigma=2.0)
    flat = torch.full((1, 1, 16, 16), 0.7)
    torch.testing.assert_close(bbmp.blur(flat), flat)  # replicate padding: no dark border
    spike = torch.zeros(1, 1, 33, 33)
    spike[..., 16, 16] = 1.0
    blurred = bbmp.blur(spike)
    assert abs(blurred.sum().item() - 1.0) < 1e-5 and blurred[..., 16, 16] < 0.1


# ----------------------------------------------------------------------------- ours, naive, mask generator
def test_simadv_and_naive_golden_and_no_classifier_call() -> None:
    classifier = CallCounter(tiny_densenet())
    x = torch.rand(3, 2, 8, 8) * 2 - 1
    gen = AffineGenerator().train()
    ours = SimAdvExplainer(classifier, gen)(x)
    torch.testing.assert_close(ours, (1 - x).abs().sum(1, keepdim=True))  # |(x+1) - 2x|
    naive = SimAdvExplainer(classifier, NaiveAffineGenerator())(x)  # the Naive row: ours on a naive generator
    torch.testing.assert_close(naive, x.abs().sum(1, keepdim=True))  # |x - 2x|
    assert classifier.calls == 0 and gen.training  # own decision: no prediction needed; mode restored
    torch.testing.assert_close(SimAdvExplainer(classifier, gen)(x, torch.tensor([1, 0, 1])), ours)  # class ignored


def test_simadv_rejects_bad_generator_output() -> None:
    with pytest.raises(BundleInputError, match="generator"):
        SimAdvExplainer(nn.Identity(), nn.Identity())(torch.rand(2, 1, 8, 8))


def test_mask_generator_passes_classes_or_only_x() -> None:
    net = tiny_densenet()
    x = torch.randn(4, 1, 32, 32)
    out = MaskGeneratorExplainer(net, ClassMaskNet())(x, MIXED)
    s = torch.sigmoid(x)
    torch.testing.assert_close(out, torch.where(MIXED.view(-1, 1, 1, 1) == 1, s, 1 - s))
    counted = CallCounter(net)
    low = MaskGeneratorExplainer(counted, LowResMaskNet())
    assert not low.pass_class_idx
    out = low(x)
    assert_valid_map(out, x) and out.max() <= 1
    assert counted.calls == 0
    with pytest.raises(BundleInputError, match="mask_net"):
        MaskGeneratorExplainer(net, nn.Conv2d(1, 2, 1), pass_class_idx=False)(x)


# ----------------------------------------------------------------------------------------------- TTA
def test_tta_zero_augmentations_is_exact() -> None:
    net = tiny_densenet()
    x = torch.rand(4, 1, 64, 64)
    inner = GradCAMExplainer(net)
    assert torch.equal(TTAExplainer(inner, num_augmentations=0)(x, MIXED), inner(x, MIXED))
    mean, std = TTAExplainer(inner, num_augmentations=0).explain_with_uncertainty(x, MIXED)
    assert torch.equal(mean, inner(x, MIXED)) and torch.equal(std, torch.zeros_like(std))


def shift_affine(dx: int, dy: int, size: int) -> torch.Tensor:
    """Homogeneous affine_grid matrix sampling ``out[i, j] = img[i + dy, j + dx]`` on a ``size``² image."""
    a = torch.eye(3, dtype=torch.float64)
    a[0, 2], a[1, 2] = 2 * dx / size, 2 * dy / size
    return a


def test_tta_integer_shift_is_mapped_back_onto_the_grid() -> None:
    x = torch.rand(2, 1, 16, 16)
    shifted = warp(x, shift_affine(3, -2, 16))
    torch.testing.assert_close(shifted[..., 2:, :-3], x[..., :-2, 3:])  # the transform really shifts
    tta = TTAExplainer(IdentityExplainer(nn.Identity()), num_augmentations=2, padding_mode="zeros")
    mean, std = tta.aggregate(x, None, torch.stack([shift_affine(3, -2, 16), shift_affine(-1, 4, 16)]))
    torch.testing.assert_close(mean[..., 4:-4, 4:-4], x[..., 4:-4, 4:-4])  # away from the borders
    torch.testing.assert_close(mean, x)  # and everywhere: uncovered pixels average over the covering maps only
    assert std.max() < 1e-5


def test_tta_random_transforms_invert_smooth_maps_and_are_seeded() -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.2).view(1, 1, 32, 32)
    tta = TTAExplainer(IdentityExplainer(nn.Identity()), num_augmentations=6, rotate_range=15.0, seed=3)
    mean, std = tta.explain_with_uncertainty(blob)
    assert (mean - blob).abs().max() < 0.02 and std.max() < 0.05  # ψ⁻¹ undoes ψ up to interpolation
    assert torch.equal(tta(blob), tta(blob))
    other_seed = TTAExplainer(tta.explainer, num_augmentations=6, seed=4)
    assert not torch.equal(tta.sample_affines((32, 32)), other_seed.sample_affines((32, 32)))


def test_tta_passes_classes_unchanged_and_batch_equals_per_image() -> None:
    net = tiny_densenet()
    x = torch.rand(4, 1, 64, 64)
    rec = RecordingExplainer(net)
    TTAExplainer(rec, num_augmentations=3)(x, MIXED)
    assert len(rec.seen) == 4 and all(torch.equal(c, MIXED) for c in rec.seen)
    rec.seen.clear()
    TTAExplainer(rec, num_augmentations=2)(x)
    assert all(torch.equal(c, net(x).argmax(1)) for c in rec.seen)  # decided once, on the un-augmented x
    tta = TTAExplainer(GradCAMExplainer(net), num_augmentations=3)
    batch = tta(x, MIXED)
    single = torch.cat([tta(x[i : i + 1], MIXED[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-6)
    assert not torch.equal(batch, GradCAMExplainer(net)(x, MIXED))
    assert_no_hooks(net)


# ----------------------------------------------------------------------------------------------- 3D
def tiny_net_3d() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    return net.eval().requires_grad_(False)


def test_3d_smoke() -> None:
    net = tiny_net_3d()
    x = torch.rand(2, 1, 8, 12, 10)
    for explainer in (
        GradientExplainer(net),
        GradCAMExplainer(net, target_layer="1"),
        TTAExplainer(GradientExplainer(net), num_augmentations=2),
        BBMPExplainer(net, mask_size=4, iterations=2, blur_sigma=1.0),
    ):
        assert_valid_map(explainer(x, MIXED[:2]), x)
    mean, std = TTAExplainer(IdentityExplainer(net), num_augmentations=2).explain_with_uncertainty(x)
    assert_valid_map(mean, x) and (std >= 0).all()
    assert_no_hooks(net)


def test_random_explainer_is_seeded_and_runs_no_network() -> None:
    """The benchmark's random reference: the same uniform map at every call and on every batch position of a seed,
    without running the classifier."""
    classifier = CallCounter(tiny_densenet())
    x = torch.rand(2, 1, 8, 8)
    first = RandomExplainer(classifier, seed=3)(x)
    assert_valid_map(first, x)
    torch.testing.assert_close(RandomExplainer(classifier, seed=3)(x * 0), first)  # independent of the image
    assert not torch.equal(RandomExplainer(classifier, seed=4)(x), first)
    assert first.min() >= 0 and first.max() < 1 and classifier.calls == 0
