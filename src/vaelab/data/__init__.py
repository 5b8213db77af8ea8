"""Data sets, found by name through ``DATASETS``; importing this package registers them all."""

from vaelab.data import binarized_mnist, cifar10, digits, dsprites, mnist, sequences  # noqa: F401  (registration)
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays, resolve_data_dir
from vaelab.data.dataset import DataConfig, Dataset, load_dataset

__all__ = ["DATASETS", "DATA_ENV", "DataConfig", "Dataset", "ImageArrays", "load_dataset", "resolve_data_dir"]
