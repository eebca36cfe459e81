"""The sanity checks of Adebayo et al. 2018 (scripts/sanity.py): the rank correlation, the cascade randomisation,
the permuted labels and one tiny run of the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.errors import BundleInputError  # noqa: E402
from scripts.sanity import (  # noqa: E402
    RankCorrelationMetric,
    cascade_blocks,
    cascade_point,
    compare_maps,
    compute_rank_correlation,
    image_prior,
    main,
    permuted_datalist,
    randomised_state,
)


def _maps(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[:, None, None, :]  # (B, 1, 1, N)


def test_rank_correlation_golden():
    a = _maps([1, 2, 3, 4, 5, 6])
    assert compute_rank_correlation(a, a).tolist() == pytest.approx([1.0])
    assert compute_rank_correlation(a, _maps([6, 5, 4, 3, 2, 1])).tolist() == pytest.approx([-1.0])
    assert compute_rank_correlation(a, -a).tolist() == pytest.approx([1.0])  # absolute values (Adebayo et al.)
    assert compute_rank_correlation(a, 10 * a**3).tolist() == pytest.approx([1.0])  # ranks only
    # ties share their average rank: ranks [1.5, 1.5, 3, 4] against [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    tied = compute_rank_correlation(_maps([1, 1, 2, 3]), _maps([1, 2, 3, 4]))
    assert tied.tolist() == pytest.approx([4.5 / math.sqrt(22.5)])
    # a constant map has no ranking: 0, never NaN, also against another constant map
    flat = compute_rank_correlation(_maps([2, 2, 2, 2], [0, 0, 0, 0]), _maps([1, 2, 3, 4], [0, 0, 0, 0]))
    assert flat.tolist() == [0.0, 0.0]
    # a non-finite value: NaN for that image only
    bad = compute_rank_correlation(_maps([1, float("nan"), 3, 4], [1, 2, 3, 4]), _maps([1, 2, 3, 4], [1, 2, 3, 4]))
    assert math.isnan(bad[0]) and bad[1] == pytest.approx(1.0)
    with pytest.raises(BundleInputError, match="shape"):
        compute_rank_correlation(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))


def test_rank_correlation_matches_scipy_and_the_metric_averages_images():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 1, 16, 16), generator=gen).float()  # many ties
    b = a + torch.randint(0, 3, (3, 1, 16, 16), generator=gen).float()
    ours = compute_rank_correlation(a, b)
    ref = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(3)]
    assert ours.tolist() == pytest.approx(ref, abs=1e-12)
    metric = RankCorrelationMetric()
    metric(y_pred=a[:2], y=b[:2])
    metric(y_pred=a[2:], y=b[2:])
    assert metric.aggregate().item() == pytest.approx(sum(ref) / 3, abs=1e-6)  # the buffer is averaged in float32
    same = compare_maps(a, a)
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0, abs=1e-4)


def _tiny_densenet(seed: int):
    from monai.networks.nets import DenseNet121

    torch.manual_seed(seed)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                       block_config=(2, 2))


def test_cascade_randomises_exactly_the_blocks_from_the_top():
    from monai.networks.nets import DenseNet121

    default = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=16, growth_rate=8)
    assert cascade_blocks(default) == ["class_layers", "features.norm5", "features.denseblock4",
                                       "features.transition3", "features.denseblock3", "features.transition2",
                                       "features.denseblock2", "features.transition1", "features.denseblock1",
                                       "features.norm0", "features.conv0"]
    trained, fresh = _tiny_densenet(0), _tiny_densenet(1)
    with torch.no_grad():  # "trained": every entry moved away from any initialisation
        for t in trained.state_dict().values():
            t.add_(1)
    before, new = trained.state_dict(), fresh.state_dict()
    blocks = cascade_point(fresh, "denseblock2")
    assert blocks == ["class_layers", "features.norm5", "features.denseblock2"]
    state = randomised_state(trained, fresh, blocks)
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    expected = {k for k in state if k.split(".")[0] == "class_layers"
                or k.startswith(("features.norm5.", "features.denseblock2."))}
    assert changed == expected and expected
    assert all(torch.equal(state[k], new[k]) for k in expected)
    full = randomised_state(trained, fresh, None)
    assert all(torch.equal(full[k], new[k]) for k in new)
    assert cascade_point(fresh, "full") == cascade_blocks(fresh)
    with pytest.raises(BundleInputError, match="cascade point"):
        cascade_point(fresh, "denseblock9")


def test_the_new_initialisation_is_not_the_trained_classifiers_first_draw(tmp_path):
    """The classifier stage builds its network right after ``set_determinism(seed)``: a re-initialisation drawn with
    the same seed would give back the trained weights' starting point (and leave a layer that training moved little
    nearly as it was). The study's draw is another one, and repeatable."""
    from scripts.pipeline import stage_config
    from scripts.sanity import _fresh_classifier

    torch.manual_seed(0)
    first = stage_config("classifier", []).get_parsed_content("classifier_def", lazy=False).state_dict()
    drawn = _fresh_classifier([], tmp_path, 0).state_dict()
    again = _fresh_classifier([], tmp_path, 0).state_dict()
    key = "class_layers.out.weight"
    assert not torch.equal(first[key], drawn[key]) and torch.equal(drawn[key], again[key])


def test_image_prior_golden():
    x = torch.tensor([0.0, 0.5, 1.0, 0.1])[None, None, None]
    assert image_prior(x).flatten().tolist() == pytest.approx([0.0, 0.25, 0.0, 0.09])


def test_permuted_labels_are_a_seeded_permutation_of_each_split():
    data = {"training": [{"image": f"t{i}.png", "label": i % 2} for i in range(20)],
            "validation": [{"image": f"v{i}.png", "label": int(i < 3)} for i in range(8)],
            "test": [{"image": f"x{i}.png", "label": 1} for i in range(4)]}
    out = permuted_datalist(data, seed=0)
    assert out == permuted_datalist(data, seed=0) and out != permuted_datalist(data, seed=1)
    for split in ("training", "validation"):
        assert [e["image"] for e in out[split]] == [e["image"] for e in data[split]]
        assert sorted(e["label"] for e in out[split]) == sorted(e["label"] for e in data[split])
    assert [e["label"] for e in out["training"]] != [e["label"] for e in data["training"]]
    assert out["test"] == data["test"] and data["training"][1]["label"] == 1  # the input is not changed


@pytest.mark.parametrize("args", [["--images", "0"], ["--images", "x"], ["--explainer_epochs", "-1"],
                                  ["--variants", "full,full"], ["--max_epochs", "3"]])
def test_bad_arguments_are_one_line(tmp_path, args):
    with pytest.raises(BundleInputError):
        main(["--run_dir", str(tmp_path), "--output_dir", str(tmp_path / "s"), *args])


def test_missing_run_or_checkpoint(tmp_path):
    with pytest.raises(BundleInputError, match="run_dir"):
        main(["--run_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "s")])
    with pytest.raises(BundleInputError, match="classifier checkpoint not found"):
        main(["--run_dir", str(tmp_path), "--output_dir", str(tmp_path / "s")])


def test_the_command_on_a_tiny_bundle(tiny_data, tiny_bundle, tmp_path):
    """``python -m scripts.sanity`` (the docs' command) after full randomisation, with the budget reference: every
    stage a real ``python -m monai.bundle run``; the retrained explainer records the randomised classifier."""
    from conftest import ROOT, bundle_env, tiny_overrides

    from scripts.checkpoint import CLASSIFIER_FINGERPRINT_KEY, state_fingerprint
    from scripts.classifier import load_classifier
    from scripts.pipeline import stage_config

    overrides = tiny_overrides(tiny_data, tmp_path)
    for key in ("--output_dir", "--ckpt_dir", "--max_epochs"):
        i = overrides.index(key)
        del overrides[i : i + 2]
    out = tmp_path / "sanity"
    cmd = [sys.executable, "-m", "scripts.sanity", "--run_dir", str(tiny_bundle), "--output_dir", str(out),
           "--images", "4", "--bbmp_images", "2", "--explainer_epochs", "1", "--variants", "full", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "sanity.json").read_text())
    rows = payload["results"]["full"]
    assert set(rows) == {"Gradient|plain", "Gradient|tta", "GradCAM|plain", "GradCAM|tta", "BBMP|plain",
                         "Mask Generator|plain", "Mask Generator|tta", "Naive|plain", "Naive|tta", "Ours|plain",
                         "Ours|tta"}
    assert all(-1 <= r["spearman"] <= 1 and -1 <= r["ssim"] <= 1 for r in rows.values())
    assert rows["BBMP|plain"]["images"] == 2 and rows["Ours|plain"]["images"] == 4
    # the budget reference at the original run's own budget (1 epoch, same seed) reproduces its maps: retraining is
    # deterministic, so what moves the variants' scores is their classifier
    budget = payload["references"]["budget"]
    assert set(budget) == {"plain", "tta"} and budget["plain"]["spearman"] == pytest.approx(1.0)
    assert set(payload["references"]["image_prior"]) == {"original", "variants"}
    assert abs(payload["references"]["random"]["spearman"]) < 0.1
    assert payload["variants"][0]["randomised"] == "every layer"
    assert {"original: maps", "full: explainer", "budget: explainer"} <= set(payload["steps_s"])
    text = (out / "sanity.md").read_text()
    assert "| Ours + aug |" in text and "full randomisation: ρ" in text and "budget reference" in text and "image prior" in text
    assert (out / "sanity.png").stat().st_size > 0
    clf = torch.load(out / "cascade_full" / "models" / "classifier.pt", weights_only=True)
    original = torch.load(tiny_bundle / "models" / "classifier.pt", weights_only=True)
    assert set(clf) == {"network"} and set(clf["network"]) == set(original["network"])
    assert not torch.equal(clf["network"]["class_layers.out.weight"], original["network"]["class_layers.out.weight"])
    fingerprints = {}
    for name, path in (("variant", out / "cascade_full"), ("original", tiny_bundle)):
        net = stage_config("evaluate", overrides).get_parsed_content("classifier_def", lazy=False)
        fingerprints[name] = state_fingerprint(load_classifier(path / "models" / "classifier.pt", net))
    for folder, name in (("cascade_full", "variant"), ("budget", "original")):
        explainer = torch.load(out / folder / "models" / "explainer.pt", weights_only=True)
        assert explainer[CLASSIFIER_FINGERPRINT_KEY] == fingerprints[name]
    # run again, the maps in the other space: a read-out override leaves the recipe the same, nothing is trained again
    again = subprocess.run([*cmd, "--generator_map_space", "image"], cwd=ROOT, env=bundle_env(), capture_output=True,
                           text=True, timeout=600)
    log = again.stdout[-2000:] + again.stderr[-2000:]
    assert again.returncode == 0 and "checkpoints are kept" in again.stdout and "=== stage" not in again.stdout, log

