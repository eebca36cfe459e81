"""Bad input stops a bundle run with one clear line naming the file or field, and leaves earlier outputs intact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_SIZE, run_bundle
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
    assert proc.returncode != 0
    err = proc.stderr
    assert "simadv_explainer: error:" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in err, (needle, err[-2000:])


def _run_classifier(root: Path, out: Path, *extra: str):
    return run_bundle(
        "training", CLASSIFIER, "--dataset_dir", str(root), "--output_dir", str(out), "--ckpt_dir", str(out / "models"),
        "--image_size", f"[{TINY_SIZE},{TINY_SIZE}]", "--num_workers", "0", "--max_epochs", "1", *extra, check=False,
    )


def _cases(root: Path) -> dict[str, tuple[dict | None, str, tuple[str, ...]]]:
    """name -> (bad entry or None, split, substrings the message must hold)."""
    garbage = root / "images" / "broken.dcm"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + b"not really a dicom file")
    write_dicom(root / "images" / "cine.dcm", np.zeros((3, TINY_SIZE, TINY_SIZE), np.uint16), frames=3)
    _png(root / "masks" / "small.png", shape=(TINY_SIZE // 2, TINY_SIZE))
    _png(root / "images" / "two_channel.png", shape=(TINY_SIZE, TINY_SIZE), channels=2)
    return {
        "missing_file": ({"image": "images/nope.png", "label": 0}, "training", ("nope.png",)),
        "unreadable_dicom": ({"image": "images/broken.dcm", "label": 0}, "training", ("broken.dcm",)),
        "multi_frame_dicom": ({"image": "images/cine.dcm", "label": 0}, "training", ("cine.dcm", "frame")),
        "mask_size_mismatch": (
            {"image": "images/training0.png", "label": 1, "mask": "masks/small.png"}, "training", ("small.png",)),
        "label_out_of_range": ({"image": "images/training0.png", "label": 5}, "training", ("label", "5")),
        "wrong_channels": ({"image": "images/two_channel.png", "label": 0}, "training", ("two_channel.png", "channels")),
    }


@pytest.mark.parametrize(
    "case", ["missing_file", "unreadable_dicom", "multi_frame_dicom", "mask_size_mismatch", "label_out_of_range",
             "wrong_channels"],
)
def test_bad_entry_is_named_and_outputs_survive(case, tmp_path):
    root = tmp_path / "data"
    bad, split, needles = _cases(root)[case]
    _dataset(root, bad, split)
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    earlier = out / "models" / "classifier.pt"
    earlier.write_bytes(b"an earlier checkpoint")
    _expect_clear_error(_run_classifier(root, out), *needles)
    assert earlier.read_bytes() == b"an earlier checkpoint"


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
