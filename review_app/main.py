"""MONAI Label app for interactive review of the bundle's explanations (docs/review.md).

Start it from the bundle root with the review environment (``./run.sh review-app`` does this)::

    .venv-review/bin/python -m monailabel.main start_server --app review_app --studies data/synthetic/images \\
        --host 127.0.0.1 --port 8000 [--conf models DIR] [--conf overrides '{"image_size": [64, 64]}']

``--conf`` keys (all optional):

* ``models``: folder with ``explainer.pt`` and ``classifier.pt`` (default: ``<bundle>/models``);
* ``config``: inference config relative to the bundle root (default ``configs/inference.json``);
* ``overrides``: a JSON object of further config overrides (``image_size``, ``classifier_def``...), as on the
  ``monai.bundle run`` command line; like the configs themselves, ``$`` expressions there execute code;
* ``device``: ``cpu``, ``cuda``, ``cuda:1`` (default: the config's, CUDA when available);
* ``bundle``: the bundle root (default: this folder's parent).

Unlike MONAI Label's sample ``monaibundle`` app it fetches nothing at start (no model-zoo index): it serves the
bundle next to it. Temporary files and sessions live under ``review_app/.runtime/`` (or ``$SIMADV_REVIEW_RUNTIME``),
and the datastore (``datastore_v2.json``, ``labels/<tag>/``) in the studies folder, as in every local MONAI Label
datastore. Errors a client can cause answer HTTP 4xx with a message, not MONAI Label's 500: an unknown model, an
image id that is not in the datastore, a label for an unknown image or of the wrong size, an unreadable image, an
unknown or bad parameter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
DEFAULT_BUNDLE_ROOT = APP_DIR.parent
for _p in (str(APP_DIR), str(DEFAULT_BUNDLE_ROOT)):  # lib.* and the bundle's scripts.*
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402

from lib.explain import ExplainTask  # noqa: E402

logger = logging.getLogger(__name__)

#: study files the datastore lists: what the bundle's readers load in this environment (DICOM needs pydicom 3).
STUDY_EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.nii.gz", "*.nii"]
#: reviewed-label formats the datastore accepts (scripts.data.reviewed reads the same ones).
LABEL_SUFFIXES = (".png", ".nii.gz", ".nii")


def _runtime_dir() -> Path:
    return Path(os.environ.get("SIMADV_REVIEW_RUNTIME") or APP_DIR / ".runtime").resolve()


def _load(path: str):
    """An image or label as the bundle loads it: channel first, then x-first spatial axes."""
    from monai.transforms import LoadImage
    from scripts.data import reader_for

    return LoadImage(image_only=True, ensure_channel_first=True)(path, reader=reader_for(path))


def _discard_upload(path: Any) -> None:
    """Remove an uploaded temp file MONAI Label leaves behind when a request fails (it cleans up on success only)."""
    if isinstance(path, str) and os.path.isfile(path):
        tmp = os.path.realpath(tempfile.gettempdir())
        if os.path.commonpath([os.path.realpath(path), tmp]) == tmp:
            os.unlink(path)


class ReviewDatastore(LocalDatastore):
    """The local datastore, with a reviewer's label checked before it is stored (404 / 422, not 500).

    A label must belong to an image of the datastore, be PNG or NIfTI, and have the image's size (reviewed labels
    become lesion masks: ``python -m scripts.data.reviewed``).
    """

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            self._check_label(image_id, label_filename)
        except HTTPException:
            _discard_upload(label_filename)
            raise
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def _check_label(self, image_id: str, label_filename: str) -> None:
        image_uri = self.get_image_uri(image_id)
        if not image_uri:
            raise HTTPException(status_code=404, detail=f"image id {image_id!r} is not in the datastore")
        if not os.path.basename(label_filename).lower().endswith(LABEL_SUFFIXES):
            raise HTTPException(status_code=415, detail=f"save reviewed labels as {list(LABEL_SUFFIXES)}")
        try:
            label, image = _load(label_filename), _load(image_uri)
        except Exception as e:  # an unreadable upload
            raise HTTPException(
                status_code=422, detail=f"cannot read the label for {image_id!r}: {type(e).__name__}: {e}"
            ) from None
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


class SimAdvReviewApp(MONAILabelApp):
    """Serves ``explain`` (review_app/lib/explain.py) over a local datastore of study images."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.runtime = _runtime_dir()
        for sub in ("tmp", "sessions"):
            (self.runtime / sub).mkdir(parents=True, exist_ok=True)
        # MONAI Label writes uploads, results and sessions with tempfile and settings: keep them in our folder
        tempfile.tempdir = str(self.runtime / "tmp")
        if not settings.MONAI_LABEL_SESSION_PATH:
            settings.MONAI_LABEL_SESSION_PATH = str(self.runtime / "sessions")
        self.bundle_root = Path(conf.get("bundle") or DEFAULT_BUNDLE_ROOT).resolve()
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))
        self.models_dir = Path(conf.get("models") or self.bundle_root / "models").resolve()
        try:
            self.overrides = json.loads(conf.get("overrides") or "{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"--conf overrides is not JSON: {e}") from None
        if not isinstance(self.overrides, dict):
            raise ValueError("--conf overrides must be a JSON object, e.g. '{\"image_size\": [64, 64]}'")
        meta = json.loads((self.bundle_root / "configs" / "metadata.json").read_text())
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="simadv_explainer review",
            description="Explanations of the bundle's classifier (similar/adversarial generation) for review",
            version=str(meta.get("version", "")),
        )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()  # DICOMweb/XNAT/DSA: MONAI Label's own handling
        return ReviewDatastore(
            self.studies,
            extensions=STUDY_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {
            "explain": ExplainTask(
                bundle_root=self.bundle_root,
                models_dir=self.models_dir,
                config_file=self.conf.get("config") or "configs/inference.json",
                overrides=self.overrides,
                device=self.conf.get("device") or None,
            )
        }

    def _allowed_path(self, path: str) -> bool:
        """A file path as ``image`` only from the studies, the app's temp folder (uploads) or its sessions."""
        real = os.path.realpath(path)
        roots = [self.studies, str(self.runtime), settings.MONAI_LABEL_SESSION_PATH]
        return any(r and os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r) for r in roots)

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; this app serves {sorted(self._infers)}")
        image = request.get("image")
        if isinstance(image, str):
            if not image:
                raise HTTPException(status_code=400, detail="no image id given (?image=<id>)")
            if os.path.exists(image):
                if not self._allowed_path(image):
                    raise HTTPException(status_code=403, detail="image must be an id of the datastore, not a server path")
            elif not (datastore or self.datastore()).get_image_uri(image):
                raise HTTPException(
                    status_code=404,
                    detail=f"image id {image!r} is not in the datastore; GET /datastore/?output=all lists the ids",
                )
            request = {**request, "image_id": os.path.basename(image) if os.path.exists(image) else image}
        try:
            return super().infer(request, datastore)
        except HTTPException:
            _discard_upload(request.get("image"))
            raise
