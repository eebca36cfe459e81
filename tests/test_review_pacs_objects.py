"""The DICOM objects of the review loop (scripts/dicom/) and the regions (scripts/regions.py), without servers.

The same checks run under the review environment's pydicom 2.4 in a subprocess: the SEG a pydicom 3 process
writes is read there and the other way round, and the bundle's DICOM reader gives the same image under both.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

NAMES = {3: "top 2%", 2: "top 5%", 1: "top 10%"}


def _source(tmp_path: Path, monochrome1: bool = False) -> Path:
    from scripts.data.dicom_export import radiograph_dataset
    from scripts.dicom.compat import write_dataset

    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 4096, size=(24, 40)).astype(np.uint16)
    path = tmp_path / ("m1.dcm" if monochrome1 else "m2.dcm")
    write_dataset(radiograph_dataset(matrix, path.stem, monochrome1=monochrome1), path)
    return path


def _levels() -> np.ndarray:
    levels = np.zeros((24, 40), np.uint8)
    levels[2:8, 3:9], levels[10:20, 20:39], levels[0, 0], levels[23, 39] = 3, 1, 2, 2
    return levels


def test_seg_round_trip_references_and_plane(tmp_path):
    from scripts.dicom.compat import dataset_bytes, read_dataset
    from scripts.dicom.seg import DX_PLANE, read_segmentation, segmentation

    source = read_dataset(_source(tmp_path))
    seg = read_dataset(dataset_bytes(segmentation(source, _levels(), NAMES, series_description="t")))
    levels, info = read_segmentation(seg)
    np.testing.assert_array_equal(levels, _levels())
    assert info["sop_instance_uids"] == [source.SOPInstanceUID] and info["series_instance_uid"] == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert list(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient) == DX_PLANE
    assert seg.NumberOfFrames == 3 and info["segment_labels"] == NAMES
    with pytest.raises(ValueError, match="shape"):
        segmentation(source, _levels()[:, :-1], NAMES, series_description="t")
    with pytest.raises(ValueError, match="without a segment name"):
        segmentation(source, _levels(), {3: "a", 1: "b"}, series_description="t")
    with pytest.raises(ValueError, match="not a DICOM Segmentation"):
        read_segmentation(source)


def test_heatmap_capture_keeps_the_values(tmp_path):
    from scripts.dicom.compat import dataset_bytes, read_dataset
    from scripts.dicom.heatmap import heatmap_capture, heatmap_values

    source = read_dataset(_source(tmp_path))
    heat = np.random.default_rng(1).random((24, 40)) * 0.3
    ds = read_dataset(dataset_bytes(heatmap_capture(source, heat, series_description="h")))
    np.testing.assert_allclose(heatmap_values(ds), heat, atol=heat.max() / 65535)
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    with pytest.raises(ValueError, match="non-finite"):
        heatmap_capture(source, np.full((24, 40), np.nan), series_description="h")


def test_multipart_parts():
    from scripts.dicom.dicomweb import multipart_parts

    body = b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--b1--\r\n"
    assert multipart_parts(body, 'multipart/related; type="application/dicom"; boundary=b1') == [b"AAA", b"BB"]


def test_regions_smooth_nest_and_drop_specks():
    from scripts.regions import count_regions, region_levels

    rng = np.random.default_rng(2)
    e = rng.random((64, 64)) * 0.2
    e[10:20, 10:20] += 1.0
    plain, _, plain_counts = region_levels(e, (98, 95, 90))
    smooth, thresholds, counts = region_levels(e, (98, 95, 90), sigma=2.0, min_region=0.005)
    assert thresholds == sorted(thresholds, reverse=True)
    for k in (1, 2, 3):
        assert counts[k] == count_regions(smooth >= k) <= plain_counts[k]
        assert not ((smooth >= k + 1) & ~(smooth >= k)).any()
    assert counts[3] == 1 and plain_counts[1] > counts[1]
    ref = sum((e >= t).astype(np.uint8) for t in np.percentile(e, [98, 95, 90]))
    np.testing.assert_array_equal(plain, ref)  # sigma 0, min_region 0: the benchmark's cut


def test_pydicom_2_and_3_read_and_write_the_same(tmp_path):
    """The review environment (pydicom 2.4) reads this environment's (pydicom 3) DICOM and SEG as it does, and
    writes a SEG this one reads."""
    python = Path(os.environ.get("SIMADV_REVIEW_PYTHON") or ROOT / ".venv-review" / "bin" / "python")
    if not python.is_file():
        pytest.fail(f"review environment not found ({python}): run ./run.sh test", pytrace=False)
    from monai.transforms import LoadImage

    from scripts.data import reader_for
    from scripts.dicom.compat import read_dataset, write_dataset
    from scripts.dicom.seg import read_segmentation, segmentation

    paths = [_source(tmp_path), _source(tmp_path, monochrome1=True)]
    write_dataset(segmentation(read_dataset(paths[1]), _levels(), NAMES, series_description="t"), tmp_path / "seg3.dcm")
    script = r"""
import json, sys, numpy as np, pydicom
sys.path.insert(0, sys.argv[1])
from monai.transforms import LoadImage
from scripts.data import reader_for
from scripts.dicom.compat import read_dataset, write_dataset
from scripts.dicom.seg import read_segmentation, segmentation
out = {"pydicom": pydicom.__version__, "images": []}
for p in sys.argv[3:]:
    out["images"].append(np.asarray(LoadImage(image_only=True)(p, reader=reader_for(p))).tolist())
out["seg3"] = read_segmentation(read_dataset(sys.argv[2] + "/seg3.dcm"))[0].tolist()
levels = np.zeros((24, 40), np.uint8); levels[5:9, 5:30] = 1
write_dataset(segmentation(read_dataset(sys.argv[3]), levels, {1: "x"}, series_description="t"), sys.argv[2] + "/seg2.dcm")
print("RESULT " + json.dumps(out))
"""
    proc = subprocess.run([str(python), "-c", script, str(ROOT), str(tmp_path), *map(str, paths)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][7:])
    assert out["pydicom"].startswith("2.")
    for p, image in zip(paths, out["images"]):
        mine = np.asarray(LoadImage(image_only=True)(str(p), reader=reader_for(str(p))))
        np.testing.assert_array_equal(np.asarray(image, dtype=np.float32), mine)
    np.testing.assert_array_equal(np.asarray(out["seg3"]), _levels())
    expected = np.zeros((24, 40), np.uint8)
    expected[5:9, 5:30] = 1
    np.testing.assert_array_equal(read_segmentation(read_dataset(tmp_path / "seg2.dcm"))[0], expected)
