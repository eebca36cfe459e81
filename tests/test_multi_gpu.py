"""DDP overlays (configs/multi_gpu_train*.json) under ``torchrun --nproc_per_node=2`` with gloo on CPU, tiny data.

Checks what the overlays promise (docs/multi_gpu.md): the ranks train on disjoint halves of the training set,
validation metrics are gathered over every rank's shard, only rank 0 logs and writes, the generator's wrapper does not
hide its attributes from the loss (``L_{s,a}`` is there), and the checkpoints load in the single-process configs.
The evaluate overlay (configs/multi_gpu_evaluate.json) shards the test set: one report, written by rank 0, with the
one-process run's scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT, TINY_SIZE, bundle_env, run_bundle

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

EXPLAINER = "['configs/train.json','configs/multi_gpu_train.json'{extra}]"
CLASSIFIER = "['configs/common.json','configs/train_classifier.json','configs/multi_gpu_train_classifier.json']"
EVALUATE = "['configs/evaluate.json','configs/multi_gpu_evaluate.json']"

#: test-only overlay: keep each training item's file path through the (cached) transforms, and make every rank
#: append the paths of the batches it trained on to ``<output_dir>/rank<r>_seen.txt``.
SEEN_OVERLAY = {
    "train#preprocessing": {
        "_target_": "Compose",
        "transforms": "$[monai.transforms.CopyItemsd(keys='image', names='image_path')] + @load_transforms",
    },
    "training": [
        "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, "
        "lambda e, f=@output_dir + '/rank%d_seen.txt' % torch.distributed.get_rank(): "
        "open(f, 'a').write(''.join(p + chr(10) for p in e.state.batch['image_path'])))",
        "$@train#trainer.run()",
    ],
}


class _MedianSplit(nn.Module):
    """Stub classifier: class 1 iff the image's mean intensity is above the batch median.

    Differentiable, and its decisions always hold both classes, so the validation ROC-AUCs (hence the key metric
    and the best checkpoint) are defined after one tiny epoch; a DenseNet trained that briefly predicts one class.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1)
        s = (s - s.median()) * 50.0
        return torch.stack([-s, s], dim=1)


def torchrun(config: str, *overrides: str, run_id: str = "training") -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 --standalone -m monai.bundle run <run_id> ...`` from the bundle root."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "monai.bundle", "run", run_id, "--config_file", config,
           "--logging_file", "configs/logging.conf", *overrides]
    env = dict(bundle_env(), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def small(data: Path, out: Path) -> list[str]:
    return ["--dataset_dir", str(data), "--output_dir", str(out), "--ckpt_dir", str(out / "models"),
            "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0", "--max_epochs", "1", "--batch_size", "8"]


def test_explainer_ddp_shards_gathers_and_checkpoint_loads(tiny_data, tmp_path):
    from monai.bundle import ConfigParser
    from monai.metrics import PSNRMetric

    classifier = tmp_path / "median_split.ts"
    torch.jit.script(_MedianSplit()).save(str(classifier))
    seen = tmp_path / "seen.json"
    seen.write_text(json.dumps(SEEN_OVERLAY))
    out = tmp_path / "out"
    proc = torchrun(EXPLAINER.format(extra=f",'{seen}'"), *small(tiny_data, out), "--classifier_path", str(classifier))
    log = proc.stdout + proc.stderr

    # each rank trained on its own half of the training set (24 images, batch 8: 12 per rank), nothing shared
    ranks = [(out / f"rank{r}_seen.txt").read_text().split() for r in (0, 1)]
    training = {Path(e["image"]).name for e in json.loads((tiny_data / "datalist.json").read_text())["training"]}
    assert [len(r) for r in ranks] == [12, 12]
    assert not set(ranks[0]) & set(ranks[1])
    assert {Path(p).name for p in ranks[0] + ranks[1]} == training

    # loggers on rank 0 only; L_{s,a} computed through the DDP wrapper (the loss sees the unwrapped generator)
    assert log.count("Iter: 1/2 -- loss") == 1
    assert "loss_sa" in log

    # rank 0 wrote the metrics; the checkpoint holds plain (unwrapped) keys and loads in the single-process config
    record = json.loads((out / "explainer_single_w_tv_metrics.json").read_text())["history"]
    assert len(record) == 1
    state = torch.load(out / "models" / "explainer.pt", map_location="cpu", weights_only=True)["generator"]
    assert not any(k.startswith("module.") for k in state)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/inference.json"))
    parser.update({"bundle_root": str(ROOT), "ckpt_dir": str(out / "models"), "device": "$torch.device('cpu')",
                   "classifier_path": str(classifier)})  # the generator is checked against its classifier
    generator = parser.get_parsed_content("generator")

    # the validation PSNR is the mean over all 8 validation images (gathered from both ranks), not one shard's mean
    train = ConfigParser()
    train.read_config(str(ROOT / "configs/train.json"))
    train.update({"bundle_root": str(ROOT), "dataset_dir": str(tiny_data), "classifier_path": str(classifier),
                  "image_size": [TINY_SIZE, TINY_SIZE], "num_workers": 0, "device": "$torch.device('cpu')"})
    x = torch.stack([item["image"] for item in train.get_parsed_content("validate#dataset")])
    assert x.shape == (8, 1, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        x_s, _ = generator(x)
    psnr = PSNRMetric(max_val=1.0)(x_s, x).flatten()
    full, shards = psnr.mean().item(), [psnr[r::2].mean().item() for r in (0, 1)]  # MONAI sampler: rank r gets r::2
    assert record[0]["val_psnr_x_xs"] == pytest.approx(full, rel=1e-4)
    assert all(abs(s - full) > 1e-3 for s in shards)  # the check can tell a gathered mean from a shard's


def test_classifier_ddp_overlay_trains_and_checkpoint_loads(tiny_data, tmp_path):
    from monai.bundle import ConfigParser

    from scripts.classifier import load_classifier

    out = tmp_path / "out"
    proc = torchrun(CLASSIFIER, *small(tiny_data, out))
    assert (proc.stdout + proc.stderr).count("Iter: 1/2 -- train_loss") == 1  # 24 images / 2 ranks / batch 8
    history = json.loads((out / "classifier_metrics.json").read_text())["history"]
    assert len(history) == 1 and 0.0 <= history[0]["val_auc"] <= 1.0
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs/common.json"))
    net = load_classifier(out / "models" / "classifier.pt", parser.get_parsed_content("classifier_def"))
    assert net(torch.rand(2, 1, TINY_SIZE, TINY_SIZE)).shape == (2, 2)


def _close(a, b, path: str = "", tol: float = 1e-6) -> None:
    """``a == b`` for nested dicts/lists of floats, within ``tol`` (NaN equals NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}", tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, float) and isinstance(b, float), path
        assert a == pytest.approx(b, abs=tol, nan_ok=True), path
    else:
        assert a == b, path


def test_evaluate_ddp_shards_the_test_set_and_matches_one_process(tiny_data, tiny_bundle, tmp_path):
    """configs/multi_gpu_evaluate.json: each rank scores half the test images, the scores are the one-process ones.

    Both runs use batches of one image: with larger batches a rank's batches hold other images than the one-process
    run's, and maps then differ by float rounding (a conv's result depends a little on the batch size; GradCAM's tied
    pixels and BBMP's sign-like first Adam steps amplify it, in one process too), which would hide what this test
    checks: the sharding and the gathering. With one image per batch every map is the same, so every score (IoU table,
    0-100 IoU curve, AUCs, pooled AP, PR curves) of every method, plain and TTA, and of the random row (its map is
    seeded per call) must match within 1e-6. Looser (5e-3): the mask ceiling, whose tie-breaking noise is seeded by
    the iteration number (another image on a rank), which moves a threshold by a pixel at most through float rounding.
    Not compared: seconds per image (each rank times its own images; the report gives rank 0's).
    """
    def overrides(out: Path) -> list[str]:
        return ["--dataset_dir", str(tiny_data), "--output_dir", str(out), "--ckpt_dir", str(tiny_bundle / "models"),
                "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0",
                "--bbmp_iterations", "3", "--tta_augmentations", "2", "--benchmark#timing_images", "2",
                "--timing_seconds", "0", "--test#dataloader#batch_size", "1"]

    one = run_bundle("evaluating", "configs/evaluate.json", *overrides(tmp_path / "one"))
    assert one.stdout.count("\nlocalization report:") == 1  # the print (the log line has a prefix)
    proc = torchrun(EVALUATE, *overrides(tmp_path / "ddp"), run_id="evaluating")
    log = proc.stdout + proc.stderr

    # rank 0 alone wrote the report (and printed where), over the whole test set
    assert log.count("\nlocalization report:") == 1
    ddp = json.loads((tmp_path / "ddp" / "localization.json").read_text())
    ref = json.loads((tmp_path / "one" / "localization.json").read_text())
    assert ddp["num_processes"] == 2 and "num_processes" not in ref
    assert ddp["num_images"] == ref["num_images"] >= 2
    assert "rank 0 of 2 processes" in (tmp_path / "ddp" / "localization.md").read_text()
    for png in ("iou_vs_percentile.png", "pr_curves.png", "picture_grid.png"):
        assert (tmp_path / "ddp" / png).is_file(), png

    assert list(ddp["methods"]) == list(ref["methods"])
    for name, row in ref["methods"].items():
        for kind, scores in row.items():
            other = ddp["methods"][name][kind]
            if scores is None:
                assert other is None, (name, kind)
                continue
            seconds = other.pop("seconds_per_image")
            assert (seconds is None) == (scores.pop("seconds_per_image") is None), (name, kind)
            tol = 5e-3 if name == "Mask (ceiling)" else 1e-6
            # ROAD: each rank seeds its own imputation noise, so an image gets another noise draw than in one process
            _close(other.pop("road"), scores.pop("road"), f"{name}/{kind}/road", 1e-3)
            _close(other, scores, f"{name}/{kind}", tol)
