"""The classifier's random view of the generated images during training (scripts/perturb.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.errors import BundleInputError  # noqa: E402
from scripts.perturb import RandomView  # noqa: E402


def test_random_view_shifts_by_at_most_max_shift_and_is_identity_in_eval():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # a point: after a bilinear shift its centre of mass moves by the shift
    view = RandomView(max_shift=1.5, noise_std=0.0)
    y = view(x)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    mass = y.sum(dim=(1, 2, 3))
    cy = (y[:, 0] * yy).sum(dim=(1, 2)) / mass
    cx = (y[:, 0] * xx).sum(dim=(1, 2)) / mass
    assert torch.allclose(mass, torch.ones(64), atol=1e-5)  # far from the border: nothing lost
    assert (cy - 8).abs().max() <= 1.5 + 1e-4 and (cx - 8).abs().max() <= 1.5 + 1e-4
    assert (cy - 8).abs().max() > 0.5  # per-sample shifts, not all zero
    assert len({round(v, 3) for v in cx.tolist()}) > 32
    view.eval()
    assert view(x) is x


def test_random_view_noise_and_3d():
    torch.manual_seed(0)
    x = torch.full((4, 1, 8, 8, 8), 0.5)
    y = RandomView(max_shift=1.0, noise_std=0.1)(x)
    assert y.shape == x.shape
    assert (y - 0.5).std().item() == pytest.approx(0.1, rel=0.1)  # a constant image is shift-invariant


@pytest.mark.parametrize("kwargs", [{"max_shift": -1}, {"noise_std": "a"}, {"max_shift": True}])
def test_random_view_rejects_bad_values(kwargs):
    with pytest.raises(BundleInputError, match="classifier_view"):
        RandomView(**kwargs)
