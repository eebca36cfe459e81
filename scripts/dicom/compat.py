"""pydicom 2.4 / 3.0 differences the bundle meets, in one place (the review app runs pydicom 2.4.5, the bundle 3.0).

* ``apply_modality_lut`` moved from ``pydicom.pixel_data_handlers.util`` (2.x) to ``pydicom.pixels`` (3.x);
* pydicom 3 masks the bits above ``BitsStored`` and sign-extends signed data in ``pixel_array``; 2.x returns the
  stored words as they are: :func:`stored_pixels` does it under both;
* writing: pydicom 3 takes ``enforce_file_format=True`` and reads the transfer syntax from the file meta; 2.x
  takes ``write_like_original=False`` and needs ``is_little_endian``/``is_implicit_VR`` on the dataset:
  :func:`write_dataset`, :func:`dataset_bytes`.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pydicom

__all__ = ["PYDICOM_MAJOR", "apply_modality_lut", "dataset_bytes", "read_dataset", "stored_pixels", "write_dataset"]

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])

if PYDICOM_MAJOR >= 3:
    from pydicom.pixels import apply_modality_lut
else:  # pragma: no cover - exercised in the review environment
    from pydicom.pixel_data_handlers.util import apply_modality_lut


def stored_pixels(ds: Any) -> np.ndarray:
    """``ds.pixel_array`` with the bits above ``BitsStored`` cleared (unsigned) or sign-extended (signed).

    What pydicom 3 returns already; pydicom 2.4 leaves stray high bits (some modalities set them), so this is applied
    under both (it does not change pydicom 3's output).
    """
    array = ds.pixel_array
    allocated = int(getattr(ds, "BitsAllocated", 0) or 0)
    bits = int(getattr(ds, "BitsStored", 0) or allocated)
    if not np.issubdtype(array.dtype, np.integer) or not 0 < bits < allocated:
        return array
    mask = (1 << bits) - 1
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        sign = 1 << (bits - 1)
        wide = (array.astype(np.int64) & mask) ^ sign
        return (wide - sign).astype(array.dtype)
    return array & np.asarray(mask, dtype=array.dtype)


def _prepare(ds: Any) -> None:
    if PYDICOM_MAJOR < 3:  # pragma: no cover - pydicom 2.4
        syntax = ds.file_meta.TransferSyntaxUID
        ds.is_little_endian = syntax != pydicom.uid.ExplicitVRBigEndian
        ds.is_implicit_VR = syntax == pydicom.uid.ImplicitVRLittleEndian


def write_dataset(ds: Any, path: str | os.PathLike) -> None:
    """Save ``ds`` (with its ``file_meta``) as a DICOM Part 10 file, under pydicom 2.4 or 3."""
    _prepare(ds)
    if PYDICOM_MAJOR >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        ds.save_as(str(path), write_like_original=False)


def dataset_bytes(ds: Any) -> bytes:
    """``ds`` as the bytes of a DICOM Part 10 file (what STOW-RS sends)."""
    buf = io.BytesIO()
    _prepare(ds)
    if PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def read_dataset(source: str | os.PathLike | bytes, **kwargs: Any) -> Any:
    """A DICOM file (a path or its bytes) as a pydicom Dataset."""
    if isinstance(source, (bytes, bytearray)):
        return pydicom.dcmread(io.BytesIO(source), **kwargs)
    return pydicom.dcmread(str(source), **kwargs)
