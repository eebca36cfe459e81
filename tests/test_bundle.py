"""Whole-bundle behaviour: metadata, MONAI's workflow checks, and every stage run through ``python -m monai.bundle``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_SIZE, bundle_env, run_bundle, tiny_overrides

# Required by MONAI's Bundle Specification (mb_specification.rst) and the model-zoo schema (meta_schema_20240725).
REQUIRED_META = (
    "schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
    "optional_packages_version", "task", "description", "authors", "copyright", "network_data_format",
)
REQUIRED_TENSOR = (
    "type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def",
)


def test_metadata_has_the_specification_fields():
    meta = json.loads((ROOT / "metadata.json").read_text())
    for key in REQUIRED_META:
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    for direction in ("inputs", "outputs"):
        for name, spec in meta["network_data_format"][direction].items():
            for key in REQUIRED_TENSOR:
                assert key in spec, f"{direction}.{name}.{key}"
    assert "image" in meta["network_data_format"]["inputs"] and "pred" in meta["network_data_format"]["outputs"]
    # MONAI's default lookup (configs/metadata.json) finds the same file
    assert json.loads((ROOT / "configs" / "metadata.json").read_text()) == meta


@pytest.mark.parametrize(
    "configs", [["configs/common.json", "configs/train_classifier.json"], ["configs/train.json"]], ids=["classifier", "explainer"]
)
def test_train_configs_pass_monai_property_check(configs, tiny_data, tiny_bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(ROOT / c) for c in configs], meta_file=str(ROOT / "metadata.json"),
        logging_file=str(ROOT / "configs/logging.conf"), workflow_type="train",
        bundle_root=str(ROOT), dataset_dir=str(tiny_data), output_dir=str(tmp_path),
        ckpt_dir=str(tmp_path / "models"), classifier_path=str(tiny_bundle / "models" / "classifier.pt"),
        image_size=[TINY_SIZE, TINY_SIZE], num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    assert workflow.max_epochs >= 1 and workflow.trainer is not None and workflow.train_dataset is not None


def test_pipeline_trains_every_stage_and_writes_the_report(tiny_bundle):
    models = tiny_bundle / "models"
    for name in ("classifier.pt", "explainer.pt", "explainer_naive.pt", "mask_generator.pt"):
        assert (models / name).is_file(), name
    metrics = json.loads((tiny_bundle / "classifier_metrics.json").read_text())
    assert "val_auc" in metrics["history"][0]
    explainer = json.loads((tiny_bundle / "explainer_single_w_tv_metrics.json").read_text())["history"][-1]
    for key in ("val_auc_os", "val_auc_oa", "val_ssim_x_xs", "val_psnr_xs_xa", "val_iou90"):
        assert key in explainer, key
    assert list((tiny_bundle / "grids" / "explainer_single_w_tv").glob("epoch_*.png"))
    stop = json.loads((tiny_bundle / "explainer_single_w_tv_stop.json").read_text())  # the stopping rule's outcome
    assert stop["epochs"] == stop["max_epochs"] == 1 and stop["targets"] == {"val_auc_oa": 0.95, "val_auc_os": 0.98}
    assert stop["stopped"] in ("targets", "budget") and stop["targets_met"] == (stop["stopped"] == "targets")
    report = json.loads((tiny_bundle / "localization.json").read_text())
    names = list(report["methods"])
    for row in ("Gradient", "GradCAM", "BBMP", "Mask Generator", "Naive", "Ours", "Random (reference)", "Mask (ceiling)"):
        assert row in names, row
    for row in ("Gradient", "GradCAM", "Mask Generator", "Naive", "Ours"):
        assert report["methods"][row]["tta"] is not None, row
    ceiling = report["methods"]["Mask (ceiling)"]["plain"]
    for row in names:
        for kind in ("plain", "tta"):
            result = report["methods"][row][kind]
            if result and result["iou"]["90"] is not None:
                assert result["iou"]["90"] <= ceiling["iou"]["90"] + 1e-6, row
    md = (tiny_bundle / "localization.md").read_text()
    assert "| Ours |" in md and "0.248 / 0.292" in md  # ours measured, the paper's row for reference
    for png in ("iou_vs_percentile.png", "pr_curves.png", "picture_grid.png"):
        assert (tiny_bundle / png).stat().st_size > 1000, png
    inference = tiny_bundle / "inference"
    assert (inference / "predictions.csv").is_file()
    assert list(inference.glob("*_explanation.nii.gz")) and list(inference.glob("*_overlay.png"))


def test_benchmark_reports_faithfulness_on_the_road_subset(tiny_data, tiny_bundle, tmp_path):
    """evaluate.json scores pointing game, relevance mass / rank on every image and ROAD on the first road_images."""
    over = tiny_overrides(tiny_data, tmp_path)
    over[over.index("--ckpt_dir") + 1] = str(tiny_bundle / "models")
    run_bundle("evaluating", "configs/evaluate.json", *over, "--road_images", "2")
    report = json.loads((tmp_path / "localization.json").read_text())
    assert report["num_images"] > 2 and report["road"]["images"] == 2
    for name, row in report["methods"].items():
        for kind in ("plain", "tta"):
            r = row[kind]
            if not r:
                continue
            for key in ("pointing_game", "relevance_mass", "relevance_rank"):
                assert 0.0 <= r[key] <= 1.0, (name, kind, key)
            road = r["road"]
            assert road["images"] == 2, (name, kind)  # the subset, not the whole test set
            assert len(road["morf"]) == len(road["lerf"]) == 9
            assert all(0.0 <= v <= 1.0 for v in road["morf"] + road["lerf"] + [road["auc_morf"], road["auc_lerf"]])
            assert road["gap"] == pytest.approx((road["auc_lerf"] - road["auc_morf"]) / 2, abs=1e-6)
    ceiling = report["methods"]["Mask (ceiling)"]["plain"]
    assert ceiling["pointing_game"] == 1.0 and ceiling["relevance_rank"] > 0.99
    md = (tmp_path / "localization.md").read_text()
    assert "Table 3 — Faithfulness" in md and "ROAD on the first 2 test images" in md
    assert (tmp_path / "road_curves.png").stat().st_size > 1000


def test_explainer_duo_variant_and_resume(tiny_data, tiny_bundle, tmp_path):
    """A Duo variant trains from the same classifier; a second run with more epochs resumes from the first."""
    over = tiny_overrides(tiny_data, tmp_path) + ["--classifier_path", str(tiny_bundle / "models" / "classifier.pt")]
    config = "['configs/train.json','configs/variants/duo_w_tv.json']"
    run_bundle("training", config, *over)
    ckpt = tmp_path / "models" / "explainer_duo_w_tv.pt"
    last = tmp_path / "checkpoints" / "explainer_duo_w_tv_last.pt"
    assert ckpt.is_file() and last.is_file()
    state = torch.load(last, weights_only=True)
    assert state["trainer"]["iteration"] == 3  # 24 images / batch 8, one epoch
    more = [("2" if prev == "--max_epochs" else a) for prev, a in zip([""] + over, over)]
    log = run_bundle("training", config, *more)
    text = log.stdout + log.stderr
    assert "Epoch: 2/2" in text and "Epoch: 1/2" not in text  # only the second epoch ran
    assert torch.load(last, weights_only=True)["trainer"]["iteration"] == 6
    generator = torch.load(ckpt, weights_only=True)["generator"]
    assert any(k.startswith("g_s.") for k in generator) and any(k.startswith("g_a.") for k in generator)


@pytest.mark.parametrize(
    ("device", "bf16_on_cpu", "amp", "expected"),
    [
        ("cpu", True, False, (True, {"dtype": "bfloat16"})),  # the default on a CPU: bf16 autocast
        ("cpu", False, False, (False, None)),  # --bf16_on_cpu false: float32 (no autocast, kwargs unused)
        ("cuda", True, True, (True, {})),  # CUDA: the bundle's amp (float16), as before
        ("cuda", True, False, (False, None)),
    ],
)
def test_explainer_trainer_precision_follows_the_config(device, bf16_on_cpu, amp, expected):
    """configs/train.json gives the explainer trainer bf16 autocast on a CPU unless told otherwise, and leaves CUDA
    to the bundle's ``amp``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/train.json"))
    parser.update({"bundle_root": str(ROOT), "device": f"$torch.device('{device}')", "amp": amp,
                   "bf16_on_cpu": bf16_on_cpu})
    got = (parser.get_parsed_content("trainer_amp"), parser.get_parsed_content("trainer_amp_kwargs"))
    assert bool(got[0]) == expected[0]
    if expected[1] is not None:
        assert got[1] == expected[1]
    assert parser.config["train"]["trainer"]["amp"] == "@trainer_amp"
    assert parser.config["train"]["trainer"]["amp_kwargs"] == "@trainer_amp_kwargs"


def test_users_own_torchscript_classifier_plugs_in(tiny_data, tmp_path):
    """A 3-class TorchScript classifier with its own input size (MONAI metadata) trains the explainer."""
    from monai.bundle import ConfigParser
    from monai.data import save_net_with_metadata
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(2, 2, 2, 2))
    meta = {"network_data_format": {"inputs": {"image": {"spatial_shape": [48, 48]}}}}
    save_net_with_metadata(torch.jit.script(net.eval()), str(tmp_path / "user_classifier"), meta_values=meta)
    ts = tmp_path / "user_classifier.ts"
    over = tiny_overrides(tiny_data, tmp_path / "out") + ["--classifier_path", str(ts)]
    run_bundle("training", "configs/train.json", *over)
    assert (tmp_path / "out" / "models" / "explainer.pt").is_file()
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/train.json"))
    parser.update({"bundle_root": str(ROOT), "classifier_path": str(ts), "device": "$torch.device('cpu')"})
    assert parser.get_parsed_content("input_size") == [48, 48]
    assert parser.get_parsed_content("explained_num_classes") == 3


def test_inference_verify_and_export_match_the_bundle(tiny_data, tiny_bundle, tmp_path):
    """MONAI's bundle checks: verify_net_in_out, and ckpt_export gives the same maps as the bundle's network."""
    from monai.bundle import ConfigParser

    env = bundle_env()
    over = ["--dataset_dir", str(tiny_data), "--output_dir", str(tiny_bundle), "--ckpt_dir", str(tiny_bundle / "models")]
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--config_file", "configs/inference.json",
         "--meta_file", "configs/metadata.json", *over], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ts = tmp_path / "explainer.ts"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
         "--ckpt_file", str(tiny_bundle / "models" / "explainer.pt"), "--key_in_ckpt", "generator",
         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", *over],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = torch.jit.load(str(ts))
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/inference.json"))
    parser.update({"bundle_root": str(ROOT), "dataset_dir": str(tiny_data), "output_dir": str(tiny_bundle),
                   "ckpt_dir": str(tiny_bundle / "models"), "image_size": [TINY_SIZE, TINY_SIZE], "device": "$torch.device('cpu')"})
    explainer = parser.get_parsed_content("explainer")
    x = torch.rand(3, 1, TINY_SIZE, TINY_SIZE)
    expected = explainer(x)
    with torch.no_grad():
        got = exported(x)
    assert got.shape == (3, 1, TINY_SIZE, TINY_SIZE)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
