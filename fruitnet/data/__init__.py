"""Image-folder data: scanning, decoding, batch preprocessing and the Lightning datamodules."""

from fruitnet.data.datamodule import ImageFolderDataModule
from fruitnet.data.host import auto_num_workers
from fruitnet.data.io import CorruptImageError, check_image, is_image_file, load_image, resize_crop
from fruitnet.data.loading import ImageListDataset
from fruitnet.data.scan import (
    ClassMismatchError,
    DataConflictError,
    DataRootError,
    DataWarning,
    ScanResult,
    resolve_layout,
    scan_dataset,
    stratified_split,
)
from fruitnet.data.stats import auto_image_size, compute_dataset_stats, inverse_frequency_weights
from fruitnet.data.synthetic import SyntheticDataModule, generate_synthetic_fruits
from fruitnet.data.transforms import BatchTransform, image_spec, preprocess_spec

__all__ = [
    "BatchTransform",
    "ClassMismatchError",
    "CorruptImageError",
    "DataConflictError",
    "DataRootError",
    "DataWarning",
    "ImageFolderDataModule",
    "ImageListDataset",
    "ScanResult",
    "SyntheticDataModule",
    "auto_image_size",
    "auto_num_workers",
    "check_image",
    "compute_dataset_stats",
    "generate_synthetic_fruits",
    "image_spec",
    "inverse_frequency_weights",
    "is_image_file",
    "load_image",
    "preprocess_spec",
    "resize_crop",
    "resolve_layout",
    "scan_dataset",
    "stratified_split",
]
