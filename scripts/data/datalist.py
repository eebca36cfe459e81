"""The datalist contract and its checks, plus a mask/image size check transform.

Contract (Medical Segmentation Decathlon style, paths relative to ``dataset_dir``)::

    {"training":   [{"image": "images/0001.dcm", "label": 1, "mask": "masks/0001.png"}, ...],
     "validation": [...],
     "test":       [...]}

``label`` is the class index ``0..K-1`` (0 = no finding, 1 = pathology, K > 2 allowed); ``mask`` is optional, a
binary lesion mask the size of the image. Each failure is one :class:`BundleInputError` naming the file, split,
entry and field.

Why not :func:`monai.data.load_decathlon_datalist` (MONAI 1.6): it reports JSON errors without the file, raises
``IndexError`` on an empty ``test`` split, silently leaves a ``mask`` path relative when the file is missing, and
resolves ``"mask": ""`` to ``dataset_dir`` itself. The joining itself is one ``os.path.join``; the decathlon
conventions it has (``test`` may be a list of plain paths, absolute paths kept) are kept here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection, PathLike
from monai.transforms import MapTransform

from ..errors import BundleInputError
from .readers import check_readable

__all__ = ["load_datalist", "CheckMaskShaped", "SPLITS", "source_name"]

SPLITS = ("training", "validation", "test")
_MAX_LISTED = 5  # problems named in one error message before "... and N more"


def _read_json(path: Path) -> Any:
    """Parse the datalist file; syntax errors name the file, line and column."""
    if not path.exists():
        raise BundleInputError(f"datalist file {path} does not exist")
    if not path.is_file():
        raise BundleInputError(f"datalist {path} is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise BundleInputError(f"datalist {path} is not valid JSON: {e.msg} at {where}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BundleInputError(f"datalist {path} cannot be read: {e}") from e


def _raise_all(problems: list[str], header: str) -> None:
    """Raise one error listing the first few problems."""
    if not problems:
        return
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise BundleInputError(header + "\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more)


def _check_label(value: Any, num_classes: int | None) -> str | None:
    """Why ``value`` is not a valid class index, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"label {value!r} is not an integer class index"
    if value < 0 or (num_classes is not None and value >= num_classes):
        hi = f"{num_classes - 1}" if num_classes is not None else "K-1"
        return f"label {value} is outside 0..{hi}"
    return None


def load_datalist(
    path: PathLike,
    dataset_dir: PathLike,
    split: str,
    num_classes: int | None = None,
    require_masks: bool = False,
    check_files: bool = False,
) -> list[dict]:
    """Load one split of a decathlon-style datalist with absolute paths, after checking every entry.

    Args:
        path: the datalist JSON file.
        dataset_dir: folder the relative ``image``/``mask`` paths are relative to (absolute paths are kept).
        split: ``"training"``, ``"validation"``, ``"test"`` (or any other list key of the file).
        num_classes: K; when given, every entry needs an int ``label`` in ``0..K-1``. When None, a ``label`` that is
            present must still be a non-negative int.
        require_masks: every entry with a non-zero ``label`` must have a ``mask`` (localisation evaluation).
        check_files: also open each image/mask header (:func:`~scripts.data.readers.check_readable`); slower.

    Returns:
        the entries, each a new dict with ``image`` (and ``mask``) made absolute.

    Raises:
        BundleInputError: missing/invalid file, missing or empty split, entry without ``image``, a referenced file
            that does not exist, a bad label, a missing mask when ``require_masks``.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BundleInputError(f"datalist {path} must be a JSON object with split keys {list(SPLITS)}")
    if split not in data:
        raise BundleInputError(f"datalist {path} has no split {split!r} (keys: {sorted(data)})")
    items = data[split]
    if not isinstance(items, list):
        raise BundleInputError(f"split {split!r} in {path} must be a list of entries, got {type(items).__name__}")
    if not items:
        raise BundleInputError(f"split {split!r} in {path} is empty")
    bad = [
        f"entry {i}: expected an object with 'image', got {type(e).__name__}"
        for i, e in enumerate(items)
        if not isinstance(e, dict) and not (split == "test" and isinstance(e, str))
    ]
    _raise_all(bad, f"split {split!r} in {path}:")
    dataset_dir = Path(os.path.abspath(dataset_dir))
    if not dataset_dir.is_dir():
        raise BundleInputError(f"dataset_dir {dataset_dir} does not exist or is not a folder")

    entries = [{"image": e} if isinstance(e, str) else e for e in items]  # decathlon: test may list plain paths

    problems: list[str] = []
    out: list[dict] = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        image = entry.get("image")
        if image is None:
            problems.append(f"entry {i}: has no 'image'")
            continue
        if not isinstance(image, str) or not image:
            problems.append(f"entry {i}: 'image' must be a path string, got {image!r}")
            continue
        if "label" in entry or num_classes is not None:
            if "label" not in entry:
                problems.append(f"entry {i} ({image}): has no 'label'")
            elif (why := _check_label(entry["label"], num_classes)) is not None:
                problems.append(f"entry {i} ({image}): {why}")
        if entry.get("mask", 0) in (None, ""):  # "mask": null / "" = no mask
            del entry["mask"]
        for key in ("image", "mask"):
            if key not in entry:
                continue
            value = entry[key]
            if not isinstance(value, str) or not value:
                problems.append(f"entry {i}: '{key}' must be a path string, got {value!r}")
                continue
            full = os.path.abspath(os.path.join(dataset_dir, value))
            if not os.path.isfile(full):
                problems.append(f"entry {i}: {key} file {full} does not exist")
                continue
            entry[key] = full
            if check_files:
                try:
                    check_readable(full)
                except BundleInputError as e:
                    problems.append(f"entry {i}: {e}")
        if require_masks and entry.get("label", 0) != 0 and not entry.get("mask"):
            problems.append(f"entry {i} ({image}): label {entry.get('label')} has no 'mask'")
        out.append(entry)
    _raise_all(problems, f"split {split!r} in {path} (dataset_dir {dataset_dir}):")
    return out


def source_name(data: Mapping, key: Hashable) -> str:
    """The file an item was loaded from (``filename_or_obj`` in MONAI metadata), for error messages."""
    value = data.get(key)
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    return str(meta.get("filename_or_obj", f"<{key}>"))


class CheckMaskShaped(MapTransform):
    """Check that each loaded mask has the spatial size of its image, and make it binary (``> 0`` → 1).

    Run after ``LoadImaged``/``EnsureChannelFirstd`` and before any resizing: ``keys[0]`` is the image, the other
    keys are masks (channel-first). A mask that is absent (masks are optional) is skipped. A multi-channel mask
    (e.g. an RGB export) is collapsed to one channel (any channel ``> 0``). A size mismatch raises
    :class:`BundleInputError` naming the mask file, both sizes and the image file.
    """

    def __init__(self, keys: KeysCollection = ("image", "mask"), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) < 2:
            raise BundleInputError(f"CheckMaskShaped needs keys (image, mask, ...), got {self.keys}")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image_key, *mask_keys = self.keys
        if image_key not in d:
            if self.allow_missing_keys:
                return d
            raise BundleInputError(f"CheckMaskShaped: item has no {image_key!r}")
        image_size = tuple(d[image_key].shape[1:])
        for key in mask_keys:
            mask = d.get(key)
            if mask is None or isinstance(mask, str):  # absent, or not loaded (empty path): optional
                continue
            if tuple(mask.shape[1:]) != image_size:
                raise BundleInputError(
                    f"mask {source_name(d, key)} has spatial size {tuple(mask.shape[1:])} but image "
                    f"{source_name(d, image_key)} has {image_size}; a mask must be the same size as its image"
                )
            if isinstance(mask, torch.Tensor):
                binary = (mask > 0).any(dim=0, keepdim=True).to(torch.float32)
            else:
                binary = (mask > 0).any(axis=0, keepdims=True).astype("float32")
            d[key] = binary
        return d
