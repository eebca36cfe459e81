"""Bad input stops a bundle run with one clear line naming the file or field (exit status 1, with or without
DataLoader workers), and leaves earlier outputs byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY_SIZE, bundle_env, run_bundle
from test_readers import write_dicom

CLASSIFIER = "['configs/common.json','configs/train_classifier.json']"


def _png(path: Path, shape=(TINY_SIZE, TINY_SIZE), channels: int | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=shape + ((channels,) if channels else ()), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path.name


def _dataset(root: Path, bad: dict | None = None, split: str = "training") -> Path:
    """A valid 4+2+2 image dataset; ``bad`` replaces the first entry of ``split``."""
    entries = {}
    for s, n in (("training", 4), ("validation", 2), ("test", 2)):
        entries[s] = []
        for i in range(n):
            _png(root / "images" / f"{s}{i}.png")
            _png(root / "masks" / f"{s}{i}.png")
            entries[s].append({"image": f"images/{s}{i}.png", "label": i % 2, "mask": f"masks/{s}{i}.png"})
    if bad is not None:
        entries[split][0] = bad
    (root / "datalist.json").write_text(json.dumps(entries))
    return root


def _expect_clear_error(proc, *needles: str) -> None:
    """Exit status 1 (not a signal), one error message (a datalist's lists its entries on indented lines after it),
    no traceback; the message holds every needle."""
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err[-3000:])
    starts = [i for i, line in enumerate(err.splitlines()) if line.startswith("simadv_explainer: error:")]
    assert len(starts) == 1, err[-3000:]
    assert "Traceback" not in err + proc.stdout, err[-3000:]
    message = err[err.index("simadv_explainer: error:"):]
    for needle in needles:
        assert needle in message, (needle, message)


def _run_classifier(root: Path, out: Path, *extra: str, workers: int = 0, max_epochs: str = "1",
                    image_size: str = f"[{TINY_SIZE},{TINY_SIZE}]"):
    return run_bundle(
        "training", CLASSIFIER, "--dataset_dir", str(root), "--output_dir", str(out), "--ckpt_dir", str(out / "models"),
        "--image_size", image_size, "--num_workers", str(workers), "--max_epochs", max_epochs, *extra, check=False,
    )


def _tree_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (empty when it does not exist)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_outputs(out: Path) -> dict[str, str]:
    """Outputs of an earlier run in ``out`` (a best checkpoint, a resume state, a metrics file); their hashes."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "models" / "classifier.pt").write_bytes(b"an earlier checkpoint")
    (out / "checkpoints" / "other_last.pt").write_bytes(b"an earlier resume state")
    (out / "classifier_metrics.json").write_text('{"history": [], "best": null, "key_metric": "val_auc"}')
    return _tree_hashes(out)


def _nifti(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))


def _cases(root: Path) -> dict[str, tuple[dict | None, str, tuple[str, ...]]]:
    """name -> (bad entry or None, split, substrings the message must hold)."""
    garbage = root / "images" / "broken.dcm"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + b"not really a dicom file")
    write_dicom(root / "images" / "cine.dcm", np.zeros((3, TINY_SIZE, TINY_SIZE), np.uint16), frames=3)
    _png(root / "masks" / "small.png", shape=(TINY_SIZE // 2, TINY_SIZE))
    _png(root / "images" / "two_channel.png", shape=(TINY_SIZE, TINY_SIZE), channels=2)
    noisy = np.random.default_rng(0).random((TINY_SIZE, TINY_SIZE))
    _nifti(root / "images" / "nan.nii.gz", np.where(np.arange(noisy.size).reshape(noisy.shape) == 5, np.nan, noisy))
    _nifti(root / "images" / "inf.nii.gz", np.where(np.arange(noisy.size).reshape(noisy.shape) == 5, np.inf, noisy))
    _nifti(root / "images" / "constant.nii.gz", np.full((TINY_SIZE, TINY_SIZE), 7.0))
    _nifti(root / "images" / "volume.nii.gz", np.random.default_rng(1).random((16, 16, 8)))
    return {
        "missing_file": ({"image": "images/nope.png", "label": 0}, "training", ("nope.png",)),
        "unreadable_dicom": ({"image": "images/broken.dcm", "label": 0}, "training", ("broken.dcm",)),
        "multi_frame_dicom": ({"image": "images/cine.dcm", "label": 0}, "training", ("cine.dcm", "frame")),
        "mask_size_mismatch": (
            {"image": "images/training0.png", "label": 1, "mask": "masks/small.png"}, "training", ("small.png",)),
        "label_out_of_range": ({"image": "images/training0.png", "label": 5}, "training", ("label", "5")),
        "wrong_channels": ({"image": "images/two_channel.png", "label": 0}, "training", ("two_channel.png", "channels")),
        "nan_values": ({"image": "images/nan.nii.gz", "label": 0}, "training", ("nan.nii.gz", "NaN")),
        "inf_values": ({"image": "images/inf.nii.gz", "label": 1}, "validation", ("inf.nii.gz", "Inf")),
        "constant_image": ({"image": "images/constant.nii.gz", "label": 0}, "training", ("constant.nii.gz", "constant")),
        "volume_nifti": ({"image": "images/volume.nii.gz", "label": 0}, "training", ("volume.nii.gz", "3 spatial")),
    }


# The cases that ended in SIGABRT (exit 134) after the message with DataLoader workers run with workers (the
# default 2); the others without.
WITH_WORKERS = ("unreadable_dicom", "multi_frame_dicom", "mask_size_mismatch", "volume_nifti", "nan_values")


@pytest.mark.parametrize(
    "case", ["missing_file", "unreadable_dicom", "multi_frame_dicom", "mask_size_mismatch", "label_out_of_range",
             "wrong_channels", "nan_values", "inf_values", "constant_image", "volume_nifti"],
)
def test_bad_entry_is_named_and_outputs_survive(case, tmp_path):
    root = tmp_path / "data"
    bad, split, needles = _cases(root)[case]
    _dataset(root, bad, split)
    out = tmp_path / "out"
    before = _earlier_outputs(out)
    _expect_clear_error(_run_classifier(root, out, workers=2 if case in WITH_WORKERS else 0), *needles)
    after = _tree_hashes(out)
    assert {k: after.get(k) for k in before} == before


def test_empty_split_and_invalid_json(tmp_path):
    root = _dataset(tmp_path / "data")
    datalist = json.loads((root / "datalist.json").read_text())
    datalist["validation"] = []
    (root / "datalist.json").write_text(json.dumps(datalist))
    _expect_clear_error(_run_classifier(root, tmp_path / "out"), "validation", "empty")
    (root / "datalist.json").write_text('{"training": [ {"image": "a.png", } ]}')
    _expect_clear_error(_run_classifier(root, tmp_path / "out"), "datalist.json", "line 1")


def test_missing_classifier_checkpoint_says_how_to_train_one(tmp_path):
    root = _dataset(tmp_path / "data")
    proc = run_bundle(
        "training", "configs/train.json", "--dataset_dir", str(root), "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "models"), "--num_workers", "0", check=False,
    )
    _expect_clear_error(proc, "classifier.pt", "train_classifier.json")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_config_values_are_checked_before_anything_runs(tmp_path):
    """A value a stage cannot take is one line at that stage, and the pipeline refuses it before the classifier."""
    root = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    _expect_clear_error(_run_classifier(root, out, max_epochs="abc"), "max_epochs", "'abc'")
    _expect_clear_error(_run_classifier(root, out, image_size="[30,30]"), "image_size", "multiple of 8")
    _expect_clear_error(_run_classifier(root, out, "--generator_space_to_depth", "2", image_size="[24,24]"),
                        "image_size", "multiple of 16", "generator_space_to_depth 2")
    _expect_clear_error(_run_classifier(root, out, "--generator_space_to_depth", "0"), "generator_space_to_depth")
    assert not (out / "models" / "classifier.pt").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.pipeline", "--dataset_dir", str(root), "--output_dir", str(out),
         "--image_size", "[100,100]", "--max_epochs", "1", "--num_workers", "0"],
        cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=300,
    )
    _expect_clear_error(proc, "image_size", "[96, 96] or [104, 104]")
    assert "=== stage" not in proc.stdout  # refused before the first stage started
    assert not (out / "models").exists()


def test_inference_refuses_bad_files_in_one_line_and_reads_rgb(tiny_bundle, tmp_path):
    """At inference, with DataLoader workers: a broken DICOM and a 3D NIfTI (no mask) are one line each; an RGB
    PNG export is explained like a grey image."""
    models = tiny_bundle / "models"
    common = ["--ckpt_dir", str(models), "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "2"]
    bad_dicom = tmp_path / "bad_dicom"
    _png(bad_dicom / "a_good.png")
    (bad_dicom / "b_broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"not really a dicom file")
    volume = tmp_path / "volume"
    _nifti(volume / "volume.nii.gz", np.random.default_rng(1).random((16, 16, 8)))
    for folder, needles in ((bad_dicom, ("b_broken.dcm",)), (volume, ("volume.nii.gz", "3 spatial"))):
        out = tmp_path / f"out_{folder.name}"
        proc = run_bundle("run", "configs/inference.json", "--input_dir", str(folder), "--output_dir", str(out),
                          *common, check=False)
        _expect_clear_error(proc, *needles)
    rgb = tmp_path / "rgb"
    _png(rgb / "export.png", channels=3)
    out = tmp_path / "out_rgb"
    run_bundle("run", "configs/inference.json", "--input_dir", str(rgb), "--output_dir", str(out), *common)
    assert (out / "inference" / "export_explanation.nii.gz").is_file()
    assert "export.png" in (out / "inference" / "predictions.csv").read_text()


# Cross-entropy for the first 3 calls (epoch 1: 4 images in batches of 2; epoch 2's first iteration), then NaN.
NAN_LOSS_AFTER_3 = ("$lambda p, t, n=[]: (n.append(1) or torch.nn.functional.cross_entropy(p, t.view(-1).long())) "
                    "* (float('nan') if len(n) > 3 else 1.0)")


def test_nan_loss_stops_training_and_keeps_the_best_checkpoint(tmp_path):
    root = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    proc = _run_classifier(root, out, "--batch_size", "2", "--loss", NAN_LOSS_AFTER_3, max_epochs="2")
    _expect_clear_error(proc, "classifier training stopped", "nan", "epoch 2", "left as they were")
    best = torch.load(out / "models" / "classifier.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in best["network"].values() if t.is_floating_point())
    last = torch.load(out / "checkpoints" / "classifier_last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 2  # the resume state is epoch 1's (2 iterations), not the diverged one
    for name, t in last["network"].items():  # and the best is epoch 1's weights
        assert torch.equal(t, best["network"][name]), name
    metrics = json.loads((out / "classifier_metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1]

    # Resuming from it (a finite loss now) says where it resumes, after loading, and trains epoch 2.
    proc = _run_classifier(root, out, "--batch_size", "2", max_epochs="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    trainer_log = [line for line in log.splitlines() if "SupervisedTrainer" in line]
    assert not [line for line in trainer_log if "resuming from iteration 0, epoch 0" in line], trainer_log
    assert "classifier_last.pt: 1 of 2 epochs done (iteration 2); training continues at epoch 2" in log
    metrics = json.loads((out / "classifier_metrics.json").read_text(), parse_constant=pytest.fail)
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]


def _other_classifier(source: Path, path: Path) -> Path:
    """A copy of the classifier checkpoint ``source`` with one weight changed: another classifier."""
    state = torch.load(source, weights_only=True)
    name = next(k for k, v in state["network"].items() if v.is_floating_point())
    state["network"][name] = state["network"][name] + 1e-3
    torch.save(state, path)
    return path


def test_explaining_another_classifier_is_refused_naming_both_files(tiny_bundle, tmp_path):
    """The explainer's checkpoint records its classifier: inference and the benchmark with another classifier
    (one weight changed) stop with one line naming both files, unless --allow_other_classifier true."""

    models = tiny_bundle / "models"
    other = _other_classifier(models / "classifier.pt", tmp_path / "other_classifier.pt")
    images = tmp_path / "images"
    _png(images / "a.png")
    common = ["--ckpt_dir", str(models), "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0",
              "--input_dir", str(images), "--classifier_path", str(other)]
    out = tmp_path / "out"
    proc = run_bundle("run", "configs/inference.json", "--output_dir", str(out), *common, check=False)
    _expect_clear_error(proc, str(models / "explainer.pt"), str(other), "--allow_other_classifier true")
    assert not (out / "inference" / "predictions.csv").exists()
    run_bundle("run", "configs/inference.json", "--output_dir", str(out), *common, "--allow_other_classifier", "true")
    assert (out / "inference" / "predictions.csv").is_file()


def test_exporting_an_explainer_of_another_classifier_is_refused(tiny_bundle, tmp_path):
    """ckpt_export checks the checkpoint it exports (--ckpt_file) against --classifier_path: another classifier
    stops it with one line naming both files and writes no TorchScript, unless --allow_other_classifier true."""

    models = tiny_bundle / "models"
    other = _other_classifier(models / "classifier.pt", tmp_path / "other_classifier.pt")
    explainer = tmp_path / "elsewhere" / "explainer.pt"  # not the config's explainer_checkpoint: --ckpt_file is checked
    explainer.parent.mkdir()
    shutil.copy(models / "explainer.pt", explainer)
    ts = tmp_path / "explainer.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
           "--ckpt_file", str(explainer), "--key_in_ckpt", "generator", "--meta_file", "configs/metadata.json",
           "--config_file", "configs/inference.json", "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]"]
    proc = subprocess.run([*cmd, "--classifier_path", str(other)], cwd=ROOT, env=bundle_env(), capture_output=True,
                          text=True, timeout=300)
    _expect_clear_error(proc, str(explainer), str(other), "--allow_other_classifier true")
    assert not ts.exists()
    proc = subprocess.run([*cmd, "--classifier_path", str(models / "classifier.pt")], cwd=ROOT, env=bundle_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and ts.is_file(), proc.stderr[-3000:]
    ts.unlink()
    proc = subprocess.run([*cmd, "--classifier_path", str(other), "--allow_other_classifier", "true"], cwd=ROOT,
                          env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and ts.is_file(), proc.stderr[-3000:]
