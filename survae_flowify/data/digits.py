"""scikit-learn's 8×8 handwritten digits: the embedded default data set (no download).

1797 grey images of shape ``(1, 8, 8)`` with values ``0 … 16`` (17 levels), stored as ``uint8``.
The split is fixed (a permutation drawn with seed 0, independent of the run's seed):
1257 train, 180 validation, 360 test images.
"""

from __future__ import annotations

import numpy as np
import torch

from survae_flowify.data.base import DataSplits

__all__ = ["DIGITS_LEVELS", "load_digits"]

DIGITS_LEVELS = 17
_TEST, _VALID = 360, 180
_SPLIT_SEED = 0


def load_digits() -> DataSplits:
    """The digits as :class:`DataSplits` with ``levels=17``."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = sklearn_digits().images  # (1797, 8, 8) floats 0..16
    order = np.random.RandomState(_SPLIT_SEED).permutation(len(images))
    x = torch.from_numpy(images[order].astype(np.uint8)).unsqueeze(1)
    test, valid, train = x[:_TEST], x[_TEST:_TEST + _VALID], x[_TEST + _VALID:]
    return DataSplits("digits", "image", train, valid, test, levels=DIGITS_LEVELS)
