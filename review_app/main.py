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

The server is closed by default (``lib/guard.py``, docs/review.md "Security"): only the review loop's endpoints,
ids and tags checked against a strict pattern, paths kept inside the studies, CORS only for the origins in
``MONAI_LABEL_CORS_ORIGINS``, and beyond loopback only with a bearer token (``$SIMADV_REVIEW_TOKEN``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import tempfile
import threading
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

from lib import guard  # noqa: E402
from lib.explain import ExplainTask  # noqa: E402

logger = logging.getLogger(__name__)

#: study files the datastore lists: what the bundle's readers load in this environment (DICOM needs pydicom 3).
STUDY_EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.nii.gz", "*.nii"]
#: reviewed-label formats the datastore accepts (scripts.data.reviewed reads the same ones).
LABEL_SUFFIXES = guard.LABEL_SUFFIXES


def _runtime_dir() -> Path:
    return Path(os.environ.get("SIMADV_REVIEW_RUNTIME") or APP_DIR / ".runtime").resolve()


def _in_server() -> bool:
    """Whether this process is MONAI Label's server (``monailabel.app``), not one of its task subprocesses."""
    return "monailabel.app" in sys.modules


def _refuse(message: str) -> None:
    """Stop the server before it binds: one line, exit 1 (uvicorn would print two tracebacks for an exception)."""
    print(f"review app: {message}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(1)


def _load(path: str):
    """An image or label as the bundle loads it: channel first, then x-first spatial axes."""
    from monai.transforms import LoadImage
    from scripts.data import reader_for

    return LoadImage(image_only=True, ensure_channel_first=True)(path, reader=reader_for(path))


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
    an image. A label must belong to an image of the datastore, be PNG or NIfTI, and have the image's size (reviewed
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
            label, image = _load(label_filename), _load(image_uri)
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


class SimAdvReviewApp(MONAILabelApp):
    """Serves ``explain`` (review_app/lib/explain.py) over a local datastore of study images, closed by default.

    Inside MONAI Label's server it replaces the server's routes and middleware by the review loop's
    (:func:`lib.guard.install`), and refuses to start bound beyond loopback without ``$SIMADV_REVIEW_TOKEN``.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.token = guard.review_token()
        if _in_server():
            try:
                self.max_body = guard.max_upload_bytes()
            except ValueError as e:
                _refuse(str(e))
            refusal = guard.refuse_unsafe_start(guard.bind_host(), self.token)
            if refusal:
                _refuse(refusal)
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
        if _in_server():
            import monailabel.app

            origins = guard.cors_origins(settings.MONAI_LABEL_CORS_ORIGINS)
            guard.install(monailabel.app.app, token=self.token, max_body=self.max_body, cors_origins=origins)
            logger.info(
                "review API: %s; token %s; CORS %s", guard.SERVED, "required" if self.token else "off (loopback only)",
                origins or "off",
            )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            message = "the review app serves a local studies folder only (not DICOMweb/XNAT/DSA)"
            if _in_server():
                _refuse(message)
            raise ValueError(message)
        datastore = ReviewDatastore(
            self.studies,
            extensions=STUDY_EXTENSIONS,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )
        skipped = len(LocalDatastore.list_images(datastore)) - len(datastore.list_images())
        if skipped:
            logger.warning(
                "%d study file(s) not served: their ids (file names) are not letters, digits, '.', '_', '-'", skipped
            )
        return datastore

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

    def init_trainers(self) -> dict:
        return {}

    def init_scoring_methods(self) -> dict:
        return {}

    def init_batch_infer(self):
        return {}

    def infer(self, request, datastore=None):
        """One explain request on an image of the datastore, by id (a path, even an existing one, answers 400).

        Unlike MONAI Label's ``infer`` it never looks an id up as a file path, and removes the result file when
        storing it as a label fails.
        """
        model = request.get("model")
        task = self._infers.get(model) if isinstance(model, str) else None
        if task is None:
            raise HTTPException(
                status_code=404, detail=f"unknown model {str(model)[:64]!r}; this app serves {sorted(self._infers)}"
            )
        image = request.get("image")
        if not image:
            raise HTTPException(status_code=400, detail="no image id given (?image=<id>)")
        guard.check_id(image, "image id")
        datastore = datastore or self.datastore()
        uri = datastore.get_image_uri(image)
        if not uri:
            raise HTTPException(
                status_code=404,
                detail=f"image id {image!r} is not in the datastore; GET /datastore/?output=all lists the ids",
            )
        save = str(request.get("save_label", False)).lower() in ("true", "1")
        tag = guard.check_id(request.get("label_tag") or "original", "label tag") if save else "original"
        request = {**copy.deepcopy(request), "description": task.description, "image": uri, "image_id": image}
        result_file, result_json = task(request)
        label_id = result_file
        if save:
            try:
                label_id = datastore.save_label(image, result_file, tag, {"model": model, "params": result_json})
            except BaseException:
                if os.path.isfile(result_file):
                    os.unlink(result_file)
                raise
        return {"label": label_id, "tag": tag, "file": result_file, "params": result_json}
