"""Turn labels reviewed in the MONAI Label review app (``review_app/``, docs/review.md) into a bundle datalist.

``python -m scripts.data.reviewed --studies DIR --out DATALIST.json [--tag final] [--min-level 1] [--split test]
[--pathology-class 1]`` (``--studies`` may be the review app's DICOMweb URL: the reviewer's SEGs are read from the
PACS, credentials in ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD``), and ``python -m scripts.data.reviewed --seed DIR [--dataset_dir data/synthetic]
[--split test]`` to fill a studies folder with a split's images (``./run.sh review-app`` does this for the default
data).

The review app keeps a local MONAI Label datastore in the studies folder: ``datastore_v2.json`` records each image
(``<id><ext>`` in the folder) and the labels saved for it (``labels/<tag>/<id><ext>``, tag ``final`` for a
reviewer's ``save_label``, with the JSON ``params`` sent along as the label's info). For every image with a label of
``--tag`` this writes one datalist entry:

* ``image``: the study image (left where it is);
* ``mask``: the reviewed label binarised, ``label >= --min-level`` (default 1: every level the reviewer kept), written
  in the label's own format and orientation (PNG 0/255 or NIfTI 0/1 with the label's affine) to ``<out dir>/masks/``,
  so it loads aligned with the image exactly as the label did;
* ``label``: the class: the ``"class"`` the reviewer sent with ``save_label`` (``params={"class": 1}``) when given,
  else ``--pathology-class`` when the mask is not empty and 0 when the reviewer removed every level.

All entries go to one split (``--split``, default ``test``: the split the localization benchmark reads), paths
relative to the datalist's folder, which is then the bundle's ``dataset_dir``::

    python -m scripts.data.reviewed --studies data/review --out runs/reviewed/datalist.json
    python -m monai.bundle run evaluating --config_file configs/evaluate.json \\
        --dataset_dir runs/reviewed --datalist runs/reviewed/datalist.json --output_dir runs/reviewed/out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import BundleInputError

__all__ = ["DATASTORE_FILE", "LABEL_SUFFIXES", "pacs_entries", "reviewed_entries", "build_reviewed_datalist", "seed_studies", "main"]

#: MONAI Label's local datastore record (monailabel.datastore.local.LocalDatastore).
DATASTORE_FILE = "datastore_v2.json"
LABEL_SUFFIXES = (".png", ".nii.gz", ".nii", ".dcm")  # .dcm: a DICOM SEG of the study (scripts/dicom/seg.py)
#: SeriesDescription of a reviewer's SEG in a PACS (review_app/lib/pacs.py writes it)
REVIEWED_PREFIX = "simadv reviewed"


def _suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in LABEL_SUFFIXES if lower.endswith(s)), "")


def _read_record(studies: Path) -> dict:
    path = studies / DATASTORE_FILE
    if not studies.is_dir():
        raise BundleInputError(f"--studies {studies} is not a folder")
    if not path.is_file():
        raise BundleInputError(
            f"{path} does not exist: --studies must be the folder the review app served (its MONAI Label datastore)"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleInputError(f"{path} cannot be read as JSON: {e}") from e
    if not isinstance(record, dict) or not isinstance(record.get("objects"), dict):
        raise BundleInputError(f"{path} is not a MONAI Label datastore record (no 'objects')")
    return record


def _load_label(path: Path) -> tuple[np.ndarray, object]:
    """The label's stored matrix (PNG: ``(rows, cols)``; NIfTI: as stored) and what is needed to write a mask."""
    suffix = _suffix(path.name)
    try:
        if suffix == ".dcm":  # a SEG: its (rows, cols) label map, written back as a PNG mask like a PNG label
            from ..dicom.compat import read_dataset
            from ..dicom.seg import read_segmentation

            return read_segmentation(read_dataset(path))[0], None
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                array = np.asarray(im)
            if array.ndim == 3:  # RGB(A) export of a label: a pixel is labelled when any colour channel is
                array = array[..., :3].max(axis=-1)
            return array, None
        import nibabel as nib

        img = nib.load(str(path))
        return np.asarray(img.dataobj), img
    except Exception as e:
        raise BundleInputError(f"reviewed label {path} cannot be read ({type(e).__name__}: {e})") from e


def _write_mask(mask: np.ndarray, like: object, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp" + _suffix(out.name))
    if like is None:
        from PIL import Image

        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    else:
        import nibabel as nib

        nib.save(nib.Nifti1Image(mask.astype(np.uint8), like.affine, like.header), str(tmp))
    os.replace(tmp, out)


def _image_size(path: Path) -> tuple[int, ...]:
    """Spatial size of the study image as the bundle loads it (x first)."""
    from monai.transforms import LoadImage

    from .transforms import reader_for

    try:
        img = LoadImage(image_only=True, ensure_channel_first=True)(str(path), reader=reader_for(str(path)))
    except BundleInputError:
        raise
    except Exception as e:
        raise BundleInputError(f"study image {path} cannot be read ({type(e).__name__}: {e})") from e
    return tuple(int(s) for s in img.shape[1:])


def _label_size(array: np.ndarray, like: object) -> tuple[int, ...]:
    """The label's spatial size in the loaded (x-first) convention: PNG matrices load transposed, NIfTI as stored."""
    return tuple(int(s) for s in (array.shape[::-1] if like is None else array.shape))


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def reviewed_entries(
    studies: str | os.PathLike,
    out_dir: str | os.PathLike,
    tag: str = "final",
    min_level: int = 1,
    pathology_class: int = 1,
) -> list[dict]:
    """Datalist entries ``{"image", "label", "mask"}`` for the images with a ``tag`` label; masks written to
    ``<out_dir>/masks/`` (see the module docstring). Sorted by image id."""
    studies, out_dir = Path(studies).resolve(), Path(out_dir).resolve()
    if min_level < 1:
        raise BundleInputError(f"--min-level must be at least 1 (0 is the background), got {min_level}")
    record = _read_record(studies)
    images_dir = studies / str(record.get("images_dir") or ".")
    labels_dir = studies / str(record.get("labels_dir") or "labels") / tag
    entries = []
    for image_id in sorted(record["objects"]):
        obj = record["objects"][image_id]
        label = (obj.get("labels") or {}).get(tag)
        if not label:
            continue
        where = f"{studies / DATASTORE_FILE}, image {image_id!r}"
        image = images_dir / f"{image_id}{obj.get('image', {}).get('ext', '')}"
        label_path = labels_dir / f"{image_id}{label.get('ext', '')}"
        if not image.is_file():
            raise BundleInputError(f"{where}: image file {image} does not exist")
        if not label_path.is_file():
            raise BundleInputError(f"{where}: {tag!r} label file {label_path} does not exist")
        suffix = _suffix(label_path.name)
        if not suffix:
            raise BundleInputError(f"{where}: label {label_path.name} is not {list(LABEL_SUFFIXES)}")
        array, like = _load_label(label_path)
        if _label_size(array, like) != _image_size(image):
            raise BundleInputError(
                f"{where}: label {label_path} has size {list(_label_size(array, like))}, "
                f"the image {list(_image_size(image))} (x first)"
            )
        mask = array >= min_level
        info = label.get("info") or {}
        cls = info.get("class")
        if cls is None:
            cls = pathology_class if mask.any() else 0
        elif isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise BundleInputError(f"{where}: label info 'class' {cls!r} is not a class index (integer >= 0)")
        mask_path = out_dir / "masks" / f"{image_id}{'.png' if suffix == '.dcm' else suffix}"
        _write_mask(mask, like, mask_path)
        entries.append({"image": _relative(image, out_dir), "label": int(cls), "mask": _relative(mask_path, out_dir)})
    return entries


def build_reviewed_datalist(
    studies: str | os.PathLike,
    out: str | os.PathLike,
    tag: str = "final",
    min_level: int = 1,
    split: str = "test",
    pathology_class: int = 1,
) -> dict:
    """Write the datalist ``out`` of the reviewed images (one split) and return it."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise BundleInputError(f"--out {out} must be a .json file path")
    remote = str(studies).startswith(("http://", "https://"))
    if remote:
        entries = pacs_entries(str(studies), out.parent, tag, min_level, pathology_class)
    else:
        entries = reviewed_entries(studies, out.parent, tag, min_level, pathology_class)
    if not entries:
        where = f"the PACS {studies}" if remote else f"{Path(studies) / DATASTORE_FILE}"
        raise BundleInputError(f"no image in {where} has a {tag!r} label yet")
    datalist = {
        "name": "reviewed",
        "description": "made by scripts.data.reviewed from MONAI Label review labels; paths relative to this file",
        "reviewed": {"studies": str(studies) if remote else str(Path(studies).resolve()), "tag": tag,
                     "min_level": min_level},
        split: entries,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(datalist, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return datalist


def pacs_entries(url: str, out_dir: str | os.PathLike, tag: str = "final", min_level: int = 1,
                 pathology_class: int = 1) -> list[dict]:
    """Datalist entries from a PACS: every reviewer SEG (SeriesDescription ``"simadv reviewed <tag>"``, the latest per
    image) with its source radiograph, both fetched over DICOMweb into ``<out_dir>/images/`` (the DICOM file) and
    ``<out_dir>/masks/`` (PNG 0/255, the SEG's rows x columns, aligned as the image loads). The class: the
    ``class=N`` the review app recorded from ``save_label``'s params, else as for a folder."""
    from ..dicom.compat import read_dataset
    from ..dicom.dicomweb import DicomWebClient, DicomWebError, tag_value
    from ..dicom.seg import read_segmentation

    out_dir = Path(out_dir).resolve()
    if min_level < 1:
        raise BundleInputError(f"--min-level must be at least 1 (0 is the background), got {min_level}")
    client = DicomWebClient(url)
    wanted = f"{REVIEWED_PREFIX} {tag}"
    try:
        series = client.search("series", {"Modality": "SEG"}, includefields=["0008103E", "00080021", "00080031"])
        latest: dict[str, tuple[str, object, np.ndarray]] = {}
        for record in sorted(series, key=lambda r: (str(tag_value(r, "00080021", "")), str(tag_value(r, "00080031", "")))):
            if str(tag_value(record, "0008103E", "")) != wanted:
                continue
            study, uid = str(tag_value(record, "0020000D")), str(tag_value(record, "0020000E"))
            for inst in client.search(f"studies/{study}/series/{uid}/instances"):
                seg = read_dataset(client.retrieve_instance(study, uid, str(tag_value(inst, "00080018"))))
                levels, info = read_segmentation(seg)
                if not info["series_instance_uid"] or len(info["sop_instance_uids"]) != 1:
                    continue
                latest[info["sop_instance_uids"][0]] = (study, info, levels)
        entries = []
        for sop, (study, info, levels) in sorted(latest.items()):
            image = out_dir / "images" / f"{sop}.dcm"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(client.retrieve_instance(study, info["series_instance_uid"], sop))
            source = read_dataset(image, stop_before_pixels=True)
            if (int(source.Rows), int(source.Columns)) != levels.shape:
                raise BundleInputError(f"{url}: the reviewed SEG of {sop} has size {list(levels.shape)}, "
                                       f"the image {[int(source.Rows), int(source.Columns)]} (rows, cols)")
            mask = levels >= min_level
            found = info["content_description"].partition("class=")[2].strip()
            cls = int(found) if found.isdigit() else (pathology_class if mask.any() else 0)
            mask_path = out_dir / "masks" / f"{sop}.png"
            _write_mask(mask, None, mask_path)
            entries.append({"image": _relative(image, out_dir), "label": cls, "mask": _relative(mask_path, out_dir)})
    except DicomWebError as e:
        raise BundleInputError(f"--dicomweb {url}: {e}") from None
    except ValueError as e:
        raise BundleInputError(f"--dicomweb {url}: a reviewed SEG cannot be read ({e})") from None
    return entries


def seed_studies(out: str | os.PathLike, dataset_dir: str | os.PathLike = "data/synthetic", split: str = "test") -> int:
    """Copy the images of a datalist split into the studies folder ``out`` (those not there yet); return how many.

    The default data (``data/synthetic``) is written first when it does not exist, as ``./run.sh demo`` would.
    """
    from .datalist import load_datalist
    from .synthetic import ensure_synthetic_dataset

    dataset_dir, out = Path(dataset_dir), Path(out)
    datalist = ensure_synthetic_dataset(dataset_dir, dataset_dir / "datalist.json")
    entries = load_datalist(datalist, dataset_dir, split)
    names: dict[str, str] = {}
    for e in entries:
        name = Path(e["image"]).name
        if names.setdefault(name, e["image"]) != e["image"]:
            raise BundleInputError(f"split {split!r} of {datalist} has two images named {name}: {names[name]}, {e['image']}")
    out.mkdir(parents=True, exist_ok=True)
    copied = 0
    for name, src in names.items():
        if not (out / name).exists():
            shutil.copy2(src, out / name)
            copied += 1
    if copied:
        print(f"simadv_explainer: copied {copied} {split} image(s) of {dataset_dir} to {out}", file=sys.stderr)
    return copied


def main(argv: Sequence[str] | None = None) -> dict | int:
    """CLI entry point; returns the datalist written (or, with ``--seed``, the number of images copied)."""
    parser = argparse.ArgumentParser(prog="python -m scripts.data.reviewed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", help="the studies folder the review app served, or its DICOMweb URL (a PACS)")
    parser.add_argument("--out", type=Path, help="datalist to write (masks go to its folder's masks/)")
    parser.add_argument("--tag", default="final", help="label tag to read (default: final, a reviewer's save)")
    parser.add_argument("--min-level", type=int, default=1, help="lowest label value that counts as lesion (1)")
    parser.add_argument("--split", default="test", help="split to write (to --seed from); default: test")
    parser.add_argument("--pathology-class", type=int, default=1, help="class of a non-empty mask without 'class'")
    parser.add_argument("--seed", type=Path, help="instead: copy a split's images into this studies folder")
    parser.add_argument("--dataset_dir", type=Path, default=Path("data/synthetic"), help="with --seed (data/synthetic)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return seed_studies(args.seed, args.dataset_dir, args.split)
    if args.studies is None or args.out is None:
        parser.error("--studies and --out are required (or --seed DIR)")
    datalist = build_reviewed_datalist(
        args.studies if args.studies.startswith(("http://", "https://")) else Path(args.studies), args.out, args.tag, args.min_level, args.split, args.pathology_class
    )
    entries = datalist[args.split]
    per_class: dict[int, int] = {}
    for e in entries:
        per_class[e["label"]] = per_class.get(e["label"], 0) + 1
    print(f"wrote {args.out}: {args.split} {len(entries)} (per class {dict(sorted(per_class.items()))})", file=sys.stderr)
    return datalist


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
