"""Turn public chest X-ray datasets, in their published layouts, into the bundle's datalist (method.md §7).

``python -m scripts.data.adapters {rsna,siim,nih} --root DIR [--out DIR/datalist.json] [--val-fraction 0.1]
[--test-fraction 0.2] [--seed 0] [--limit N]``

* ``rsna``: RSNA Pneumonia Detection Challenge, ``stage_2_train_labels.csv`` + ``stage_2_train_images/*.dcm``;
  label = ``Target``, mask = union of the filled boxes.
* ``siim``: SIIM-ACR Pneumothorax, ``train-rle.csv`` (relative-offset RLE) + ``dicom-images-train/**/<ImageId>.dcm``.
* ``nih``: NIH ChestX-ray14, ``Data_Entry_2017.csv`` + ``BBox_List_2017.csv`` + ``images*/**/*.png``; label 1 for
  ``--finding`` (default Pneumonia), 0 for "No Finding", other images skipped; masks from that finding's boxes.

Images stay where they are; lesion masks are written as PNG (uint8, 0 = background, 255 = lesion, the stored
matrix ``(rows, cols)`` of the image, so they load aligned with it, see ``readers.py``) into ``<out dir>/masks/``,
only for images with a lesion. Splits are seeded and stratified by (label, has mask); paths in the datalist are
relative to its folder, which is then the bundle's ``dataset_dir``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BundleInputError

__all__ = [
    "Record",
    "rle_decode",
    "rle_encode",
    "boxes_to_mask",
    "stratified_split",
    "stratified_subset",
    "write_datalist",
    "rsna_records",
    "siim_records",
    "nih_records",
    "build_rsna",
    "build_siim",
    "build_nih",
    "main",
]

#: RSNA and NIH boxes are given in pixels of the published 1024 x 1024 images.
BOX_REFERENCE_SIZE = (1024, 1024)
Box = tuple[float, float, float, float]  # (x, y, width, height): column, row of the top-left corner, then sizes


@dataclass
class Record:
    """One image of a dataset before splitting: its id, file, class, split group and lesion annotations."""

    key: str
    image: Path
    label: int
    group: str
    boxes: list[Box] = field(default_factory=list)
    rles: list[str] = field(default_factory=list)

    @property
    def has_lesion(self) -> bool:
        return bool(self.boxes or self.rles)


# ----------------------------------------------------------------------------------------------- masks


def rle_decode(rle: str, rows: int, cols: int, where: str = "RLE") -> np.ndarray:
    """Decode SIIM-ACR's relative run-length encoding into a ``(rows, cols)`` uint8 0/1 mask.

    Same as the competition's ``mask_functions.rle2mask(rle, width, height).T``: pairs ``(gap, length)`` where each
    gap counts from the end of the previous run (from 0 for the first), over the image flattened column by column.
    Written by hand: no library implements this relative variant.
    """
    try:
        values = [int(v) for v in rle.split()]
    except ValueError as e:
        raise BundleInputError(f"{where}: EncodedPixels is not a list of integers ({e})") from e
    if len(values) % 2:
        raise BundleInputError(f"{where}: EncodedPixels has an odd number of values ({len(values)})")
    flat = np.zeros(rows * cols, dtype=np.uint8)
    position = 0
    for gap, length in zip(values[0::2], values[1::2]):
        if gap < 0 or length <= 0:
            raise BundleInputError(f"{where}: EncodedPixels has a negative gap or non-positive run ({gap} {length})")
        position += gap
        if position + length > flat.size:
            raise BundleInputError(
                f"{where}: EncodedPixels runs past the end of the {rows}x{cols} image (pixel {position + length})"
            )
        flat[position : position + length] = 1
        position += length
    return flat.reshape((cols, rows)).T.copy()


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode` (``"-1"`` for an empty mask), as SIIM's ``mask2rle``."""
    flat = (np.asarray(mask) > 0).T.reshape(-1).astype(np.int8)
    if not flat.any():
        return "-1"
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    out, previous_end = [], 0
    for s, e in zip(starts, ends):
        out += [int(s - previous_end), int(e - s)]
        previous_end = e
    return " ".join(map(str, out))


def boxes_to_mask(
    boxes: Sequence[Box], rows: int, cols: int, reference_size: tuple[int, int] | None = BOX_REFERENCE_SIZE
) -> np.ndarray:
    """Union of filled boxes as a ``(rows, cols)`` uint8 0/1 mask.

    A box ``(x, y, w, h)`` covers rows ``floor(y) .. ceil(y + h) - 1`` and columns ``floor(x) .. ceil(x + w) - 1``
    (integer boxes: exactly ``h`` rows and ``w`` columns), clipped to the image. Coordinates are in pixels of an
    image of ``reference_size = (rows, cols)``; when the stored image has another size they are scaled by
    ``rows / ref_rows`` and ``cols / ref_cols``. ``None``: no scaling.
    """
    mask = np.zeros((rows, cols), dtype=np.uint8)
    sy, sx = (1.0, 1.0) if reference_size is None else (rows / reference_size[0], cols / reference_size[1])
    for x, y, w, h in boxes:
        r0, r1 = max(0, math.floor(y * sy)), min(rows, math.ceil((y + h) * sy))
        c0, c1 = max(0, math.floor(x * sx)), min(cols, math.ceil((x + w) * sx))
        if r1 > r0 and c1 > c0:
            mask[r0:r1, c0:c1] = 1
    return mask


# ----------------------------------------------------------------------------------------------- splits


def _allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``total`` over ``weights`` (at least 1 each when ``total`` allows)."""
    n = sum(weights)
    if total >= len(weights):
        base = [1] * len(weights)
        rest = total - len(weights)
        quotas = [rest * w / n for w in weights]
        counts = [b + math.floor(q) for b, q in zip(base, quotas)]
    else:
        quotas = [total * w / n for w in weights]
        counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return [min(c, w) for c, w in zip(counts, weights)]


def stratified_subset(strata: Sequence[int], limit: int, seed: int = 0) -> list[int]:
    """Indices of a seeded subset of ``limit`` items keeping the strata proportions (each stratum at least once)."""
    if limit <= 0:
        raise BundleInputError(f"--limit must be positive, got {limit}")
    if limit >= len(strata):
        return list(range(len(strata)))
    by_stratum: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        by_stratum[s].append(i)
    keys = sorted(by_stratum)
    counts = _allocate(limit, [len(by_stratum[k]) for k in keys])
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k, c in zip(keys, counts):
        members = by_stratum[k]
        chosen += [members[j] for j in rng.permutation(len(members))[:c]]
    return sorted(chosen)


def stratified_split(
    strata: Sequence[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[str]:
    """Seeded train/validation/test assignment, stratified, whole groups (patients) kept in one split.

    A group's stratum is the largest stratum of its items (a patient with any positive image is positive). Within
    each stratum the groups are shuffled and ``round(n * fraction)`` go to test and validation, at least one each
    when the stratum has three groups or more, so every class appears in every split. Written by hand because
    :func:`monai.data.partition_dataset_classes` can drop items when rounding and has no group constraint.

    Returns:
        ``"training"``, ``"validation"`` or ``"test"`` per item.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise BundleInputError(
            f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be >= 0 and sum to less than 1"
        )
    groups = [str(i) for i in range(len(strata))] if groups is None else [str(g) for g in groups]
    if len(groups) != len(strata):
        raise ValueError("groups and strata differ in length")
    group_stratum: dict[str, int] = {}
    for g, s in zip(groups, strata):
        group_stratum[g] = max(s, group_stratum.get(g, s))
    by_stratum: dict[int, list[str]] = defaultdict(list)
    for g in sorted(group_stratum):
        by_stratum[group_stratum[g]].append(g)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for s in sorted(by_stratum):
        members = [by_stratum[s][j] for j in rng.permutation(len(by_stratum[s]))]
        n = len(members)
        n_test, n_val = round(n * test_fraction), round(n * val_fraction)
        if n >= 3:
            n_test = max(n_test, 1) if test_fraction > 0 else 0
            n_val = max(n_val, 1) if val_fraction > 0 else 0
        while n_test + n_val > max(n - 1, 0):  # keep at least one for training
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        for i, g in enumerate(members):
            assignment[g] = "test" if i < n_test else "validation" if i < n_test + n_val else "training"
    return [assignment[g] for g in groups]


# ----------------------------------------------------------------------------------------------- files


def _read_csv(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header (names stripped of spaces) and rows of a CSV; BundleInputError naming the file when it is missing."""
    if not path.is_file():
        raise BundleInputError(f"{what} {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BundleInputError(f"{what} {path} cannot be read as CSV: {e}") from e
    if not rows:
        raise BundleInputError(f"{what} {path} is empty")
    width = len(rows[0])
    return [h.strip() for h in rows[0]], [r + [""] * (width - len(r)) for r in rows[1:]]


def _columns(header: list[str], names: Sequence[str], path: Path) -> dict[str, int]:
    """Column index of each name; BundleInputError listing what is missing and what the header has."""
    missing = [n for n in names if n not in header]
    if missing:
        raise BundleInputError(f"{path}: missing column(s) {missing}; the header has {header}")
    return {n: header.index(n) for n in names}


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BundleInputError(f"{path} line {line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BundleInputError(f"{path} line {line}: {column} {text!r} is not finite")
    return value


def _dicom_size(path: Path) -> tuple[int, int]:
    """``(Rows, Columns)`` from a DICOM header."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except Exception as e:
        raise BundleInputError(f"{path}: cannot read DICOM Rows/Columns ({type(e).__name__}: {e})") from e


def _png_size(path: Path) -> tuple[int, int]:
    """``(rows, cols)`` from an image header."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as e:
        raise BundleInputError(f"{path}: cannot read image size ({type(e).__name__}: {e})") from e


def _drop_missing(records: list[Record], where: Path, what: str) -> list[Record]:
    """Keep records whose image exists; warn about the others; error when none is left."""
    kept = [r for r in records if r.image.is_file()]
    missing = [r.key for r in records if not r.image.is_file()]
    if missing:
        warnings.warn(
            f"{len(missing)} image(s) listed in {what} were not found under {where} and are skipped "
            f"(first: {missing[:5]})",
            stacklevel=2,
        )
    if not kept:
        raise BundleInputError(f"none of the {len(records)} images listed in {what} was found under {where}")
    return kept


def _index_files(folders: Sequence[Path], suffix: str) -> dict[str, Path]:
    """Map file name stem → path for every ``*suffix`` file under ``folders`` (recursively); first one wins."""
    index: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(folder.rglob(f"*{suffix}")):
            index.setdefault(p.name[: -len(suffix)], p)
    return index


# ----------------------------------------------------------------------------------------------- datasets


def rsna_records(root: Path, csv_name: str = "stage_2_train_labels.csv", images: str = "stage_2_train_images"):
    """RSNA Pneumonia: one record per ``patientId`` (label ``Target``, boxes of its positive rows)."""
    root = Path(root)
    path = root / csv_name
    header, rows = _read_csv(path, "RSNA labels file")
    col = _columns(header, ("patientId", "x", "y", "width", "height", "Target"), path)
    found: dict[str, Record] = {}
    first_line: dict[str, int] = {}
    folder = root / images
    for line, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue
        pid = row[col["patientId"]].strip()
        if not pid:
            raise BundleInputError(f"{path} line {line}: empty patientId")
        target_text = row[col["Target"]].strip()
        if target_text not in ("0", "1"):
            raise BundleInputError(f"{path} line {line}: Target {target_text!r} must be 0 or 1")
        target = int(target_text)
        fields = [row[col[c]].strip() for c in ("x", "y", "width", "height")]
        box: Box | None = None
        if target == 1:
            if not all(fields):
                raise BundleInputError(f"{path} line {line}: Target 1 row needs x, y, width and height")
            x, y, w, h = (_number(t, path, line, c) for t, c in zip(fields, ("x", "y", "width", "height")))
            if w <= 0 or h <= 0:
                raise BundleInputError(f"{path} line {line}: box width/height must be positive, got {w}, {h}")
            box = (x, y, w, h)
        elif any(fields):
            raise BundleInputError(f"{path} line {line}: Target 0 row has a box ({fields}); expected empty x,y,w,h")
        record = found.get(pid)
        if record is None:
            record = found[pid] = Record(pid, folder / f"{pid}.dcm", target, pid)
            first_line[pid] = line
        elif record.label != target:
            raise BundleInputError(
                f"{path} line {line}: patientId {pid} has Target {target} but Target {record.label} "
                f"on line {first_line[pid]}"
            )
        if box is not None:
            record.boxes.append(box)
    if not folder.is_dir():
        raise BundleInputError(f"RSNA image folder {folder} does not exist")
    return _drop_missing(list(found.values()), folder, str(path))


def siim_records(root: Path, csv_name: str = "train-rle.csv", images: str = "dicom-images-train"):
    """SIIM-ACR Pneumothorax: one record per ``ImageId``; ``-1`` rows are negatives, several RLE rows are unioned."""
    root = Path(root)
    path = root / csv_name
    header, rows = _read_csv(path, "SIIM RLE file")  # header names are stripped: " EncodedPixels" is found
    col = _columns(header, ("ImageId", "EncodedPixels"), path)
    rles: dict[str, list[str]] = {}
    for line, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue
        iid, rle = row[col["ImageId"]].strip(), row[col["EncodedPixels"]].strip()
        if not iid:
            raise BundleInputError(f"{path} line {line}: empty ImageId")
        if rle == "-1":
            rles.setdefault(iid, [])
            continue
        tokens = rle.split()
        if not tokens or len(tokens) % 2 or not all(t.isdigit() for t in tokens):
            raise BundleInputError(
                f"{path} line {line}: EncodedPixels of {iid} must be '-1' or an even number of non-negative integers"
            )
        rles.setdefault(iid, []).append(rle)
    folder = root / images
    if not folder.is_dir():
        raise BundleInputError(f"SIIM image folder {folder} does not exist")
    index = _index_files([folder], ".dcm")
    records = [
        Record(iid, index.get(iid, folder / f"{iid}.dcm"), int(bool(r)), iid, rles=list(r)) for iid, r in rles.items()
    ]
    return _drop_missing(records, folder, str(path))


_NIH_ALIASES = {"infiltrate": "infiltration"}  # BBox_List_2017.csv says "Infiltrate", Data_Entry "Infiltration"


def _nih_name(finding: str) -> str:
    name = finding.strip().lower()
    return _NIH_ALIASES.get(name, name)


def _bbox_columns(header: list[str], path: Path) -> list[int]:
    """Columns of x, y, w, h: the real header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``."""
    norm = [h.strip().lower() for h in header]
    if all(c in norm for c in ("x", "y", "w", "h")):
        return [norm.index(c) for c in ("x", "y", "w", "h")]
    for i, h in enumerate(norm):
        if h.startswith("bbox") and i + 3 < len(norm):
            return [i, i + 1, i + 2, i + 3]
    raise BundleInputError(f"{path}: no 'Bbox [x,y,w,h]' columns in the header {header}")


def nih_records(
    root: Path,
    finding: str = "Pneumonia",
    csv_name: str = "Data_Entry_2017.csv",
    bbox_csv: str | None = None,
    images_glob: str = "images*",
):
    """NIH ChestX-ray14: label 1 when ``finding`` is among the '|'-separated labels, 0 for 'No Finding' alone.

    Images with other findings only are skipped (they are neither the pathology nor normal). Boxes of ``finding``
    from ``bbox_csv`` become masks (None: ``BBox_List_2017.csv`` if present, else no masks with a warning; a name
    given explicitly must exist). Split groups = 'Patient ID' (one patient's follow-ups stay in one split).
    """
    root = Path(root)
    path = root / csv_name
    header, rows = _read_csv(path, "NIH labels file")
    col = _columns(header, ("Image Index", "Finding Labels"), path)
    pid_col = header.index("Patient ID") if "Patient ID" in header else None
    wanted = _nih_name(finding)
    seen: Counter = Counter()
    chosen: dict[str, tuple[int, str]] = {}
    for line, row in enumerate(rows, start=2):
        name = row[col["Image Index"]].strip()
        if not name:
            continue
        labels = {_nih_name(f) for f in row[col["Finding Labels"]].split("|") if f.strip()}
        seen.update(labels)
        group = row[pid_col].strip() if pid_col is not None and row[pid_col].strip() else name.split("_")[0]
        if wanted in labels:
            chosen[name] = (1, group)
        elif labels == {"no finding"}:
            chosen[name] = (0, group)
    if not seen[wanted]:
        raise BundleInputError(f"--finding {finding!r} appears in no row of {path}; findings there: {sorted(seen)}")

    boxes: dict[str, list[Box]] = defaultdict(list)
    bpath = root / (bbox_csv or "BBox_List_2017.csv")
    if bpath.is_file() or bbox_csv is not None:
        bheader, brows = _read_csv(bpath, "NIH box file")
        bcol = _columns(bheader, ("Image Index", "Finding Label"), bpath)
        xywh = _bbox_columns(bheader, bpath)
        for line, row in enumerate(brows, start=2):
            name = row[bcol["Image Index"]].strip()
            if not name or _nih_name(row[bcol["Finding Label"]]) != wanted:
                continue
            x, y, w, h = (_number(row[i].strip(), bpath, line, c) for i, c in zip(xywh, "xywh"))
            if w <= 0 or h <= 0:
                raise BundleInputError(f"{bpath} line {line}: box w/h must be positive, got {w}, {h}")
            if chosen.get(name, (0,))[0] == 1:
                boxes[name].append((x, y, w, h))
    else:
        warnings.warn(f"NIH box file {bpath} not found: no lesion masks", stacklevel=2)

    folders = sorted(p for p in root.glob(images_glob) if p.is_dir())
    if not folders:
        raise BundleInputError(f"no image folder matching {root / images_glob} (NIH PNGs live in images*/)")
    index = _index_files(folders, ".png")
    records = [
        Record(Path(n).stem, index.get(Path(n).stem, root / "images" / n), lab, g, boxes[n])
        for n, (lab, g) in chosen.items()
    ]
    return _drop_missing(records, root / images_glob, str(path))


# ----------------------------------------------------------------------------------------------- writing


def _mask_for(record: Record) -> np.ndarray:
    """The ``(rows, cols)`` 0/1 lesion mask of a record, sized from its image header."""
    if record.rles:
        rows, cols = _dicom_size(record.image)
        mask = np.zeros((rows, cols), dtype=np.uint8)
        for rle in record.rles:
            mask |= rle_decode(rle, rows, cols, where=f"EncodedPixels of {record.key}")
        return mask
    is_dicom = record.image.suffix.lower() in (".dcm", ".dicom")
    rows, cols = _dicom_size(record.image) if is_dicom else _png_size(record.image)
    return boxes_to_mask(record.boxes, rows, cols)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def write_datalist(
    records: Sequence[Record],
    out: Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    name: str = "dataset",
    class_names: Sequence[str] = ("no finding", "pathology"),
    mask_fn: Callable[[Record], np.ndarray] = _mask_for,
) -> dict:
    """Subset (``limit``), split, write lesion masks and the datalist ``out``; return the datalist dict."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise BundleInputError(f"--out {out} must be a .json file path")
    records = sorted(records, key=lambda r: r.key)
    strata = [2 * r.label + int(r.has_lesion) for r in records]
    if limit is not None:
        keep = stratified_subset(strata, limit, seed)
        records, strata = [records[i] for i in keep], [strata[i] for i in keep]
    splits = stratified_split(strata, val_fraction, test_fraction, seed, groups=[r.group for r in records])
    out_dir = out.parent
    mask_dir = out_dir / "masks"
    datalist: dict = {
        "name": name,
        "description": "made by scripts.data.adapters; paths are relative to this file's folder",
        "labels": {str(i): c for i, c in enumerate(class_names)},
        "num_classes": len(class_names),
        "split": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "limit": limit},
        "training": [],
        "validation": [],
        "test": [],
    }
    for record, split in zip(records, splits):
        entry: dict = {"image": _relative(record.image, out_dir), "label": int(record.label)}
        if record.has_lesion:
            mask = mask_fn(record)
            if mask.any():
                mask_dir.mkdir(parents=True, exist_ok=True)
                mask_path = mask_dir / f"{record.key}.png"
                Image.fromarray((mask > 0).astype(np.uint8) * 255).save(mask_path)
                entry["mask"] = _relative(mask_path, out_dir)
        datalist[split].append(entry)
    for split in ("training", "validation", "test"):
        if not datalist[split]:
            warnings.warn(f"split {split!r} of {out} is empty", stacklevel=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(datalist, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return datalist


def _summary(datalist: dict, out: Path) -> str:
    parts = []
    for split in ("training", "validation", "test"):
        items = datalist[split]
        per_class = Counter(e["label"] for e in items)
        masks = sum("mask" in e for e in items)
        parts.append(f"{split} {len(items)} (per class {dict(sorted(per_class.items()))}, masks {masks})")
    return f"wrote {out}: " + "; ".join(parts)


def build_rsna(root: Path, out: Path, csv_name: str = "stage_2_train_labels.csv", **split: object) -> dict:
    """RSNA Pneumonia Detection Challenge → datalist (label = Target, mask = union of boxes).

    ``split``: ``val_fraction``, ``test_fraction``, ``seed``, ``limit`` of :func:`write_datalist`.
    """
    records = rsna_records(Path(root), csv_name)
    return write_datalist(records, out, name="rsna-pneumonia", class_names=("no finding", "pneumonia"), **split)


def build_siim(root: Path, out: Path, csv_name: str = "train-rle.csv", **split: object) -> dict:
    """SIIM-ACR Pneumothorax → datalist (label = has a run, mask = union of the decoded RLE rows)."""
    records = siim_records(Path(root), csv_name)
    names = ("no finding", "pneumothorax")
    return write_datalist(records, out, name="siim-acr-pneumothorax", class_names=names, **split)


def build_nih(
    root: Path,
    out: Path,
    finding: str = "Pneumonia",
    csv_name: str = "Data_Entry_2017.csv",
    bbox_csv: str | None = None,
    **split: object,
) -> dict:
    """NIH ChestX-ray14 → datalist for one finding against 'No Finding' (masks from that finding's boxes)."""
    records = nih_records(Path(root), finding, csv_name, bbox_csv)
    name = f"nih-chestxray14-{finding.lower()}"
    return write_datalist(records, out, name=name, class_names=("no finding", finding), **split)


def main(argv: Sequence[str] | None = None) -> dict:
    """CLI entry point; returns the datalist written."""
    parser = argparse.ArgumentParser(prog="python -m scripts.data.adapters", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    csv_defaults = {"rsna": "stage_2_train_labels.csv", "siim": "train-rle.csv", "nih": "Data_Entry_2017.csv"}
    for ds, csv_default in csv_defaults.items():
        p = sub.add_parser(ds)
        p.add_argument("--root", type=Path, required=True, help="dataset folder as downloaded")
        p.add_argument("--out", type=Path, default=None, help="datalist to write (default: ROOT/datalist.json)")
        p.add_argument("--val-fraction", type=float, default=0.1)
        p.add_argument("--test-fraction", type=float, default=0.2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=None, help="keep a seeded, stratified subset of N images")
        p.add_argument("--csv", dest="csv_name", default=csv_default, help=f"labels CSV in ROOT ({csv_default})")
        if ds == "nih":
            p.add_argument("--finding", default="Pneumonia", help="finding that is class 1 (default Pneumonia)")
            p.add_argument("--bbox-csv", default=None, help="box CSV under ROOT (default BBox_List_2017.csv)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.root / "datalist.json"
    common = {
        "csv_name": args.csv_name,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "limit": args.limit,
    }
    if args.dataset == "rsna":
        datalist = build_rsna(args.root, out, **common)
    elif args.dataset == "siim":
        datalist = build_siim(args.root, out, **common)
    else:
        datalist = build_nih(args.root, out, finding=args.finding, bbox_csv=args.bbox_csv, **common)
    print(_summary(datalist, out), file=sys.stderr)
    return datalist


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
