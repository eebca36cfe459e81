"""Small MONAI dictionary transforms the radiograph pipeline needs and MONAI does not have.

The whole pipeline is MONAI (load → ``EnsureChannelFirstd`` → these checks → ``ScaleIntensityd`` → ``Resized``) and
is written in ``configs/common.json``; here live only the pieces with no MONAI equivalent:

* :class:`LoadRadiographd`: MONAI's ``LoadImage`` with the reader picked by file type (our DICOM radiograph reader,
  ``PILReader``, ``NibabelReader``). ``LoadImaged`` with a reader list tries every reader on every file, logs each
  failure and, when all fail, raises a ``RuntimeError`` holding only the formatted tracebacks; choosing the reader
  up front keeps the logs quiet and turns an unreadable file into one :class:`BundleInputError` naming it.
* :class:`ToGrayscaled`: a channel check that names the file.
* :class:`EnsureMaskd`: an empty mask for images that have none, so batches with and without lesion masks collate.
* :class:`CheckImaged`: refuse an image the training would silently learn nothing (or NaN) from: non-finite values,
  a constant image, or a spatial rank other than the configured one (a 3D volume given to the 2D bundle).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data import ImageReader, NibabelReader, PILReader
from monai.transforms import LoadImage, MapTransform

from ..errors import BundleInputError
from .datalist import source_name
from .readers import RadiographDicomReader, is_dicom_file

__all__ = ["LoadRadiographd", "ToGrayscaled", "EnsureMaskd", "CheckImaged", "reader_for"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def reader_for(path: str) -> ImageReader:
    """The reader for one file: DICOM (by suffix or by content), NIfTI, or a PIL image format."""
    name = str(path).lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return NibabelReader()
    if name.endswith(_PIL_SUFFIXES):
        return PILReader()
    if is_dicom_file(path):
        return RadiographDicomReader()
    raise BundleInputError(f"{path}: unknown image type (expected DICOM, NIfTI or PNG/JPEG/TIFF)")


class LoadRadiographd(MapTransform):
    """Load ``keys`` with MONAI's ``LoadImage``, the reader chosen per file; unreadable files name themselves."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(image_only=True)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
                continue  # already loaded
            try:
                d[key] = self.loader(path, reader=reader_for(path))
            except BundleInputError:
                raise
            except Exception as e:  # PIL/nibabel/pydicom errors on a broken file
                raise BundleInputError(f"cannot read '{key}' file {path}: {type(e).__name__}: {e}") from e
        return d


class ToGrayscaled(MapTransform):
    """Reduce channel-first images to ``channels`` channels; refuse what cannot be reduced, naming the file.

    RGB/RGBA exports of radiographs carry the same grey value in each colour channel: they are averaged
    (alpha dropped), and the image's metadata then describes a grey image (``original_channel_dim`` "no channel",
    as for a grey PNG), so that MONAI's writers save what is computed from it. Any other channel count than ``channels`` (or 3/4 when ``channels == 1``) is an error.
    """

    def __init__(self, keys: KeysCollection, channels: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            c = img.shape[0]
            if c == self.channels:
                continue
            if self.channels == 1 and c in (3, 4):
                d[key] = img[:3].mean(dim=0, keepdim=True) if isinstance(img, torch.Tensor) else img[:3].mean(0, keepdims=True)
                if isinstance(d[key], MetaTensor):  # now a grey image: described like one read from a grey file
                    d[key].meta["original_channel_dim"] = float("nan")
                continue
            raise BundleInputError(
                f"{source_name(d, key)}: '{key}' has {c} channels, the classifier expects {self.channels}"
            )
        return d


class EnsureMaskd(MapTransform):
    """Give items without a lesion mask an all-zero one shaped like ``ref_key`` (metrics skip empty masks).

    Masks present are binarised (``> 0``), as lesion masks from PNG exports are 0/255 or 0/1.
    """

    def __init__(self, keys: KeysCollection = "mask", ref_key: str = "image", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        for key in self.keys:
            mask = d.get(key)
            if mask is None or isinstance(mask, str):
                if isinstance(mask, str) and mask:
                    continue  # a path not loaded yet: leave it to LoadImaged
                zeros = torch.zeros((1, *ref.shape[1:]), dtype=torch.float32)
                d[key] = MetaTensor(zeros, meta=dict(getattr(ref, "meta", {}))) if isinstance(ref, MetaTensor) else zeros
            else:
                d[key] = (mask > 0).to(torch.float32) if isinstance(mask, torch.Tensor) else (mask > 0).astype("float32")
        return d


class CheckImaged(MapTransform):
    """Refuse, naming the file, an image with NaN/Inf values, a constant image, or one of another spatial rank.

    Run on channel-first images right after reading (before ``ScaleIntensityd``, which would turn a constant image
    into zeros and spread a NaN over the whole image). The checks run wherever the transforms run: in a
    ``CacheDataset``'s caching threads, in DataLoader workers and at inference.

    Args:
        keys: the image keys (masks may be constant: an empty mask is all zeros).
        spatial_dims: the spatial rank the networks are built for (2 for radiographs).
    """

    def __init__(self, keys: KeysCollection = "image", spatial_dims: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = int(spatial_dims)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            name = source_name(d, key)
            rank = img.ndim - 1  # channel-first
            if rank != self.spatial_dims:
                raise BundleInputError(
                    f"{name}: '{key}' has {rank} spatial dimensions (shape {tuple(img.shape[1:])}), the bundle is "
                    f"configured for {self.spatial_dims}D images (spatial_dims {self.spatial_dims})"
                )
            if img.numel() == 0:
                raise BundleInputError(f"{name}: '{key}' is empty (shape {tuple(img.shape)})")
            values = img.float() if not img.is_floating_point() else img
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                kinds = [k for k, m in (("NaN", torch.isnan(values)), ("Inf", torch.isinf(values))) if bool(m.any())]
                raise BundleInputError(
                    f"{name}: '{key}' has {bad} non-finite value{'s' if bad != 1 else ''} "
                    f"({' and '.join(kinds)}); an image must hold finite numbers only"
                )
            lo, hi = float(values.min()), float(values.max())
            if lo == hi:
                raise BundleInputError(
                    f"{name}: '{key}' is constant (every pixel is {lo:g}); there is nothing in it to classify or explain"
                )
        return d
