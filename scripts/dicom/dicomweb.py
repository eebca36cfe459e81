"""A small DICOMweb client on the standard library: QIDO-RS search, WADO-RS instance retrieval, STOW-RS store.

Enough for the bundle's own needs (the reviewed-labels adapter, the tests, loading a folder into a PACS); the review
app itself talks to the PACS through MONAI Label's datastore. HTTP basic authentication with the same variables as
MONAI Label, ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``MONAI_LABEL_DICOMWEB_PASSWORD``, unless given.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DicomWebClient", "DicomWebError", "multipart_parts", "tag_value"]

USER_ENV, PASSWORD_ENV = "MONAI_LABEL_DICOMWEB_USERNAME", "MONAI_LABEL_DICOMWEB_PASSWORD"


class DicomWebError(RuntimeError):
    """A DICOMweb request that failed (the server's status and the start of its answer)."""


def tag_value(record: Mapping[str, Any], tag: str, default: Any = None) -> Any:
    """The first value of ``tag`` (e.g. ``"0020000E"``) in a DICOM JSON record (QIDO-RS answer)."""
    values = (record.get(tag) or {}).get("Value") or []
    if not values:
        return default
    v = values[0]
    return v.get("Alphabetic", "") if isinstance(v, dict) else v


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a ``multipart/related`` body (headers stripped)."""
    params = dict(
        p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p
    )
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise DicomWebError(f"multipart answer without a boundary ({content_type!r})")
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


class DicomWebClient:
    """``DicomWebClient("http://127.0.0.1:8042/dicom-web")``: ``search``, ``retrieve_instance``, ``store``."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 60):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"DICOMweb URL {url!r} is not http(s)")
        self.url = url.rstrip("/")
        user = os.environ.get(USER_ENV, "") if username is None else username
        word = os.environ.get(PASSWORD_ENV, "") if password is None else password
        self._auth = "Basic " + base64.b64encode(f"{user}:{word}".encode()).decode() if user else ""
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
        headers = dict(headers or {})
        if self._auth:
            headers["Authorization"] = self._auth
        req = urllib.request.Request(f"{self.url}/{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raise DicomWebError(f"{method} {self.url}/{path.split('?')[0]}: HTTP {e.code} {e.read()[:200]!r}") from None
        except urllib.error.URLError as e:
            raise DicomWebError(f"{method} {self.url}/{path.split('?')[0]}: {e.reason}") from None

    def get(self, path: str, accept: str = "") -> tuple[int, str, bytes]:
        """``GET <url>/<path>`` as ``(status, content type, body)``, the server's error statuses included (a viewer
        proxy passes them on); DicomWebError only when the server cannot be reached."""
        headers = {"Accept": accept} if accept else {}
        if self._auth:
            headers["Authorization"] = self._auth
        req = urllib.request.Request(f"{self.url}/{path}", method="GET", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", "") if e.headers else "", e.read()
        except urllib.error.URLError as e:
            raise DicomWebError(f"GET {self.url}/{path.split('?')[0]}: {e.reason}") from None

    def search(self, level: str = "series", filters: Mapping[str, str] | None = None,
               includefields: Iterable[str] = ()) -> list[dict]:
        """QIDO-RS: ``level`` is ``studies``, ``series`` or ``instances`` (or ``studies/<uid>/series``, ...)."""
        query = [(k, str(v)) for k, v in (filters or {}).items()] + [("includefield", f) for f in includefields]
        path = level + ("?" + urllib.parse.urlencode(query) if query else "")
        body, _ = self._request("GET", path, headers={"Accept": "application/dicom+json"})
        return json.loads(body) if body.strip() else []

    def retrieve_instance(self, study: str, series: str, instance: str) -> bytes:
        """WADO-RS: one instance as the bytes of its DICOM file."""
        body, ctype = self._request(
            "GET", f"studies/{study}/series/{series}/instances/{instance}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        parts = multipart_parts(body, ctype) if ctype.lower().startswith("multipart/") else [body]
        if len(parts) != 1:
            raise DicomWebError(f"instance {instance}: {len(parts)} parts in the answer, expected 1")
        return parts[0]

    def store(self, files: Iterable[bytes]) -> dict:
        """STOW-RS: send DICOM files (their bytes); the server's answer (DICOM JSON)."""
        boundary = uuid.uuid4().hex
        body = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n" for f in files
        ) + f"--{boundary}--\r\n".encode()
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        answer, _ = self._request("POST", "studies", body,
                                  headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        record = json.loads(answer) if answer.strip() else {}
        if (record.get("00081198") or {}).get("Value"):  # FailedSOPSequence
            raise DicomWebError(f"STOW-RS refused instance(s): {json.dumps(record['00081198'])[:300]}")
        return record


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.dicom.dicomweb store --url URL PATH...``: send DICOM files (folders: their ``*.dcm``)
    with STOW-RS, those the server holds already included (it keeps one copy)."""
    import argparse
    import sys
    from pathlib import Path

    from ..errors import BundleInputError

    parser = argparse.ArgumentParser(prog="python -m scripts.dicom.dicomweb")
    parser.add_argument("command", choices=["store"])
    parser.add_argument("--url", required=True, help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders of .dcm files")
    args = parser.parse_args(argv)
    files = []
    for p in args.paths:
        files += sorted(p.glob("*.dcm")) if p.is_dir() else [p]
    if not files:
        raise BundleInputError(f"no .dcm file in {[str(p) for p in args.paths]}")
    client = DicomWebClient(args.url)
    try:
        for start in range(0, len(files), 20):
            client.store([f.read_bytes() for f in files[start:start + 20]])
    except (DicomWebError, OSError) as e:
        raise BundleInputError(f"{args.url}: {e}") from None
    print(f"sent {len(files)} DICOM file(s) to {args.url}", file=sys.stderr)
    return len(files)


if __name__ == "__main__":
    from ..errors import install_excepthook

    install_excepthook()
    main()
