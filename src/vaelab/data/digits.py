"""scikit-learn's bundled 8x8 digits: a tiny real data set that needs no download, for quick runs and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaelab.data.base import DATASETS, ImageArrays

TEST_SIZE = 297
_SPLIT_SEED = 0  # fixed, so the test set is the same whatever seed a run uses


@DATASETS.register(
    "digits", "scikit-learn's bundled 8x8 handwritten digits, 1797 images; no download", kind="images", shape=(1, 8, 8)
)
def load_digits(data_dir: Path | None) -> ImageArrays:
    """1500 train / 297 test images in [0, 1], shape (N, 1, 8, 8); data_dir is ignored."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: sklearn is slow to import

    bunch = sklearn_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    test, train = np.sort(perm[:TEST_SIZE]), np.sort(perm[TEST_SIZE:])
    return ImageArrays(images[train], images[test], labels[train], labels[test])
