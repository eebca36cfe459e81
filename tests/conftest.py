"""Shared fixtures: the repository on ``sys.path``, and one tiny trained bundle for the whole session.

``tiny_bundle`` runs the README's main command (``python -m scripts.pipeline``, every stage a real
``python -m monai.bundle run``) on tiny synthetic data (64², a few dozen images, one epoch), so the tests of the
later stages (evaluate, inference, export) read real checkpoints without training them again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

TINY_SIZE = 64


def bundle_env() -> dict[str, str]:
    """Environment for subprocesses: the bundle root importable (ahead of any PYTHONPATH already set, e.g. the
    wheels scripts/perf_gpu.sh installs into /tmp/site), quiet warnings."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")


def run_bundle(run_id: str, config: str, *overrides: str, check: bool = True, timeout: int = 600):
    """``python -m monai.bundle run <run_id> --config_file <config> <overrides>`` from the bundle root."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config,
           "--logging_file", "configs/logging.conf", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def tiny_overrides(data: Path, out: Path) -> list[str]:
    """Overrides that point every stage at tiny data and shrink it to seconds."""
    return [
        "--dataset_dir", str(data), "--output_dir", str(out), "--ckpt_dir", str(out / "models"),
        "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0", "--max_epochs", "1",
        "--batch_size", "8", "--bbmp_iterations", "3", "--tta_augmentations", "2", "--timing_seconds", "0",
    ]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from scripts.data.synthetic import make_synthetic_dataset

    folder = tmp_path_factory.mktemp("tiny_data")
    make_synthetic_dataset(folder, num_train=24, num_val=8, num_test=8, size=TINY_SIZE, seed=1)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tiny_data, tmp_path_factory) -> Path:
    """Output folder of a whole tiny pipeline run (models under ``<out>/models``)."""
    out = tmp_path_factory.mktemp("tiny_run")
    cmd = [sys.executable, "-m", "scripts.pipeline", *tiny_overrides(tiny_data, out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"tiny pipeline failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return out
