"""Shapes, ranges and parameter pairing of the generators (scripts/networks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.errors import BundleInputError  # noqa: E402
from scripts.losses import parameter_distance  # noqa: E402
from scripts.networks import (  # noqa: E402
    GENERATOR_MODES,
    OUT_ACTIVATIONS,
    MaskGeneratorNet,
    SimAdvGenerator,
    difference_map,
)

TINY = {"channels": (4, 8, 16), "strides": (2, 2)}


def _scramble_heads(gen: SimAdvGenerator, scale: float = 5.0) -> None:
    """Give the zero-initialised last convs large weights so the outputs leave the identity."""
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if "head" in name or "g_" in name:
                p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("mode", GENERATOR_MODES)
@pytest.mark.parametrize("act", OUT_ACTIVATIONS)
def test_generator_shape_and_range_2d(mode, act):
    torch.manual_seed(0)
    gen = SimAdvGenerator(mode, out_activation=act, **TINY)
    _scramble_heads(gen)
    x = torch.rand(2, 1, 32, 32) * 1.4 - 0.2  # some inputs outside [0, 1] too
    x_s, x_a = gen(x)
    assert x_s.shape == x_a.shape == x.shape
    assert 0.0 <= x_a.min() and x_a.max() <= 1.0
    assert (x_a - x.clamp(0, 1)).abs().max() > 0.01  # scrambled heads do change the image
    if mode == "naive":
        assert x_s is x
    else:
        assert 0.0 <= x_s.min() and x_s.max() <= 1.0


@pytest.mark.parametrize("mode", GENERATOR_MODES)
def test_generator_starts_as_identity(mode):
    x = torch.rand(2, 1, 16, 16)
    x_s, x_a = SimAdvGenerator(mode, **TINY)(x)
    # sigmoid(logit(x)) = x up to the 1e-3 logit clipping
    assert torch.allclose(x_a, x, atol=1.1e-3) and torch.allclose(x_s, x, atol=1.1e-3)
    x_s, x_a = SimAdvGenerator(mode, out_activation="clamp", **TINY)(x)
    assert torch.allclose(x_a, x) and torch.allclose(x_s, x)


def test_generator_3d_and_custom_range():
    gen = SimAdvGenerator("single", spatial_dims=3, channels=(4, 8), strides=(2,), out_range=(-1.0, 1.0))
    _scramble_heads(gen)
    x = torch.rand(1, 1, 8, 8, 8) * 2 - 1
    x_s, x_a = gen(x)
    assert x_s.shape == x_a.shape == x.shape
    assert -1.0 <= min(x_s.min(), x_a.min()) and max(x_s.max(), x_a.max()) <= 1.0
    assert difference_map(x_s, x_a).shape == (1, 1, 8, 8, 8)


def test_difference_map_spaces_golden():
    """'image': the intensity difference; 'logit': the change in log-odds, the same at every grey level for the
    same residual (no u(1 - u) factor of the image), clipped at the generator's eps, summed over channels."""
    x = torch.tensor([0.5, 0.9, 0.999, 0.0]).reshape(1, 1, 2, 2)
    gen = SimAdvGenerator("naive", **TINY)
    x_a = gen._output(x, torch.full_like(x, 1.0))  # every pixel's residual is +1 in log-odds
    image = difference_map(x, x_a)
    logit = difference_map(x, x_a, "logit")
    expected_image = torch.sigmoid(torch.logit(x, eps=1e-3) + 1) - x
    assert torch.allclose(image, expected_image.abs(), atol=1e-6)
    assert abs(float(image[0, 0, 0, 0]) - (torch.sigmoid(torch.tensor(1.0)) - 0.5)) < 1e-6  # 0.2311
    assert image[0, 0, 0, 0] > 3 * image[0, 0, 0, 1]  # mid grey weighs more than a bright pixel in image space
    assert torch.allclose(logit[0, 0, 0, :], torch.ones(2), atol=1e-4)  # one log-odds unit at 0.5 and at 0.9
    assert float(logit[0, 0, 1, 0]) < 1e-6  # 0.999 is clipped at 1 - eps: its +1 does not count (invisible change)
    assert abs(float(logit[0, 0, 1, 1]) - 1.0) < 1e-4  # a black pixel clipped to eps, brightened by +1
    # channels are summed; another out_range is mapped to [0, 1] first
    two = difference_map(torch.cat([x, x], 1) * 2 - 1, torch.cat([x_a, x_a], 1) * 2 - 1, "logit", (-1.0, 1.0))
    assert torch.allclose(two, 2 * logit, atol=1e-4)
    with pytest.raises(BundleInputError, match="map space"):
        difference_map(x, x_a, "pixels")


@pytest.mark.parametrize("space", ["logit", "image"])
def test_generator_explanation_follows_map_space(space):
    torch.manual_seed(0)
    gen = SimAdvGenerator("single", map_space=space, **TINY)
    _scramble_heads(gen, 1.0)
    x = torch.rand(2, 1, 16, 16)
    x_s, x_a = gen(x)
    assert torch.allclose(gen.explanation(x_s, x_a), difference_map(x_s, x_a, space))
    with pytest.raises(BundleInputError, match="map_space"):
        SimAdvGenerator("single", map_space="pixels", **TINY)


def test_output_gradients_at_range_limit():
    x = torch.ones(1, 1, 2, 2)
    for act, has_grad in (("clamp", False), ("ste", True), ("sigmoid", True)):
        gen = SimAdvGenerator("naive", out_activation=act, **TINY)
        delta = torch.full_like(x, 0.5, requires_grad=True)
        out = gen._output(x, delta)
        assert out.max() <= 1.0
        out.sum().backward()
        assert (delta.grad.abs().sum() > 0) == has_grad, act


def test_paired_parameters():
    duo = SimAdvGenerator("duo", **TINY)
    pairs = duo.paired_parameters()
    assert len(pairs) == len(list(duo.g_s.parameters())) == len(list(duo.g_a.parameters()))
    ids_s, ids_a = {id(p) for p in duo.g_s.parameters()}, {id(p) for p in duo.g_a.parameters()}
    assert all(id(s) in ids_s and id(a) in ids_a and s.shape == a.shape for s, a in pairs)

    single = SimAdvGenerator("single", **TINY)
    pairs = single.paired_parameters()
    assert len(pairs) == len(list(single.head_s.parameters())) > 0
    ids_s, ids_a = {id(p) for p in single.head_s.parameters()}, {id(p) for p in single.head_a.parameters()}
    assert all(id(s) in ids_s and id(a) in ids_a for s, a in pairs)

    assert SimAdvGenerator("naive", **TINY).paired_parameters() == []


def test_parameter_distance_of_equal_generators_is_zero():
    duo = SimAdvGenerator("duo", zero_init=False, **TINY)
    assert parameter_distance(duo.paired_parameters()).item() > 0
    duo.g_s.load_state_dict(duo.g_a.state_dict())
    assert parameter_distance(duo.paired_parameters()).item() == 0.0
    tied = SimAdvGenerator("duo", same_init=True, zero_init=False, **TINY)
    assert parameter_distance(tied.paired_parameters()).item() == 0.0


def test_generator_rejects_bad_config():
    with pytest.raises(BundleInputError, match="mode"):
        SimAdvGenerator("triple")
    with pytest.raises(BundleInputError, match="out_activation"):
        SimAdvGenerator(out_activation="tanh")
    with pytest.raises(BundleInputError, match="strides"):
        SimAdvGenerator(channels=(4, 8), strides=(2, 2))


def test_mask_generator_selects_class_channel():
    torch.manual_seed(0)
    net = MaskGeneratorNet(num_classes=3, mask_scale=1, **TINY)
    x = torch.rand(4, 1, 32, 32)
    cls = torch.tensor([0, 2, 1, 2])
    mask = net(x, cls)
    assert mask.shape == (4, 1, 32, 32)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    logits = net.unet(x)
    for i, c in enumerate(cls.tolist()):
        assert torch.allclose(mask[i, 0], torch.sigmoid(logits[i, c]))
    assert net(x, 1).shape == (4, 1, 32, 32)  # one class for the whole batch


def test_mask_generator_coarse_mask_cannot_carry_pixel_stripes():
    """mask_scale=4 (the paper's 56x56 mask for 224x224): logits area-averaged to 1/4 size, sigmoid, bilinear upsampling;
    a one-pixel stripe pattern in the logits averages out instead of reaching the mask."""
    torch.manual_seed(0)
    net = MaskGeneratorNet(num_classes=2, mask_scale=4, **TINY)
    x = torch.rand(3, 1, 32, 28)
    cls = torch.tensor([1, 0, 1])
    mask = net(x, cls)
    assert mask.shape == (3, 1, 32, 28)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    logits = net.unet(x)[torch.arange(3), cls].unsqueeze(1)
    coarse = torch.sigmoid(F.interpolate(logits, size=[8, 7], mode="area"))
    assert torch.allclose(mask, F.interpolate(coarse, size=[32, 28], mode="bilinear", align_corners=False), atol=1e-6)

    stripes = torch.zeros(1, 2, 32, 32)
    stripes[:, :, ::2] = 8.0  # +8 / 0 logits on alternate rows: a full-resolution mask would be 1 / 0.5 stripes
    net.unet.forward = lambda _x: stripes  # type: ignore[method-assign]
    striped = net(torch.rand(1, 1, 32, 32), 1)
    assert float(striped.std()) < 1e-5
    assert torch.allclose(striped, torch.full_like(striped, torch.sigmoid(torch.tensor(4.0)).item()), atol=1e-5)


def test_mask_generator_rejects_bad_mask_scale():
    for bad in (0, 2.5, "4"):
        with pytest.raises(BundleInputError, match="mask_scale"):
            MaskGeneratorNet(mask_scale=bad, **TINY)


def test_mask_generator_3d():
    net = MaskGeneratorNet(spatial_dims=3, num_classes=2, channels=(4, 8), strides=(2,))
    mask = net(torch.rand(2, 1, 8, 8, 8), torch.tensor([1, 0]))
    assert mask.shape == (2, 1, 8, 8, 8)



@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_resize_conv_generator_same_shapes_and_parameter_count(spatial_dims):
    from scripts.networks import ResizeConvUNet

    torch.manual_seed(0)
    deconv = SimAdvGenerator("single", spatial_dims=spatial_dims, **TINY)
    resize = SimAdvGenerator("single", spatial_dims=spatial_dims, upsample="resize", **TINY)
    assert isinstance(resize.trunk, ResizeConvUNet)
    # a kernel-3 stride-1 conv after the resize has as many weights as the kernel-3 stride-2 transposed conv
    assert sum(p.numel() for p in resize.parameters()) == sum(p.numel() for p in deconv.parameters())
    x = torch.rand(2, 1, *([16] * spatial_dims))
    _scramble_heads(resize)
    x_s, x_a = resize(x)
    assert x_s.shape == x_a.shape == x.shape
    assert not any(isinstance(m, torch.nn.ConvTranspose2d | torch.nn.ConvTranspose3d) for m in resize.modules())


def test_generator_rejects_unknown_upsample():
    with pytest.raises(BundleInputError, match="upsample"):
        SimAdvGenerator("single", upsample="transposed", **TINY)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("mode", GENERATOR_MODES)
def test_space_to_depth_generator_runs_its_unet_below_full_resolution(mode, spatial_dims):
    from scripts.networks import SpaceToDepthTrunk

    torch.manual_seed(0)
    gen = SimAdvGenerator(mode, spatial_dims=spatial_dims, space_to_depth=2, **TINY)
    x = torch.rand(2, 1, *([16] * spatial_dims))
    x_s, x_a = gen(x)  # starts as the identity, like every generator
    assert torch.allclose(x_a, x, atol=1.1e-3) and torch.allclose(x_s, x, atol=1.1e-3)
    trunks = [m for m in gen.modules() if isinstance(m, SpaceToDepthTrunk)]
    assert len(trunks) == (2 if mode == "duo" else 1)
    seen = []
    hook = trunks[0].unet.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
    _scramble_heads(gen)
    x_s, x_a = gen(x)
    hook.remove()
    (unet_in, unet_out), = seen
    assert unet_in == (2, 2**spatial_dims, *([8] * spatial_dims))  # space-to-depth: 1 channel -> 2^d, half the side
    assert unet_out == (2, 8, *([8] * spatial_dims))  # the light head's width (head_channels defaults to 8)
    assert x_s.shape == x_a.shape == x.shape and (x_a - x).abs().max() > 0.01


def test_space_to_depth_generator_scripts_and_cuts_the_arithmetic():
    from torch.utils.flop_counter import FlopCounterMode

    full, stem = SimAdvGenerator("single").eval(), SimAdvGenerator("single", space_to_depth=2).eval()  # default widths
    x = torch.rand(1, 1, 64, 64)
    flops = []
    for gen in (full, stem):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            gen(x)
        flops.append(counter.get_total_flops())
    assert flops[1] < flops[0] / 4  # 0.29 against 1.37 GMAC at 256x256
    _scramble_heads(stem)
    scripted = torch.jit.script(stem)  # monai.bundle ckpt_export scripts the network
    for a, b in zip(scripted(x), stem(x)):
        assert torch.allclose(a, b, atol=1e-5)


def test_generator_rejects_bad_space_to_depth():
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(BundleInputError, match="space_to_depth"):
            SimAdvGenerator("single", space_to_depth=bad, **TINY)
