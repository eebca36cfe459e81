"""The MONAI Label review app (review_app/, docs/review.md): the real server, serving the tiny trained bundle.

The server runs in the review environment (``.venv-review``, made by ``./run.sh test`` from requirements-review.txt;
its python is ``$SIMADV_REVIEW_PYTHON``) as ``python -m monailabel.main start_server`` (what the ``monailabel``
command runs) on 127.0.0.1 and a free port. A viewer's calls go through MONAI Label's own ``MONAILabelClient``
(in a review-env subprocess: monailabel is not installed in the main env); the error cases through plain HTTP, to
read the status codes. What the app returns is checked against ``python -m monai.bundle run --config_file
configs/inference.json`` on the same images.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import ROOT, TINY_SIZE, run_bundle, tiny_overrides

PERCENTILES = (98.0, 95.0, 90.0)
TTA = 2  # what tiny_overrides gives the bundle's inference
PER_PIXEL = {"smooth_sigma": 0, "min_region": 0}  # the benchmark's cut, to compare with the bundle's map
STARTUP_TIMEOUT_S = 240

#: a viewer's calls through MONAI Label's client, run with the review env's python: argv[1] is a JSON job.
CLIENT_DRIVER = r"""
import json, sys
from monailabel.client import MONAILabelClient

job = json.loads(sys.argv[1])
client = MONAILabelClient(job["url"], tmpdir=job["tmpdir"], client_id="pytest-reviewer")
out = {"info": client.info() if job.get("info") else None, "infer": [], "save": []}
for req in job.get("infer", []):
    path, params = client.infer("explain", req["image"], dict(req["params"]))
    out["infer"].append({"file": path, "params": params})
for req in job.get("save", []):
    out["save"].append(client.save_label(req["image"], req["label"], tag=req["tag"], params=req["params"]))
print("RESULT " + json.dumps(out))
"""


def review_python() -> Path:
    """The review env's python; a missing env fails the test (CI must build it: ./run.sh test does)."""
    python = Path(os.environ.get("SIMADV_REVIEW_PYTHON") or ROOT / ".venv-review" / "bin" / "python")
    if not python.is_file():
        pytest.fail(
            f"review environment not found ({python}): run `./run.sh test`, which creates .venv-review from "
            "requirements-review.txt, or set SIMADV_REVIEW_PYTHON to its python",
            pytrace=False,
        )
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, fields: dict[str, str] | None = None, files: dict[str, tuple[str, bytes]] | None = None,
         headers: dict[str, str] | None = None, body: bytes | None = None):
    """``(status, body bytes)`` of one request; a multipart form when fields/files are given, else ``body``."""
    data, headers = body, dict(headers or {})
    if fields is not None or files:
        boundary = uuid.uuid4().hex
        parts = []
        for k, v in (fields or {}).items():
            value = v if isinstance(v, bytes) else v.encode()
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + value + b"\r\n")
        for k, (name, content) in (files or {}).items():
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
            parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def launch_server(studies: Path, runtime: Path, models: Path, env: dict[str, str] | None = None,
                  host: str = "127.0.0.1") -> SimpleNamespace:
    """Start the review server (a process group of its own) on a free port; :func:`wait_until_up`, :func:`stop`."""
    python = review_python()
    port = free_port()
    cmd = [
        str(python), "-m", "monailabel.main", "start_server", "--app", str(ROOT / "review_app"),
        "--studies", str(studies), "--host", host, "--port", str(port),
        "--conf", "models", str(models),
        "--conf", "overrides", json.dumps({"image_size": [TINY_SIZE, TINY_SIZE]}),
    ]
    full_env = dict(os.environ, SIMADV_REVIEW_RUNTIME=str(runtime), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    full_env.pop("PYTHONPATH", None)  # the app puts the bundle root on sys.path itself
    full_env.pop("SIMADV_REVIEW_TOKEN", None)
    full_env.update(env or {})
    log_path = runtime / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return SimpleNamespace(proc=proc, port=port, url=f"http://127.0.0.1:{port}", studies=studies, runtime=runtime,
                           python=python, log_path=log_path, log=log, started=time.monotonic())


def wait_until_up(server: SimpleNamespace, headers: dict[str, str] | None = None) -> None:
    """Until ``/info/`` answers 200 (the test fails if the server exits or takes over STARTUP_TIMEOUT_S)."""
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"review server exited ({server.proc.returncode}):\n{server.log_path.read_text()[-5000:]}",
                        pytrace=False)
        if port_open(server.port) and http("GET", f"{server.url}/info/", headers=headers)[0] == 200:
            break
        if time.monotonic() - server.started > STARTUP_TIMEOUT_S:
            pytest.fail(f"review server not up after {STARTUP_TIMEOUT_S} s:\n{server.log_path.read_text()[-5000:]}")
        time.sleep(0.5)
    server.startup_s = time.monotonic() - server.started


def stop(server: SimpleNamespace) -> None:
    """Kill the server's process group (by its PID) if it still runs."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
    server.log.close()


def levels_of(explanation: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
    """The benchmark's cut, written out again here: per-image linear percentiles, keep ``E >= t``."""
    e = explanation.astype(np.float64)
    return sum((e >= t).astype(np.uint8) for t in np.percentile(e.ravel(), list(percentiles)))


def nifti(path) -> np.ndarray:
    import nibabel as nib

    return np.squeeze(np.asarray(nib.load(str(path)).dataobj))


def png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def review(tiny_data, tiny_bundle, tmp_path_factory):
    """The running server (studies: three tiny test images and a broken PNG) and the bundle's inference on them."""
    studies = tmp_path_factory.mktemp("review_studies")
    inputs = tmp_path_factory.mktemp("review_inputs")
    runtime = tmp_path_factory.mktemp("review_runtime")
    test = json.loads((tiny_data / "datalist.json").read_text())["test"]
    chosen = [e for e in test if e["label"] == 1][:2] + [e for e in test if e["label"] == 0][:1]
    ids = []
    for e in chosen:
        src = tiny_data / e["image"]
        shutil.copy(src, studies / src.name)
        shutil.copy(src, inputs / src.name)
        ids.append(src.stem)
    (studies / "broken.png").write_bytes(b"this is not a PNG file")

    ns = launch_server(studies, runtime, tiny_bundle / "models")
    ns.ids, ns.reference = ids, runtime / "reference"
    try:
        # meanwhile (the server takes a while to import), the bundle's own inference on the same images
        run_bundle("run", "configs/inference.json", *tiny_overrides(tiny_data, runtime / "bundle_out"),
                   "--ckpt_dir", str(tiny_bundle / "models"), "--input_dir", str(inputs),
                   "--save_generated", "true", "--inference_dir", str(ns.reference))
        wait_until_up(ns)
        yield ns
    finally:
        stop(ns)


def client(review, job: dict) -> dict:
    """Run the MONAILabelClient driver in the review env; its parsed result."""
    job = {"url": review.url, "tmpdir": str(review.runtime / "client"), **job}
    proc = subprocess.run([str(review.python), "-c", CLIENT_DRIVER, json.dumps(job)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"client failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def answers(review):
    """One viewer session: /info/, then explain on every image (levels with TTA, heatmap, generated images)."""
    infer = []
    for image in review.ids:
        infer.append({"image": image, "params": {"tta_augmentations": TTA, **PER_PIXEL}})
        infer.append({"image": image, "params": {"tta_augmentations": TTA, "output_image": "heatmap"}})
    first = review.ids[0]
    infer += [
        {"image": first, "params": {"output_image": "similar"}},
        {"image": first, "params": {"output_image": "adversarial"}},
        {"image": first, "params": {"output_image": "heatmap", "tta_augmentations": 0}},
        {"image": first, "params": {"percentiles": [99, 80], "result_extension": ".nii.gz", **PER_PIXEL}},
        {"image": first, "params": {"tta_augmentations": TTA}},  # the default regions
    ]
    out = client(review, {"info": True, "infer": infer})
    it = iter(out["infer"])
    per_image = {image: (next(it), next(it)) for image in review.ids}
    extra = dict(zip(("similar", "adversarial", "heatmap_no_tta", "two_levels", "regions"), it))
    return SimpleNamespace(info=out["info"], per_image=per_image, **extra)


def test_info_lists_the_explain_task(review, answers):
    info = answers.info
    task = info["models"]["explain"]
    assert task["type"] == "segmentation" and task["dimension"] == 2
    assert task["labels"] == {"top 2%": 3, "top 5%": 2, "top 10%": 1}
    # defaults: the bundle config's (tta_augmentations 0, as configs/inference.json)
    assert task["config"] == {"percentiles": "98,95,90", "tta_augmentations": 0, "output_image": "levels",
                              "result_extension": "", "smooth_sigma": 2.0, "min_region": 0.002, "send_to_pacs": True}
    assert info["datastore"]["total"] == 4  # three images and broken.png
    assert review.startup_s < STARTUP_TIMEOUT_S
    for sub in ("tmp", "sessions"):  # temp and session files stay in the app's runtime folder
        assert (review.runtime / sub).is_dir()


def test_explanation_levels_match_the_bundles_inference(review, answers):
    with open(review.reference / "predictions.csv", newline="") as f:
        predictions = {Path(r["image"]).stem: r for r in csv.DictReader(f)}
    for image, (levels, heatmap) in answers.per_image.items():
        meta = levels["params"]
        # the label: uint8 PNG of the image's stored (rows, cols) matrix, values 0..3
        label = png(levels["file"])
        assert label.dtype == np.uint8 and label.shape == (TINY_SIZE, TINY_SIZE)
        assert set(np.unique(label)) <= {0, 1, 2, 3}
        # the bundle's map, x-first as MONAI loads a PNG: the label is its transpose
        expected = levels_of(nifti(review.reference / f"{image}_explanation.nii.gz"))
        mismatch = float(np.mean(label.T != expected))
        assert mismatch <= 0.005, f"{image}: {mismatch:.2%} of the pixels differ from the bundle's levels"
        # the float heatmap is the bundle's map, and cuts into exactly the returned label
        heat = nifti(heatmap["file"])
        # the map is in log-odds: logit's slope is up to 1 / (eps (1 - eps)) ~ 1e3 at the generators' clip eps = 1e-3,
        # so float32 rounding of the images (~6e-8) that differs between two processes' thread counts can move a
        # pixel of the map by up to ~6e-5 (measured: 2.5e-5 on 1 % of the pixels)
        np.testing.assert_allclose(heat, nifti(review.reference / f"{image}_explanation.nii.gz"), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(levels_of(heat), label.T)
        assert heatmap["file"].endswith(".nii.gz") and heatmap["params"]["result_dtype"] == "float32"
        # the result JSON
        row = predictions[image]
        assert meta["predicted_class"] == int(row["predicted_class"])
        np.testing.assert_allclose(meta["probabilities"], [float(row["prob_0"]), float(row["prob_1"])], atol=2e-5)
        assert meta["predicted_name"] == meta["class_names"][meta["predicted_class"]]
        assert meta["label_names"] == {"top 2%": 3, "top 5%": 2, "top 10%": 1}
        assert meta["channel_def"] == {"0": "background", "1": "top 10%", "2": "top 5%", "3": "top 2%"}
        assert meta["percentiles"] == list(PERCENTILES) and meta["tta_augmentations"] == TTA
        assert meta["image"] == image and meta["image_size"] == meta["network_size"] == [TINY_SIZE, TINY_SIZE]
        fractions = meta["level_fractions"]
        for level, share in (("3", 0.02), ("2", 0.03), ("1", 0.05)):
            assert abs(fractions[level] - share) < 0.01, fractions
        assert 0 < meta["latencies"]["explainer"] <= meta["latencies"]["total"]
        assert {"explainer", "classifier"} <= set(meta["models"])


def test_generated_images_and_options(review, answers):
    first = review.ids[0]
    for kind in ("similar", "adversarial"):
        answer = getattr(answers, kind)
        assert answer["params"]["output_image"] == kind
        got = nifti(answer["file"])
        np.testing.assert_allclose(got, nifti(review.reference / f"{first}_{kind}.nii.gz"), rtol=1e-4, atol=1e-5)
    # what the generator achieved is in every answer: x_s keeps the decision; x_a's probabilities are there
    meta = answers.per_image[first][0]["params"]
    assert len(meta["similar"]["probabilities"]) == len(meta["adversarial"]["probabilities"]) == 2
    # test-time augmentation is applied on request: without it the map differs
    plain = nifti(answers.heatmap_no_tta["file"])
    assert answers.heatmap_no_tta["params"]["tta_augmentations"] == 0
    assert not np.allclose(plain, nifti(answers.per_image[first][1]["file"]), atol=1e-5)
    # other percentiles: two levels, as NIfTI (x-first), names following them
    two = answers.two_levels
    assert two["params"]["label_names"] == {"top 1%": 2, "top 20%": 1}
    np.testing.assert_array_equal(nifti(two["file"]), levels_of(plain, (99, 80)))


def test_default_levels_are_regions(review, answers):
    """By default the map is smoothed before the cut and specks dropped: fewer, larger regions than the per-pixel
    cut of the same map, nested (level k inside level k-1), counted in the answer."""
    from scripts.regions import count_regions

    first = review.ids[0]
    per_pixel, regions = answers.per_image[first][0], answers.regions
    assert regions["params"]["smooth_sigma"] == 2.0 and regions["params"]["min_region"] == 0.002
    assert per_pixel["params"]["smooth_sigma"] == 0 and per_pixel["params"]["min_region"] == 0
    label, speckle = png(regions["file"]), png(per_pixel["file"])
    counts = {int(k): v for k, v in regions["params"]["regions"].items()}
    for k in (1, 2, 3):
        assert count_regions(label >= k) == counts[k] >= 1
        assert counts[k] <= count_regions(speckle >= k)
        assert not ((label >= k + 1) & ~(label >= k)).any()
    assert sum(counts.values()) < sum(int(v) for v in per_pixel["params"]["regions"].values())


def test_reviewed_label_lands_in_the_datastore_and_feeds_a_datalist(review, answers, tmp_path):
    import nibabel as nib
    from PIL import Image

    from scripts.benchmark import pathology_entries
    from monai.transforms import EnsureChannelFirstd

    from scripts.data import CheckMaskShaped, EnsureMaskd, LoadRadiographd, load_datalist
    from scripts.data.reviewed import main as reviewed_main

    a, b, c = review.ids
    # reviewer 1 keeps the two top levels of a (PNG, class sent along); image b: a NIfTI label, no class;
    # image c: every level removed (an empty label)
    corrected = np.where(png(answers.per_image[a][0]["file"]) >= 2, png(answers.per_image[a][0]["file"]), 0)
    corrected = corrected.astype(np.uint8)
    Image.fromarray(corrected).save(tmp_path / f"{a}.png")
    label_b = png(answers.per_image[b][0]["file"]).T.copy()  # x-first, as NIfTI stores it
    nib.save(nib.Nifti1Image(label_b, np.eye(4)), str(tmp_path / f"{b}.nii.gz"))
    Image.fromarray(np.zeros((TINY_SIZE, TINY_SIZE), np.uint8)).save(tmp_path / f"{c}.png")
    saved = client(review, {"save": [
        {"image": a, "label": str(tmp_path / f"{a}.png"), "tag": "final", "params": {"class": 1}},
        {"image": b, "label": str(tmp_path / f"{b}.nii.gz"), "tag": "final", "params": {}},
        {"image": c, "label": str(tmp_path / f"{c}.png"), "tag": "final", "params": {}},
    ]})["save"]
    assert [s["image"] for s in saved] == [a, b, c]
    # in the datastore: the files under labels/final, the record with the reviewer's info
    np.testing.assert_array_equal(png(review.studies / "labels" / "final" / f"{a}.png"), corrected)
    np.testing.assert_array_equal(nifti(review.studies / "labels" / "final" / f"{b}.nii.gz"), label_b)
    record = json.loads((review.studies / "datastore_v2.json").read_text())
    assert record["objects"][a]["labels"]["final"]["info"]["class"] == 1
    assert record["objects"][a]["labels"]["final"]["info"]["client_id"] == "pytest-reviewer"

    out = tmp_path / "reviewed" / "datalist.json"
    datalist = reviewed_main(["--studies", str(review.studies), "--out", str(out)])
    assert {Path(e["image"]).stem: e["label"] for e in datalist["test"]} == {a: 1, b: 1, c: 0}
    loaded = load_datalist(out, out.parent, "test", num_classes=2, require_masks=True, check_files=True)
    by_id = {Path(e["image"]).stem: e for e in loaded}
    entries = [by_id[a], by_id[b], by_id[c]]
    assert [Path(e["image"]).parent for e in entries] == [review.studies.resolve()] * 3
    load = [LoadRadiographd(keys=["image", "mask"]), EnsureChannelFirstd(keys=["image", "mask"]), EnsureMaskd("mask"),
            CheckMaskShaped(["image", "mask"])]
    masks = []
    for e in entries:
        d = dict(e)
        for t in load:
            d = t(d)
        masks.append(np.asarray(d["mask"]).squeeze())
    np.testing.assert_array_equal(masks[0], corrected.T >= 1)  # PNG mask loads transposed, like the image
    np.testing.assert_array_equal(masks[1], label_b >= 1)
    assert not masks[2].any()
    # the localization benchmark's evaluation set: the reviewed pathology images with a mask
    assert sorted(Path(e["image"]).stem for e in pathology_entries(loaded, 1)) == sorted([a, b])
    # --min-level: only the top level counts as lesion
    top = reviewed_main(["--studies", str(review.studies), "--out", str(tmp_path / "top" / "datalist.json"),
                         "--min-level", "3"])
    mask_a = next(e["mask"] for e in top["test"] if Path(e["image"]).stem == a)
    np.testing.assert_array_equal(png(tmp_path / "top" / mask_a) > 0, corrected == 3)


def test_bad_requests_answer_4xx_and_the_server_keeps_serving(review):
    image = review.ids[0]
    url = review.url

    def infer(query: str, params: dict | None = None):
        status, body = http("POST", f"{url}/infer/{query}", fields={"params": json.dumps(params or {})})
        return status, json.loads(body).get("detail", "") if body.startswith(b"{") else body.decode(errors="replace")

    cases = [
        (infer("explain?image=no_such_image"), 404, "no_such_image"),
        (infer("explain?image=broken"), 422, "broken.png"),
        (infer(f"explain?image={image}", {"percentile": 90}), 400, "unknown parameter(s) ['percentile']"),
        (infer(f"explain?image={image}", {"percentiles": "98,120"}), 400, "between 0 and 100"),
        (infer(f"explain?image={image}", {"tta_augmentations": -1}), 400, "tta_augmentations"),
        (infer(f"explain?image={image}", {"output_image": "saliency"}), 400, "output_image"),
        (infer(f"explain?image={image}", {"output_image": "heatmap", "result_extension": ".png"}), 400, "uint8"),
        (infer(f"segmentation?image={image}"), 404, "unknown model 'segmentation'"),
        (infer(f"explain?image={ROOT / 'README.md'}"), 400, "not a path"),
        (infer("explain?image=..%2F..%2Fetc"), 400, "bad image id"),
    ]
    small = _png_bytes(np.zeros((TINY_SIZE // 2, TINY_SIZE // 2), np.uint8))
    status, body = http("PUT", f"{url}/datastore/label?image=no_such_image&tag=final", fields={"params": "{}"},
                        files={"label": ("x.png", small)})
    cases.append(((status, json.loads(body)["detail"]), 404, "no_such_image"))
    status, body = http("PUT", f"{url}/datastore/label?image={image}&tag=final", fields={"params": "{}"},
                        files={"label": ("x.png", small)})
    cases.append(((status, json.loads(body)["detail"]), 422, "must have the image's size"))
    for (status, detail), want_status, want_text in cases:
        assert status == want_status and want_text in detail, (status, detail)
        assert http("GET", f"{url}/info/")[0] == 200  # still serving
    status, _ = http("POST", f"{url}/infer/explain?image={image}&output=json", fields={"params": "{}"})
    assert status == 200
    assert not [p for p in (review.runtime / "tmp").iterdir() if not p.name.startswith("explain_")], \
        "failed uploads must not leave temp files"


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_server_stops_by_its_process_group(review):
    proc = review.proc
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail("the review server ignored SIGTERM for 30 s")
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the group is left
    assert not port_open(review.port)
