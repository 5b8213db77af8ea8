"""What every data source returns, and the registry that finds sources by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.core.registry import Registry

DATA_ENV = "VAELAB_DATA"


@dataclass
class ImageArrays:
    """A data set as read from disk: images (N, C, H, W) as float32 in [0, 1], labels if any."""

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    binary: bool = False  # already binarized on disk (a static binarization)
    val: np.ndarray | None = None  # the source's own validation split, used as is (else carved from train)
    val_labels: np.ndarray | None = None


Loader = Callable[["Path | None"], ImageArrays]

#: name -> loader(data_dir) returning ImageArrays. data_dir is None when the user gave no folder.
DATASETS: Registry[Loader] = Registry("data set")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder given on the command line, else $VAELAB_DATA, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None
