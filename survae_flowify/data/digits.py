"""scikit-learn's 8×8 handwritten digits: the embedded default data set (no download).

1797 grey images of shape ``(1, 8, 8)`` with values ``0 … 16`` (17 levels), stored as ``uint8``.
The split is fixed (a permutation drawn with seed 0, independent of the run's seed):
1257 train, 180 validation, 360 test images, each with its class label (the digit, 10 classes).
"""

from __future__ import annotations

import numpy as np
import torch

from survae_flowify.data.base import DataSplits, SplitLabels

__all__ = ["DIGITS_CLASSES", "DIGITS_LEVELS", "load_digits"]

DIGITS_LEVELS = 17
DIGITS_CLASSES = 10
_TEST, _VALID = 360, 180
_SPLIT_SEED = 0


def load_digits() -> DataSplits:
    """The digits as :class:`DataSplits` with ``levels=17`` and their labels (10 classes)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()  # images: (1797, 8, 8) floats 0..16; target: the digit
    order = np.random.RandomState(_SPLIT_SEED).permutation(len(digits.images))
    x = torch.from_numpy(digits.images[order].astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(digits.target[order].astype(np.int64))
    train, valid, test = (slice(_TEST + _VALID, None), slice(_TEST, _TEST + _VALID), slice(_TEST))
    return DataSplits("digits", "image", x[train], x[valid], x[test], levels=DIGITS_LEVELS,
                      labels=SplitLabels(y[train], y[valid], y[test]), num_classes=DIGITS_CLASSES)
