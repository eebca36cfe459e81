"""Datalist loading and checks, and CheckMaskShaped."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, PILReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from scripts.data.datalist import CheckMaskShaped, load_datalist
from scripts.data.readers import RadiographDicomReader
from scripts.errors import BundleInputError


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """A folder with 3 images, one mask and a valid datalist."""
    for i in range(3):
        _png(tmp_path / "images" / f"{i}.png", np.full((8, 12), 10 * i, np.uint8))
    _png(tmp_path / "masks" / "1.png", np.pad(np.full((2, 3), 255, np.uint8), ((3, 3), (4, 5))))
    datalist = {
        "name": "tiny",
        "training": [
            {"image": "images/0.png", "label": 0},
            {"image": "images/1.png", "label": 1, "mask": "masks/1.png"},
        ],
        "validation": [{"image": "images/2.png", "label": 0}],
        "test": [],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return tmp_path


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def test_load_returns_absolute_paths(dataset):
    items = load_datalist(dataset / "datalist.json", dataset, "training", num_classes=2, require_masks=True)
    assert [e["label"] for e in items] == [0, 1]
    assert items[0]["image"] == str(dataset / "images" / "0.png")
    assert items[1]["mask"] == str(dataset / "masks" / "1.png")
    assert "mask" not in items[0]
    assert load_datalist(dataset / "datalist.json", dataset, "validation", check_files=True)[0]["label"] == 0


def test_dataset_dir_is_the_base(dataset, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("lists") / "list.json"
    elsewhere.write_text((dataset / "datalist.json").read_text())
    items = load_datalist(elsewhere, dataset, "training")
    assert Path(items[0]["image"]).is_file()


def test_missing_file_and_bad_json(dataset):
    with pytest.raises(BundleInputError, match=r"datalist file .*nope\.json does not exist"):
        load_datalist(dataset / "nope.json", dataset, "training")
    bad = dataset / "bad.json"
    bad.write_text('{\n  "training": [\n    {"image": "images/0.png",}\n  ]\n}')
    with pytest.raises(BundleInputError, match=r"bad\.json is not valid JSON: .* line 3, column"):
        load_datalist(bad, dataset, "training")


def test_missing_or_empty_split(dataset):
    path = dataset / "datalist.json"
    with pytest.raises(BundleInputError, match=r"split 'test' in .*datalist\.json is empty"):
        load_datalist(path, dataset, "test")
    data = json.loads(path.read_text())
    del data["validation"]
    with pytest.raises(BundleInputError, match=r"has no split 'validation'"):
        load_datalist(_write(path, data), dataset, "validation")


def test_entry_without_image(dataset):
    path = _write(dataset / "d.json", {"training": [{"image": "images/0.png", "label": 0}, {"label": 1}]})
    with pytest.raises(BundleInputError, match=r"entry 1: has no 'image'"):
        load_datalist(path, dataset, "training")


def test_missing_image_and_mask_name_entry_and_path(dataset):
    data = {"training": [{"image": "images/0.png", "label": 0}, {"image": "images/9.png", "label": 0}]}
    with pytest.raises(BundleInputError, match=r"entry 1: image file .*images/9\.png does not exist"):
        load_datalist(_write(dataset / "d.json", data), dataset, "training")
    data = {"training": [{"image": "images/1.png", "label": 1, "mask": "masks/9.png"}]}
    with pytest.raises(BundleInputError, match=r"entry 0: mask file .*masks/9\.png does not exist"):
        load_datalist(_write(dataset / "d.json", data), dataset, "training")


@pytest.mark.parametrize("label", [2, -1, 1.0, "1", True, None])
def test_bad_label(dataset, label):
    data = {"training": [{"image": "images/0.png", "label": 0}, {"image": "images/1.png", "label": label}]}
    with pytest.raises(BundleInputError, match=r"entry 1 \(.*images/1\.png\): label .*(not an integer|outside 0\.\.1)"):
        load_datalist(_write(dataset / "d.json", data), dataset, "training", num_classes=2)


def test_label_required_with_num_classes_and_k_above_2(dataset):
    data = {"training": [{"image": "images/0.png"}]}
    with pytest.raises(BundleInputError, match=r"entry 0 .*has no 'label'"):
        load_datalist(_write(dataset / "d.json", data), dataset, "training", num_classes=2)
    assert load_datalist(dataset / "d.json", dataset, "training")[0]["image"].endswith("0.png")
    data = {"training": [{"image": "images/0.png", "label": 2}]}
    assert load_datalist(_write(dataset / "d.json", data), dataset, "training", num_classes=3)[0]["label"] == 2


def test_null_mask_is_no_mask(dataset):
    data = {"test": [{"image": "images/0.png", "label": 0, "mask": None}, {"image": "images/1.png", "mask": ""}]}
    assert all("mask" not in e for e in load_datalist(_write(dataset / "d.json", data), dataset, "test"))


def test_require_masks(dataset):
    data = {"test": [{"image": "images/1.png", "label": 1}]}
    with pytest.raises(BundleInputError, match=r"entry 0 .*label 1 has no 'mask'"):
        load_datalist(_write(dataset / "d.json", data), dataset, "test", require_masks=True)


def test_check_mask_shape_and_binarise(dataset):
    d = {"image": str(dataset / "images" / "1.png"), "mask": str(dataset / "masks" / "1.png")}
    pipeline = Compose([LoadImaged(("image", "mask"), image_only=True), EnsureChannelFirstd(("image", "mask"))])
    out = CheckMaskShaped(("image", "mask"))(pipeline(d))
    mask = out["mask"]
    assert mask.shape == (1, 12, 8) and set(torch.unique(mask).tolist()) == {0.0, 1.0}
    assert mask.sum().item() == 6
    assert isinstance(mask, MetaTensor) and mask.meta["filename_or_obj"].endswith("1.png")
    assert "mask" not in CheckMaskShaped()({"image": out["image"]})  # masks are optional

    _png(dataset / "masks" / "wrong.png", np.zeros((12, 8), np.uint8))  # transposed size
    d["mask"] = str(dataset / "masks" / "wrong.png")
    with pytest.raises(BundleInputError, match=r"mask .*wrong\.png has spatial size \(8, 12\) but image .*1\.png"):
        CheckMaskShaped(("image", "mask"))(pipeline(d))


def test_dicom_image_with_png_mask_align(dataset):
    """The adapters' output: a DICOM image and a PNG mask of the same stored matrix pass the check."""
    try:
        from test_readers import write_dicom  # the same fixture writer (tests/ on sys.path, rootdir mode)
    except ImportError:
        from tests.test_readers import write_dicom

    stored = np.zeros((8, 12), np.uint16)
    stored[2:4, 5:9] = 1000
    write_dicom(dataset / "images" / "x.dcm", stored)
    _png(dataset / "masks" / "x.png", (stored > 0).astype(np.uint8) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load = LoadImaged(("image", "mask"), reader=[RadiographDicomReader(), PILReader()], image_only=True)
    d = EnsureChannelFirstd(("image", "mask"))(load({"image": str(dataset / "images" / "x.dcm"),
                                                     "mask": str(dataset / "masks" / "x.png")}))
    out = CheckMaskShaped()(d)
    torch.testing.assert_close(out["mask"] * 1000.0, out["image"].as_tensor(), check_dtype=False)
