"""Data layer: readers, datalist loading and checks, dataset adapters, the synthetic default data."""

from .datalist import CheckMaskShaped, load_datalist
from .readers import RadiographDicomReader
from .synthetic import SyntheticChestXray, ensure_synthetic_dataset, make_synthetic_dataset
from .checks import check_config
from .loader import DataLoader
from .transforms import CheckImaged, EnsureMaskd, LoadRadiographd, ToGrayscaled, reader_for

