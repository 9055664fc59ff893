"""Getting voxels in: readers, writers, the prepared-dataset layout, synthetic data, public datasets."""

from .datalist import SPLITS, check_pair, crop_along_x, load_datalist, write_direction_datalist, write_domain
from .readers import EMDataError, EMVolumeReader, binarize, read_label, read_volume
from .synthetic import SOURCE_MICROSCOPE, TARGET_MICROSCOPE, Microscope, ensure_synthetic_dataset, synthesize_volume
from .writers import write_volume

__all__ = [
    "SPLITS",
    "EMDataError",
    "EMVolumeReader",
    "Microscope",
    "SOURCE_MICROSCOPE",
    "TARGET_MICROSCOPE",
    "binarize",
    "check_pair",
    "crop_along_x",
    "ensure_synthetic_dataset",
    "load_datalist",
    "read_label",
    "read_volume",
    "synthesize_volume",
    "write_direction_datalist",
    "write_domain",
    "write_volume",
]
