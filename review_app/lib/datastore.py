"""The review app's local datastore: MONAI Label's, closed (ids, paths and labels checked; docs/review.md).

A folder of study images (PNG/JPEG, NIfTI, single-frame DICOM radiographs, read by the bundle's own readers:
``scripts/data/readers.py`` works under this environment's pydicom 2.4). Reviewed labels are PNG, NIfTI or a DICOM
SEG of the study (``.dcm``, scripts/dicom/seg.py).
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from . import guard

__all__ = ["LABEL_SUFFIXES", "STUDY_EXTENSIONS", "ReviewDatastore", "load_image", "load_label"]

#: study files the datastore lists: what the bundle's readers load.
STUDY_EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.nii.gz", "*.nii", "*.dcm"]
#: reviewed-label formats the datastore accepts (scripts.data.reviewed reads the same ones).
LABEL_SUFFIXES = guard.LABEL_SUFFIXES


def load_image(path: str):
    """An image or a PNG/NIfTI label as the bundle loads it: channel first, then x-first spatial axes."""
    from monai.transforms import LoadImage
    from scripts.data import reader_for

    return LoadImage(image_only=True, ensure_channel_first=True)(path, reader=reader_for(path))


def load_label(path: str, image_path: str):
    """A reviewed label as :func:`load_image` loads it; a DICOM SEG (``.dcm``) must reference the study's instance
    and is decoded to its label map (x first, as the study)."""
    if not path.lower().endswith(".dcm"):
        return load_image(path)
    import torch

    from scripts.dicom.compat import read_dataset
    from scripts.dicom.seg import read_segmentation

    levels, info = read_segmentation(read_dataset(path))
    if image_path.lower().endswith(".dcm"):
        sop = str(read_dataset(image_path, stop_before_pixels=True).SOPInstanceUID)
        if sop not in info["sop_instance_uids"]:
            raise ValueError("the SEG does not reference this study's instance (SOPInstanceUID)")
    return torch.from_numpy(levels.T.copy())[None]


def _scrub(message: str, *paths: str) -> str:
    """``message`` without server paths: each of ``paths`` (and its resolved form) replaced by its file name."""
    for p in paths:
        for form in {p, os.path.realpath(p)}:
            if form:
                message = message.replace(form, os.path.basename(form))
    return message


class ReviewDatastore(LocalDatastore):
    """The local datastore, closed: ids and tags checked, every path kept inside the studies, labels checked.

    Image ids and label tags must match :data:`lib.guard.ID_PATTERN`; an image path that resolves outside the
    studies folder, or a label path outside ``<studies>/labels``, is never read or written (a study linked from
    elsewhere is not served: copy it in). Images are not added or removed through the API; a label never lands on
    an image. A label must belong to an image of the datastore, be PNG, NIfTI or a DICOM SEG of the image, and have
    the image's size (reviewed
    labels become lesion masks: ``python -m scripts.data.reviewed``).
    """

    #: writes of this process one at a time (MONAI Label's file lock is per process; its reload thread re-reads)
    _write_lock = threading.RLock()

    @staticmethod
    def _valid(value: Any) -> bool:
        return isinstance(value, str) and guard.ID_PATTERN.fullmatch(value) is not None and ".." not in value

    def _labels_root(self) -> str:
        return self._datastore.label_path(None)

    def get_image_uri(self, image_id: str) -> str:
        if not self._valid(image_id):
            return ""
        uri = super().get_image_uri(image_id)
        return uri if uri and guard.inside(self._datastore_path, uri) else ""

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        return super().get_image_info(image_id) if self.get_image_uri(image_id) else {}

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        if not (self._valid(label_id) and self._valid(label_tag)):
            return ""
        uri = super().get_label_uri(label_id, label_tag)
        return uri if uri and self._label_path_ok(uri) else ""

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        return super().get_label_info(label_id, label_tag) if self.get_label_uri(label_id, label_tag) else {}

    def _label_path_ok(self, path: str) -> bool:
        """Inside ``<studies>/labels`` (resolved), that folder inside the studies, and not an image's file."""
        root = self._labels_root()
        if not (guard.inside(self._datastore_path, root) and guard.inside(root, path)):
            return False
        real = os.path.realpath(path)
        if os.path.realpath(os.path.dirname(real)) == os.path.realpath(self._datastore.image_path()):
            return False
        return real not in {super(ReviewDatastore, self).get_image_uri(i) for i in self._datastore.objects}

    def list_images(self) -> list[str]:
        return [i for i in super().list_images() if self._valid(i)]

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return [i for i in super().get_unlabeled_images(label_tag, labels) if self._valid(i)]

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return [i for i in super().get_labeled_images(label_tag, labels) if self._valid(i)]

    def json(self) -> dict[str, Any]:
        record = super().json()
        record["objects"] = {k: v for k, v in record.get("objects", {}).items() if self._valid(k)}
        return record

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        raise HTTPException(status_code=403, detail="the review app does not add images; copy them into the studies")

    def remove_image(self, image_id: str) -> None:
        raise HTTPException(status_code=403, detail="the review app does not remove images")

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if not self.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"image id {image_id!r} is not in the datastore")
        with self._write_lock:
            return super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        if not self.get_label_uri(label_id, label_tag):
            raise HTTPException(status_code=404, detail="no such label")
        with self._write_lock:
            return super().update_label_info(label_id, label_tag, info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        raise HTTPException(status_code=403, detail="the review app does not remove labels; save a new one")

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        guard.check_id(image_id, "image id")
        guard.check_id(label_tag, "label tag")
        self._check_label(image_id, label_filename)
        suffix = next(s for s in LABEL_SUFFIXES if label_filename.lower().endswith(s))
        dest = os.path.join(self._datastore.label_path(label_tag), image_id + suffix)
        if not self._label_path_ok(dest):
            raise HTTPException(status_code=403, detail="labels are stored under the datastore's labels/ folder only")
        with self._write_lock:
            return super().save_label(image_id, label_filename, label_tag, label_info)

    def _check_label(self, image_id: str, label_filename: str) -> None:
        image_uri = self.get_image_uri(image_id)
        if not image_uri:
            raise HTTPException(status_code=404, detail=f"image id {image_id!r} is not in the datastore")
        if not os.path.basename(label_filename).lower().endswith(LABEL_SUFFIXES):
            raise HTTPException(status_code=415, detail=f"save reviewed labels as {list(LABEL_SUFFIXES)}")
        try:
            label, image = load_label(label_filename, image_uri), load_image(image_uri)
        except Exception as e:  # an unreadable upload
            why = _scrub(f"{type(e).__name__}: {e}", label_filename, image_uri, tempfile.gettempdir(), self._datastore_path)
            raise HTTPException(status_code=422, detail=f"cannot read the label for {image_id!r}: {why}") from None
        if tuple(label.shape[1:]) != tuple(image.shape[1:]):
            raise HTTPException(
                status_code=422,
                detail=f"label for {image_id!r} has size {list(label.shape[1:])}, its image {list(image.shape[1:])} "
                "(as loaded, x first); a reviewed label must have the image's size",
            )
        if label.numel() and (bool((label < 0).any()) or not bool((label == label.round()).all())):
            raise HTTPException(
                status_code=422, detail=f"label for {image_id!r} must hold integer levels >= 0 (0 = background)"
            )
