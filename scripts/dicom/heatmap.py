"""The float explanation map of a radiograph as a DICOM Secondary Capture image that keeps its values.

A 16-bit MONOCHROME2 Secondary Capture (SOP class 1.2.840.10008.5.1.4.1.1.7) in the source's Study, a new Series:
stored ``round(E / max(E) * 65535)`` with ``RescaleSlope = max(E) / 65535`` and intercept 0, so the modality values
are the map to within ``max(E) / 131070``; a window over the map's range. Every DICOM viewer shows it (OHIF, 3D
Slicer, a PACS' own viewer), beside the image. It is chosen over a Parametric Map (float pixel data), which the
OHIF shipped with MONAI Label 0.8.5 does not display. ``ReferencedImageSequence`` and ``SourceImageSequence`` point
at the source instance; the pixel spacing is the source's.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from .seg import derived_dataset

__all__ = ["SC_SOP_CLASS", "heatmap_capture", "heatmap_values"]

SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
FULL = 65535


def heatmap_capture(source: Any, heatmap: np.ndarray, *, series_description: str, series_number: int = 902) -> Dataset:
    """A Secondary Capture of ``heatmap`` (``(rows, cols)`` float, finite, >= 0) over the ``source`` Dataset."""
    e = np.asarray(heatmap, dtype=np.float64)
    rows, cols = int(source.Rows), int(source.Columns)
    if e.shape != (rows, cols):
        raise ValueError(f"heatmap has shape {list(e.shape)}, the source image (rows, cols) {[rows, cols]}")
    if not np.isfinite(e).all():
        raise ValueError("heatmap has non-finite values")
    e = np.clip(e, 0.0, None)
    top = float(e.max())
    slope = top / FULL if top > 0 else 1.0
    stored = np.round(e / slope).clip(0, FULL).astype(np.uint16)

    now = datetime.datetime.now()
    ds = derived_dataset(source, SC_SOP_CLASS, "OT", series_description, series_number)
    ds.ConversionType = "WSD"
    ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S.%f")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "explanation map |x_s - x_a| (simadv_explainer), rescaled to 16 bits"
    ds.PatientOrientation = getattr(source, "PatientOrientation", None) or ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:.10g}", "0", "US"
    ds.WindowCenter, ds.WindowWidth = f"{top / 2:.6g}", f"{max(top, 1e-12):.6g}"
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in source:
            setattr(ds, key, source.data_element(key).value)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    ds.ReferencedImageSequence = DicomSequence([ref])
    ds.SourceImageSequence = DicomSequence([ref])
    ds.PixelData = stored.tobytes()
    return ds


def heatmap_values(ds: Any) -> np.ndarray:
    """The map a :func:`heatmap_capture` holds, ``(rows, cols)`` float64 (stored values times the rescale)."""
    stored = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(int(ds.Rows), int(ds.Columns))
    return stored.astype(np.float64) * float(ds.RescaleSlope) + float(getattr(ds, "RescaleIntercept", 0) or 0)
