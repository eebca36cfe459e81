"""The review app on a local folder of DICOM radiographs: the bundle's DICOM reader under the review environment's
pydicom 2.4, the explanation returned as a DICOM SEG, a reviewer's SEG saved and read back as a datalist mask.

No PACS needed: the studies are two tiny test images exported as 12-bit DX (the second MONOCHROME1) by
``scripts.data.dicom_export``; the bundle's inference (pydicom 3) on the same files is the reference.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_bundle, tiny_overrides
from test_review_app import client, http, launch_server, levels_of, nifti, stop, wait_until_up


@pytest.fixture(scope="module")
def folder(tiny_data, tiny_bundle, tmp_path_factory):
    from scripts.data.dicom_export import export_datalist

    base = tmp_path_factory.mktemp("dicom_folder")
    studies, runtime = base / "studies", base / "runtime"
    runtime.mkdir()
    files = export_datalist(tiny_data / "datalist.json", tiny_data, studies, "test", limit=2, monochrome1_every=2)
    (studies / "datalist.json").unlink()
    shutil.rmtree(studies / "masks")
    server = launch_server(studies, runtime, tiny_bundle / "models")
    try:
        run_bundle("run", "configs/inference.json", *tiny_overrides(tiny_data, base / "bundle_out"),
                   "--ckpt_dir", str(tiny_bundle / "models"), "--input_dir", str(studies),
                   "--save_generated", "false", "--inference_dir", str(base / "reference"))
        wait_until_up(server)
        server.files, server.reference, server.base = files, base / "reference", base
        yield server
    finally:
        stop(server)


def test_dicom_folder_explain_returns_seg_and_a_reviewed_seg_becomes_a_mask(folder, tmp_path):
    from scripts.data.reviewed import main as reviewed_main
    from scripts.dicom.compat import read_dataset, write_dataset
    from scripts.dicom.seg import read_segmentation, segmentation

    ids = [f.stem for f in folder.files]
    listing = json.loads(http("GET", f"{folder.url}/datastore/?output=all")[1])
    assert sorted(listing["objects"]) == ids  # DICOM studies are listed
    answers = client(folder, {"infer": [{"image": i, "params": {"tta_augmentations": 2, "smooth_sigma": 0,
                                                                "min_region": 0}} for i in ids]})["infer"]
    for image, answer in zip(ids, answers):
        assert answer["params"]["result_extension"] == ".dcm" and "pacs" not in answer["params"]
        levels, info = read_segmentation(read_dataset(answer["file"]))
        source = read_dataset(folder.studies / f"{image}.dcm", stop_before_pixels=True)
        assert info["sop_instance_uids"] == [str(source.SOPInstanceUID)]
        expected = levels_of(nifti(folder.reference / f"{image}_explanation.nii.gz"))
        assert float(np.mean(levels.T != expected)) <= 0.005, image
    # a reviewer keeps the top level of the MONOCHROME1 image and sends it back as a SEG
    image = ids[1]
    levels, _ = read_segmentation(read_dataset(answers[1]["file"]))
    kept = np.where(levels == 3, 1, 0).astype(np.uint8)
    source = read_dataset(folder.studies / f"{image}.dcm", stop_before_pixels=True)
    write_dataset(segmentation(source, kept, {1: "lesion"}, series_description="reviewed", algorithm_type="MANUAL"),
                  tmp_path / "reviewed.dcm")
    client(folder, {"save": [{"image": image, "label": str(tmp_path / "reviewed.dcm"), "tag": "final",
                              "params": {"class": 1}}]})
    assert (folder.studies / "labels" / "final" / f"{image}.dcm").is_file()
    # a SEG of another image is refused
    other = read_dataset(folder.studies / f"{ids[0]}.dcm", stop_before_pixels=True)
    write_dataset(segmentation(other, kept, {1: "lesion"}, series_description="x"), tmp_path / "other.dcm")
    status, body = http("PUT", f"{folder.url}/datastore/label?image={image}&tag=final", fields={"params": "{}"},
                        files={"label": ("other.dcm", (tmp_path / "other.dcm").read_bytes())})
    assert status == 422 and b"reference" in body
    datalist = reviewed_main(["--studies", str(folder.studies), "--out", str(tmp_path / "out" / "datalist.json")])
    [entry] = datalist["test"]
    assert entry["label"] == 1 and entry["image"].endswith(f"{image}.dcm")
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / entry["mask"])) > 0, kept == 1)
