"""Reading radiographs as they really ship: DICOM (12/16-bit, rescaled, MONOCHROME1/2), PNG and NIfTI.

Conventions shared by every reader the bundle uses (see ``docs/data.md``):

* **Orientation.** A stored pixel matrix ``A`` of shape ``(rows, cols)`` loads as ``A.T``, shape ``(W, H)``, exactly
  like MONAI's :class:`~monai.data.PILReader` (``reverse_indexing=True``) and :class:`~monai.data.PydicomReader`
  (``swap_ij=True``). NIfTI arrays are stored x-first already (``i`` = column, as MONAI's writers save them) and load
  unchanged. So a mask written as PNG aligns with an image stored as DICOM, PNG or NIfTI.
* **Geometry.** Projection radiographs have no patient geometry worth resampling on; :class:`RadiographDicomReader`
  sets no affine, so the image gets MONAI's identity affine, the same as a PNG.
* **Intensity.** DICOM values go through the Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT
  Sequence); ``MONOCHROME1`` is inverted into the ``MONOCHROME2`` convention (higher = brighter, bone bright) over
  the range the stored bits can hold. No VOI LUT / windowing is applied: intensity scaling is the pipeline's job
  (``ScaleIntensityd``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ensure_tuple

from ..errors import BundleInputError

__all__ = ["RadiographDicomReader", "check_readable", "is_dicom_file", "DICOM_SUFFIXES", "PIL_SUFFIXES"]

DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_dicom_file(path: PathLike) -> bool:
    """A ``.dcm``/``.dicom`` file, or any file with the DICOM ``DICM`` magic at byte 128."""
    name = str(path)
    if os.path.isdir(name):
        return False
    if name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        import pydicom

        return os.path.isfile(name) and bool(pydicom.misc.is_dicom(name))
    except Exception:  # unreadable files are not ours to claim
        return False


def _check_header(ds: Any, name: str) -> None:
    """Refuse what is not one grayscale radiograph: colour, several frames, unknown photometry, no pixels."""
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise BundleInputError(f"{name}: SamplesPerPixel is {samples}; expected a grayscale radiograph (1)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise BundleInputError(f"{name}: DICOM has {frames} frames; expected exactly one frame (a single radiograph)")
    photometric = _photometric(ds)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BundleInputError(
            f"{name}: PhotometricInterpretation {photometric!r} is not supported; expected MONOCHROME1 or MONOCHROME2"
        )
    for tag in ("Rows", "Columns"):
        if not getattr(ds, tag, None):
            raise BundleInputError(f"{name}: DICOM has no {tag}; not an image")


def _photometric(ds: Any) -> str:
    """``PhotometricInterpretation``, upper case (absent: MONOCHROME2)."""
    return str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _stored_range(ds: Any) -> tuple[int, int]:
    """The smallest and largest stored value ``BitsStored`` bits can hold (signed or not)."""
    bits = int(getattr(ds, "BitsStored", None) or getattr(ds, "BitsAllocated", 16))
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def dicom_to_monochrome2(ds: Any, name: str) -> np.ndarray:
    """Pixel matrix ``(rows, cols)`` of a single-frame DICOM as float32 modality values, MONOCHROME2 convention.

    The bits above ``BitsStored`` (12-in-16 storage) are cleared and signed data sign-extended
    (:func:`scripts.dicom.compat.stored_pixels`, as pydicom 3 does and pydicom 2.4 does not); pydicom's
    ``apply_modality_lut`` applies ``RescaleSlope``/``RescaleIntercept`` or a Modality LUT. Works under pydicom 2.4
    (the review app's environment) and 3.
    MONOCHROME1 is inverted as ``lo + hi - v``, where ``[lo, hi]`` is the stored bit range mapped through the same
    Modality LUT (so a rescaled 12-bit ``v = s*x + b`` becomes ``s*(4095 - x) + b``). DICOM Part 3 C.7.6.3.1.2.
    """
    from ..dicom.compat import apply_modality_lut, stored_pixels

    _check_header(ds, name)
    try:
        stored = stored_pixels(ds)
    except Exception as e:  # truncated/missing pixel data, undecodable compression
        raise BundleInputError(f"{name}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from e
    if stored.ndim != 2:
        raise BundleInputError(f"{name}: DICOM pixel data has shape {stored.shape}; expected one 2D frame")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if _photometric(ds) == "MONOCHROME1":
        ends = np.asarray(apply_modality_lut(np.asarray(_stored_range(ds), dtype=stored.dtype), ds), dtype=np.float64)
        values = (np.float32(ends.min() + ends.max()) - values).astype(np.float32)
    return values


@dataclass
class _Unreadable:
    """A file our reader claimed (a DICOM by name or magic) but could not parse; raised in ``get_data``."""

    name: str
    error: Exception


class RadiographDicomReader(ImageReader):
    """MONAI ``ImageReader`` for single-frame projection radiographs stored as DICOM.

    Written rather than reusing :class:`monai.data.PydicomReader` because that reader (MONAI 1.6) keeps MONOCHROME1
    inverted, accepts multi-frame files and returns their frames as a spatial axis, and builds an LPS→RAS flipped
    affine for radiographs without ``ImageOrientationPatient`` that disagrees with the identity affine a PNG of the
    same matrix gets. Output: float32 ``(W, H)`` = stored matrix transposed (as ``PILReader``), no channel axis
    (``original_channel_dim`` NaN, so ``EnsureChannelFirstd`` adds one), identity affine.

    Errors: ``read`` only claims DICOM files (``.dcm``/``.dicom`` or DICOM magic) and raises a plain ``ValueError`` for
    anything else, so ``LoadImaged(reader=[...])`` falls back to the next reader (PNG, NIfTI). Problems with a claimed
    file (corrupt, several frames, colour) are raised from ``get_data`` as :class:`BundleInputError` naming the file:
    ``LoadImage`` swallows ``read`` errors when trying readers, but not ``get_data`` errors.

    Args:
        kwargs: extra arguments for :func:`pydicom.dcmread`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every file is a DICOM file (by suffix or magic bytes)."""
        return all(is_dicom_file(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Parse each DICOM file; a parse failure is kept and raised, naming the file, by :meth:`get_data`."""
        import pydicom

        kwargs_ = {**self.kwargs, **kwargs}
        out: list = []
        for name in ensure_tuple(data):
            name = str(name)
            if not is_dicom_file(name):
                raise ValueError(f"{type(self).__name__}: {name} is not a DICOM file")
            if not os.path.isfile(name):
                out.append(_Unreadable(name, FileNotFoundError("no such file")))
                continue
            try:
                out.append(pydicom.dcmread(name, **kwargs_))
            except Exception as e:
                out.append(_Unreadable(name, e))
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Decoded ``(W, H)`` float32 array (several files: stacked as channels, first axis) and its metadata."""
        arrays: list[np.ndarray] = []
        meta: dict = {}
        datasets = img if isinstance(img, list) else [img]  # not ensure_tuple: a pydicom Dataset is iterable
        for ds in datasets:
            if isinstance(ds, _Unreadable):
                raise BundleInputError(
                    f"{ds.name}: cannot read DICOM file ({type(ds.error).__name__}: {ds.error})"
                ) from ds.error
            name = str(getattr(ds, "filename", None) or "<DICOM dataset>")
            matrix = dicom_to_monochrome2(ds, name)  # (rows, cols)
            arrays.append(np.ascontiguousarray(matrix.T))  # (W, H), as PILReader
            if not meta:
                rows, cols = matrix.shape
                meta = {
                    "format": "DICOM",
                    "width": cols,
                    "height": rows,
                    "photometric_interpretation": _photometric(ds),
                    "spatial_shape": np.asarray((cols, rows)),
                    "original_channel_dim": float("nan"),
                }
        if len(arrays) == 1:
            return arrays[0], meta
        if any(a.shape != arrays[0].shape for a in arrays):
            raise BundleInputError(f"DICOM files {[getattr(d, 'filename', '?') for d in datasets]} differ in size")
        meta["original_channel_dim"] = 0
        return np.stack(arrays, axis=0), meta


def check_readable(path: PathLike) -> None:
    """Cheap header-level check that ``path`` is an image the bundle can load; :class:`BundleInputError` if not.

    DICOM: header parse plus the same single-frame/grayscale checks as :class:`RadiographDicomReader`;
    PNG/JPEG/BMP: ``PIL.Image.verify``; NIfTI: ``nibabel.load`` (header). Pixel data is not decoded.
    """
    name = str(path)
    if not os.path.isfile(name):
        raise BundleInputError(f"{name}: image file does not exist")
    lower = name.lower()
    try:
        if is_dicom_file(name):
            import pydicom

            try:
                ds = pydicom.dcmread(name, stop_before_pixels=True)
            except Exception as e:
                raise BundleInputError(f"{name}: cannot read DICOM file ({type(e).__name__}: {e})") from e
            _check_header(ds, name)
        elif lower.endswith(PIL_SUFFIXES):
            from PIL import Image

            with Image.open(name) as im:
                im.verify()
        elif lower.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            nib.load(name)
        else:
            raise BundleInputError(
                f"{name}: unsupported image format {Path(name).suffix!r}; "
                f"expected DICOM {DICOM_SUFFIXES}, {PIL_SUFFIXES} or NIfTI {NIFTI_SUFFIXES}"
            )
    except BundleInputError:
        raise
    except Exception as e:
        raise BundleInputError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
