"""Data layer: readers, datalist loading and checks, dataset adapters, the synthetic default data."""

from .datalist import CheckMaskShaped, load_datalist
from .readers import RadiographDicomReader
from .synthetic import SyntheticChestXray, ensure_synthetic_dataset, make_synthetic_dataset
from .transforms import EnsureMaskd, LoadRadiographd, ToGrayscaled, reader_for

