"""The mixed-regime cue-reliance study: its counterfactual data, its shares, and the command on a tiny bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from scripts.cue_reliance import cue_shares, token_share
from scripts.data.synthetic import SyntheticChestXray, make_synthetic_dataset


def test_token_share_golden():
    assert token_share(0.3, 0.1) == pytest.approx(0.75)
    assert token_share(-0.2, 0.4) == 0.0  # a cue whose removal raises p counts as unused
    assert token_share(0.0, 0.0) is None


def test_cue_shares_golden():
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 0, 0] = 3.0  # on the token
    maps[0, 0, 3, 3] = 1.0  # on the lesion
    maps[1] = 1.0  # constant: each cue gets its area
    token = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    token[:, :, 0, 0] = True
    lesion = torch.zeros_like(token)
    lesion[:, :, 2:, 2:] = True
    shares = cue_shares(maps, token, lesion)
    assert shares[0].tolist() == pytest.approx([0.75, 0.25])
    assert shares[1].tolist() == pytest.approx([1 / 16, 4 / 16])


@pytest.mark.parametrize("anatomy", ["cartoon", "realistic"])
def test_counterfactual_without_token_differs_only_on_the_token(anatomy):
    draw = SyntheticChestXray(size=64, regime="mixed", token_fraction=1.0, anatomy=anatomy)
    image, mask, info = draw.draw(np.random.default_rng([3, 7]), 1)
    no_token, _ = draw(np.random.default_rng([3, 7]), 1, token=False)
    no_lesion, _ = draw(np.random.default_rng([3, 7]), 1, lesions=False)
    assert info["token"] and info["token_mask"].any() and mask.any()
    changed = image != no_token
    assert changed.any() and not (changed & (info["token_mask"] == 0)).any()
    assert (image[mask > 0] != no_lesion[mask > 0]).mean() > 0.9  # the lesions are gone


def test_mixed_dataset_lists_counterfactuals_for_test_positives(tmp_path):
    path = make_synthetic_dataset(tmp_path, 4, 2, 8, size=32, regime="mixed", token_fraction=1.0)
    data = json.loads(path.read_text())
    assert not any("image_no_lesion" in e for e in data["training"] + data["validation"])
    for e in data["test"]:
        if e["label"] == 1:
            assert e["token"] and (tmp_path / e["image_no_token"]).is_file() and (tmp_path / e["token_mask"]).is_file()
            assert (tmp_path / e["image_no_lesion"]).is_file()
        else:
            assert "image_no_lesion" not in e and not e["token"]


def test_the_command_scores_every_method_on_a_tiny_bundle(tiny_bundle, tmp_path):
    """``python -m scripts.cue_reliance`` on tiny mixed data with the tiny bundle's checkpoints already in place: no
    stage retrains, every method plain and augmented gets finite shares, the report is written."""
    from conftest import ROOT, TINY_SIZE, bundle_env

    out = tmp_path / "mixed"
    make_synthetic_dataset(out / "data", 8, 4, 12, size=TINY_SIZE, regime="mixed", token_fraction=1.0)
    shutil.copytree(tiny_bundle / "models", out / "models")
    cmd = [sys.executable, "-m", "scripts.cue_reliance", "--output_dir", str(out), "--image_size",
           f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0", "--bbmp_iterations", "3", "--tta_augmentations", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "=== stage" not in proc.stdout  # every checkpoint was there: nothing retrained
    result = json.loads((out / "cue_reliance.json").read_text())
    assert result["images"] == 6
    assert {"Ours", "Gradient", "Random (reference)"} <= set(result["methods"])
    assert set(result["methods"]["Ours"]) == {"plain", "tta"} and set(result["methods"]["BBMP"]) == {"plain"}
    for modes in result["methods"].values():
        for row in modes.values():
            assert 0.0 <= row["mass_token"] <= 1.0 and 0.0 <= row["mass_lesion"] <= 1.0
    assert 0.0 <= result["reliance"]["p"] <= 1.0
    assert "| Ours + aug |" in (out / "cue_reliance.md").read_text()
    assert (out / "cue_reliance.png").stat().st_size > 1000


def test_bad_input_is_one_line(tmp_path):
    from conftest import ROOT, bundle_env

    for args, needle in ((["--token_fraction", "0"], "--token_fraction"), (["--dataset_dir", "x"], "--dataset_dir")):
        proc = subprocess.run([sys.executable, "-m", "scripts.cue_reliance", "--output_dir", str(tmp_path), *args],
                              cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
