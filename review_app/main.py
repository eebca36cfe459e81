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
datastore (``lib/datastore.py``). ``--studies http://host:8042/dicom-web`` serves a DICOMweb server's radiographs
instead, writing the explanations and the reviewed labels to it as DICOM SEG (``lib/pacs.py``), with OHIF at
``/ohif/``. Errors a client can cause answer HTTP 4xx with a message, not MONAI Label's 500: an unknown model, an
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
from pathlib import Path

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
from lib.datastore import STUDY_EXTENSIONS, ReviewDatastore  # noqa: E402
from lib.explain import ExplainTask  # noqa: E402

logger = logging.getLogger(__name__)



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
            pacs = self.studies.startswith(("http://", "https://"))
            guard.install(monailabel.app.app, token=self.token, max_body=self.max_body, cors_origins=origins,
                          viewer=pacs)
            logger.info(
                "review API: %s; token %s; CORS %s", guard.SERVED, "required" if self.token else "off (loopback only)",
                origins or "off",
            )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return self._init_pacs()
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

    def _init_pacs(self):
        """A DICOMweb server as the datastore (lib/pacs.py); a bad setting stops the server with one line."""
        from lib.pacs import PacsDatastore, search_filter

        try:
            if settings.MONAI_LABEL_DATASTORE.lower() not in ("", "dicomweb"):
                raise ValueError(f"the review app serves a folder or a DICOMweb server, not {settings.MONAI_LABEL_DATASTORE}")
            cache = settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or str(self.runtime / "pacs")
            datastore = PacsDatastore(
                self.studies, cache, settings.MONAI_LABEL_DICOMWEB_USERNAME or "",
                settings.MONAI_LABEL_DICOMWEB_PASSWORD or "", search_filter(),
            )
            datastore.list_images()  # the server answers, with these credentials
        except Exception as e:
            message = f"cannot use the DICOMweb server {self.studies}: {getattr(e, 'detail', None) or e}"
            if _in_server():
                _refuse(message)
            raise ValueError(message) from None
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
        explained = task.explain(request)
        pacs = getattr(datastore, "store", None)
        if pacs is not None and explained["params"]["send_to_pacs"]:
            # the explanation to the PACS: SEG of the levels + heatmap, same Study, new Series (lib/pacs.py)
            explained["result"]["pacs"] = pacs(list(task.dicom_objects(explained)))
        result_file = task.write_result(explained)
        result_json = explained["result"]
        label_id = result_file
        if save:
            try:
                extra = {"to_pacs": False} if pacs is not None else {}  # the explanation is in the PACS already
                label_id = datastore.save_label(image, result_file, tag, {"model": model, "params": result_json},
                                                **extra)
            except BaseException:
                if os.path.isfile(result_file):
                    os.unlink(result_file)
                raise
        return {"label": label_id, "tag": tag, "file": result_file, "params": result_json}
