"""Getting voxels in: readers, writers, the prepared-dataset layout, synthetic data, public datasets."""

from .datalist import SPLITS, check_pair, crop_along_x, datalist_spacing, load_datalist, write_direction_datalist, write_domain
from .instance_data import INSTANCE_SPLITS, em_instance_samples, mask_to_instances, write_instance_dataset, zscore
from .readers import EMDataError, EMVolumeReader, binarize, read_label, read_volume
from .reimage import Reimaging, reimage
from .synthetic import SOURCE_MICROSCOPE, TARGET_MICROSCOPE, Microscope, ensure_synthetic_dataset, shifted_target, synthesize_volume
from .synthetic_nuclei import ensure_synthetic_nuclei, synthesize_nuclei
from .writers import write_volume

__all__ = [
    "INSTANCE_SPLITS",
    "SPLITS",
    "EMDataError",
    "EMVolumeReader",
    "Microscope",
    "Reimaging",
    "SOURCE_MICROSCOPE",
    "TARGET_MICROSCOPE",
    "binarize",
    "check_pair",
    "crop_along_x",
    "datalist_spacing",
    "em_instance_samples",
    "ensure_synthetic_dataset",
    "ensure_synthetic_nuclei",
    "load_datalist",
    "mask_to_instances",
    "read_label",
    "read_volume",
    "reimage",
    "shifted_target",
    "synthesize_nuclei",
    "synthesize_volume",
    "write_direction_datalist",
    "write_domain",
    "write_instance_dataset",
    "write_volume",
    "zscore",
]
