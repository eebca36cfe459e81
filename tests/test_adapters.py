"""Dataset adapters on tiny fixtures in the real layouts, file names and column headers.

Images are 32 rows x 40 columns, so scaled boxes and column-major RLE are checked on a non-square grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.data.adapters import (
    boxes_to_mask,
    main,
    rle_decode,
    rle_encode,
    stratified_split,
    stratified_subset,
)
from scripts.data.datalist import load_datalist
from scripts.errors import BundleInputError

try:
    from test_readers import write_dicom
except ImportError:  # tests/ imported as a package
    from tests.test_readers import write_dicom

ROWS, COLS = 32, 40


def _mask_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _dcm(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(path, np.full((ROWS, COLS), 100, np.uint16))


def _all(datalist: dict) -> list[dict]:
    return datalist["training"] + datalist["validation"] + datalist["test"]


# ------------------------------------------------------------------------------------------ masks


def test_rle_decode_hand_made():
    # gaps are relative to the end of the previous run; pixels run down the columns (column-major)
    mask = rle_decode("5 3 22 4", ROWS, COLS)
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[5:8, 0] = 1  # pixels 5, 6, 7
    expected[30:32, 0] = 1  # pixels 30, 31 (8 + 22) ...
    expected[0:2, 1] = 1  # ... 32, 33 wrap into column 1
    np.testing.assert_array_equal(mask, expected)


def test_rle_matches_siim_reference_and_roundtrips():
    def rle2mask(rle, width, height):  # SIIM-ACR mask_functions.py, verbatim logic
        m = np.zeros(width * height)
        array = np.asarray([int(x) for x in rle.split()])
        current = 0
        for start, length in zip(array[0::2], array[1::2]):
            current += start
            m[current : current + length] = 255
            current += length
        return m.reshape(width, height)

    rng = np.random.default_rng(0)
    mask = (rng.random((ROWS, COLS)) > 0.7).astype(np.uint8)
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, ROWS, COLS), mask)
    np.testing.assert_array_equal(rle2mask(rle, COLS, ROWS).T / 255, mask)
    assert rle_encode(np.zeros((ROWS, COLS))) == "-1"


@pytest.mark.parametrize(
    "rle,match", [("1 2 3", "odd number"), ("1 x", "not a list of integers"), ("1270 20", "runs past the end")]
)
def test_rle_bad(rle, match):
    with pytest.raises(BundleInputError, match=f"EncodedPixels of X: .*{match}"):
        rle_decode(rle, ROWS, COLS, where="EncodedPixels of X")


def test_boxes_to_mask_union_rounding_scaling():
    m = boxes_to_mask([(1.5, 0.2, 2, 1), (3, 3, 1, 1)], 5, 6, reference_size=None)
    expected = np.zeros((5, 6), np.uint8)
    expected[0:2, 1:4] = 1  # rows floor(0.2)..ceil(1.2)-1, cols floor(1.5)..ceil(3.5)-1
    expected[3, 3] = 1
    np.testing.assert_array_equal(m, expected)
    # boxes in 1024-pixel coordinates on a 32 x 40 stored image: rows / 32, cols * 40 / 1024
    m = boxes_to_mask([(128, 64, 128, 96)], ROWS, COLS)
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[2:5, 5:10] = 1
    np.testing.assert_array_equal(m, expected)


# ------------------------------------------------------------------------------------------ splits


def test_stratified_split_keeps_classes_and_is_deterministic():
    strata = [0] * 20 + [1] * 6
    a = stratified_split(strata, 0.1, 0.2, seed=0)
    for split in ("training", "validation", "test"):
        assert {lab for s, lab in zip(a, strata) if s == split} == {0, 1}, split
    assert a.count("test") == 4 + 1 and a.count("validation") == 2 + 1
    assert stratified_split(strata, 0.1, 0.2, seed=0) == a
    assert stratified_split(strata, 0.1, 0.2, seed=1) != a
    with pytest.raises(BundleInputError, match="val-fraction"):
        stratified_split(strata, 0.5, 0.6)


def test_stratified_split_groups_stay_together():
    groups = [f"p{i // 2}" for i in range(30)]  # two images per patient
    strata = [int(i % 7 == 0) for i in range(30)]
    splits = stratified_split(strata, 0.2, 0.2, seed=3, groups=groups)
    for g in set(groups):
        assert len({s for s, gg in zip(splits, groups) if gg == g}) == 1


def test_stratified_subset():
    strata = [0] * 50 + [1] * 10 + [3] * 2
    idx = stratified_subset(strata, 12, seed=0)
    picked = [strata[i] for i in idx]
    assert len(idx) == 12 and set(picked) == {0, 1, 3}
    assert idx == stratified_subset(strata, 12, seed=0)


# ------------------------------------------------------------------------------------------ RSNA


def _rsna(root: Path, extra_rows: str = "", n_neg: int = 10, n_pos: int = 5) -> Path:
    lines = ["patientId,x,y,width,height,Target"]
    for i in range(n_neg):
        lines.append(f"neg{i},,,,,0")
        _dcm(root / "stage_2_train_images" / f"neg{i}.dcm")
    for i in range(n_pos):
        lines.append(f"pos{i},128.0,64.0,128.0,96.0,1")  # rows 2..4, cols 5..9 once scaled to 32 x 40
        _dcm(root / "stage_2_train_images" / f"pos{i}.dcm")
    lines.append("pos0,0.0,960.0,1024.0,64.0,1")  # a second box on pos0: the last two rows
    (root / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n" + extra_rows)
    return root


def test_rsna_end_to_end(tmp_path):
    root = _rsna(tmp_path / "rsna")
    out = root / "datalist.json"
    datalist = main(["rsna", "--root", str(root), "--out", str(out), "--seed", "0"])
    entries = _all(datalist)
    assert len(entries) == 15 and json.loads(out.read_text()) == datalist
    for split in ("training", "validation", "test"):
        assert {e["label"] for e in datalist[split]} == {0, 1}, split
    by_image = {e["image"]: e for e in entries}
    pos0 = by_image["stage_2_train_images/pos0.dcm"]
    assert pos0["label"] == 1 and pos0["mask"] == "masks/pos0.png"
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[2:5, 5:10] = 255
    expected[30:32, :] = 255
    np.testing.assert_array_equal(_mask_png(root / pos0["mask"]), expected)
    assert "mask" not in by_image["stage_2_train_images/neg0.dcm"]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [f"pos{i}.png" for i in range(5)]
    # the datalist feeds load_datalist with dataset_dir = its folder
    items = load_datalist(out, root, "training", num_classes=2)
    assert all(Path(e["image"]).is_file() for e in items)
    # determinism by seed; another seed changes the split
    again = main(["rsna", "--root", str(root), "--out", str(root / "again.json"), "--seed", "0"])
    assert again == datalist
    other = main(["rsna", "--root", str(root), "--out", str(root / "other.json"), "--seed", "5"])
    assert other["test"] != datalist["test"]


def test_rsna_out_elsewhere_and_limit(tmp_path):
    root = _rsna(tmp_path / "rsna")
    out = tmp_path / "lists" / "rsna.json"
    datalist = main(["rsna", "--root", str(root), "--out", str(out), "--limit", "6", "--test-fraction", "0.3"])
    entries = _all(datalist)
    assert len(entries) == 6 and {e["label"] for e in entries} == {0, 1}
    assert entries[0]["image"].startswith("../rsna/stage_2_train_images/")
    assert all((out.parent / e["mask"]).is_file() for e in entries if "mask" in e)
    assert load_datalist(out, out.parent, "test")


def test_rsna_missing_image_warns_and_skips(tmp_path):
    root = _rsna(tmp_path / "rsna")
    (root / "stage_2_train_images" / "neg3.dcm").unlink()
    with pytest.warns(UserWarning, match=r"1 image\(s\) listed in .*stage_2_train_labels\.csv .*neg3"):
        datalist = main(["rsna", "--root", str(root)])
    assert len(_all(datalist)) == 14 and (root / "datalist.json").is_file()


@pytest.mark.parametrize(
    "extra,match",
    [
        ("bad,,,,,2\n", r"stage_2_train_labels\.csv line 18: Target '2'"),
        ("pos1,,,,,0\n", r"line 18: patientId pos1 has Target 0 but Target 1 on line 13"),
        ("bad,1,2,,,1\n", r"line 18: Target 1 row needs x, y, width and height"),
        ("bad,a,2,3,4,1\n", r"line 18: x 'a' is not a number"),
    ],
)
def test_rsna_bad_rows(tmp_path, extra, match):
    root = _rsna(tmp_path / "rsna", extra_rows=extra)
    with pytest.raises(BundleInputError, match=match):
        main(["rsna", "--root", str(root)])


def test_rsna_missing_inputs(tmp_path):
    with pytest.raises(BundleInputError, match=r"RSNA labels file .*stage_2_train_labels\.csv does not exist"):
        main(["rsna", "--root", str(tmp_path)])
    (tmp_path / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height\nneg0,,,,\n")
    with pytest.raises(BundleInputError, match=r"missing column\(s\) \['Target'\]"):
        main(["rsna", "--root", str(tmp_path)])


def test_rsna_corrupt_dicom_named(tmp_path):
    root = _rsna(tmp_path / "rsna")
    (root / "stage_2_train_images" / "pos2.dcm").write_bytes(b"broken")
    with pytest.raises(BundleInputError, match=r"pos2\.dcm: cannot read DICOM Rows/Columns"):
        main(["rsna", "--root", str(root)])


# ------------------------------------------------------------------------------------------ SIIM


def _siim(root: Path, leading_space: bool = True) -> Path:
    sp = " " if leading_space else ""
    lines = [f"ImageId,{sp}EncodedPixels"]
    for i in range(8):
        lines.append(f"1.2.276.0.{i},{sp}-1")
        _dcm(root / "dicom-images-train" / f"study{i}" / f"series{i}" / f"1.2.276.0.{i}.dcm")
    for i in range(8, 12):
        lines.append(f"1.2.276.0.{i},{sp}5 3 22 4")
        _dcm(root / "dicom-images-train" / f"study{i}" / f"series{i}" / f"1.2.276.0.{i}.dcm")
    lines.append(f"1.2.276.0.8,{sp}{39 * ROWS} {ROWS}")  # a second lesion on .8: the whole last column
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("leading_space", [True, False])
def test_siim_end_to_end(tmp_path, leading_space):
    root = _siim(tmp_path / "siim", leading_space)
    datalist = main(["siim", "--root", str(root), "--val-fraction", "0.25", "--test-fraction", "0.25"])
    entries = _all(datalist)
    assert len(entries) == 12 and sum(e["label"] for e in entries) == 4
    for split in ("training", "validation", "test"):
        assert {e["label"] for e in datalist[split]} == {0, 1}, split
    e8 = next(e for e in entries if e["image"].endswith("1.2.276.0.8.dcm"))
    assert e8["image"] == "dicom-images-train/study8/series8/1.2.276.0.8.dcm"
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[5:8, 0] = expected[30:32, 0] = expected[0:2, 1] = 255
    expected[:, 39] = 255  # union with the second row
    np.testing.assert_array_equal(_mask_png(root / e8["mask"]), expected)
    assert all("mask" not in e for e in entries if e["label"] == 0)


def test_siim_bad_rle_named(tmp_path):
    root = _siim(tmp_path / "siim")
    with open(root / "train-rle.csv", "a") as f:
        f.write("1.2.276.0.9, 5 3 7\n")
    with pytest.raises(BundleInputError, match=r"train-rle\.csv line 15: EncodedPixels of 1\.2\.276\.0\.9"):
        main(["siim", "--root", str(root)])
    root2 = _siim(tmp_path / "siim2")
    with open(root2 / "train-rle.csv", "a") as f:
        f.write(f"1.2.276.0.9, 0 {ROWS * COLS + 1}\n")
    with pytest.raises(BundleInputError, match=r"EncodedPixels of 1\.2\.276\.0\.9: .*runs past the end of the 32x40"):
        main(["siim", "--root", str(root2)])


# ------------------------------------------------------------------------------------------ NIH

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def _nih(root: Path) -> Path:
    rows, boxes = [NIH_HEADER], ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    findings = {}
    for p in range(1, 9):
        findings[f"{p:08d}_000.png"] = "No Finding"
    for p in range(9, 13):
        findings[f"{p:08d}_000.png"] = "Pneumonia|Effusion"
    for p in range(13, 16):
        findings[f"{p:08d}_000.png"] = "Pneumonia"
    findings["00000001_001.png"] = "Pneumonia"  # patient 1's follow-up: same split as its No Finding image
    findings["00000020_000.png"] = "Cardiomegaly"  # neither class: skipped
    findings["00000021_000.png"] = "Infiltration"
    for i, (name, labels) in enumerate(sorted(findings.items())):
        patient = int(name[:8])
        rows.append(f"{name},{labels},{i},{patient},58,M,PA,2682,2749,0.143,0.143")
        folder = root / ("images_001" if patient < 10 else "images_002") / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((ROWS, COLS), 60, np.uint8)).save(folder / name)
    for p in range(13, 16):
        boxes.append(f"{p:08d}_000.png,Pneumonia,128.0,64.0,128.0,96.0,,,")
    boxes.append("00000013_000.png,Pneumonia,896.0,0.0,128.0,32.0,,,")  # second box, top-right corner
    boxes.append("00000021_000.png,Infiltrate,0,0,10,10,,,")  # another finding: ignored
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join(boxes) + "\n")
    return root


def test_nih_end_to_end(tmp_path):
    root = _nih(tmp_path / "nih")
    datalist = main(["nih", "--root", str(root), "--seed", "1"])
    entries = {Path(e["image"]).name: e for e in _all(datalist)}
    assert "00000020_000.png" not in entries and "00000021_000.png" not in entries
    assert len(entries) == 16
    assert entries["00000001_000.png"]["label"] == 0 and entries["00000001_001.png"]["label"] == 1
    assert entries["00000009_000.png"]["label"] == 1 and "mask" not in entries["00000009_000.png"]
    assert entries["00000013_000.png"]["image"] == "images_002/images/00000013_000.png"
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[2:5, 5:10] = 255
    expected[0:1, 35:40] = 255
    np.testing.assert_array_equal(_mask_png(root / entries["00000013_000.png"]["mask"]), expected)
    split_of = {Path(e["image"]).name: s for s in ("training", "validation", "test") for e in datalist[s]}
    assert split_of["00000001_000.png"] == split_of["00000001_001.png"]
    for split in ("training", "validation", "test"):
        assert {e["label"] for e in datalist[split]} == {0, 1}, split
    assert datalist["labels"] == {"0": "no finding", "1": "Pneumonia"}


def test_nih_other_finding_and_errors(tmp_path):
    root = _nih(tmp_path / "nih")
    no_split = ["--test-fraction", "0", "--val-fraction", "0"]
    with pytest.warns(UserWarning, match="is empty"):
        datalist = main(["nih", "--root", str(root), "--finding", "Infiltration", *no_split])
    ones = [e for e in _all(datalist) if e["label"] == 1]
    assert len(ones) == 1 and ones[0]["mask"] == "masks/00000021_000.png"  # "Infiltrate" box = Infiltration
    with pytest.raises(BundleInputError, match=r"--finding 'Hernia' appears in no row of .*Data_Entry_2017\.csv"):
        main(["nih", "--root", str(root), "--finding", "Hernia"])
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,x,y\n")
    with pytest.raises(BundleInputError, match=r"BBox_List_2017\.csv: no 'Bbox \[x,y,w,h\]' columns"):
        main(["nih", "--root", str(root)])

