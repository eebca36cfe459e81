"""Hostile and malformed requests against the real review server (review_app/, docs/review.md "Security").

The server is started as in tests/test_review_app.py (its helpers: a real ``monailabel start_server`` process on
127.0.0.1 and a free port, stopped by its process group), here with a bearer token and a 1 MB body limit. A few
hundred requests: traversal in every parameter (plain, URL-encoded, double-encoded, absolute paths), bad JSON,
wrong methods, the endpoints the app closes, huge bodies, a few at once. Then:

* no answer is a 5xx, and no error message shows the server's runtime folder;
* nothing changed outside the app's own folders: the bundle tree (size and mtime of every file), the studies
  (contents) and the temp folder around them hash the same, except what the datastore may write:
  ``datastore_v2.json``, ``.lock``, and ``labels/<tag>/<id>.<ext>`` for exactly the valid ``save_label`` requests;
* the app's temp folder is empty (failed uploads removed), and a valid explain still answers.
"""

from __future__ import annotations

import hashlib
from http import client as httpclient
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from conftest import ROOT, TINY_SIZE
from test_review_app import _png_bytes, http, launch_server, stop, wait_until_up

TOKEN = "fuzz-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: folders of the bundle tree that are not the bundle's content (caches, environments, MONAI Label's log)
SKIP_DIRS = {".git", ".venv", ".venv-review", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIP_PATHS = {ROOT / "review_app" / "logs", ROOT / "review_app" / ".runtime"}


def tree_state(root: Path, contents: bool) -> dict[str, object]:
    """``relative path -> sha256`` (contents) or ``(size, mtime_ns)`` of every file under ``root``."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and here / d not in SKIP_PATHS]
        for name in filenames:
            p = here / name
            rel = str(p.relative_to(root))
            if contents:
                state[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "not a file"
            else:
                st = p.lstat()
                state[rel] = (st.st_size, st.st_mtime_ns)
        state.update({str((here / d).relative_to(root)) + "/": "dir" for d in dirnames})
    return state


def diff(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def raw(server, method: str, target: str, body: bytes | None = None, headers: dict | None = None,
        chunks: list[bytes] | None = None) -> tuple[int, bytes]:
    """One request as given (target not re-encoded), through http.client; chunked when ``chunks``."""
    conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        if chunks is not None:
            conn.request(method, target, body=iter(chunks), headers={**AUTH, **(headers or {})}, encode_chunked=True)
        else:
            conn.request(method, target, body=body, headers={**AUTH, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read()
    except (ConnectionResetError, BrokenPipeError):  # the server may close on a body it refused: a 4xx was sent
        return 413, b""
    finally:
        conn.close()


@pytest.fixture(scope="module")
def fuzz(tiny_data, tiny_bundle, tmp_path_factory):
    """The server (token, 1 MB bodies) over three tiny studies, in a temp folder with canary files around it."""
    base = tmp_path_factory.mktemp("fuzz")
    studies, runtime, outside = base / "studies", base / "runtime", base / "outside"
    for d in (studies, runtime, outside):
        d.mkdir()
    test = json.loads((tiny_data / "datalist.json").read_text())["test"]
    ids = []
    for e in test[:3]:
        src = tiny_data / e["image"]
        shutil.copy(src, studies / src.name)
        ids.append(src.stem)
    (studies / "bad name.png").write_bytes((studies / f"{ids[0]}.png").read_bytes())  # an id the app won't serve
    (outside / "canary.png").write_bytes((studies / f"{ids[0]}.png").read_bytes())
    (outside / "secret.txt").write_text("not for clients")
    server = launch_server(studies, runtime, tiny_bundle / "models",
                           env={"SIMADV_REVIEW_TOKEN": TOKEN, "SIMADV_REVIEW_MAX_UPLOAD_MB": "1"})
    server.ids, server.base, server.outside = ids, base, outside
    try:
        wait_until_up(server, headers=AUTH)
        yield server
    finally:
        stop(server)


def traversal_values(server) -> list[str]:
    """Values for every id/tag parameter, each meant to escape the datastore (sent URL-quoted, so verbatim)."""
    first = server.ids[0]
    return [
        "..", "../..", "../../outside", "../outside/canary", "..\\..", "....//", ".", "./" + first, first + "/..",
        "labels/../..", "final/../../..", "%2e%2e", "%2e%2e%2f%2e%2e", "%252e%252e", "..%2f..%2foutside",
        "%c0%ae%c0%ae", "/etc/passwd", "/etc/no_such_file", str(server.outside / "canary.png"),
        str(server.outside / "no_such.png"), str(ROOT / "README.md"), str(server.studies / f"{first}.png"),
        str(server.studies), "~", "~root/.ssh", "C:\\Windows\\win.ini", "file:///etc/passwd", "\x00", first + "\x00",
        " ", "-rf", ".hidden", "a" * 300, "bad name", "é",
    ]


def test_hostile_requests_answer_4xx_and_change_nothing(fuzz):
    server, url, first = fuzz, fuzz.url, fuzz.ids[0]
    good_label = _png_bytes(np.zeros((TINY_SIZE, TINY_SIZE), np.uint8))
    studies_before = tree_state(server.studies, contents=True)
    base_before = tree_state(server.base, contents=False)
    bundle_before = tree_state(ROOT, contents=False)
    answers: list[tuple[str, int, bytes]] = []  # (what, status, body)
    saved: set[tuple[str, str]] = set()  # (tag, id) of the save_label requests that must succeed

    def send(what: str, method: str, path: str, expect_ok: bool = False, **kw) -> tuple[int, bytes]:
        headers = {**AUTH, **kw.pop("headers", {})}
        status, body = http(method, url + path, headers=headers, **kw)
        answers.append((what, status, body))
        assert (status == 200) if expect_ok else (400 <= status < 500), (what, method, path, status, body[:300])
        return status, body

    def label_form(params: str = "{}", name: str = "x.png", content: bytes = good_label):
        return {"fields": {"params": params}, "files": {"label": (name, content)}}

    # ---- traversal in every parameter, URL-quoted (the server sees the value itself)
    values = traversal_values(server)
    for v in values:
        q = quote(v, safe="")
        send("infer image", "POST", f"/infer/explain?image={q}", fields={"params": "{}"})
        send("infer params.image", "POST", f"/infer/explain?image={first}", fields={"params": json.dumps({"image": v})})
        send("infer label_tag", "POST", f"/infer/explain?image={first}",
             fields={"params": json.dumps({"save_label": True, "label_tag": v})})
        send("save_label image", "PUT", f"/datastore/label?image={q}&tag=final", **label_form())
        send("save_label tag", "PUT", f"/datastore/label?image={first}&tag={q}", **label_form())
        send("get image", "GET", f"/datastore/image?image={q}")
        send("head image", "HEAD", f"/datastore/image?image={q}")
        send("get label id", "GET", f"/datastore/label?label={q}&tag=final")
        send("get label tag", "GET", f"/datastore/label?label={first}&tag={q}")
        send("delete label", "DELETE", f"/datastore/label?id={first}&tag={q}")
        send("delete image", "DELETE", f"/datastore/image?id={q}")
        send("put image", "PUT", f"/datastore/image?image={q}", fields={"params": "{}"},
             files={"file": ("x.png", good_label)})
        send("next sample tag", "POST", "/activelearning/random", body=json.dumps({"label_tag": v}).encode(),
             headers={"Content-Type": "application/json"})
    # the same values sent raw in the URL: the server decodes %2e%2e and friends itself
    for v in ("%2e%2e", "%2e%2e%2f%2e%2e%2foutside", "..%2F..%2Foutside", "%2fetc%2fpasswd", "..", "../../outside"):
        for target in (f"/infer/explain?image={v}", f"/datastore/image?image={v}",
                       f"/datastore/label?label={first}&tag={v}"):
            status, body = raw(server, "POST" if target.startswith("/infer") else "GET", target)
            answers.append((f"raw {target}", status, body))
            assert 400 <= status < 500, (target, status, body[:300])
        status, body = raw(server, "PUT", f"/datastore/label?image={first}&tag={v}", body=b"")
        answers.append((f"raw put {v}", status, body))
        assert 400 <= status < 500, (v, status, body[:300])

    # ---- no existence oracle: an existing and a missing server path get the same answer
    for existing, missing in ((ROOT / "README.md", ROOT / "NO_SUCH_FILE.md"), ("/etc/passwd", "/etc/no_such_file"),
                              (server.outside / "canary.png", server.outside / "no_such.png")):
        a = http("POST", f"{url}/infer/explain?image={quote(str(existing), safe='')}", fields={"params": "{}"},
                 headers=AUTH)
        b = http("POST", f"{url}/infer/explain?image={quote(str(missing), safe='')}", fields={"params": "{}"},
                 headers=AUTH)
        assert a == b and a[0] == 400, (a, b)

    # ---- params / info that are not a JSON object, on every endpoint that reads them
    bad_json = ["{", "null", '"str"', "123", "NaN", "[]", "[1, 2]", "true", '{"a": NaN}', '{"a": Infinity}',
                "{" * 2000 + "}" * 2000, '{"a": ' * 50 + "1" + "}" * 50, '{"a": ' + "9" * 5000 + "}",
                '{"percentiles": "98,95,90", "percentiles": NaN}', "\ud800"]
    for text in bad_json:
        send("infer params", "POST", f"/infer/explain?image={first}", fields={"params": text.encode("utf-8", "surrogatepass")})
        send("save_label params", "PUT", f"/datastore/label?image={first}&tag=final",
             **label_form(text.encode("utf-8", "surrogatepass")))  # type: ignore[arg-type]
        send("next sample body", "POST", "/activelearning/random", body=text.encode("utf-8", "surrogatepass"),
             headers={"Content-Type": "application/json"})
    for raw_bytes in (b"\xff\xfe{}", b"\x00\x01\x02", b'{"a": "\xc3\x28"}'):
        send("infer params non-UTF-8", "POST", f"/infer/explain?image={first}", fields={"params": raw_bytes})
    for raw_bytes in (b"\xff\xfe{}", b"\x00\x01\x02"):
        send("save_label params non-UTF-8", "PUT", f"/datastore/label?image={first}&tag=final",
             **label_form(raw_bytes))  # type: ignore[arg-type]
    # Starlette reads a form field that is not UTF-8 as Latin-1: this one is then a JSON object, and a valid save
    send("save_label params Latin-1", "PUT", f"/datastore/label?image={first}&tag=final", expect_ok=True,
         **label_form(b'{"a": "\xc3\x28"}'))  # type: ignore[arg-type]
    saved.add(("final", first))
    bad_params = [{"percentiles": "nan"}, {"percentiles": [1e309]}, {"percentiles": {}}, {"tta_augmentations": 1e9},
                  {"tta_augmentations": "8; rm -rf /"}, {"output_image": {"a": 1}}, {"output_image": ["levels"]},
                  {"result_extension": "/../../x.png"}, {"result_extension": ".png", "output_image": "heatmap"},
                  {"model": "other"}, {"image": None}, {"image": 5}, {"image": {"a": 1}}, {"unknown": 1},
                  {"save_label": True, "result_extension": ".nrrd"}, {"percentiles": list(range(1, 99))}]
    for p in bad_params:
        send(f"infer {p}", "POST", f"/infer/explain?image={first}", fields={"params": json.dumps(p)})

    # ---- missing or empty image, other bad infer forms
    for path in ("/infer/explain", "/infer/explain?image=", "/infer/explain?image=no_such_image",
                 f"/infer/explain?image={first}&output=dicom_seg", f"/infer/explain?image={first}&output=../x",
                 f"/infer/explain?image={first}&session_id=abc", "/infer/other?image=" + first,
                 "/infer/..%2F..%2Fexplain?image=" + first):
        send(f"infer {path}", "POST", path, fields={"params": "{}"})
    send("infer with upload", "POST", f"/infer/explain?image={first}", fields={"params": "{}"},
         files={"file": ("x.png", good_label)})
    send("infer with label upload", "POST", f"/infer/explain?image={first}", fields={"params": "{}"},
         files={"label": ("x.png", good_label)})

    # ---- save_label: missing parts, bad files (each upload removed)
    send("save_label no image", "PUT", "/datastore/label?tag=final", **label_form())
    send("save_label no file", "PUT", f"/datastore/label?image={first}&tag=final", fields={"params": "{}"})
    send("save_label unknown image", "PUT", "/datastore/label?image=no_such_image&tag=final", **label_form())
    send("save_label garbage", "PUT", f"/datastore/label?image={first}&tag=final", **label_form(content=b"garbage"))
    send("save_label wrong size", "PUT", f"/datastore/label?image={first}&tag=final",
         **label_form(content=_png_bytes(np.zeros((3, 5), np.uint8))))
    send("save_label wrong type", "PUT", f"/datastore/label?image={first}&tag=final", **label_form(name="x.txt"))
    send("save_label traversal filename", "PUT", f"/datastore/label?image={first}&tag=final",
         **label_form(name="../../../outside/evil.png", content=b"garbage"))
    send("save_label dicom", "PUT", f"/datastore/label?image={first}&tag=final", **label_form(name="x.dcm"))

    # ---- the endpoints the app closes, and wrong methods on those it serves
    closed = [("POST", "/train/explain"), ("POST", "/train/"), ("DELETE", "/train/"), ("GET", "/train/"),
              ("POST", "/batch/infer/explain"), ("POST", "/scoring/anything"), ("GET", "/logs/"),
              ("GET", "/logs/gpu"), ("GET", "/datastore/dataset"), ("GET", "/datastore/?output=train"),
              ("GET", "/datastore/?output=../x"), ("GET", f"/datastore/image/info?image={first}"),
              ("PUT", f"/datastore/image/info?image={first}"), ("PUT", f"/datastore/label/info?label={first}&tag=final"),
              ("GET", f"/datastore/label/info?label={first}&tag=final"),
              ("PUT", f"/datastore/updatelabelinfo?label={first}&tag=final"), ("PUT", "/datastore/"),
              ("DELETE", f"/datastore/?id={first}"), ("DELETE", "/datastore/image?id=no_such_image"),
              ("GET", "/model/explain"), ("PUT", "/model/explain"), ("DELETE", "/model/explain"), ("GET", "/model/"),
              ("PUT", "/session/"), ("GET", "/session/abc"), ("DELETE", "/session/abc"), ("GET", "/ohif/"),
              ("GET", "/proxy/dicom/x"), ("POST", "/infer/wsi/explain"), ("GET", "/"), ("GET", "/docs"),
              ("GET", "/openapi.json"), ("GET", "/static/favicon.ico"), ("GET", "/favicon.ico"), ("POST", "/reload"),
              ("POST", "/activelearning/unknown"), ("POST", "/activelearning/..%2F..%2Frandom"),
              ("GET", "/infer/explain"), ("PUT", "/infer/explain"), ("DELETE", "/infer/explain"), ("PUT", "/info/"),
              ("DELETE", "/info/"), ("PATCH", f"/datastore/label?image={first}"), ("GET", "/activelearning/random"),
              ("POST", "/datastore/image"), ("OPTIONS", "/info/"), ("TRACE", "/info/"), ("GET", "/auth/token")]
    for method, path in closed:
        send(f"closed {method} {path}", method, path)
    for body in (b'{"x": 1}', b'{"labels": 5}', b'{"client_id": {"a": 1}}', b"[]"):
        send("next sample bad", "POST", "/activelearning/random", body=body, headers={"Content-Type": "application/json"})

    # ---- the token: missing, wrong, in the wrong scheme; what /auth/ says
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        status, _ = http("GET", f"{url}/info/", headers=headers)
        answers.append(("token", status, b""))
        assert status == 401
    assert http("GET", f"{url}/datastore/image?image={first}")[0] == 401
    assert json.loads(http("GET", f"{url}/auth/")[1])["enabled"] is True
    login = "username=x&password={}&grant_type=password"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http("POST", f"{url}/auth/token", body=login.format("wrong").encode(), headers=form)[0] == 401
    status, body = http("POST", f"{url}/auth/token", body=login.format(TOKEN).encode(), headers=form)
    assert status == 200 and json.loads(body)["access_token"] == TOKEN

    # ---- CORS is off (MONAI_LABEL_CORS_ORIGINS unset): no browser origin is allowed, preflight or not
    for method, headers in (("GET", {"Origin": "http://evil.example"}),
                            ("OPTIONS", {"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"})):
        conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request(method, "/info/", headers={**AUTH, **headers})
        r = conn.getresponse()
        r.read()
        conn.close()
        answers.append((f"cors {method}", r.status, b""))
        assert r.getheader("access-control-allow-origin") is None and r.getheader("access-control-allow-credentials") is None

    # ---- huge bodies: declared, sent, chunked (limit 1 MB)
    big = b"x" * (2 * 1024 * 1024)
    for status, body in (
        raw(server, "PUT", f"/datastore/label?image={first}&tag=final", body=big,
            headers={"Content-Type": "multipart/form-data; boundary=b"}),
        raw(server, "POST", f"/infer/explain?image={first}", body=big,
            headers={"Content-Type": "application/x-www-form-urlencoded"}),
        raw(server, "POST", "/activelearning/random", chunks=[b"x" * 65536] * 40,
            headers={"Content-Type": "application/json"}),
    ):
        answers.append(("huge", status, body))
        assert status == 413, (status, body[:200])
    send("huge params field", "POST", f"/infer/explain?image={first}", fields={"params": '{"a": "' + "x" * 900_000 + '"}'})

    # ---- a few at once: valid explains, saves and hostile requests mixed
    def one(i: int):
        image = fuzz.ids[i % 3]
        if i % 4 == 0:
            return "explain", http("POST", f"{url}/infer/explain?image={image}&output=json", fields={"params": "{}"},
                                   headers=AUTH)
        if i % 4 == 1:
            return "save", http("PUT", f"{url}/datastore/label?image={image}&tag=fuzz", headers=AUTH,
                                **label_form('{"class": 1}'))
        if i % 4 == 2:
            return "hostile", http("PUT", f"{url}/datastore/label?image={image}&tag=..", headers=AUTH, **label_form())
        return "hostile", http("GET", f"{url}/datastore/image?image=..%2F{image}.png", headers=AUTH)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for i, (kind, (status, body)) in enumerate(pool.map(one, range(12))):
            answers.append((f"concurrent {kind}", status, body))
            assert (status == 200) if kind in ("explain", "save") else (400 <= status < 500), (kind, status, body[:300])
            if kind == "save":
                saved.add(("fuzz", fuzz.ids[i % 3]))

    # ---- the valid requests the review loop makes (the only ones allowed to write)
    send("next sample", "POST", "/activelearning/random", expect_ok=True, body=b"{}",
         headers={"Content-Type": "application/json"})
    send("save_label", "PUT", f"/datastore/label?image={first}&tag=final", expect_ok=True, **label_form('{"class": 0}'))
    saved.add(("final", first))
    status, body = send("get label", "GET", f"/datastore/label?label={first}&tag=final", expect_ok=True)
    assert body == good_label
    status, body = send("get image", "GET", f"/datastore/image?image={first}", expect_ok=True)
    assert body == (server.studies / f"{first}.png").read_bytes()
    listing = json.loads(send("listing", "GET", "/datastore/?output=all", expect_ok=True)[1])
    assert sorted(listing["objects"]) == sorted(fuzz.ids)  # "bad name.png" is not served
    send("unserved id", "GET", f"/datastore/image?image={quote('bad name')}")
    assert json.loads(send("stats", "GET", "/datastore/", expect_ok=True)[1])["total"] == 3

    # ---- every answer: a 4xx or 200, no server folder in a message
    assert len(answers) > 300
    assert not [a for a in answers if a[1] >= 500], [a[:2] for a in answers if a[1] >= 500]
    leaks = [a[0] for a in answers if a[1] >= 400 and (str(server.runtime).encode() in a[2] or b"/tmp/" in a[2])]
    assert not leaks, leaks

    # ---- nothing changed but the datastore's own records and the labels of the valid saves
    allowed = {"datastore_v2.json", ".lock"} | {f"labels/{tag}/{image}.png" for tag, image in saved} | {
        f"labels/{tag}/" for tag, _ in saved}
    changed_studies = diff(studies_before, tree_state(server.studies, contents=True))
    assert changed_studies <= allowed, sorted(changed_studies - allowed)
    assert {f"labels/{tag}/{image}.png" for tag, image in saved} <= changed_studies
    changed_base = {p for p in diff(base_before, tree_state(server.base, contents=False))
                    if not p.startswith(("runtime/", "studies/"))}
    assert not changed_base, sorted(changed_base)
    changed_bundle = diff(bundle_before, tree_state(ROOT, contents=False))
    assert not changed_bundle, sorted(changed_bundle)
    for target in ("/etc/passwd", "/tmp/outside", "/outside"):
        assert not Path(target + "/canary.png").exists()

    # ---- the app's temp folder empties (results are removed once sent), and the server still explains
    deadline = time.monotonic() + 10
    while any((server.runtime / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list((server.runtime / "tmp").iterdir())
    status, body = http("POST", f"{url}/infer/explain?image={first}&output=json", fields={"params": "{}"}, headers=AUTH)
    assert status == 200 and json.loads(body)["image"] == first
    assert server.proc.poll() is None


def test_refuses_to_start_beyond_loopback_without_a_token(tmp_path, tiny_bundle):
    """``--host 0.0.0.0`` without ``$SIMADV_REVIEW_TOKEN``: one line, exit 1, before binding (nothing served)."""
    studies, runtime = tmp_path / "studies", tmp_path / "runtime"
    studies.mkdir()
    runtime.mkdir()
    server = launch_server(studies, runtime, tiny_bundle / "models", host="0.0.0.0")
    try:
        code = server.proc.wait(timeout=240)
    finally:
        stop(server)
    log = server.log_path.read_text()
    assert code == 1, log[-3000:]
    lines = [line for line in log.splitlines() if line.startswith("review app:")]
    assert lines == ["review app: refusing to serve on --host 0.0.0.0 without a token: set SIMADV_REVIEW_TOKEN "
                     "(clients then send 'Authorization: Bearer <token>'), or bind --host 127.0.0.1"], log[-3000:]
    assert "Traceback" not in log
