"""The review server's API, closed by default (docs/review.md, "Security").

MONAI Label's server (``monailabel.app``) serves every endpoint of the framework: training, batch inference,
scoring, logs, a ZIP of the datastore, image upload and deletion, sessions, model upload, with CORS open to any origin
(``allow_credentials`` included). :func:`install` replaces, when the app starts inside that server, its routes by
the few the review loop needs and its middleware by :class:`ReviewGuard`:

* ``GET /info/``; ``POST /infer/explain`` (an image of the datastore by id); ``POST /activelearning/<strategy>``
  (a viewer's "next sample"); ``GET /datastore/`` (``output=stats|all``); ``GET|HEAD /datastore/image``;
  ``PUT|GET|HEAD /datastore/label``; ``/auth/`` for clients that fetch the token as MONAI Label's client does; on a
  PACS datastore also ``GET /ohif/`` (the viewer) and ``GET /proxy/dicom/qido|wado/<QIDO/WADO-RS resource>``
  (read only: no STOW-RS, nothing of the PACS' own API).
  Anything else answers 404 (405 for a served path with another method).
* Image ids and label tags match :data:`ID_PATTERN` (no separator, no ``..``, no absolute path, URL-decoded first:
  FastAPI decodes the query), else 400 before any file is looked at (no existence oracle).
* ``params``/``info`` must be a JSON object (finite numbers, nesting at most :data:`MAX_JSON_DEPTH`), else 400.
* Request bodies above ``$SIMADV_REVIEW_MAX_UPLOAD_MB`` (default 64) answer 413 (FastAPI's ``max_body_size``).
* ``$SIMADV_REVIEW_TOKEN`` (16 characters at least) set: every request needs ``Authorization: Bearer <token>``
  (401 otherwise). Unset: only loopback clients are served, and the app refuses to start bound beyond loopback.
* CORS only for the origins in MONAI Label's ``MONAI_LABEL_CORS_ORIGINS``, without credentials.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse
from monailabel.endpoints import activelearning as ml_activelearning
from monailabel.endpoints import infer as ml_infer

__all__ = [
    "ID_PATTERN",
    "MAX_JSON_DEPTH",
    "ReviewGuard",
    "bind_host",
    "check_id",
    "cors_origins",
    "inside",
    "install",
    "is_loopback",
    "parse_json_object",
    "refuse_unsafe_start",
    "review_token",
]

#: image ids and label tags: a letter or digit, then letters, digits, ``.``, ``_``, ``-`` (and no ``..``).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_JSON_DEPTH = 8
TOKEN_ENV = "SIMADV_REVIEW_TOKEN"
MIN_TOKEN_LENGTH = 16
MAX_UPLOAD_ENV = "SIMADV_REVIEW_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 64
#: label uploads the datastore keeps (scripts.data.reviewed reads the same).
LABEL_SUFFIXES = (".png", ".nii.gz", ".nii", ".dcm")  # .dcm: a DICOM SEG of the study
#: what a viewer may send to ``/activelearning/<strategy>`` (MONAI Label's Random strategy reads these).
STRATEGY_PARAMS = frozenset({"client_id", "label_tag", "labels"})
SERVED = (
    "GET /info/, POST /infer/explain?image=<id>, POST /activelearning/random, GET /datastore/?output=stats|all, "
    "GET /datastore/image?image=<id>, PUT|GET /datastore/label"
)


# --------------------------------------------------------------------------------------------------- checks
def check_id(value: Any, what: str = "image id") -> str:
    """``value`` if it is a valid image id / label tag, else HTTP 400 (the value is not echoed when path-like)."""
    if not isinstance(value, str) or not value:
        raise HTTPException(status_code=400, detail=f"no {what} given")
    if ID_PATTERN.fullmatch(value) is None or ".." in value:
        shown = f" {value!r}" if len(value) <= 64 and not any(c in value for c in "/\\\x00") else ""
        raise HTTPException(
            status_code=400,
            detail=f"bad {what}{shown}: letters, digits, '.', '_' and '-' only, starting with a letter or digit "
            "(a datastore id, not a path)",
        )
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(text: Any, field: str = "params") -> dict[str, Any]:
    """``text`` (a form field) as a JSON object, else HTTP 400 naming the field."""
    if text is None or text == "":
        return {}
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(status_code=400, detail=f"'{field}' is not UTF-8 JSON") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; so are NaN and over-long ints
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "too deeply nested" if isinstance(e, RecursionError) else str(e)
        raise HTTPException(status_code=400, detail=f"'{field}' is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise HTTPException(
            status_code=400, detail=f"'{field}' must be a JSON object, e.g. {{}}; got {type(value).__name__}"
        )
    if _depth(value) > MAX_JSON_DEPTH:
        raise HTTPException(status_code=400, detail=f"'{field}' is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path``, symbolic links resolved, lies inside ``root`` (resolved too)."""
    root_real = os.path.realpath(root)
    try:
        return os.path.commonpath([root_real, os.path.realpath(path)]) == root_real
    except ValueError:  # different drives
        return False


def review_token() -> str:
    return os.environ.get(TOKEN_ENV, "")


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV, "")
    try:
        mb = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        mb = float("nan")
    if not math.isfinite(mb) or mb <= 0:
        raise ValueError(f"{MAX_UPLOAD_ENV}={raw!r} is not a positive number of megabytes")
    return int(mb * 1024 * 1024)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_host(argv: list[str] | None = None) -> str | None:
    """The ``--host`` of ``monailabel start_server`` (its default 0.0.0.0 when not given); None if not started so."""
    argv = list(sys.argv if argv is None else argv)
    if "start_server" not in argv:
        return None
    from monailabel.main import Main

    parser = argparse.ArgumentParser(add_help=False)
    Main.args_start_server(None, parser)  # MONAI Label's own arguments, so -i/--host/--host=... all parse
    args, _ = parser.parse_known_args(argv[argv.index("start_server") + 1 :])
    return args.host


def refuse_unsafe_start(host: str | None, token: str) -> str | None:
    """The one line to stop with when the server would be reachable beyond loopback without a token, else None."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"{TOKEN_ENV} is too short ({len(token)} characters, {MIN_TOKEN_LENGTH} at least); make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not token and not is_loopback(host):
        where = f"--host {host}" if host is not None else "a host this app cannot read (not `start_server --host`)"
        return (
            f"refusing to serve on {where} without a token: set {TOKEN_ENV} (clients then send "
            "'Authorization: Bearer <token>'), or bind --host 127.0.0.1"
        )
    return None


# --------------------------------------------------------------------------------------------------- middleware
async def _send_json(send: Callable, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ReviewGuard:
    """ASGI middleware in front of the review server: with a token, ``Authorization: Bearer`` on every request
    (``/auth/`` and CORS preflights aside); without one, loopback clients only."""

    def __init__(self, app: Callable, token: str = "") -> None:
        self.app = app
        self.token = token

    def _authorized(self, scope: dict) -> bool:
        if not self.token:
            return True
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
        scheme, _, credential = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token.encode())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        client = (scope.get("client") or ("", 0))[0]
        path = scope.get("path", "")
        preflight = scope.get("method") == "OPTIONS"
        if not self.token and not is_loopback(client):
            return await _send_json(send, 403, "this server answers loopback clients only (no token configured)")
        if not (preflight or path in ("/auth/", "/auth/token") or self._authorized(scope)):
            return await _send_json(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------------------------------- routes
def _instance():
    from monailabel.interfaces.utils.app import app_instance

    return app_instance()


def build_router(token: str) -> APIRouter:
    """The review loop's endpoints (each a thin check in front of MONAI Label's own functions)."""
    router = APIRouter()

    @router.get("/info/", summary="App info: the explain task, its parameters, the datastore's counts")
    def info():
        return _instance().info()

    @router.post("/infer/{model}", summary="Explain one image of the datastore")
    def infer(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile | None = File(None),
        label: UploadFile | None = File(None),
        output: ml_infer.ResultType | None = None,
    ):
        instance = _instance()
        if model not in instance._infers:
            raise HTTPException(
                status_code=404, detail=f"unknown model {model[:64]!r}; this app serves {sorted(instance._infers)}"
            )
        if file is not None or label is not None:
            raise HTTPException(
                status_code=400, detail="uploads are not accepted: explain an image of the datastore (?image=<id>)"
            )
        if session_id:
            raise HTTPException(status_code=400, detail="sessions are not served: explain an image by its id")
        if output == ml_infer.ResultType.dicom_seg:
            raise HTTPException(status_code=400, detail="output=dicom_seg is not served; use all, image or json")
        request = {"model": model, "image": image, **parse_json_object(params, "params")}
        result = instance.infer(request)
        return ml_infer.send_response(instance.datastore(), result, output, background_tasks)

    @router.post("/activelearning/{strategy}", summary="Next image to review")
    async def next_sample(strategy: str, request: Request):
        instance = _instance()
        if strategy not in instance._strategies:
            raise HTTPException(
                status_code=404, detail=f"unknown strategy {strategy[:64]!r}; served: {sorted(instance._strategies)}"
            )
        body = await request.body()
        params = parse_json_object(body or None, "body")
        unknown = sorted(set(params) - STRATEGY_PARAMS)
        if unknown:
            raise HTTPException(status_code=400, detail=f"unknown key(s) {unknown[:8]}; accepted: {sorted(STRATEGY_PARAMS)}")
        if "label_tag" in params:
            check_id(params["label_tag"], "label tag")
        labels = params.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise HTTPException(status_code=400, detail="'labels' must be a list of label names")
        if "client_id" in params and not isinstance(params["client_id"], str):
            raise HTTPException(status_code=400, detail="'client_id' must be a string")
        return ml_activelearning.sample(strategy, params)

    @router.get("/datastore/", summary="The datastore: counts (output=stats) or every record (output=all)")
    def datastore(output: str = "stats"):
        d = _instance().datastore()
        if output == "stats":
            return d.status()
        if output == "all":
            return d.json()
        raise HTTPException(status_code=400, detail="output must be 'stats' or 'all'")

    def image_file(image: str) -> str:
        check_id(image, "image id")
        uri = _instance().datastore().get_image_uri(image)
        if not uri or not os.path.isfile(uri):
            raise HTTPException(status_code=404, detail=f"image id {image!r} is not in the datastore")
        return uri

    def label_file(label: str, tag: str) -> str:
        check_id(label, "image id")
        check_id(tag, "label tag")
        uri = _instance().datastore().get_label_uri(label, tag)
        if not uri or not os.path.isfile(uri):
            raise HTTPException(status_code=404, detail=f"no label {tag!r} for image {label!r}")
        return uri

    @router.get("/datastore/image", summary="Download a study image")
    def download_image(image: str = ""):
        path = image_file(image)
        return FileResponse(path, media_type=_mime(path), filename=os.path.basename(path))

    @router.head("/datastore/image", summary="Whether a study image exists (and matches a checksum)")
    def check_image(image: str = "", check_sum: str | None = None):
        path = image_file(image)
        if check_sum:
            algo, _, digest = check_sum.rpartition(":")
            algo = (algo or "SHA256").lower()
            if algo not in ("sha256", "sha1", "md5"):
                raise HTTPException(status_code=400, detail="check_sum: use SHA256:<hex digest>")
            h = hashlib.new(algo)
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if not hmac.compare_digest(h.hexdigest(), digest.lower()):
                raise HTTPException(status_code=404, detail="Image NOT Found (checksum failed)")
        return {}

    @router.put("/datastore/label", summary="Save a reviewed label")
    def save_label(image: str = "", params: str = Form("{}"), tag: str = "final", label: UploadFile = File(...)):
        return _save_label(image, params, tag, label)

    @router.get("/datastore/label", summary="Download a saved label")
    def download_label(label: str = "", tag: str = "final"):
        path = label_file(label, tag)
        return FileResponse(path, media_type=_mime(path), filename=os.path.basename(path))

    @router.head("/datastore/label", summary="Whether a label exists")
    def check_label(image: str = "", tag: str = "final"):
        label_file(image, tag)
        return {}

    @router.get("/auth/", summary="Whether a bearer token is required")
    def auth_enabled():
        return {"enabled": bool(token), "client_id": "simadv-review", "realm": ""}

    @router.post("/auth/token", summary="The bearer token, for clients that log in (password = the token)")
    async def auth_token(request: Request):
        if not token:
            raise HTTPException(status_code=404, detail="no token configured: this server needs none")
        form = await request.form()
        password = str(form.get("password") or "")
        if not hmac.compare_digest(password.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="wrong token", headers={"WWW-Authenticate": "Bearer"})
        return {"access_token": token, "token_type": "bearer"}

    @router.get("/auth/token/valid", summary="Whether the request's token is valid (the guard checked it)")
    def auth_valid():
        return {"username": "reviewer", "email": "", "name": "reviewer", "roles": []}

    return router


#: DICOMweb paths a viewer reads through the proxy (QIDO-RS and WADO-RS, GET only): resource names, UIDs, frame
#: numbers and bulk data tags; anything else of the PACS (its own REST API, STOW-RS) is not reachable.
_DICOMWEB_WORDS = frozenset({"studies", "series", "instances", "metadata", "frames", "rendered", "thumbnail", "bulk"})
_DICOMWEB_SEGMENT = re.compile(r"[0-9][0-9.]{0,63}|[0-9,]{1,64}|[0-9A-Fa-f]{8}")
OHIF_DIR_NAME = "ohif"


def dicomweb_path_ok(path: str) -> bool:
    """Whether ``path`` (after the proxy's prefix) is a QIDO/WADO-RS resource: ``studies[/<uid>[/series...]]``."""
    parts = path.split("/")
    if not parts or parts[0] not in ("studies", "series", "instances") or len(parts) > 12:
        return False
    return all(p in _DICOMWEB_WORDS or (_DICOMWEB_SEGMENT.fullmatch(p) and ".." not in p) for p in parts)


def build_viewer_router() -> APIRouter:
    """OHIF (shipped by MONAI Label, ``/ohif/``) and a read-only DICOMweb proxy to the PACS for it (PACS only)."""
    from fastapi.responses import Response

    router = APIRouter()
    import monailabel.endpoints.ohif as ml_ohif

    ohif_dir = os.path.join(os.path.dirname(os.path.realpath(ml_ohif.__file__)), "static", OHIF_DIR_NAME)

    @router.get("/ohif/{path:path}", include_in_schema=False)
    def ohif(path: str = ""):
        target = os.path.join(ohif_dir, path) if path else ""
        if not (path and inside(ohif_dir, target) and os.path.isfile(target)):
            target = os.path.join(ohif_dir, "index.html")  # the viewer's own routes (/ohif/viewer?...)
        return FileResponse(target, media_type=_mime(target))

    def forward(path: str, request: Request) -> Response:
        from scripts.dicom.dicomweb import DicomWebError

        if not dicomweb_path_ok(path):
            raise HTTPException(status_code=404, detail="not a QIDO-RS / WADO-RS resource")
        datastore = _instance().datastore()
        query = urllib.parse.urlencode(list(request.query_params.multi_items()))
        try:
            status, ctype, body = datastore.client.get(path + (f"?{query}" if query else ""),
                                                       request.headers.get("accept", ""))
        except DicomWebError:
            raise HTTPException(status_code=502, detail="the PACS did not answer") from None
        if status >= 500:
            raise HTTPException(status_code=502, detail=f"the PACS answered {status}")
        if "json" in ctype:  # bulk data links point at the PACS: point them at this proxy instead
            body = body.replace(datastore.url.encode() + b"/", b"/proxy/dicom/wado/")
        return Response(content=body, status_code=status, media_type=ctype or None)

    @router.get("/proxy/dicom/{op}/{path:path}", include_in_schema=False)
    def proxy(op: str, path: str, request: Request):
        if op not in ("qido", "wado"):
            raise HTTPException(status_code=404, detail="the proxy serves qido and wado (read only)")
        return forward(path, request)

    return router


def _mime(path: str) -> str:
    from monailabel.utils.others.generic import get_mime_type

    return get_mime_type(path)


def _save_label(image: str, params: str, tag: str, label: UploadFile) -> dict:
    """Store an uploaded label: checked names, a temp copy in the app's folder, removed whatever happens."""
    check_id(image, "image id")
    check_id(tag, "label tag")
    info = parse_json_object(params, "params")
    name = (label.filename or "").lower()
    suffix = next((s for s in LABEL_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise HTTPException(status_code=415, detail=f"save reviewed labels as {list(LABEL_SUFFIXES)}")
    instance = _instance()
    fd, temp = tempfile.mkstemp(suffix=suffix, prefix="label_")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := label.file.read(1 << 20):
                out.write(chunk)
        label_id = instance.datastore().save_label(image, temp, tag, info)
        result = instance.on_save_label(image, label_id) or {}
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return {**result, "image": image, "label": label_id}


async def _not_served(scope: dict, receive: Callable, send: Callable) -> None:
    await _send_json(send, 404, f"not served by this review app; it serves {SERVED}")


def install(app: Any, token: str, max_body: int, cors_origins: list[str], viewer: bool = False) -> None:
    """Replace ``app``'s (MONAI Label's FastAPI app) routes and middleware by the review app's (module docstring);
    ``viewer``: also OHIF and its read-only DICOMweb proxy (on a PACS datastore)."""
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    router = build_router(token)
    if viewer:
        router.routes.extend(build_viewer_router().routes)
    app.router.routes[:] = router.routes
    app.router.default = _not_served
    app.openapi_schema = None
    middleware = [Middleware(ReviewGuard, token=token)]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_credentials=False,
                allow_methods=["GET", "HEAD", "POST", "PUT"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    app.user_middleware[:] = middleware
    app.max_body_size = max_body  # FastAPI's own limit (413), applied by the stack built below
    app.middleware_stack = app.build_middleware_stack()  # the next request runs through the new stack


def cors_origins(configured: Iterable[Any]) -> list[str]:
    """MONAI Label's ``MONAI_LABEL_CORS_ORIGINS`` as browsers send ``Origin`` (no trailing slash); [] = CORS off."""
    return [str(o).rstrip("/") for o in configured or [] if str(o).strip() and str(o).strip() != "*"]

