"""Periodic artefacts in explanation maps (scripts/spectrum.py), and the generator that has none."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.losses import SimAdvLoss  # noqa: E402
from scripts.networks import SimAdvGenerator  # noqa: E402
from scripts.spectrum import periodic_peak_ratio  # noqa: E402
from scripts.trainer import simadv_step  # noqa: E402


def test_peak_ratio_golden_lattice_smooth_border():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    lattice = ((yy % 8 == 0) & (xx % 8 == 0)).float()[None, None]  # one dot every 8 pixels
    assert periodic_peak_ratio(lattice, 8) > 1e5
    blob = torch.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 50.0)[None, None]
    assert periodic_peak_ratio(blob, 8) < 3
    frame = torch.zeros(1, 1, 64, 64)
    frame[..., 0, :] = frame[..., -1, :] = frame[..., :, 0] = frame[..., :, -1] = 1.0  # a map's border step
    assert periodic_peak_ratio(frame, 8) < 3
    assert periodic_peak_ratio(torch.zeros(2, 1, 64, 64), 8) == pytest.approx(1.0)
    torch.manual_seed(0)
    assert periodic_peak_ratio(torch.rand(32, 1, 64, 64), 8) < 3
    with pytest.raises(ValueError, match="period"):
        periodic_peak_ratio(lattice, 7)


def _trained_flat_map(upsample: str, seed: int, space_to_depth: int = 1) -> torch.Tensor:
    """The map of a tiny generator trained 40 steps against a tiny random classifier, on a flat grey image."""
    from monai.networks.nets import DenseNet121

    torch.manual_seed(seed)
    classifier = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                             block_config=(2, 2)).eval()
    gen = SimAdvGenerator("single", channels=(8, 16, 32, 64), strides=(2, 2, 2), upsample=upsample,
                          space_to_depth=space_to_depth)
    opt = torch.optim.Adam(gen.parameters(), 1e-2)
    loss = SimAdvLoss(lambda_a=2.0, closeness_weight=0.3, tv_weight=2.0)  # the weights of configs/train.json
    for _ in range(40):
        simadv_step(0.3 + 0.4 * torch.rand(8, 1, 32, 32), gen, classifier, loss, opt)
    with torch.no_grad():
        x_s, x_a = gen.eval()(torch.full((1, 1, 64, 64), 0.5))
    return (x_s - x_a).abs()


def test_resize_generator_map_has_no_peak_at_its_upsampling_period():
    """The default generator (resize-convolutions) leaves no lattice at its total stride (8) on a flat image;
    the transposed-convolution U-Net, trained the same way, does (the control: the measure can see it)."""
    resize = [periodic_peak_ratio(_trained_flat_map("resize", s), 8) for s in range(3)]
    deconv = [periodic_peak_ratio(_trained_flat_map("deconv", s), 8) for s in range(3)]
    assert max(resize) < 5, resize
    assert max(deconv) > 20, deconv


def test_space_to_depth_generator_map_has_no_peak_at_its_periods():
    """With the space-to-depth stem (factor 2) the U-Net's total stride is 16 and the stem's own period 2; resizing
    the features back up (no pixel shuffle) leaves no lattice at either on a flat image."""
    maps = [_trained_flat_map("resize", s, space_to_depth=2) for s in range(3)]
    ratios = [periodic_peak_ratio(m, p) for m in maps for p in (2, 16)]
    assert max(ratios) < 5, ratios


def test_the_command_measures_a_trained_bundle(tiny_data, tiny_bundle, tmp_path):
    """``python -m scripts.spectrum`` (the docs' command) on the tiny trained bundle: one JSON line of finite peaks."""
    import json
    import subprocess
    import sys as _sys

    from conftest import ROOT, bundle_env, tiny_overrides

    cmd = [_sys.executable, "-m", "scripts.spectrum", "--images", "4", *tiny_overrides(tiny_data, tmp_path),
           "--datalist", str(tiny_data / "datalist.json"), "--ckpt_dir", str(tiny_bundle / "models")]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["images"] == 4 and out["split"] == "validation" and out["period"] == 8
    assert 0 < out["maps"] < 1e6 and 0 < out["flat"] < 1e6
