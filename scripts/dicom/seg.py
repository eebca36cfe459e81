"""Label levels of a projection radiograph as a DICOM Segmentation (SEG), and back.

Written with pydicom directly rather than with highdicom, pydicom-seg or dcmqi: highdicom needs pydicom 3 (the
review app's environment has pydicom 2.4.5, for MONAI Label 0.8.5), and pydicom-seg and dcmqi's
``itkimage2segimage`` stop on a DX/CR radiograph, which has no ``ImagePositionPatient`` /
``ImageOrientationPatient``. The object here is the Segmentation IOD (DICOM PS3.3 A.51) for one source frame:

* same Patient and Study as the source, a new Series (``Modality`` SEG), ``SegmentationType`` BINARY;
* one segment per label value ``k`` = 1..K (segment number ``k``, pixels with label exactly ``k``: segments are
  disjoint, so the label map is ``sum_k k * frame_k``), each with a label ("top 2%"), a display colour and a
  ``SegmentAlgorithmType`` (AUTOMATIC for the explanation, MANUAL for a reviewer's label);
* one frame per segment, each deriving from the source instance (``DerivationImageSequence`` /
  ``SourceImageSequence``), and the source listed in ``ReferencedSeriesSequence``;
* the plane: a radiograph has none, so the SEG states the one viewers assume for an image without orientation,
  ``ImageOrientationPatient`` ``[0, 1, 0, 0, 0, -1]`` at ``[0, 0, 0]``, with the source's pixel spacing (OHIF
  refuses a SEG whose plane differs from the one it assumes for the source).

:func:`read_segmentation` decodes a BINARY SEG of one frame (ours, or one written by 3D Slicer or highdicom) back into
a ``(rows, cols)`` label map. Both work under pydicom 2.4 and 3.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["SEG_SOP_CLASS", "DX_PLANE", "derived_dataset", "read_segmentation", "segmentation", "srgb_to_cielab16"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: the plane a viewer (OHIF, cornerstone) assumes for a projection radiograph without ImageOrientationPatient
DX_PLANE = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
#: display colours, highest level first (red, orange, yellow, then cooler hues)
PALETTE = [(230, 25, 25), (255, 140, 0), (255, 225, 25), (60, 180, 75), (70, 240, 240), (0, 130, 200),
           (145, 30, 180), (240, 50, 230), (170, 110, 40), (128, 128, 128)]
PATIENT_STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def srgb_to_cielab16(rgb: Sequence[int]) -> list[int]:
    """An sRGB colour (0-255) as DICOM's ``RecommendedDisplayCIELabValue`` (L*a*b* scaled to 0-65535, D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    scaled = [lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255]
    return [int(round(min(max(v, 0), 65535))) for v in scaled]


def _pixel_spacing(source: Any) -> list[float]:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(source, key, None)
        if value is not None and len(value) == 2:
            return [float(v) for v in value]
    return [1.0, 1.0]


def derived_dataset(source: Any, sop_class: str, modality: str, series_description: str, series_number: int) -> Dataset:
    """A new instance of ``sop_class`` in a new Series of ``source``'s Study: file meta, SOP and Series UIDs, the
    Patient and Study attributes copied from ``source`` (the type 2 ones present, empty where ``source`` has none),
    ``Modality``, ``SeriesNumber``, ``InstanceNumber`` 1 and the description (64 characters at most). The header the
    SEG and the heatmap's Secondary Capture share."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for key in PATIENT_STUDY_KEYS:
        if key in source:
            setattr(ds, key, source.data_element(key).value)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "AccessionNumber", "ReferringPhysicianName"):  # type 2: present, may be empty
        if key not in ds:
            setattr(ds, key, "")
    ds.Modality = modality
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), series_number, 1
    ds.SeriesDescription = series_description[:64]
    return ds


def segmentation(
    source: Any,
    levels: np.ndarray,
    segment_labels: Mapping[int, str],
    *,
    series_description: str,
    algorithm_type: str = "AUTOMATIC",
    algorithm_name: str = "simadv_explainer",
    content_label: str = "EXPLANATION",
    content_description: str = "",
    series_number: int = 901,
    manufacturer: str = "simadv_explainer",
) -> Dataset:
    """A SEG of ``levels`` (``(rows, cols)`` integers, 0 = background) over the single-frame ``source`` Dataset.

    ``segment_labels`` maps each label value ``k >= 1`` to its name; every value gets a segment (and a frame, empty
    or not). Values of ``levels`` without a name are refused.
    """
    levels = np.asarray(levels)
    rows, cols = int(source.Rows), int(source.Columns)
    if levels.shape != (rows, cols):
        raise ValueError(f"levels have shape {list(levels.shape)}, the source image (rows, cols) {[rows, cols]}")
    numbers = sorted(int(k) for k in segment_labels)
    if not numbers or numbers[0] < 1:
        raise ValueError("segment_labels needs label values >= 1")
    unknown = sorted(set(np.unique(levels).tolist()) - {0, *numbers})
    if unknown:
        raise ValueError(f"levels hold values {unknown} without a segment name")
    if algorithm_type not in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"):
        raise ValueError(f"algorithm_type {algorithm_type!r}")

    ds = derived_dataset(source, SEG_SOP_CLASS, "SEG", series_description, series_number)
    now = datetime.datetime.now()
    ds.FrameOfReferenceUID = getattr(source, "FrameOfReferenceUID", None) or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = algorithm_name[:64], "0", "1"
    ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S.%f")
    ds.ContentLabel = content_label[:16].upper().replace(" ", "_")
    ds.ContentDescription = content_description[:64]
    ds.ContentCreatorName = ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SegmentationType = "BINARY"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.LossyImageCompression = "00"
    ds.NumberOfFrames = len(numbers)

    source_ref = Dataset()
    source_ref.ReferencedSOPClassUID, source_ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = source.SeriesInstanceUID
    series_ref.ReferencedInstanceSequence = DicomSequence([source_ref])
    ds.ReferencedSeriesSequence = DicomSequence([series_ref])

    segments = []
    for i, k in enumerate(sorted(numbers, reverse=True)):
        s = Dataset()
        s.SegmentNumber, s.SegmentLabel = k, str(segment_labels[k])[:64]
        s.SegmentAlgorithmType = algorithm_type
        if algorithm_type != "MANUAL":
            s.SegmentAlgorithmName = algorithm_name[:64]
        s.SegmentedPropertyCategoryCodeSequence = DicomSequence([_code("91723000", "SCT", "Anatomical Structure")])
        s.SegmentedPropertyTypeCodeSequence = DicomSequence([_code("85756007", "SCT", "Tissue")])
        s.RecommendedDisplayCIELabValue = srgb_to_cielab16(PALETTE[i % len(PALETTE)])
        segments.append(s)
    ds.SegmentSequence = DicomSequence(sorted(segments, key=lambda s: s.SegmentNumber))

    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationType = "2D"
    index_seg, index_pos = Dataset(), Dataset()
    index_seg.DimensionOrganizationUID = index_pos.DimensionOrganizationUID = dim_uid
    index_seg.DimensionIndexPointer, index_seg.FunctionalGroupPointer = 0x0062000B, 0x0062000A
    index_seg.DimensionDescriptionLabel = "ReferencedSegmentNumber"
    index_pos.DimensionIndexPointer, index_pos.FunctionalGroupPointer = 0x00200032, 0x00209113
    index_pos.DimensionDescriptionLabel = "ImagePositionPatient"
    ds.DimensionIndexSequence = DicomSequence([index_seg, index_pos])

    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = DX_PLANE
    measures.PixelSpacing, measures.SliceThickness = _pixel_spacing(source), 1.0
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    frames, per_frame = [], []
    for k in numbers:
        f = Dataset()
        content, position, ident = Dataset(), Dataset(), Dataset()
        content.DimensionIndexValues = [k, 1]
        position.ImagePositionPatient = [0.0, 0.0, 0.0]
        ident.ReferencedSegmentNumber = k
        derivation = Dataset()
        derivation.DerivationCodeSequence = DicomSequence([_code("113076", "DCM", "Segmentation")])
        src = Dataset()
        src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        src.PurposeOfReferenceCodeSequence = DicomSequence(
            [_code("121322", "DCM", "Source image for image processing operation")]
        )
        derivation.SourceImageSequence = DicomSequence([src])
        f.DerivationImageSequence = DicomSequence([derivation])
        f.FrameContentSequence = DicomSequence([content])
        f.PlanePositionSequence = DicomSequence([position])
        f.SegmentIdentificationSequence = DicomSequence([ident])
        per_frame.append(f)
        frames.append(levels == k)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    packed = np.packbits(np.stack(frames).ravel(), bitorder="little").tobytes()
    ds.PixelData = packed + (b"\x00" if len(packed) % 2 else b"")
    return ds


def read_segmentation(ds: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """A BINARY SEG of one source frame as a ``(rows, cols)`` uint8 label map (pixel = its segment number, the
    highest one where segments overlap) and what it references: ``{"sop_instance_uids", "series_instance_uid",
    "segment_labels", "algorithm_types", "content_description"}``. ValueError for anything else."""
    if str(getattr(ds, "SOPClassUID", "")) != SEG_SOP_CLASS:
        raise ValueError(f"not a DICOM Segmentation (SOP class {getattr(ds, 'SOPClassUID', None)})")
    if str(getattr(ds, "SegmentationType", "")).upper() != "BINARY":
        raise ValueError(f"SegmentationType {getattr(ds, 'SegmentationType', None)!r}; only BINARY is read")
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), bitorder="little")
    if bits.size < n * rows * cols:
        raise ValueError(f"SEG pixel data holds {bits.size} bits, {n} frames of {rows}x{cols} need {n * rows * cols}")
    frames = bits[: n * rows * cols].reshape(n, rows, cols)
    per_frame = list(getattr(ds, "PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) != n:
        raise ValueError(f"SEG has {n} frames but {len(per_frame)} per-frame functional groups")
    levels = np.zeros((rows, cols), dtype=np.uint8)
    referenced: list[str] = []
    for frame, groups in zip(frames, per_frame):
        number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        levels = np.where(frame.astype(bool), np.maximum(levels, number), levels).astype(np.uint8)
        for derivation in getattr(groups, "DerivationImageSequence", []):
            for src in getattr(derivation, "SourceImageSequence", []):
                referenced.append(str(src.ReferencedSOPInstanceUID))
    series_uid = ""
    for series in getattr(ds, "ReferencedSeriesSequence", []):
        series_uid = str(series.SeriesInstanceUID)
        referenced += [str(i.ReferencedSOPInstanceUID) for i in getattr(series, "ReferencedInstanceSequence", [])]
    segments = list(getattr(ds, "SegmentSequence", []))
    return levels, {
        "sop_instance_uids": sorted(set(referenced)),
        "series_instance_uid": series_uid,
        "segment_labels": {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", "")) for s in segments},
        "algorithm_types": sorted({str(getattr(s, "SegmentAlgorithmType", "")) for s in segments}),
        "content_description": str(getattr(ds, "ContentDescription", "") or ""),
    }
