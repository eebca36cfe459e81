"""The review app on a PACS: a DICOMweb server (Orthanc, ...) as MONAI Label's datastore (docs/review.md, "PACS").

``--studies http://127.0.0.1:8042/dicom-web`` serves the DX and CR radiograph series of the server (QIDO-RS search
``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, default ``{"Modality": "DX,CR"}``; basic authentication from
``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD``), one image id per series (its SeriesInstanceUID). Unlike MONAI
Label's own DICOMweb datastore it needs no dcmqi tools and reads the radiograph as DICOM, through the bundle's
reader, not a NIfTI conversion; it writes its SEG with ``scripts/dicom/seg.py``, since dcmqi and pydicom-seg stop on
a DX (no ImagePositionPatient / ImageOrientationPatient).

* An image is fetched (WADO-RS) on first use into a local cache, a MONAI Label local datastore
  (``$MONAI_LABEL_DICOMWEB_CACHE_PATH`` or ``review_app/.runtime/pacs/<hash of the URL>``): ``<series uid>.dcm``.
  Only ids the search lists are fetched, and only single-image series are explained.
* ``save_label`` (a reviewer's label, PNG/NIfTI/SEG of the image's size) is checked as on a folder, written as a
  DICOM SEG (segments MANUAL, series "simadv reviewed <tag>") in the image's Study and sent with STOW-RS; the cache
  keeps the uploaded file and the new series' UIDs in the label's info.
* What the PACS receives: those SEGs, and the explanation of an ``explain`` request (SEG + heatmap Secondary
  Capture, ``send_to_pacs``, on by default; lib/explain.py). Nothing else: failed requests send nothing.

Talking to the server goes through ``scripts/dicom/dicomweb.py``, the bundle's DICOMweb client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from . import guard
from .datastore import ReviewDatastore, load_label

__all__ = ["DEFAULT_SEARCH_FILTER", "PacsDatastore", "REVIEWED_PREFIX", "search_filter"]

logger = logging.getLogger(__name__)

DEFAULT_SEARCH_FILTER = {"Modality": "DX,CR"}
MONAI_LABEL_DEFAULT_FILTER = {"Modality": "CT"}
SEARCH_FILTER_ENV = "MONAI_LABEL_DICOMWEB_SEARCH_FILTER"
#: SeriesDescription of a reviewer's SEG (scripts.data.reviewed looks for it)
REVIEWED_PREFIX = "simadv reviewed"
LIST_TTL_S = 5.0
SERIES_UID, STUDY_UID, SOP_UID, MODALITY = "0020000E", "0020000D", "00080018", "00080060"


def search_filter() -> dict[str, str]:
    """The QIDO-RS filter for the images to review: ``$MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` (a JSON object) unless it
    is MONAI Label's CT default, else DX and CR radiographs."""
    raw = os.environ.get(SEARCH_FILTER_ENV, "").strip()
    if not raw:
        return dict(DEFAULT_SEARCH_FILTER)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{SEARCH_FILTER_ENV} is not JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{SEARCH_FILTER_ENV} must be a JSON object of strings, e.g. {json.dumps(DEFAULT_SEARCH_FILTER)}")
    if value == MONAI_LABEL_DEFAULT_FILTER:  # `start_server` exports its defaults; CT is not what this app explains
        return dict(DEFAULT_SEARCH_FILTER)
    return value


class PacsDatastore(ReviewDatastore):
    """A DICOMweb server's radiographs, cached in a local (closed) datastore; see the module docstring."""

    def __init__(self, url: str, cache_root: str, username: str = "", password: str = "",
                 filters: dict[str, str] | None = None):
        from scripts.dicom.dicomweb import DicomWebClient

        self.url = url.rstrip("/")
        self.client = DicomWebClient(self.url, username, password)
        self.filters = dict(filters or DEFAULT_SEARCH_FILTER)
        cache = os.path.join(cache_root, hashlib.sha256(self.url.encode()).hexdigest()[:16])
        os.makedirs(cache, exist_ok=True)
        self._series: dict[str, str] = {}  # series uid -> study uid
        self._listed_at = -1e9
        self._fetch_lock = threading.Lock()
        super().__init__(cache, extensions=["*.dcm"], auto_reload=False)

    def name(self) -> str:
        return "DICOMweb"

    # ------------------------------------------------------------------------------------------------ listing
    def _list(self) -> dict[str, str]:
        if time.monotonic() - self._listed_at > LIST_TTL_S:
            from scripts.dicom.dicomweb import DicomWebError, tag_value

            try:
                found = self.client.search("series", self.filters, includefields=[STUDY_UID])
            except DicomWebError as e:
                logger.warning("PACS search failed: %s", e)
                raise HTTPException(status_code=502, detail="the PACS did not answer the series search") from None
            series = {}
            for record in found:
                uid, study = tag_value(record, SERIES_UID), tag_value(record, STUDY_UID)
                if isinstance(uid, str) and self._valid(uid) and isinstance(study, str) and self._valid(study):
                    series[uid] = study
            self._series, self._listed_at = series, time.monotonic()
        return self._series

    def list_images(self) -> list[str]:
        return sorted(self._list())

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        labeled = set(super().get_labeled_images(label_tag, labels))
        return [i for i in self.list_images() if i not in labeled]

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return [i for i in super().get_labeled_images(label_tag, labels) if i in self._list()]

    def json(self) -> dict[str, Any]:
        record = super().json()
        for uid in self.list_images():  # listed in the PACS, not fetched yet
            record["objects"].setdefault(uid, {"image": {"ext": ".dcm", "info": {}}, "labels": {}})
        return record

    # ------------------------------------------------------------------------------------------------ images
    def get_image_uri(self, image_id: str) -> str:
        if not self._valid(image_id):
            return ""
        if image_id not in self._datastore.objects:
            if image_id not in self._list():
                return ""
            self._fetch(image_id)
        return super().get_image_uri(image_id)

    def _fetch(self, series: str) -> None:
        """The series' one instance, into the cache (refused with 422 when the series holds several)."""
        from scripts.dicom.dicomweb import DicomWebError, tag_value

        with self._fetch_lock:
            if series in self._datastore.objects:
                return
            study = self._series[series]
            try:
                instances = self.client.search(f"studies/{study}/series/{series}/instances")
                if len(instances) != 1:
                    raise HTTPException(
                        status_code=422,
                        detail=f"series {series!r} holds {len(instances)} instances; the review app explains "
                        "single-image radiograph series",
                    )
                data = self.client.retrieve_instance(study, series, str(tag_value(instances[0], SOP_UID)))
            except DicomWebError as e:
                logger.warning("PACS fetch of %s failed: %s", series, e)
                raise HTTPException(status_code=502, detail=f"the PACS did not send series {series!r}") from None
            fd, temp = tempfile.mkstemp(suffix=".dcm", prefix="pacs_")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                with self._write_lock:
                    LocalDatastore.add_image(self, series, temp, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
            finally:
                os.unlink(temp)

    # ------------------------------------------------------------------------------------------------ to the PACS
    def store(self, datasets: list[Any]) -> dict[str, Any]:
        """STOW-RS ``datasets``; their UIDs (502 when the PACS refuses)."""
        from scripts.dicom.compat import dataset_bytes
        from scripts.dicom.dicomweb import DicomWebError

        try:
            self.client.store([dataset_bytes(ds) for ds in datasets])
        except DicomWebError as e:
            logger.warning("STOW-RS failed: %s", e)
            raise HTTPException(status_code=502, detail="the PACS refused the DICOM objects (STOW-RS)") from None
        role = {"SEG": "seg", "OT": "heatmap"}
        return {
            role.get(str(ds.Modality), str(ds.Modality)): {"StudyInstanceUID": str(ds.StudyInstanceUID),
                               "SeriesInstanceUID": str(ds.SeriesInstanceUID), "SOPInstanceUID": str(ds.SOPInstanceUID)}
            for ds in datasets
        }

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   to_pacs: bool = True) -> str:
        """Check and cache the label (as on a folder), then send it to the PACS as a SEG (``to_pacs``)."""
        guard.check_id(image_id, "image id")
        guard.check_id(label_tag, "label tag")
        self._check_label(image_id, label_filename)  # before anything is sent
        if to_pacs:
            from scripts.dicom.compat import read_dataset
            from scripts.dicom.seg import segmentation

            image = self.get_image_uri(image_id)
            levels = load_label(label_filename, image)[0].numpy().T.astype("uint8")  # (rows, cols)
            values = sorted(int(v) for v in set(levels.ravel().tolist()) if v > 0) or [1]
            cls = label_info.get("class")
            seg = segmentation(
                read_dataset(image, stop_before_pixels=True), levels, {v: f"reviewed level {v}" for v in values},
                series_description=f"{REVIEWED_PREFIX} {label_tag}", algorithm_type="MANUAL",
                content_label="REVIEWED", content_description=f"class={cls}" if isinstance(cls, int) else "",
                series_number=903,
            )
            label_info = {**label_info, "pacs": self.store([seg])["seg"]}
        return super().save_label(image_id, label_filename, label_tag, label_info)
