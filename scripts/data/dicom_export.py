"""Write a datalist's images as DICOM radiographs, as a PACS would hold them (12-bit DX, some MONOCHROME1).

``python -m scripts.data.dicom_export --datalist data/synthetic/datalist.json [--dataset_dir DIR] [--split test]
--out DIR [--limit N] [--monochrome1-every 3]``

For every image of the split: one DICOM file ``<out>/<stem>.dcm``, Digital X-Ray Image Storage - For Presentation
(SOP class 1.2.840.10008.5.1.4.1.1.1.1), one Patient / Study / Series / instance per image (PatientID = the file's
stem), 16 bits allocated and 12 stored, without ``ImagePositionPatient`` / ``ImageOrientationPatient`` (as a DX
has none). The image as the bundle loads it is scaled from its own range to 0..4095; every ``--monochrome1-every``-th
image is stored MONOCHROME1 (``4095 - v``; the bundle's reader inverts it back), the others MONOCHROME2. So the
bundle reads each DICOM as the source image up to the 12-bit quantisation (its ``ScaleIntensityd`` rescales both).

Also written: ``<out>/datalist.json`` with the split's entries pointing at the DICOM files (label and mask kept,
masks copied to ``<out>/masks/``), so the bundle's stages run on the DICOM copy as on the source.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import BundleInputError

__all__ = ["DX_SOP_CLASS", "export_datalist", "radiograph_dataset", "main"]

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
BITS = 12


def _uid(*parts: str) -> str:
    """A UID under pydicom's root, the same for the same inputs: re-exporting an unchanged image gives the same
    study (a PACS keeps one copy), a changed one new UIDs."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["simadv_explainer", *parts])


def radiograph_dataset(matrix: np.ndarray, name: str, *, monochrome1: bool = False, pixel_spacing: float = 0.5):
    """A DX dataset of ``matrix`` (``(rows, cols)`` integers 0..4095, MONOCHROME2 sense) named ``name``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.min() < 0 or matrix.max() > 2**BITS - 1:
        raise BundleInputError(f"{name}: expected a 2D matrix of 0..{2**BITS - 1}")
    stored = (2**BITS - 1 - matrix) if monochrome1 else matrix
    key = hashlib.sha256(np.ascontiguousarray(stored.astype(np.uint16)).tobytes()).hexdigest()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = _uid(name, key, "instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Synthetic^{name}", name, "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(name, key, "study"), _uid(name, key, "series")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = datetime.date(2026, 1, 1).strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", hashlib.sha1(name.encode()).hexdigest()[:16], ""
    ds.StudyDescription, ds.SeriesDescription = "simadv_explainer synthetic radiograph", "chest PA"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer = "simadv_explainer"
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = matrix.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS, BITS - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = -1 if monochrome1 else 1
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.PixelData = np.ascontiguousarray(stored.astype(np.uint16)).tobytes()
    return ds


def _matrix12(path: str) -> np.ndarray:
    """The image as the bundle loads it (x first), as a ``(rows, cols)`` 12-bit matrix over its own range."""
    from monai.transforms import LoadImage

    from .transforms import reader_for

    img = np.asarray(LoadImage(image_only=True)(path, reader=reader_for(path)), dtype=np.float64)
    if img.ndim != 2:
        raise BundleInputError(f"{path}: expected a single 2D grayscale image, got shape {list(img.shape)}")
    lo, hi = float(img.min()), float(img.max())
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.round(scaled * (2**BITS - 1)).astype(np.uint16).T  # x-first -> (rows, cols)


def export_datalist(datalist: str | os.PathLike, dataset_dir: str | os.PathLike, out: str | os.PathLike,
                    split: str = "test", limit: int | None = None, monochrome1_every: int = 3) -> list[Path]:
    """Write the split's images as DICOM to ``out`` (module docstring); the files written."""
    from ..dicom.compat import write_dataset
    from .datalist import load_datalist

    if monochrome1_every < 0:
        raise BundleInputError(f"--monochrome1-every must be 0 (none) or more, got {monochrome1_every}")
    if limit is not None and limit < 1:
        raise BundleInputError(f"--limit must be at least 1, got {limit}")
    out = Path(out)
    entries = load_datalist(datalist, dataset_dir, split)[:limit]
    out.mkdir(parents=True, exist_ok=True)
    files, listed = [], []
    for i, e in enumerate(entries):
        name = Path(e["image"]).name.split(".")[0]
        m1 = monochrome1_every > 0 and i % monochrome1_every == monochrome1_every - 1
        ds = radiograph_dataset(_matrix12(e["image"]), name, monochrome1=m1)
        path = out / f"{name}.dcm"
        tmp = out / f".{name}.dcm.tmp"
        write_dataset(ds, tmp)
        os.replace(tmp, path)
        files.append(path)
        entry = {"image": path.name, "label": e["label"]}
        if e.get("mask"):
            mask = out / "masks" / Path(e["mask"]).name
            mask.parent.mkdir(exist_ok=True)
            shutil.copy2(e["mask"], mask)
            entry["mask"] = f"masks/{mask.name}"
        listed.append(entry)
    (out / "datalist.json").write_text(json.dumps({split: listed}, indent=1) + "\n", encoding="utf-8")
    return files


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m scripts.data.dicom_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, required=True, help="the datalist to export")
    parser.add_argument("--dataset_dir", type=Path, help="its dataset_dir (default: the datalist's folder)")
    parser.add_argument("--split", default="test", help="split to export (default: test)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the DICOM files")
    parser.add_argument("--limit", type=int, help="export only the first N images")
    parser.add_argument("--monochrome1-every", type=int, default=3, help="every N-th image MONOCHROME1 (0: none)")
    args = parser.parse_args(argv)
    files = export_datalist(args.datalist, args.dataset_dir or args.datalist.parent, args.out, args.split,
                            args.limit, args.monochrome1_every)
    print(f"wrote {len(files)} DICOM file(s) to {args.out}", file=sys.stderr)
    return files


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
