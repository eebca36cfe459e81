"""The review app on a PACS: Orthanc (DICOMweb) as its datastore, DICOM radiographs in, DICOM SEG out, and back.

A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``, installed by ``./run.sh test``) started here with its own
config (storage in a temp folder, authentication on, remote access and the DICOM port off) and stopped by PID; the
review server (tests/test_review_app.py's helpers) with ``--studies http://127.0.0.1:<port>/dicom-web``. Three tiny
test images are exported as 12-bit DX (the third MONOCHROME1) and sent with STOW-RS. Checked: the explanation SEG
and heatmap land in the image's Study (QIDO-RS) with the right references and the bundle's own levels and map; a
reviewer's label goes to the PACS as SEG and ``scripts.data.reviewed`` turns it into a datalist mask; hostile
requests answer 4xx and add nothing to the PACS. Skipped only when the Orthanc binary or its DICOMweb plugin is
absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_bundle, tiny_overrides
from chromium_cdp import CHROMIUM, ohif_seg_screenshots
from test_review_app import client, free_port, http, launch_server, levels_of, nifti, port_open, stop, wait_until_up

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "reviewer", "pacs-test-password"
TTA = 2

pytestmark = pytest.mark.skipif(
    not (os.path.isfile(ORTHANC) and DICOMWEB_PLUGIN.is_file()),
    reason="Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install orthanc orthanc-dicomweb; "
    "./run.sh test installs them)",
)


def start_orthanc(folder: Path) -> SimpleNamespace:
    port = free_port()
    config = {
        "Name": "simadv-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    started = time.monotonic()
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() - started > 60:
            pytest.fail(f"Orthanc did not start:\n{(folder / 'orthanc.log').read_text()[-3000:]}", pytrace=False)
        time.sleep(0.1)
    return SimpleNamespace(proc=proc, port=port, url=f"http://127.0.0.1:{port}/dicom-web", log=log,
                           startup_s=time.monotonic() - started)


def stop_orthanc(orthanc: SimpleNamespace) -> None:
    if orthanc.proc.poll() is None:
        os.killpg(orthanc.proc.pid, signal.SIGTERM)
        try:
            orthanc.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(orthanc.proc.pid, signal.SIGKILL)
            orthanc.proc.wait(timeout=30)
    orthanc.log.close()


@pytest.fixture(scope="module")
def pacs(tiny_data, tiny_bundle, tmp_path_factory):
    """Orthanc with three DX radiographs, the review server on it, and the bundle's inference on the same DICOMs."""
    from scripts.data.dicom_export import export_datalist
    from scripts.dicom.compat import read_dataset
    from scripts.dicom.dicomweb import DicomWebClient

    folder = tmp_path_factory.mktemp("pacs")
    dicoms, runtime = folder / "dicom", folder / "runtime"
    runtime.mkdir()
    files = export_datalist(tiny_data / "datalist.json", tiny_data, dicoms, "test", limit=3, monochrome1_every=3)
    (dicoms / "datalist.json").unlink()
    shutil.rmtree(dicoms / "masks", ignore_errors=True)
    orthanc = start_orthanc(folder)
    web = DicomWebClient(orthanc.url, USER, PASSWORD)
    server = None
    try:
        web.store([f.read_bytes() for f in files])
        env = {"MONAI_LABEL_DICOMWEB_USERNAME": USER, "MONAI_LABEL_DICOMWEB_PASSWORD": PASSWORD,
               "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(runtime / "cache")}
        server = launch_server(orthanc.url, runtime, tiny_bundle / "models", env=env)  # type: ignore[arg-type]
        reference = folder / "reference"
        run_bundle("run", "configs/inference.json", *tiny_overrides(tiny_data, folder / "bundle_out"),
                   "--ckpt_dir", str(tiny_bundle / "models"), "--input_dir", str(dicoms),
                   "--save_generated", "false", "--inference_dir", str(reference))
        wait_until_up(server)
        sources = {f.stem: read_dataset(f, stop_before_pixels=True) for f in files}
        yield SimpleNamespace(orthanc=orthanc, web=web, server=server, files=files, sources=sources,
                              reference=reference, folder=folder, env=env)
    finally:
        if server is not None:
            stop(server)
        stop_orthanc(orthanc)


def series_in(web, study: str) -> dict[str, str]:
    from scripts.dicom.dicomweb import tag_value

    return {str(tag_value(r, "0020000E")): str(tag_value(r, "00080060")) for r in web.search(f"studies/{study}/series")}


def test_explain_on_the_pacs_writes_seg_and_heatmap_into_the_study(pacs):
    from scripts.dicom.compat import read_dataset
    from scripts.dicom.heatmap import heatmap_values
    from scripts.dicom.seg import DX_PLANE, SEG_SOP_CLASS, read_segmentation

    listing = json.loads(http("GET", f"{pacs.server.url}/datastore/?output=all")[1])
    by_series = {str(ds.SeriesInstanceUID): name for name, ds in pacs.sources.items()}
    assert sorted(listing["objects"]) == sorted(by_series)  # listed before any fetch: the DX series only
    assert [str(ds.PhotometricInterpretation) for ds in pacs.sources.values()].count("MONOCHROME1") == 1
    infer = [{"image": uid, "params": {"tta_augmentations": TTA, "smooth_sigma": 0, "min_region": 0}}
             for uid in sorted(by_series)]
    infer.append({"image": sorted(by_series)[0], "params": {"send_to_pacs": False}})  # default regions, not stored
    answers = client(pacs.server, {"infer": infer})["infer"]
    for answer in answers[:-1]:
        meta = answer["params"]
        name = by_series[meta["image"]]
        source = pacs.sources[name]
        # the file sent back is the SEG itself
        levels, info = read_segmentation(read_dataset(answer["file"]))
        assert info["sop_instance_uids"] == [str(source.SOPInstanceUID)]
        expected = levels_of(nifti(pacs.reference / f"{name}_explanation.nii.gz"))  # x first
        mismatch = float(np.mean(levels.T != expected))
        assert mismatch <= 0.005, f"{name}: {mismatch:.2%} of the pixels differ from the bundle's levels"
        # in the PACS: a new SEG and a heatmap series in the image's own Study, referencing the instance
        stored = meta["pacs"]
        study = str(source.StudyInstanceUID)
        assert stored["seg"]["StudyInstanceUID"] == stored["heatmap"]["StudyInstanceUID"] == study
        modalities = series_in(pacs.web, study)
        assert modalities[stored["seg"]["SeriesInstanceUID"]] == "SEG"
        assert modalities[stored["heatmap"]["SeriesInstanceUID"]] == "OT"
        seg = read_dataset(pacs.web.retrieve_instance(study, stored["seg"]["SeriesInstanceUID"],
                                                      stored["seg"]["SOPInstanceUID"]))
        assert seg.SOPClassUID == SEG_SOP_CLASS and seg.Modality == "SEG"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert list(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient) == DX_PLANE
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["top 10%", "top 5%", "top 2%"]
        np.testing.assert_array_equal(read_segmentation(seg)[0], levels)
        heat = read_dataset(pacs.web.retrieve_instance(study, stored["heatmap"]["SeriesInstanceUID"],
                                                       stored["heatmap"]["SOPInstanceUID"]))
        assert heat.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        bundle_map = nifti(pacs.reference / f"{name}_explanation.nii.gz").T
        # the stored map is the bundle's to 0.5 % of its maximum (16-bit storage: 1/65535; the rest: float noise
        # between the bundle's batch of 3 and the app's batch of 1, with test-time augmentation)
        np.testing.assert_allclose(heatmap_values(heat), bundle_map, rtol=0, atol=float(bundle_map.max()) * 5e-3)
        assert meta["regions"] and set(meta["regions"]) == {"1", "2", "3"}
    # send_to_pacs false: the answer only; default regions: fewer, larger
    last = answers[-1]["params"]
    assert "pacs" not in last and last["smooth_sigma"] == 2.0
    study = str(pacs.sources[by_series[last["image"]]].StudyInstanceUID)
    assert sorted(series_in(pacs.web, study).values()) == ["DX", "OT", "SEG"]


def test_reviewed_label_goes_to_the_pacs_as_seg_and_back_as_a_datalist_mask(pacs, tmp_path):
    from PIL import Image

    from scripts.data.reviewed import main as reviewed_main

    name = sorted(pacs.sources)[2]  # the MONOCHROME1 one
    source = pacs.sources[name]
    edited = np.zeros((int(source.Rows), int(source.Columns)), np.uint8)
    edited[10:30, 20:40] = 2
    edited[40:50, 5:15] = 1
    Image.fromarray(edited).save(tmp_path / "edited.png")
    saved = client(pacs.server, {"save": [{"image": str(source.SeriesInstanceUID), "label": str(tmp_path / "edited.png"),
                                           "tag": "final", "params": {"class": 1}}]})["save"]
    assert saved[0]["image"] == str(source.SeriesInstanceUID)
    out = tmp_path / "reviewed" / "datalist.json"
    old = {k: os.environ.get(k) for k in pacs.env}
    os.environ.update(pacs.env)
    try:
        datalist = reviewed_main(["--studies", pacs.orthanc.url, "--out", str(out)])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    [entry] = datalist["test"]
    assert entry["label"] == 1
    mask = np.asarray(Image.open(out.parent / entry["mask"]))
    np.testing.assert_array_equal(mask > 0, edited >= 1)
    from scripts.data import load_datalist

    loaded = load_datalist(out, out.parent, "test", num_classes=2, require_masks=True, check_files=True)
    assert Path(loaded[0]["image"]).read_bytes()[128:132] == b"DICM"


def test_hostile_requests_answer_4xx_and_write_nothing_to_the_pacs(pacs):
    from scripts.dicom.dicomweb import tag_value

    url = pacs.server.url
    before = sorted(str(tag_value(r, "0020000E")) for r in pacs.web.search("series"))
    seg_uid = next(str(tag_value(r, "0020000E")) for r in pacs.web.search("series", {"Modality": "SEG"}))
    image = str(sorted(pacs.sources.values(), key=lambda d: str(d.SeriesInstanceUID))[0].SeriesInstanceUID)
    cases = [
        ("POST", f"/infer/explain?image={seg_uid}", {"params": "{}"}),  # a SEG series is not an image to explain
        ("POST", "/infer/explain?image=..%2F..%2Fetc", {"params": "{}"}),
        ("POST", f"/infer/explain?image={image}", {"params": '{"smooth_sigma": -1}'}),
        ("POST", f"/infer/explain?image={image}", {"params": '{"min_region": "x"}'}),
        ("POST", f"/infer/explain?image={image}", {"params": '{"send_to_pacs": "yes"}'}),
        ("POST", f"/infer/explain?image={image}", {"params": '{"output_image": "similar", "result_extension": ".dcm"}'}),
        ("PUT", f"/datastore/label?image={image}&tag=final", None),  # no file
        ("GET", "/proxy/dicom/qido/..%2F..%2Fpatients", None),
        ("GET", "/proxy/dicom/wado/tools/find", None),
        ("GET", "/proxy/dicom/stow/studies", None),
        ("POST", "/proxy/dicom/wado/studies", None),
        ("GET", "/proxy/dicom/qido/studies/1.2/../../../patients", None),
    ]
    for method, path, fields in cases:
        status, body = http(method, url + path, fields=fields)
        assert 400 <= status < 500, (method, path, status, body[:300])
    status, _ = http("PUT", f"{url}/datastore/label?image={image}&tag=final", fields={"params": "{}"},
                     files={"label": ("x.png", b"not a png")})
    assert status == 422
    assert sorted(str(tag_value(r, "0020000E")) for r in pacs.web.search("series")) == before
    # the viewer's read-only proxy answers QIDO-RS
    status, body = http("GET", f"{url}/proxy/dicom/qido/studies")
    assert status == 200 and len(json.loads(body)) == 3
    assert http("GET", f"{url}/ohif/")[0] == 200


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (Debian: apt-get install chromium; "
                    "./run.sh test installs it)")
def test_ohif_draws_the_explanation_seg_over_the_radiograph(pacs):
    """Headless Chromium opens the study in OHIF (/ohif/ of the app), then the explanation SEG: its top level's colour
    is drawn where the SEG's top level is, and nowhere before the SEG is opened."""
    import io

    from PIL import Image

    from scripts.dicom.compat import read_dataset
    from scripts.dicom.seg import read_segmentation

    name = sorted(pacs.sources)[2]  # the MONOCHROME1 radiograph
    source = pacs.sources[name]
    [answer] = client(pacs.server, {"infer": [{"image": str(source.SeriesInstanceUID), "params": {}}]})["infer"]
    levels, _ = read_segmentation(read_dataset(answer["file"]))  # (rows, cols), default regions
    top = levels == levels.max()
    started = time.monotonic()
    shots = ohif_seg_screenshots(pacs.server.url, str(source.StudyInstanceUID),
                                 answer["params"]["pacs"]["seg"]["SeriesInstanceUID"])
    (pacs.folder / "ohif_before.png").write_bytes(shots["before"])
    (pacs.folder / "ohif_seg.png").write_bytes(shots["after"])
    if os.environ.get("SIMADV_OHIF_SCREENSHOT"):
        Path(os.environ["SIMADV_OHIF_SCREENSHOT"]).write_bytes(shots["after"])
    assert shots["size"] == [int(source.Columns), int(source.Rows)]

    def red(png: bytes) -> np.ndarray:  # the top level's colour (230, 25, 25), blended or as outline
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        return (r > 120) & (g < 0.45 * r) & (b < 0.45 * r)

    assert red(shots["before"]).sum() == 0
    ys, xs = np.nonzero(red(shots["after"]))
    assert len(xs) > 100, f"only {len(xs)} overlay pixels drawn"
    cols = np.rint((xs - shots["origin"][0]) / shots["step"][0]).astype(int)
    rows = np.rint((ys - shots["origin"][1]) / shots["step"][1]).astype(int)
    inside = (rows >= 0) & (rows < top.shape[0]) & (cols >= 0) & (cols < top.shape[1])
    from scipy import ndimage

    near_top = ndimage.binary_dilation(top, iterations=1)
    hits = near_top[rows[inside], cols[inside]]
    assert inside.mean() > 0.99 and hits.mean() > 0.9, (inside.mean(), hits.mean())
    assert time.monotonic() - started < 120


def test_everything_stops_by_pid(pacs):
    stop(pacs.server)
    stop_orthanc(pacs.orthanc)
    assert not port_open(pacs.server.port) and not port_open(pacs.orthanc.port)
    for proc in (pacs.server.proc, pacs.orthanc.proc):
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
