"""Radiograph readers: DICOM as shipped (12-bit, rescale, MONOCHROME1, frames, corrupt), PNG 8/16-bit, NIfTI.

Every image is 32 rows x 40 columns (non-square) so a transposition bug changes the shape.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import NibabelReader, PILReader
from monai.transforms import EnsureChannelFirstd, LoadImage, LoadImaged
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from scripts.data.readers import RadiographDicomReader, check_readable
from scripts.errors import BundleInputError

ROWS, COLS = 32, 40


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    signed: bool = False,
    frames: int | None = None,
    samples: int = 1,
) -> Path:
    """A DICOM file as a modality writes it: file meta, 16-bit allocation, ``bits_stored`` bits used."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "anon"
    ds.Rows, ds.Columns = stored.shape[-2:] if samples == 1 else stored.shape[:2]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames is not None:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def matrix12() -> np.ndarray:
    """A 12-bit (rows, cols) matrix with distinct values, including 0 and 4095."""
    a = (np.arange(ROWS * COLS).reshape(ROWS, COLS) * 3).astype(np.uint16)
    a[0, 0], a[-1, -1] = 0, 4095
    return a


@pytest.fixture(scope="module")
def loader() -> LoadImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(reader=[RadiographDicomReader(), PILReader(), NibabelReader()], image_only=True)


def test_12bit_monochrome2_loads_transposed_float32(tmp_path, loader):
    a = matrix12()
    garbage = a | 0xF000  # unused high bits set, as some modalities leave them
    img = loader(str(write_dicom(tmp_path / "a.dcm", garbage)))
    assert img.shape == (COLS, ROWS) and img.dtype == torch.float32
    np.testing.assert_array_equal(img.numpy(), a.T.astype(np.float32))
    assert img.meta["photometric_interpretation"] == "MONOCHROME2"
    torch.testing.assert_close(img.affine, torch.eye(4, dtype=torch.float64))


def test_rescale_slope_intercept_applied(tmp_path, loader):
    a = matrix12()
    img = loader(str(write_dicom(tmp_path / "r.dcm", a, slope=2.0, intercept=-100.0)))
    np.testing.assert_allclose(img.numpy(), (2.0 * a - 100.0).T)
    assert img[0, 0] == -100.0 and img[-1, -1] == 2 * 4095 - 100


def test_monochrome1_inverted_to_monochrome2(tmp_path, loader):
    a = matrix12()
    img = loader(str(write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", slope=2.0, intercept=-100.0)))
    # by hand: stored x -> 2 * (4095 - x) - 100; stored 0 (white in MONOCHROME1) becomes the largest value
    assert img[0, 0].item() == 2 * 4095 - 100 == 8090
    assert img[-1, -1].item() == -100
    assert img[1, 0].item() == 2 * (4095 - a[0, 1]) - 100  # (W, H) index (col 1, row 0)
    np.testing.assert_allclose(img.numpy(), (2.0 * (4095 - a.astype(np.float64)) - 100.0).T)
    assert img.meta["photometric_interpretation"] == "MONOCHROME1"


def test_monochrome1_signed_without_rescale(tmp_path, loader):
    a = np.full((ROWS, COLS), 5, dtype=np.int16)
    a[0, 0] = -2048
    img = loader(str(write_dicom(tmp_path / "s.dcm", a, photometric="MONOCHROME1", signed=True)))
    assert img[1, 1].item() == -6  # range [-2048, 2047]: x -> -1 - x
    assert img[0, 0].item() == 2047


def test_same_matrix_png_dicom_nifti_load_identically(tmp_path, loader):
    a = matrix12()
    dcm = write_dicom(tmp_path / "x.dcm", a)
    png = tmp_path / "x.png"
    Image.fromarray(a).save(png)  # 16-bit grayscale PNG
    assert Image.open(png).mode == "I;16"
    nii = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(a.T.astype(np.float32), np.eye(4)), nii)  # NIfTI stores x (= column) first
    loaded = [loader(str(p)) for p in (dcm, png, nii)]
    for img in loaded:
        assert img.shape == (COLS, ROWS)
        np.testing.assert_array_equal(img.numpy(), loaded[0].numpy())
    d = {"image": str(dcm), "mask": str(png)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = LoadImaged(("image", "mask"), reader=[RadiographDicomReader(), PILReader()], image_only=True)(d)
    d = EnsureChannelFirstd(("image", "mask"))(d)
    assert d["image"].shape == d["mask"].shape == (1, COLS, ROWS)
    torch.testing.assert_close(d["image"].affine, d["mask"].affine)


def test_png_8bit_and_16bit_through_pilreader(tmp_path):
    a8 = (np.arange(ROWS * COLS).reshape(ROWS, COLS) % 256).astype(np.uint8)
    a16 = (np.arange(ROWS * COLS).reshape(ROWS, COLS) * 40).astype(np.uint16)
    Image.fromarray(a8).save(tmp_path / "p8.png")
    Image.fromarray(a16).save(tmp_path / "p16.png")
    load = LoadImage(reader=PILReader(), image_only=True)
    x8, x16 = load(str(tmp_path / "p8.png")), load(str(tmp_path / "p16.png"))
    np.testing.assert_array_equal(x8.numpy(), a8.T)
    np.testing.assert_array_equal(x16.numpy(), a16.T)
    assert x16.max().item() == a16.max() > 255


def test_nifti_through_nibabelreader(tmp_path):
    a = np.random.default_rng(0).random((COLS, ROWS)).astype(np.float32)
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "n.nii.gz")
    x = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True)(str(tmp_path / "n.nii.gz"))
    assert x.shape == (1, COLS, ROWS)
    np.testing.assert_allclose(x[0].numpy(), a)


def test_multiframe_raises_naming_file(tmp_path, loader):
    path = write_dicom(tmp_path / "multi.dcm", np.zeros((2, ROWS, COLS)), frames=2)
    with pytest.raises(BundleInputError, match=r"multi\.dcm.*2 frames"):
        loader(str(path))


def test_colour_dicom_raises(tmp_path, loader):
    path = write_dicom(tmp_path / "rgb.dcm", np.zeros((ROWS, COLS, 3)), photometric="RGB", samples=3)
    with pytest.raises(BundleInputError, match=r"rgb\.dcm.*SamplesPerPixel"):
        loader(str(path))


def test_corrupt_and_truncated_dicom_raise_naming_file(tmp_path, loader):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a dicom file" * 20)
    with pytest.raises(BundleInputError, match=r"garbage\.dcm: cannot read DICOM"):
        loader(str(garbage))
    good = write_dicom(tmp_path / "good.dcm", matrix12())
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BundleInputError, match=r"truncated\.dcm: cannot decode DICOM pixel data"):
        loader(str(truncated))
    with pytest.raises(BundleInputError, match=r"missing\.dcm"):
        loader(str(tmp_path / "missing.dcm"))


def test_reader_claims_only_dicom(tmp_path):
    reader = RadiographDicomReader()
    Image.fromarray(np.zeros((ROWS, COLS), np.uint8)).save(tmp_path / "x.png")
    assert not reader.verify_suffix(str(tmp_path / "x.png"))
    with pytest.raises(ValueError):
        reader.read(str(tmp_path / "x.png"))
    nosuffix = write_dicom(tmp_path / "IM0001", matrix12())  # DICOMDIR-style name without suffix
    assert reader.verify_suffix(str(nosuffix))
    arr, meta = reader.get_data(reader.read(str(nosuffix)))
    assert arr.shape == (COLS, ROWS) and np.isnan(meta["original_channel_dim"])


def test_check_readable(tmp_path):
    check_readable(write_dicom(tmp_path / "ok.dcm", matrix12()))
    Image.fromarray(np.zeros((ROWS, COLS), np.uint8)).save(tmp_path / "ok.png")
    check_readable(tmp_path / "ok.png")
    with pytest.raises(BundleInputError, match=r"multi\.dcm.*frames"):
        check_readable(write_dicom(tmp_path / "multi.dcm", np.zeros((2, ROWS, COLS)), frames=2))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(BundleInputError, match=r"bad\.png"):
        check_readable(tmp_path / "bad.png")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BundleInputError, match=r"x\.txt: unsupported image format"):
        check_readable(tmp_path / "x.txt")
    with pytest.raises(BundleInputError, match="does not exist"):
        check_readable(tmp_path / "nope.dcm")
    assert pydicom.dcmread(tmp_path / "ok.dcm").BitsStored == 12
