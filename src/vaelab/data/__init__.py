"""Data sets, found by name through ``DATASETS``; importing this package registers them all.

Your own data (``--data PATH``, ``data=`` in Python) is turned into a data section by ``describe_data``."""

from vaelab.data import binarized_mnist, celeba, cifar10, digits, dsprites, mnist, sequences  # noqa: F401  (registration)
from vaelab.data.base import DATA_ENV, DATASETS, ImageArrays, resolve_data_dir
from vaelab.data.dataset import DataConfig, Dataset, load_dataset
from vaelab.data.sources import describe_data

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DataConfig",
    "Dataset",
    "ImageArrays",
    "describe_data",
    "load_dataset",
    "resolve_data_dir",
]
